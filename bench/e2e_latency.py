"""End-to-end replication latency over SSH: annexsync against the git-annex assistant.

From a save on node A to that content in a peer's working tree, each node behind its own
sshd on 127.0.0.1:

    python bench/e2e_latency.py [--quick] [--edits N] [--only annexsync|git-annex]

Scenarios: two nodes A - B (edits in place, temp+rename in the directory, temp written
outside the tree and renamed in; a burst of new files), and for annexsync a star, A with 8
peers (the time until the last peer has each edit). Arrival is seen with inotify on the
peers' directories and confirmed by reading the file. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLK_TCK,
    Daemon,
    code_note,
    git,
    machine_note,
    ms,
    percentile,
    setup_environment,
    table,
    temp_dir,
)
from _sshd import SSHServer, client_home
from sshd_tools import descendants, keygen, sshd_unavailable, terminate  # on _sshd's path

EDIT_FILES = 10  # notes/n00.txt .. n09.txt take the edits in turn
STYLES = ("in-place", "temp+rename in dir", "temp outside, renamed in")
ANNEX_INSIDE = "temp+rename in dir"  # what git-annex 10.20230126 is said to stop on

# --- inotify --------------------------------------------------------------------------------
IN_CLOSE_WRITE, IN_MOVED_TO, IN_Q_OVERFLOW = 0x8, 0x80, 0x4000
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify descriptor: watches added by path, events read with the time of the read."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def watch(self, path: Path, mask: int = IN_CLOSE_WRITE | IN_MOVED_TO) -> int:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
        return wd

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 1 << 16):
                pass

    def read(self, timeout: float) -> tuple[float, list[tuple[int, int, str]]]:
        """Block up to ``timeout``; the perf_counter time the events were read, and each
        event's (watch, mask, name). An overflow is reported as watch -1."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        now = time.perf_counter()
        if not ready:
            return now, []
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return now, []
        events = []
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
            offset = start + length
            events.append((-1 if mask & IN_Q_OVERFLOW else wd, mask, name))
        return now, events

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Target:
    """A file that must reach ``path`` with exactly ``data``."""

    key: str
    path: Path
    data: bytes

    def there(self) -> bool:
        try:
            return self.path.read_bytes() == self.data
        except OSError:
            return False


@dataclass
class Arrivals:
    """When each target arrived (perf_counter), when each stage event was first seen."""

    times: dict[str, float] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)
    polled: int = 0  # arrivals found by the fallback poll, not by an event

    def chain(self, labels: Sequence[str], after: float) -> dict[str, float]:
        """Each label's first stamp after the previous label's (the first: after ``after``)."""
        out = {}
        for label in labels:
            at = next((t for t in self.stages.get(label, []) if t >= after), None)
            if at is None:
                break
            out[label] = after = at
        return out


class Detector:
    """Waits for targets in peers' trees; also stamps ref moves (stages) on the way."""

    POLL = 0.5  # fallback: look at every pending target after this long without an event

    def __init__(self) -> None:
        self.ino = Inotify()
        self.dirs: dict[Path, int] = {}
        self.stage_watch: dict[tuple[int, str], str] = {}

    def watch_dir(self, path: Path) -> None:
        if path not in self.dirs:
            self.dirs[path] = self.ino.watch(path)

    def watch_stage(self, directory: Path, name: str, label: str) -> None:
        """Stamp label whenever ``directory/name`` is renamed into place (a ref update)."""
        self.watch_dir(directory)
        self.stage_watch[(self.dirs[directory], name)] = label

    def wait(self, targets: Sequence[Target], timeout: float, linger: float = 0.0) -> Arrivals:
        """Until every target is there or ``timeout`` s have passed; then up to ``linger`` s
        more until every stage has been stamped at least once."""
        out = Arrivals()
        by_event: dict[tuple[int, str], list[Target]] = {}
        for target in targets:
            wd = self.dirs[target.path.parent]
            by_event.setdefault((wd, target.path.name), []).append(target)
        pending = {t.key for t in targets}
        deadline = time.perf_counter() + timeout
        last_poll = time.perf_counter()
        while pending:
            now = time.perf_counter()
            if now >= deadline:
                break
            stamp, events = self.ino.read(min(deadline - now, self.POLL))
            overflow = False
            for wd, _mask, name in events:
                if wd == -1:
                    overflow = True
                    continue
                label = self.stage_watch.get((wd, name))
                if label is not None:
                    out.stages.setdefault(label, []).append(stamp)
                for target in by_event.get((wd, name), ()):
                    if target.key in pending and target.there():
                        pending.discard(target.key)
                        out.times[target.key] = stamp
            if overflow or (stamp - last_poll >= self.POLL and not events):
                for target in targets:
                    if target.key in pending and target.there():
                        pending.discard(target.key)
                        out.times[target.key] = time.perf_counter()
                        out.polled += 1
                last_poll = time.perf_counter()
            elif events:
                last_poll = stamp
        labels = set(self.stage_watch.values())
        until = time.perf_counter() + linger
        while not labels <= out.stages.keys() and time.perf_counter() < until:
            stamp, events = self.ino.read(until - time.perf_counter())
            for wd, _mask, name in events:
                label = self.stage_watch.get((wd, name))
                if label is not None:
                    out.stages.setdefault(label, []).append(stamp)
        return out

    def close(self) -> None:
        self.ino.close()


# --- saving a file the way editors do ------------------------------------------------------
def save(style: str, full: Path, data: bytes, outside: Path) -> None:
    """One save of ``data`` to ``full`` in the given style."""
    if style == "in-place":
        with open(full, "wb") as handle:
            handle.write(data)
        return
    where = full.parent if style == "temp+rename in dir" else outside
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{full.name}.", suffix=".tmp")
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, full)


# --- processes ----------------------------------------------------------------------------
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def become_subreaper() -> None:
    """Orphans of what this benchmark starts (git-annex's ssh ControlPersist masters, which
    detach) are re-parented here, so they can be found and stopped by PID."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)


def stop_strays() -> int:
    """SIGKILL every process still running below this one (all of them started by this
    benchmark, directly or not), by PID, and reap the ones re-parented here."""
    strays = descendants(os.getpid())
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in strays:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return len(strays)


def tree_cpu_ticks() -> int:
    """CPU ticks of this process and everything below it (live ones, and reaped ones
    through their parents' cutime/cstime)."""
    total = 0
    for pid in [os.getpid(), *descendants(os.getpid())]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(f"/proc/{pid}/stat").read_text()
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(x) for x in fields[11:15])
    return total


class Load:
    """Share of all CPU time used by processes outside this benchmark's tree since start."""

    def __init__(self) -> None:
        self.start = self._stat()
        self.own = tree_cpu_ticks()

    @staticmethod
    def _stat() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]

    def own_seconds(self) -> float:
        """CPU time used by this benchmark's whole process tree since start."""
        return (tree_cpu_ticks() - self.own) / CLK_TCK

    def others(self) -> float:
        total, idle = self._stat()
        d_total, d_busy = total - self.start[0], (total - idle) - (self.start[0] - self.start[1])
        own = tree_cpu_ticks() - self.own
        return max(0.0, 100.0 * (d_busy - own) / d_total) if d_total else 0.0


class AnnexAssistant:
    """``git annex assistant --foreground`` on one repository, stopped by PID."""

    def __init__(self, repo: Path, log_dir: Path) -> None:
        self.repo = repo
        self.log = log_dir / f"annex-{repo.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["git", "annex", "assistant", "--foreground"],
                cwd=self.repo,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (git passes it on to git-annex), then SIGKILL whatever is left below it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        below = descendants(proc.pid)
        terminate(proc, patience=15)
        # Only those still below this benchmark (orphans are re-parented here): a PID that
        # ended meanwhile may already belong to someone else.
        for pid in set(below) & set(descendants(os.getpid())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- a cluster of nodes ---------------------------------------------------------------------
@dataclass
class Node:
    """One node: its repository, the sshd in front of it, and its assistant."""

    name: str
    repo: Path
    server: SSHServer
    runner: Daemon | AnnexAssistant | None = None

    @property
    def notes(self) -> Path:
        return self.repo / "notes"

    def burst(self, run: int) -> Path:
        """The directory burst ``run`` writes into: it exists (holding only a README) from
        the seed commit on, so every burst starts from the same, nearly empty directory."""
        return self.repo / f"burst{run}"


class Cluster:
    """Nodes with their own sshd each: A has every peer as a remote, and each peer has A
    (unless ``back_links`` is off)."""

    def __init__(
        self, root: Path, tool: str, peers: int, back_links: bool = True, bursts: int = 0
    ) -> None:
        self.root = root
        self.tool = tool
        self.bursts = bursts
        self.peer_names = ["B"] if peers == 1 else [f"P{i}" for i in range(1, peers + 1)]
        self.back_links = back_links
        self.nodes: dict[str, Node] = {}
        self.outside = root / "A-outside"  # temp files written outside A's tree
        self.ssh_config: Path | None = None

    @property
    def a(self) -> Node:
        return self.nodes["A"]

    @property
    def peers(self) -> list[Node]:
        return [self.nodes[n] for n in self.peer_names]

    def setup(self) -> None:
        key = keygen(self.root / "client_key", "bench-client")
        session_path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
        for name in ["A", *self.peer_names]:
            server_root = self.root / f"sshd-{name}"
            server_root.mkdir()
            server = SSHServer(server_root, key, {"PATH": session_path}).start()
            self.nodes[name] = Node(name, self.root / name, server)
        home = self.root / "client-home"
        self.ssh_config = client_home(home, key, [n.server for n in self.nodes.values()])
        os.environ["HOME"] = str(home)  # asyncssh reads ~/.ssh from $HOME
        os.environ.pop("SSH_AUTH_SOCK", None)
        self.outside.mkdir()
        self._seed(self.a.repo)
        for peer in self.peers:
            git(self.root, "clone", "-q", str(self.a.repo), str(peer.repo))
            git(peer.repo, "remote", "remove", "origin")
        for node in self.nodes.values():
            self._init_node(node)
        for peer in self.peers:
            git(self.a.repo, "remote", "add", peer.name, peer.server.url(peer.repo))
            if self.back_links:
                git(peer.repo, "remote", "add", "A", self.a.server.url(self.a.repo))
        if self.tool == "git-annex":
            # Learn each remote's annex UUID before the assistants start.
            for node in self.nodes.values():
                git(node.repo, "annex", "sync", "--no-content", "--quiet")

    def _seed(self, repo: Path) -> None:
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "gc.auto", "0")
        git(repo, "config", "maintenance.auto", "false")
        if self.tool == "git-annex":
            self._annex_config(repo, "nodeA")
        (repo / "notes").mkdir()
        for i in range(EDIT_FILES):
            (repo / "notes" / f"n{i:02d}.txt").write_text(f"seed {i}\n")
        for run in range(self.bursts):
            (repo / f"burst{run}").mkdir()
            (repo / f"burst{run}" / "README").write_text(f"burst {run} lands here\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "seed")

    def _annex_config(self, repo: Path, name: str) -> None:
        git(repo, "annex", "init", "--quiet", name)
        git(repo, "config", "annex.largefiles", "nothing")  # every file is committed to git
        git(repo, "config", "annex.autocommit", "true")
        assert self.ssh_config is not None
        # OpenSSH reads the passwd home, not $HOME: point git-annex's ssh and git's at the config.
        git(repo, "config", "annex.ssh-options", f"-F {self.ssh_config}")
        git(repo, "config", "core.sshCommand", f"ssh -F {self.ssh_config}")

    def _init_node(self, node: Node) -> None:
        git(node.repo, "config", "gc.auto", "0")
        git(node.repo, "config", "maintenance.auto", "false")
        if self.tool == "annexsync":
            command = [sys.executable, "-m", "assistant", "-C", str(node.repo), "init"]
            proc = subprocess.run(
                [*command, "--name", f"node{node.name}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"annexsync init failed: {proc.stderr}")
        elif node.name != "A":
            self._annex_config(node.repo, f"node{node.name}")

    def start(self) -> None:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        for node in self.nodes.values():
            if self.tool == "annexsync":
                log_dir = logs / node.name
                log_dir.mkdir()
                node.runner = Daemon(node.repo, log_dir)
                node.runner.start()
            else:
                node.runner = AnnexAssistant(node.repo, logs)
                node.runner.start()

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.runner is not None:
                with contextlib.suppress(Exception):
                    node.runner.stop()
        for node in self.nodes.values():
            node.server.stop()
        stop_strays()

    def head(self, node: Node) -> str:
        """The commit the node's branch points at."""
        return git(node.repo, "rev-parse", "HEAD").strip()

    def commits(self, node: Node, since: str) -> tuple[int, int]:
        """Commits (and merge commits among them) on node's branch since ``since``."""
        total = git(node.repo, "rev-list", "--count", f"{since}..HEAD").strip()
        merges = git(node.repo, "rev-list", "--merges", "--count", f"{since}..HEAD").strip()
        return int(total), int(merges)

    def merge_sources(self, node: Node) -> dict[str, int]:
        """How often the node's assistant merged each incoming ref (from its log)."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (node.repo / ".git" / "annexsync" / "daemon.log").read_text().splitlines():
                _, found, rest = line.partition(" merged ")
                if found:
                    for ref in rest.split(" (", 1)[0].split(", "):
                        counts[ref] = counts.get(ref, 0) + 1
        return counts

    def diagnose(self) -> str:
        """The tail of every assistant's log, for an error message."""
        out = []
        for node in self.nodes.values():
            runner = node.runner
            tail = ""
            if isinstance(runner, Daemon):
                tail = runner.stderr_tail(8)
                log = node.repo / ".git" / "annexsync" / "daemon.log"
                with contextlib.suppress(OSError):
                    tail += "\n" + "\n".join(log.read_text().splitlines()[-8:])
            elif isinstance(runner, AnnexAssistant):
                tail = runner.tail(8)
            out.append(f"--- {node.name}: {tail}")
        return "\n".join(out)


# --- measurements -----------------------------------------------------------------------------
@dataclass
class EditResult:
    """The saves of one style in one scenario, and what they cost."""

    tool: str
    scenario: str
    style: str
    latencies: list[float]  # to the last peer, seconds
    first: list[float]  # to the first peer (fan-out only differs)
    missed: int
    commits: int
    merges: int
    polled: int
    load: float
    cpu: float  # CPU seconds per save, every process of the benchmark's tree
    stages: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def row(self) -> list[object]:
        done = len(self.latencies)
        return [
            self.tool,
            self.scenario,
            self.style,
            done,
            ms(percentile(self.latencies, 50)) if done else "-",
            ms(percentile(self.latencies, 90)) if done else "-",
            ms(max(self.latencies)) if done else "-",
            f"{self.commits / max(1, done + self.missed):.2f}",
            self.missed,
            ms(self.cpu),
            f"{self.load:.0f}",
        ]


@dataclass
class BurstResult:
    """One burst of new files: how long writing took and when all were on the peer."""

    tool: str
    files: int
    writing: float
    all_in: float | None  # from the first write to the last file on the peer
    arrived: int
    commits: int
    load: float
    timeline: str = ""


REF_STAGES = ("A commit", "commit reached B", "B branch moved")
STAGES = ("A commit", "commit reached B", "file on B", "B branch moved")


def watch_stages(cluster: Cluster, detector: Detector) -> None:
    """Ref moves worth stamping in the two-node scenario: A's branch; the first ref on B that
    takes A's commit, whichever moves first of the one A pushes (annexsync:
    refs/remotes/nodeA/synced/main, git-annex: synced/main) and the remote-tracking ref B
    fetches into (refs/remotes/A/main); B's branch."""
    a, b = cluster.a, cluster.peers[0]
    refs = b.repo / ".git" / "refs"
    detector.watch_stage(a.repo / ".git" / "refs" / "heads", "main", "A commit")
    if cluster.tool == "annexsync":
        arrivals = [refs / "remotes" / "nodeA" / "synced", refs / "remotes" / "A"]
    else:
        arrivals = [refs / "heads" / "synced", refs / "remotes" / "A"]
    for directory in arrivals:
        if directory.is_dir():
            detector.watch_stage(directory, "main", "commit reached B")
    detector.watch_stage(refs / "heads", "main", "B branch moved")


def warm_up(cluster: Cluster, detector: Detector, timeout: float) -> None:
    """A few saves in every style until each reaches every peer: connections are open,
    first-use costs are paid. Raises if nothing arrives."""
    for peer in cluster.peers:
        detector.watch_dir(peer.notes)
    rng = random.Random(7)
    for round_ in range(2):
        for style in STYLES:
            if cluster.tool == "git-annex" and style == ANNEX_INSIDE:
                continue
            name = f"n{rng.randrange(EDIT_FILES):02d}.txt"
            data = f"warm-up {round_} {style} {rng.getrandbits(64):016x}\n".encode()
            targets = [Target(p.name, p.notes / name, data) for p in cluster.peers]
            detector.ino.drain()
            save(style, cluster.a.notes / name, data, cluster.outside)
            got = detector.wait(targets, timeout)
            if len(got.times) < len(targets):
                raise RuntimeError(
                    f"warm-up save ({style}) did not reach every peer within {timeout:g}s\n"
                    + cluster.diagnose()
                )
            time.sleep(0.2)


def measure_edits(
    cluster: Cluster,
    detector: Detector,
    scenario: str,
    styles: Sequence[str],
    count: int,
    gap: float,
    timeout: float,
    give_up_after: int,
    seed: int,
) -> list[EditResult]:
    """``count`` saves per style on A, one at a time, the styles taking turns (so each sees
    the same history length): each save waits until every peer has it, then ``gap``."""
    rng = random.Random(seed)
    repo = pygit2.Repository(str(cluster.a.repo))
    checkpoint = repo.head.target
    load = Load()
    results = {
        style: EditResult(cluster.tool, scenario, style, [], [], 0, 0, 0, 0, 0.0, 0.0)
        for style in styles
    }
    for result in results.values():
        result.stages = {label: [] for label in STAGES}
    order: list[float] = []  # every arrival in save order, for the drift over the run
    streak = 0
    previous: EditResult | None = None

    def count_commits(into: EditResult | None) -> None:
        """Commits on A since the last look, credited to the save before."""
        nonlocal checkpoint
        head = repo.head.target
        if into is not None and head != checkpoint:
            walker = repo.walk(head)
            walker.hide(checkpoint)
            for commit in walker:
                into.commits += 1
                into.merges += int(len(commit.parents) > 1)
        checkpoint = head

    total = count * len(styles)
    for i in range(total):
        style = styles[i % len(styles)]
        result = results[style]
        name = f"n{i % EDIT_FILES:02d}.txt"
        data = f"{style} {i} {rng.getrandbits(64):016x}\n".encode()
        targets = [Target(p.name, p.notes / name, data) for p in cluster.peers]
        count_commits(previous)
        previous = result
        detector.ino.drain()
        save(style, cluster.a.notes / name, data, cluster.outside)
        t0 = time.perf_counter()
        got = detector.wait(targets, timeout, linger=0.5)
        result.polled += got.polled
        if len(got.times) < len(targets):
            result.missed += 1
            streak += 1
            if streak >= give_up_after:
                result.note = (
                    f"gave up after {streak} saves in a row did not arrive within "
                    f"{timeout:g}s; {total - i - 1} saves not made"
                )
                break
            continue
        streak = 0
        result.latencies.append(max(got.times.values()) - t0)
        result.first.append(min(got.times.values()) - t0)
        order.append(result.latencies[-1])
        if len(cluster.peers) == 1:
            for label, at in got.chain(REF_STAGES, t0).items():
                result.stages[label].append(at - t0)
            result.stages["file on B"].append(result.latencies[-1])
        time.sleep(gap)
    time.sleep(0.5)
    count_commits(previous)
    saves = sum(len(r.latencies) + r.missed for r in results.values())
    cpu = load.own_seconds() / max(1, saves)
    others = load.others()
    for result in results.values():
        result.cpu = cpu
        result.load = others
    if len(order) >= 30:
        third = len(order) // 3
        early, late = percentile(order[:third], 50), percentile(order[-third:], 50)
        turns = ", styles in turn" if len(styles) > 1 else ""
        print(
            f"  p50 over the run ({len(order)} saves{turns}): first third "
            f"{ms(early)} ms, last third {ms(late)} ms",
            flush=True,
        )
    return list(results.values())


def measure_burst(
    cluster: Cluster, detector: Detector, run: int, files: int, timeout: float
) -> BurstResult:
    """``files`` new files written into A's burst<run>/ as fast as one loop can; the time
    until all are on the peer with the right content."""
    peer = cluster.peers[0]
    detector.watch_dir(peer.burst(run))
    base = cluster.head(cluster.a)
    rng = random.Random(1000 + run)
    names = [f"r{run}-{j:04d}.txt" for j in range(files)]
    blobs = [f"burst {run} {j} {rng.getrandbits(64):016x}\n".encode() for j in range(files)]
    targets = [Target(n, peer.burst(run) / n, d) for n, d in zip(names, blobs, strict=True)]
    marks: dict[str, float] = {}

    def write_all() -> None:
        marks["first"] = time.perf_counter()
        for name, data in zip(names, blobs, strict=True):
            with open(cluster.a.burst(run) / name, "wb") as handle:
                handle.write(data)
        marks["done"] = time.perf_counter()

    # The writer has a thread of its own, so that events are stamped as they come.
    writer = threading.Thread(target=write_all)
    load = Load()
    detector.ino.drain()
    writer.start()
    got = detector.wait(targets, timeout, linger=0.5)
    writer.join()
    t_first = marks["first"]
    writing = marks["done"] - t_first
    all_in = max(got.times.values()) - t_first if len(got.times) == files else None
    time.sleep(0.5)
    commits, _ = cluster.commits(cluster.a, base)
    marks = [
        f"{label} at {', '.join(ms(t - t_first) for t in got.stages.get(label, []))}"
        for label in REF_STAGES
        if got.stages.get(label)
    ]
    if got.times:
        marks.insert(2, f"first file on B at {ms(min(got.times.values()) - t_first)}")
    timeline = "ms from the first write: " + "; ".join(marks)
    return BurstResult(
        cluster.tool, files, writing, all_in, len(got.times), commits, load.others(), timeline
    )


# --- scenarios --------------------------------------------------------------------------------
@contextlib.contextmanager
def cluster_of(
    tool: str, peers: int, back_links: bool = True, bursts: int = 0
) -> Iterator[Cluster]:
    with temp_dir(f"e2e-{tool}") as root:
        cluster = Cluster(root, tool, peers, back_links, bursts)
        try:
            cluster.setup()
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def run_pair(tool: str, args: argparse.Namespace) -> tuple[list[EditResult], list[BurstResult]]:
    """Two nodes: every edit style (git-annex: the styles it survives, then the in-tree
    rename last), then the bursts."""
    edits: list[EditResult] = []
    bursts: list[BurstResult] = []
    timeout = args.timeout if tool == "annexsync" else args.annex_timeout
    print(f"\n== {tool}: A - B over ssh ==", flush=True)
    runs = args.burst_runs if tool == "annexsync" else args.annex_burst_runs
    with cluster_of(tool, 1, bursts=runs) as cluster:
        detector = Detector()
        try:
            warm_up(cluster, detector, args.warmup_timeout)
            watch_stages(cluster, detector)
            styles = [s for s in STYLES if tool == "annexsync" or s != ANNEX_INSIDE]
            count = args.edits if tool == "annexsync" else args.annex_edits
            for result in measure_edits(
                cluster, detector, "A-B", styles, count, args.gap / 1000, timeout, 3, 1
            ):
                edits.append(result)
                report_edit(result)
            files = args.burst if tool == "annexsync" else args.annex_burst
            for run in range(runs):
                result = measure_burst(cluster, detector, run, files, args.burst_timeout)
                bursts.append(result)
                report_burst(result)
                time.sleep(1.0)
            if tool == "annexsync":
                sources = cluster.merge_sources(cluster.peers[0])
                print(
                    "B merged A's commits from: "
                    + ", ".join(f"{ref} {n}x" for ref, n in sorted(sources.items())),
                    flush=True,
                )
            if tool == "git-annex" and args.annex_inside:
                # Last: git-annex is said to stop committing for good after this.
                (result,) = measure_edits(
                    cluster, detector, "A-B", [ANNEX_INSIDE], args.annex_inside, 0.2, 10.0, 2, 9
                )
                edits.append(result)
                report_edit(result)
        finally:
            detector.close()
    return edits, bursts


def run_star(args: argparse.Namespace) -> list[EditResult]:
    """A with ``args.peers`` peers: the time until the last one has each edit."""
    results: list[EditResult] = []
    links = "A <-> each peer" if not args.star_oneway else "A -> each peer"
    print(f"\n== annexsync: star, A + {args.peers} peers ({links}) ==", flush=True)
    with cluster_of("annexsync", args.peers, back_links=not args.star_oneway) as cluster:
        detector = Detector()
        try:
            warm_up(cluster, detector, args.warmup_timeout)
            for result in measure_edits(
                cluster,
                detector,
                f"A+{args.peers}",
                args.star_styles,
                args.star_edits,
                args.gap / 1000,
                args.timeout,
                3,
                100,
            ):
                results.append(result)
                report_edit(result)
        finally:
            detector.close()
    return results


# --- reporting --------------------------------------------------------------------------------
EDIT_HEADERS = [
    "tool",
    "nodes",
    "save",
    "n",
    "p50 ms",
    "p90 ms",
    "max ms",
    "commits/edit",
    "missed",
    "CPU ms/save",
    "other load %",
]


def report_edit(result: EditResult) -> None:
    notes = [f"first peer p50 {ms(percentile(result.first, 50))} ms"] if result.first else []
    if result.polled:
        notes.append(f"{result.polled} found by the fallback poll")
    if result.merges:
        notes.append(f"{result.merges} merge commits on A")
    if result.note:
        notes.append(result.note)
    print(table(EDIT_HEADERS, [result.row()]), flush=True)
    if notes:
        print("  " + "; ".join(notes), flush=True)


BURST_HEADERS = ["tool", "files", "writing ms", "first write → all on B ms", "arrived", "commits"]


def burst_row(result: BurstResult) -> list[object]:
    return [
        result.tool,
        result.files,
        ms(result.writing),
        ms(result.all_in) if result.all_in is not None else "not all within timeout",
        result.arrived,
        result.commits,
    ]


def report_burst(result: BurstResult) -> None:
    print(table(BURST_HEADERS, [burst_row(result)]), flush=True)
    print(f"  {result.timeline}; other load {result.load:.0f} %", flush=True)


def stage_table(results: list[EditResult]) -> str:
    """Median time from the save to each stage, two-node runs only."""
    rows = []
    for r in results:
        if not r.latencies or r.scenario != "A-B":
            continue
        cells: list[object] = [r.tool, r.style]
        for label in STAGES:
            values = r.stages.get(label, [])
            cells.append(ms(percentile(values, 50)) if values else "-")
        rows.append(cells)
    headers = ["tool", "save", *(f"{label} p50 ms" for label in STAGES)]
    return table(headers, rows)


def side_by_side(edits: list[EditResult]) -> str:
    """annexsync and git-annex per save style in the two-node scenario."""
    rows = []
    for style in STYLES:
        ours = next((r for r in edits if r.tool == "annexsync" and r.style == style), None)
        theirs = next(
            (r for r in edits if r.tool == "git-annex" and r.style == style and r.latencies),
            None,
        )
        missing = next((r for r in edits if r.tool == "git-annex" and r.style == style), None)

        def cells(r: EditResult | None, other: EditResult | None = None) -> list[object]:
            if r is None:
                if other is not None:
                    return ["none arrived (stopped)", "-", "-"]
                return ["not run", "-", "-"]
            stopped = f" (then stopped; {len(r.latencies)} arrived)" if r.note else ""
            return [
                ms(percentile(r.latencies, 50)) + stopped,
                ms(percentile(r.latencies, 90)),
                f"{r.commits / max(1, len(r.latencies) + r.missed):.2f}",
            ]

        ratio = "-"
        if ours and theirs and ours.latencies and not theirs.note:
            ratio = f"{percentile(theirs.latencies, 50) / percentile(ours.latencies, 50):.1f}x"
        rows.append([style, *cells(ours), *cells(theirs, missing), ratio])
    headers = [
        "save (A - B)",
        "annexsync p50 ms",
        "p90 ms",
        "commits/edit",
        "git-annex p50 ms",
        "p90 ms",
        "commits/edit",
        "git-annex p50 / annexsync p50",
    ]
    return table(headers, rows)


# --- main -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--edits", type=int, help="annexsync saves per style (100)")
    parser.add_argument("--annex-edits", type=int, help="git-annex saves per style (100)")
    parser.add_argument("--star-edits", type=int, help="saves per style in the star (100)")
    parser.add_argument("--gap", type=float, default=100.0, help="ms after each arrival (100)")
    parser.add_argument("--peers", type=int, default=8, help="peers in the star (8)")
    parser.add_argument(
        "--star-oneway", action="store_true", help="star peers have no remote back to A"
    )
    parser.add_argument("--burst", type=int, default=1000, help="annexsync burst files (1000)")
    parser.add_argument("--burst-runs", type=int, help="annexsync bursts (3)")
    parser.add_argument("--annex-burst", type=int, default=1000, help="git-annex burst (1000)")
    parser.add_argument("--annex-burst-runs", type=int, help="git-annex bursts (1)")
    parser.add_argument(
        "--annex-inside",
        type=int,
        help="git-annex temp+rename-in-dir saves, run last (10; 0 skips)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="annexsync s per save (10)")
    parser.add_argument("--annex-timeout", type=float, default=15.0, help="git-annex s (15)")
    parser.add_argument("--burst-timeout", type=float, default=60.0, help="s per burst (60)")
    parser.add_argument("--warmup-timeout", type=float, default=120.0, help="s (120)")
    parser.add_argument("--only", choices=["annexsync", "git-annex"], help="measure one tool only")
    parser.add_argument(
        "--scenarios",
        default="pair,star,annex",
        help="comma-separated subset of pair (annexsync A - B), star, annex (git-annex A - B)",
    )
    parser.add_argument(
        "--star-styles",
        default="temp+rename in dir",
        help=f"comma-separated save styles for the star, or 'all' (of: {', '.join(STYLES)})",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "edits": 15 if quick else 100,
        "annex_edits": 10 if quick else 100,
        "star_edits": 10 if quick else 100,
        "burst_runs": 1 if quick else 3,
        "annex_burst_runs": 1,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick and args.annex_burst == 1000:
        args.annex_burst = 200
    if args.annex_inside is None:
        args.annex_inside = 3 if quick else 10
    styles = STYLES if args.star_styles == "all" else args.star_styles.split(",")
    unknown = set(styles) - set(STYLES)
    if unknown:
        parser.error(f"unknown save style(s) for --star-styles: {', '.join(sorted(unknown))}")
    args.star_styles = list(styles)
    args.scenarios = set(args.scenarios.split(","))
    if args.scenarios - {"pair", "star", "annex"}:
        parser.error("--scenarios takes pair, star, annex")
    if args.only == "annexsync":
        args.scenarios.discard("annex")
    elif args.only == "git-annex":
        args.scenarios &= {"annex"}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = sshd_unavailable()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    want_annex = "annex" in args.scenarios
    if want_annex and shutil.which("git-annex") is None:
        print("git-annex is not installed (apt-get install git-annex); measuring annexsync only")
        want_annex = False
    setup_environment()
    become_subreaper()
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "annexsync").exists():
        print(f"note: no annexsync command in {venv_bin}; peers' sessions cannot run it")
    print("end-to-end replication latency over sshd on 127.0.0.1")
    print(code_note())
    if want_annex:
        version = subprocess.run(["git-annex", "version", "--raw"], capture_output=True, text=True)
        print(f"git-annex {version.stdout.strip()}; {git(Path.cwd(), 'version').strip()}")
    print(f"machine: {machine_note()}", flush=True)
    started = time.monotonic()
    edits: list[EditResult] = []
    bursts: list[BurstResult] = []
    star: list[EditResult] = []
    try:
        if "pair" in args.scenarios:
            e, b = run_pair("annexsync", args)
            edits += e
            bursts += b
        if "star" in args.scenarios:
            star = run_star(args)
        if want_annex:
            e, b = run_pair("git-annex", args)
            edits += e
            bursts += b
    finally:
        stop_strays()
    print(f"\nmachine at the end: {machine_note()}; took {time.monotonic() - started:.0f}s")
    print("\nLatency, save on A → that content in B's working tree (A - B):")
    print(side_by_side(edits))
    print("\nEvery edit row:")
    print(table(EDIT_HEADERS, [r.row() for r in edits + star]))
    if star:
        print(f"\nFan-out, save on A → the last of {args.peers} peers has it:")
        rows = [
            [
                r.style,
                len(r.latencies),
                ms(percentile(r.latencies, 50)),
                ms(percentile(r.latencies, 90)),
                ms(max(r.latencies)) if r.latencies else "-",
                ms(percentile(r.first, 50)),
            ]
            for r in star
        ]
        print(
            table(
                ["save", "n", "last p50 ms", "last p90 ms", "last max ms", "first p50 ms"],
                rows,
            )
        )
    print("\nBursts (new files into a directory of A's that holds one file):")
    print(table(BURST_HEADERS, [burst_row(b) for b in bursts]))
    print("\nWhere the time goes (A - B, median time from the save to each event):")
    print(stage_table(edits))
    return 0


if __name__ == "__main__":
    sys.exit(main())

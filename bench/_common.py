"""Shared helpers for the benchmarks: test repositories, a real assistant process, ref polling,
/proc sampling and result tables. Nothing here asserts anything about performance."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pygit2

from assistant.daemon.control import request, socket_path

CACHE = Path(os.environ.get("ANNEXSYNC_BENCH_CACHE", "/tmp/annexsync-bench"))
BRANCH = "main"
BASE_TAG = "bench-base"

# The large repository: 100,000 files in 40 x 40 = 1,600 leaf directories (62 or 63 files each).
BIG_FILES = 100_000
BIG_TOP = 40
BIG_SUB = 40
BIG_LAYOUT = f"v1 files={BIG_FILES} dirs={BIG_TOP}x{BIG_SUB}"


# --- environment ---------------------------------------------------------------------------
def _gitconfig() -> Path:
    """A private global git config, so no benchmark depends on the user's own settings."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "gitconfig"
    text = (
        "[user]\n\tname = Bench User\n\temail = bench@example.com\n"
        "[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def setup_environment() -> None:
    """Isolate git configuration and turn SIGTERM/SIGHUP into a clean exit (so every
    ``finally`` that stops a daemon or removes a temp directory runs)."""
    os.environ["GIT_CONFIG_GLOBAL"] = str(_gitconfig())
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ.pop("GIT_DIR", None)
    os.environ.pop("GIT_WORK_TREE", None)

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


class HostCPU:
    """How busy the CPUs were between construction and ``others()`` with work other than this
    benchmark and the daemons it watches (everyone else's processes), from /proc/stat: the
    context a timing was taken in. 100 % means every CPU was taken by someone else."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.start = self._read()
        self.own = self._own()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    def _own(self) -> float:
        total = time.process_time()
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds_precise(pid)
        return total

    def others(self) -> float:
        """Percent of all CPU time spent on other people's work."""
        total, idle = self._read()
        d_total, d_idle = total - self.start[0], idle - self.start[1]
        if not d_total:
            return 0.0
        own_ticks = (self._own() - self.own) * CLK_TCK
        return max(0.0, 100.0 * (d_total - d_idle - own_ticks) / d_total)


def speed_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes (best of 3): rises when the CPU is shared
    with work this guest cannot see (a busy hypervisor) as well as with local load."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def machine_note() -> str:
    """CPU count, load average and a speed probe, printed with every result so noisy runs
    can be spotted."""
    one, five, _ = os.getloadavg()
    return (
        f"cpus={os.cpu_count()} load(1m)={one:.2f} load(5m)={five:.2f} "
        f"speed probe={speed_probe():.1f} ms"
    )


def code_note() -> str:
    """Which annexsync is measured: where the package is imported from, and the commit of
    its checkout with the number of uncommitted files in it."""
    import assistant

    package = Path(assistant.__file__).resolve().parent
    note = f"annexsync from {package}"
    with contextlib.suppress(RuntimeError, OSError):
        head = git(package.parent, "rev-parse", "--short", "HEAD").strip()
        dirty = git(package.parent, "status", "--porcelain", "--", package.name).splitlines()
        note += f" (commit {head}, {len(dirty)} uncommitted file(s) in {package.name}/)"
    return note


def git(repo: Path, *args: str, capture: bool = True) -> str:
    """Run real git in ``repo`` and return its stdout; raise with stderr on failure."""
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=capture,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout or ""


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory under /tmp, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"annexsync-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- repositories ----------------------------------------------------------------------
def _content(rng: random.Random, label: str) -> bytes:
    words = " ".join(f"{rng.getrandbits(32):08x}" for _ in range(rng.randint(4, 40)))
    return f"{label}\n{words}\n".encode()


def _init_repo(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", BRANCH)
    git(path, "config", "gc.auto", "0")
    git(path, "config", "maintenance.auto", "false")


def _settle_index(repo: Path) -> None:
    """Refresh the index once the files' timestamps are in the past, so no entry stays
    'racily clean' (which would make every status rehash it)."""
    time.sleep(1.1)
    git(repo, "update-index", "-q", "--really-refresh")


def make_small_repo(path: Path, files: int = 100) -> list[str]:
    """A repository of ``files`` small files in 10 directories, committed; returns the paths."""
    _init_repo(path)
    rng = random.Random(100)
    rels = [f"dir{i % 10:02d}/file{i:04d}.txt" for i in range(files)]
    for rel in rels:
        full = path / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(_content(rng, rel))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    _settle_index(path)
    return rels


def big_repo_paths() -> list[str]:
    """Every file of the large repository, in a fixed order."""
    rels: list[str] = []
    dirs = [f"d{t:02d}/s{s:02d}" for t in range(BIG_TOP) for s in range(BIG_SUB)]
    per_dir, extra = divmod(BIG_FILES, len(dirs))
    for i, d in enumerate(dirs):
        count = per_dir + (1 if i < extra else 0)
        rels.extend(f"{d}/f{j:03d}.txt" for j in range(count))
    return rels


def _build_big_repo(path: Path) -> None:
    started = time.monotonic()
    print(f"building the {BIG_FILES:,}-file repository in {path} (once; cached) ...", flush=True)
    _init_repo(path)
    rng = random.Random(100_000)
    for rel in big_repo_paths():
        full = path / rel
        if not full.parent.is_dir():
            full.parent.mkdir(parents=True)
        full.write_bytes(_content(rng, rel))
    print(f"  files written in {time.monotonic() - started:.1f}s; git add -A ...", flush=True)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial: 100,000 files")
    print(f"  committed at {time.monotonic() - started:.1f}s; packing ...", flush=True)
    git(path, "gc", "-q", "--prune=now")
    git(path, "tag", BASE_TAG)
    _settle_index(path)
    print(f"  built in {time.monotonic() - started:.1f}s", flush=True)


@contextlib.contextmanager
def big_repo() -> Iterator[Path]:
    """The cached 100,000-file repository, reset to its initial commit and clean; held under
    an exclusive lock so two benchmark runs never share it at the same time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(CACHE / "big.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another benchmark run to release the cached repository ...")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        path = CACHE / "repo-100k"
        marker = CACHE / "repo-100k.built"
        if not marker.exists() or marker.read_text() != BIG_LAYOUT or not path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            building = CACHE / "repo-100k.building"
            shutil.rmtree(building, ignore_errors=True)
            _build_big_repo(building)
            building.rename(path)
            marker.write_text(BIG_LAYOUT)
        reset_big_repo(path)
        yield path
    finally:
        os.close(lock_fd)


def reset_big_repo(path: Path) -> None:
    """Back to the initial commit, with a clean tree and an up-to-date index."""
    state = path / ".git" / "annexsync"
    from assistant.daemon.lifecycle import running_pid

    if state.is_dir() and running_pid(state) is not None:
        raise SystemExit(f"an assistant is running on {path}; stop it first")
    git(path, "checkout", "-q", "-f", BRANCH)
    git(path, "reset", "-q", "--hard", BASE_TAG)
    git(path, "clean", "-q", "-fdx")
    # Drop what earlier runs committed, so the object store does not grow run after run.
    git(path, "reflog", "expire", "--expire=now", "--all")
    loose = sum(1 for _ in (path / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))
    if loose > 20_000:
        git(path, "prune", "--expire=now")
    if git(path, "status", "--porcelain", "--untracked-files=all").strip():
        raise SystemExit(f"could not reset {path} to a clean state")


# --- the branch ref ----------------------------------------------------------------------
class RefReader:
    """Reads the checked-out branch's tip straight from .git (loose ref, else packed-refs)."""

    def __init__(self, repo: Path, branch: str = BRANCH) -> None:
        self.loose = repo / ".git" / "refs" / "heads" / branch
        self.packed = repo / ".git" / "packed-refs"
        self.name = f"refs/heads/{branch}".encode()

    def read(self) -> bytes:
        try:
            with open(self.loose, "rb") as handle:
                data = handle.read().strip()
            if len(data) >= 40:
                return data
        except FileNotFoundError:
            pass
        try:
            for line in self.packed.read_bytes().splitlines():
                parts = line.split(b" ")
                if len(parts) == 2 and parts[1] == self.name:
                    return parts[0]
        except FileNotFoundError:
            pass
        return b""

    def wait_change(
        self,
        old: bytes,
        accept: Callable[[bytes], bool],
        timeout: float,
        interval: float = 0.0002,
    ) -> tuple[float, bytes] | None:
        """Poll every ``interval`` until the ref moves to a commit ``accept`` takes; return the
        monotonic time the accepted value was first read and the value, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.read()
            now = time.monotonic()
            if value and value != old:
                if accept(value):
                    return now, value
                old = value
            if now > deadline:
                return None
            time.sleep(interval)


def blob_at(repo: pygit2.Repository, commit_hex: bytes, path: str) -> bytes | None:
    """The bytes stored at ``path`` in a commit, or None."""
    try:
        commit = repo[commit_hex.decode()]
        entry = commit.peel(pygit2.Tree)[path]
        return repo[entry.id].data
    except (KeyError, ValueError, pygit2.GitError):
        return None


# --- the assistant process ---------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark process dies, so no daemon is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Daemon:
    """``annexsync assistant --foreground`` on a repository, started and stopped by pid."""

    def __init__(self, repo: Path, log_dir: Path) -> None:
        self.repo = repo
        self.log_path = log_dir / "assistant.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock = socket_path(repo / ".git" / "annexsync")
        self.t_spawn = 0.0
        self.t_socket: float | None = None
        self.t_ready: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300.0) -> None:
        """Start it; record when the control socket first answers and when the daemon
        reports ready (startup scan queued). Raise with its stderr if it fails."""
        read_fd, write_fd = os.pipe()
        cmd = self.command(write_fd)
        with open(self.log_path, "wb") as log:
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                preexec_fn=_die_with_parent,
            )
        os.close(write_fd)
        message = b""
        deadline = self.t_spawn + timeout
        try:
            while self.t_ready is None or self.t_socket is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the assistant did not get ready in {timeout:g}s")
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the assistant exited ({self.proc.returncode}): {self.stderr_tail()}"
                    )
                if self.t_socket is None and self.ping():
                    self.t_socket = time.monotonic()
                if self.t_ready is None:
                    ready, _, _ = select.select([read_fd], [], [], 0.001)
                    if ready:
                        chunk = os.read(read_fd, 4096)
                        message += chunk
                        if message.endswith(b"\n") or not chunk:
                            if message.strip() != b"ready":
                                raise RuntimeError(
                                    f"the assistant failed to start: {message!r} "
                                    f"{self.stderr_tail()}"
                                )
                            self.t_ready = time.monotonic()
                else:
                    time.sleep(0.001)
        finally:
            os.close(read_fd)

    def command(self, ready_fd: int) -> list[str]:
        """The command line that runs the assistant in the foreground."""
        return [
            sys.executable,
            "-m",
            "assistant",
            "-C",
            str(self.repo),
            "assistant",
            "--foreground",
            "--ready-fd",
            str(ready_fd),
        ]

    def ping(self) -> bool:
        reply = request(self.sock, {"cmd": "ping"}, timeout=5.0)
        return bool(reply and reply.get("ok"))

    def status(self) -> dict:
        reply = request(self.sock, {"cmd": "status"}, timeout=60.0)
        if not reply or not reply.get("ok"):
            raise RuntimeError(f"status failed: {reply!r}")
        return reply

    def wait_quiet(self, timeout: float = 60.0) -> dict:
        """Until nothing is pending; returns the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["pending_count"] == 0 and not status.get("writing"):
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"still pending after {timeout:g}s: {status['pending'][:5]}")
            time.sleep(0.01)

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by pid, wait; SIGKILL only if it will not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Daemon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- /proc ---------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_precise(pid: int) -> float:
    """Time on CPU of every thread of a process, in seconds, from the scheduler's nanosecond
    counters (/proc/<pid>/task/*/schedstat); threads that already exited are not counted."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and friends from /proc/<pid>/status, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") or key in ("Threads", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0])
    return values


# --- statistics and tables -----------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (markdown pipe syntax, so it can be pasted into the README)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"

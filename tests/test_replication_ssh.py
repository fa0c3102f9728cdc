"""Live replication end to end: three nodes, each its own repository, its own assistant and
its own real OpenSSH sshd on 127.0.0.1, wired in a line A - B - C over ssh:// URLs.

Checks that an edit on any node reaches every other node (through the middle one), that the
flood stops once everyone has it, that concurrent edits of one file converge with both
versions kept, and that a peer whose sshd was down gets what it missed after a restart with
no help (the replicator's retry backoff).

Every wait is a ``wait_until`` with a generous deadline; nothing relies on a fixed sleep.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import Daemon, annexsync, commit_count, git, head_files, wait_until

from assistant.merge import VARIANT_HEX

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

WAIT = 30.0  # seconds; generous, since the suite may share two cores with other runs
# Sessions on every node's sshd find this installation's annexsync (for notify-changes) and git.
PEER_ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
LINE = {"A": ["B"], "B": ["A", "C"], "C": ["B"]}


@dataclass
class Node:
    name: str
    repo: Path
    server: SSHServer  # the sshd through which peers reach this node's repository
    daemon: Daemon

    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.server.port}{self.repo}"

    def head(self) -> str:
        return git(self.repo, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()

    def read(self, name: str) -> bytes | None:
        try:
            return (self.repo / name).read_bytes()
        except OSError:
            return None

    def files(self) -> dict[str, bytes]:
        """The working tree's files (outside .git), path -> content."""
        out: dict[str, bytes] = {}
        for path in sorted(self.repo.rglob("*")):
            rel = path.relative_to(self.repo)
            if rel.parts[0] == ".git" or not path.is_file():
                continue
            out[rel.as_posix()] = path.read_bytes()
        return out

    def diagnose(self) -> str:
        return (
            f"--- node {self.name} HEAD {self.head()[:12]}\n"
            + git(self.repo, "log", "--oneline", "--graph", "--all", "-n", "20", check=False)
            + git(self.repo, "status", "--short", check=False)
            + f"--- assistant stderr (tail)\n{self.daemon.stderr()[-3000:]}"
        )


@pytest.fixture
def cluster(
    sshd_factory: Callable[..., SSHServer],
    ssh_home: ClientHome,
    tmp_path: Path,
    daemon_factory: Callable[[Path], Daemon],
) -> Iterator[dict[str, Node]]:
    """Nodes A, B, C in a line, assistants running; $HOME trusts every node's sshd.

    ``ssh_home`` has already pointed $HOME at the client HOME (before any assistant starts:
    asyncssh reads its keys, config and known_hosts from there)."""
    nodes: dict[str, Node] = {}
    lines = []
    for name in LINE:
        server = sshd_factory(PEER_ENV)
        lines.append(server.known_hosts_line())
        repo = tmp_path / f"node{name}"
        repo.mkdir()
        git(repo, "init", "-q")
        proc = annexsync("-C", str(repo), "init", "--name", f"node{name}")
        assert proc.returncode == 0, proc.stderr
        nodes[name] = Node(name, repo, server, daemon_factory(repo))
    ssh_home.known_hosts.write_text(ssh_home.known_hosts.read_text() + "".join(lines))
    for name, peers in LINE.items():
        for peer in peers:
            git(nodes[name].repo, "remote", "add", peer, nodes[peer].url())
    for node in nodes.values():
        node.daemon.start()
    yield nodes
    for node in nodes.values():
        node.daemon.stop(timeout=15)


def wait_for(
    nodes: dict[str, Node], predicate: Callable[[], object], what: str, timeout: float = WAIT
) -> None:
    """``wait_until`` that, on failure, shows every node's history and assistant log."""
    try:
        wait_until(predicate, timeout=timeout, interval=0.05)
    except AssertionError:
        detail = "\n".join(n.diagnose() for n in nodes.values())
        raise AssertionError(f"{what} within {timeout}s\n{detail}") from None


def has(node: Node, name: str, data: bytes) -> Callable[[], bool]:
    def check() -> bool:
        return node.read(name) == data

    check.__name__ = f"{node.name} has {name}"
    return check


def write(node: Node, name: str, data: bytes) -> None:
    """Save the way most editors do: a temp file renamed into place."""
    tmp = node.repo / f".{name}.tmp~"
    tmp.write_bytes(data)
    tmp.rename(node.repo / name)


def settled(nodes: dict[str, Node]) -> bool:
    """Every HEAD equal and every working tree matching it."""
    heads = {n.head() for n in nodes.values()}
    if len(heads) != 1 or "" in heads:
        return False
    trees = [n.files() for n in nodes.values()]
    committed = head_files(next(iter(nodes.values())).repo)
    return all(t == committed for t in trees)


def quiescent(nodes: dict[str, Node]) -> bool:
    """Settled, and no node has a push or fetch in flight with any peer."""
    return settled(nodes) and all(
        p["state"] == "connected" for n in nodes.values() for p in n.daemon.status()["peers"]
    )


def assert_quiet(nodes: dict[str, Node]) -> None:
    """Once settled, no node keeps committing: heads and commit counts stay put."""
    before = {k: (n.head(), commit_count(n.repo)) for k, n in nodes.items()}
    time.sleep(1.0)  # not for correctness: the window in which a runaway flood would show
    after = {k: (n.head(), commit_count(n.repo)) for k, n in nodes.items()}
    assert before == after, f"still committing: {before} -> {after}"
    for node in nodes.values():
        assert node.daemon.proc is not None and node.daemon.proc.poll() is None, node.name
        assert "Traceback" not in node.daemon.stderr(), node.diagnose()


# --- tests ------------------------------------------------------------------------------------


def test_edits_flow_through_middle_node(cluster: dict[str, Node]) -> None:
    a, b, c = cluster["A"], cluster["B"], cluster["C"]

    write(a, "from-a.txt", b"written on A\n")
    wait_for(cluster, has(c, "from-a.txt", b"written on A\n"), "A's file did not reach C")
    assert b.read("from-a.txt") == b"written on A\n"

    write(c, "from-c.txt", b"written on C\n")
    wait_for(cluster, has(a, "from-c.txt", b"written on C\n"), "C's file did not reach A")

    wait_for(cluster, lambda: settled(cluster), "nodes did not settle on one HEAD")
    assert_quiet(cluster)
    files = head_files(a.repo)
    assert files["from-a.txt"] == b"written on A\n"
    assert files["from-c.txt"] == b"written on C\n"


def test_concurrent_edits_keep_both_versions(cluster: dict[str, Node]) -> None:
    a, b = cluster["A"], cluster["B"]
    write(a, "notes.txt", b"base\n")
    wait_for(cluster, lambda: settled(cluster), "the base did not reach every node")

    version_a, version_b = b"edited on A\n", b"edited on B\n"
    write(a, "notes.txt", version_a)
    write(b, "notes.txt", version_b)

    def converged() -> bool:
        if not settled(cluster):
            return False
        names = [p for p in head_files(a.repo) if p.startswith("notes.")]
        return len(names) == 2

    wait_for(cluster, converged, "the concurrent edits did not converge")
    assert_quiet(cluster)
    files = head_files(a.repo)
    variants = [p for p in files if p.startswith("notes.variant-")]
    assert len(variants) == 1, sorted(files)
    variant = variants[0]
    tag = variant.removeprefix("notes.variant-").removesuffix(".txt")
    assert variant.endswith(".txt") and len(tag) == VARIANT_HEX, variant
    assert all(ch in "0123456789abcdef" for ch in tag), variant
    assert {files["notes.txt"], files[variant]} == {version_a, version_b}
    for node in cluster.values():
        tree = node.files()
        assert tree == files, node.name
        for data in tree.values():
            assert b"<<<<<<<" not in data and b">>>>>>>" not in data, node.name


def test_peer_down_then_restarted_catches_up(cluster: dict[str, Node]) -> None:
    """B must push to C here: C follows no change stream from B (a peer that cannot, like
    one whose annexsync is too old), so only B's retries can bring it what it missed."""
    a, b, c = cluster["A"], cluster["B"], cluster["C"]
    c.daemon.stop(timeout=15)
    git(c.repo, "config", "remote.B.annexsync-notify", "false")
    git(c.repo, "config", "annexsync.poll", "0")
    c.daemon.start()
    write(a, "first.txt", b"one\n")
    wait_for(cluster, lambda: settled(cluster), "the first file did not reach every node")
    # Stop C only once nothing is in flight: killing sshd in the middle of a push leaves a
    # stale ref lock in C's repository, which blocks every later push (see the report).
    wait_for(cluster, lambda: quiescent(cluster), "pushes still in flight")
    assert_quiet(cluster)
    wait_for(cluster, lambda: quiescent(cluster), "pushes still in flight")

    port = c.server.port
    c.server.stop()  # C's repository is now unreachable; its assistant still runs
    write(a, "while-down.txt", b"made while C was down\n")
    wait_for(cluster, has(b, "while-down.txt", b"made while C was down\n"), "B missed the edit")
    # B's push to C has failed at least once (connection refused) before C comes back.
    wait_for(
        cluster,
        lambda: any(p["remote"] == "C" and p["failures"] > 0 for p in b.daemon.status()["peers"]),
        "B never recorded a failed push to C",
    )
    assert c.read("while-down.txt") is None

    c.server.start()
    assert c.server.port == port
    wait_for(
        cluster,
        has(c, "while-down.txt", b"made while C was down\n"),
        "C did not catch up after its sshd came back",
    )
    wait_for(cluster, lambda: settled(cluster), "nodes did not settle after the restart")
    wait_for(
        cluster,
        lambda: all(p["failures"] == 0 for p in b.daemon.status()["peers"]),
        "B still counts failures after C caught up",
    )
    assert_quiet(cluster)


def test_a_node_nobody_can_push_to_gets_changes_through_the_change_stream(
    cluster: dict[str, Node], tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    """D has no sshd (behind NAT, say) and no node pushes to it; polling and the periodic full
    sync are off, so only B's notify-changes stream can bring it A's edits."""
    a, b = cluster["A"], cluster["B"]
    repo = tmp_path / "nodeD"
    repo.mkdir()
    git(repo, "init", "-q")
    assert annexsync("-C", str(repo), "init", "--name", "nodeD").returncode == 0
    git(repo, "remote", "add", "B", b.url())
    git(repo, "config", "annexsync.poll", "0")
    git(repo, "config", "annexsync.fullsync", "0")
    d = Node("D", repo, b.server, daemon_factory(repo).start())
    everyone = {**cluster, "D": d}
    wait_for(
        everyone,
        lambda: d.daemon.status()["peers"][0]["listening"],
        "D's change stream from B did not come up",
    )

    write(a, "for-d.txt", b"pushed to nobody but D hears of it\n")
    wait_for(everyone, has(d, "for-d.txt", b"pushed to nobody but D hears of it\n"), "D missed it")
    write(d, "from-d.txt", b"D pushes out as usual\n")
    wait_for(everyone, has(a, "from-d.txt", b"D pushes out as usual\n"), "A missed D's file")
    wait_for(everyone, lambda: settled(everyone), "the four nodes did not settle")
    assert_quiet(everyone)
    peer = d.daemon.status()["peers"][0]
    assert peer["polling"] is None and peer["listener"]["state"] == "listening"
    assert "told of changes at once" in annexsync("-C", str(repo), "status").stdout

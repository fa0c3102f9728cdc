"""The change listener: its decisions as tables, then the real thing against a real OpenSSH
sshd on 127.0.0.1 whose sessions run this checkout's ``notify-changes``.

Every wait is for a condition (a callback seen, a state reached) with a generous deadline;
"nothing else happened" is shown by ordering: a later marker change arrives and the calls
before it are counted, since the stream delivers changes in order.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pygit2
import pytest
from conftest import ROOT, git

from assistant.daemon.listener import (
    ChangeListener,
    ListenerState,
    ListenerStatus,
    failures_after,
    invocation,
    object_lookup,
    unsupported_reason,
    wants_fetch,
)
from assistant.notify import DEFAULT_COMMAND
from assistant.peers import Peers
from assistant.peerstate import Backoff
from assistant.remotes import LocalLocation, Remote, SSHLocation, read_remotes

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

T = TypeVar("T")
WAIT = 20.0  # seconds; generous, the suite may share its cores with other runs
OID = "a" * 40
OID2 = "b" * 40
# This checkout's notify-changes, whatever the far side's cwd and installed packages are.
THIS_CHECKOUT = f"env PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} "
NOTIFY = THIS_CHECKOUT + "-m assistant notify-changes"
FAST = Backoff(initial=0.05, cap=0.4, floor=0.05)


# --- which ref lines matter -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "oid", "expected"),
    [
        ("refs/heads/main", OID, True),
        ("refs/heads/feature/x", OID, True),
        ("refs/heads/main", None, False),  # a deletion brings nothing to fetch
        ("refs/remotes/laptop/synced/main", OID, False),  # pushed there by another node
        ("refs/remotes/origin/main", OID, False),
        ("refs/tags/v1", OID, False),
        ("refs/heads/", OID, False),
        ("HEAD", OID, False),
    ],
)
def test_wants_fetch(ref: str, oid: str | None, expected: bool) -> None:
    assert wants_fetch(ref, oid) is expected


# --- what counts as "the peer cannot do this" -----------------------------------------------

WHERE = "change notification on root@127.0.0.1:2222"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (f"{WHERE} did not start: sh: 1: annexsync: not found", "not installed"),
        (f"{WHERE} did not start: bash: line 1: annexsync: command not found", "not installed"),
        (f"{WHERE} did not start: exit status 127", "not installed"),
        (f"{WHERE} did not start: env: 'annexsync': No such file or directory", "not installed"),
        (f"{WHERE} did not start: /usr/bin/python3: No module named assistant", "not installed"),
        ("/opt/bin/annexsync: command not found", "not installed"),  # a local path peer
        (
            f"{WHERE} did not start: annexsync: error: argument command: invalid choice: "
            "'notify-changes' (choose from 'init', 'sync')",
            "refuses",
        ),
        (
            f"{WHERE} did not start: fatal: unrecognized command 'annexsync notify-changes'",
            "refuses",
        ),
        (f"{WHERE} did not start: This account is currently not available.", "refuses"),
        (
            f"{WHERE} did not start: annexsync: error: refused: the key may only reach /srv/n",
            "refuses",
        ),
        # failures that may pass: retried with backoff
        (f"{WHERE} did not start: annexsync: error: /srv/n: not a git repository", None),
        (f"{WHERE} did not start: sh: 1: cd: can't cd to /root/notes", None),
        (f"{WHERE} did not start: bash: line 1: cd: /root/notes: No such file or directory", None),
        (f"{WHERE} did not start: exit status 1", None),
        (f"{WHERE} ended: (the process was killed by signal KILL)", None),
        ("connection to root@127.0.0.1:2222 refused: is sshd running there, and listening", None),
        ("connection to root@127.0.0.1:2222 lost (Connection lost)", None),
        ("cannot resolve host name 'desk': Name or service not known", None),
        ("connecting to desk timed out after 10 s (the host or its sshd does not answer)", None),
    ],
)
def test_unsupported_reason(error: str, expected: str | None) -> None:
    reason = unsupported_reason(error)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason
        assert error.rpartition("did not start: ")[2] in reason  # the far side's own words


# --- how failures count ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "ready", "lived", "expected"),
    [
        (0, False, 0.0, 1),  # first connection refused
        (3, False, 0.0, 4),  # still down: the backoff keeps growing
        (3, True, 0.2, 4),  # up, then dead at once: flapping, keep growing
        (3, True, 29.9, 4),
        (3, True, 30.0, 1),  # it worked for a while: retry soon
        (0, True, 3600.0, 1),
    ],
)
def test_failures_after(previous: int, ready: bool, lived: float, expected: int) -> None:
    assert failures_after(previous, ready, lived, stable_after=30.0) == expected


# --- how the command is run -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (SSHLocation("desk", "/srv/notes"), (DEFAULT_COMMAND, "/srv/notes")),
        (SSHLocation("desk", "notes"), (DEFAULT_COMMAND, "notes")),
        (SSHLocation("desk", "~/notes"), (f"cd \"$HOME\"/'notes' && {DEFAULT_COMMAND}", ".")),
        (SSHLocation("desk", "~"), (f'cd "$HOME" && {DEFAULT_COMMAND}', ".")),
        (SSHLocation("desk", "~alice/notes"), (f"cd ~alice/'notes' && {DEFAULT_COMMAND}", ".")),
        (LocalLocation("/media/usb/notes"), (DEFAULT_COMMAND, "/media/usb/notes")),
    ],
)
def test_invocation(location: SSHLocation | LocalLocation, expected: tuple[str, str]) -> None:
    assert invocation(location, DEFAULT_COMMAND) == expected


# --- status wording -------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 1, 3, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ListenerStatus("desk"), "connecting"),
        (
            ListenerStatus("desk", ListenerState.LISTENING, since=T0 - 60),
            "listening since 12:00:03",
        ),
        (
            ListenerStatus(
                "desk",
                ListenerState.RECONNECTING,
                since=T0,
                retry_at=T0 + 8,
                last_error="connection refused",
                failures=2,
            ),
            "reconnecting at 12:01:11 (in 8s): connection refused",
        ),
        (
            ListenerStatus(
                "desk", ListenerState.CONNECTING, last_error="connection refused", failures=3
            ),
            "connecting (after 3 failures): connection refused",
        ),
        (
            ListenerStatus("desk", ListenerState.UNSUPPORTED, reason="remote.desk... is off"),
            "no change notifications, polled instead: remote.desk... is off",
        ),
        (ListenerStatus("desk", ListenerState.STOPPED), "stopped"),
    ],
)
def test_status_describe(status: ListenerStatus, expected: str) -> None:
    assert status.describe(T0, UTC) == expected
    assert status.as_dict()["state"] == status.state.value


# --- the real thing -------------------------------------------------------------------------


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def commit(repo: Path, message: str = "change") -> str:
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def make_peer(path: Path) -> Path:
    """A non-bare repository with one commit on main."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    commit(path, "first")
    return path


def clone(peer: Path, path: Path) -> Path:
    """Our side: a repository holding every commit the peer has now."""
    git(peer.parent, "clone", "-q", str(peer), str(path))
    return path


def our_remote(local: Path, url: str, notify: str = NOTIFY, name: str = "desk") -> Remote:
    """The remote as the assistant reads it from our config."""
    git(local, "remote", "remove", name, check=False)
    git(local, "remote", "add", name, url)
    git(local, "config", f"remote.{name}.annexsync-notify", notify)
    (remote,) = [r for r in read_remotes(pygit2.Repository(str(local)), local) if r.name == name]
    return remote


@dataclass
class Calls:
    """What the listener reported, with when (monotonic)."""

    changes: list[tuple[str, float]] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)

    def on_change(self, remote: str) -> None:
        self.changes.append((remote, time.monotonic()))

    def on_unsupported(self, remote: str, reason: str) -> None:
        self.unsupported.append((remote, reason))


async def eventually(
    predicate: Callable[[], object],
    what: str,
    timeout: float = WAIT,
    listener: ChangeListener | None = None,
) -> None:
    """Wait on the loop until ``predicate`` holds; fail with ``what`` (and the listener's
    status) otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            status = f" ({listener.status()})" if listener is not None else ""
            raise AssertionError(f"not within {timeout}s: {what}{status}")
        await asyncio.sleep(0.01)


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.to_thread(fn, *args)


def listening(listener: ChangeListener) -> Callable[[], bool]:
    return lambda: listener.status().state is ListenerState.LISTENING


def far_notifiers(server: SSHServer) -> list[int]:
    """PIDs of the notify-changes processes our sshd started."""
    from sshd import descendants

    pids = []
    for pid in descendants(server.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"notify-changes" in cmdline and b"assistant" in b" ".join(cmdline):
            pids.append(pid)
    return pids


@pytest.fixture
def peers() -> Iterator[Peers]:
    """A connection pool like the assistant's; closed on the test's loop by ``session``."""
    yield Peers()


async def session(
    remote: Remote, local: Path, peers: Peers, calls: Calls, **options: object
) -> ChangeListener:
    listener = ChangeListener(
        remote,
        peers.transport(remote),
        object_lookup(pygit2.Repository(str(local))),
        calls.on_change,
        calls.on_unsupported,
        backoff=options.pop("backoff", FAST),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    listener.start()
    return listener


async def finish(listener: ChangeListener, peers: Peers) -> None:
    await listener.stop()
    await peers.close()


def test_commit_on_peer_triggers_on_change_within_a_second(
    ssh_home: ClientHome, tmp_path: Path, peers: Peers
) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, ssh_home.url(peer))
    calls = Calls()

    async def scenario() -> float:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(listening(listener), "listening")
            started = time.monotonic()
            await in_thread(commit, peer, "on the peer")
            await eventually(lambda: calls.changes, "on_change after a commit on the peer")
            assert listener.status().state is ListenerState.LISTENING
            return calls.changes[0][1] - started
        finally:
            await finish(listener, peers)

    latency = run(scenario())
    assert latency < 1.0
    # the refs present at connect were all ours: the commit is the only call
    assert [name for name, _ in calls.changes] == ["desk"]
    assert calls.unsupported == []


def test_refs_present_at_connect_count_as_changes(
    ssh_home: ClientHome, tmp_path: Path, peers: Peers
) -> None:
    """The burst after ``ready`` is judged like a change: two branches at one commit we lack
    make one call, and a later commit one more."""
    peer = make_peer(tmp_path / "peer")
    local = tmp_path / "local"
    local.mkdir()
    git(local, "init", "-q")
    git(peer, "branch", "side")
    remote = our_remote(local, ssh_home.url(peer))
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(lambda: calls.changes, "on_change for the peer's existing commit")
            await in_thread(commit, peer, "marker")
            await eventually(lambda: len(calls.changes) >= 2, "on_change for the marker")
        finally:
            await finish(listener, peers)

    run(scenario())
    assert len(calls.changes) == 2


def test_our_own_pushes_do_not_trigger_on_change(
    ssh_home: ClientHome, tmp_path: Path, peers: Peers
) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, ssh_home.url(peer))
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(listening(listener), "listening")
            ours = await in_thread(commit, local, "ours")
            # what replication does to a non-bare peer, then what its merge does with it
            await in_thread(git, local, "push", "-q", str(peer), "main:refs/remotes/us/synced/main")
            await in_thread(git, local, "push", "-q", str(peer), "main:refs/heads/from-us")
            await in_thread(git, peer, "merge", "-q", "--ff-only", "from-us")
            assert git(peer, "rev-parse", "main").strip() == ours
            await in_thread(commit, peer, "marker")
            await eventually(lambda: calls.changes, "on_change for the marker")
        finally:
            await finish(listener, peers)

    run(scenario())
    assert len(calls.changes) == 1


def test_tilde_path_is_the_far_sides_home(
    ssh_home: ClientHome, sshd: SSHServer, tmp_path: Path, peers: Peers
) -> None:
    """``ssh://host/~/x`` means $HOME/x on the peer, as it does for git."""
    name = f"peer-{os.getpid()}-{time.monotonic_ns()}"
    peer = make_peer(sshd.home / name)
    try:
        local = clone(peer, tmp_path / "local")
        remote = our_remote(local, f"ssh://root@127.0.0.1:{sshd.port}/~/{name}")
        assert remote.location.path == f"~/{name}"
        calls = Calls()

        async def scenario() -> None:
            listener = await session(remote, local, peers, calls)
            try:
                await eventually(listening(listener), "listening")
                await in_thread(commit, peer, "on the peer")
                await eventually(lambda: calls.changes, "on_change")
            finally:
                await finish(listener, peers)

        run(scenario())
    finally:
        shutil.rmtree(peer, ignore_errors=True)


def test_missing_directory_under_tilde_is_retried_not_unsupported(
    ssh_home: ClientHome, sshd: SSHServer, tmp_path: Path, peers: Peers
) -> None:
    """The far shell's own complaint about ``cd`` (the path is not there yet) is a failure
    that may pass, unlike a missing command."""
    local = make_peer(tmp_path / "local")
    missing = f"~/missing-{os.getpid()}-{time.monotonic_ns()}"
    remote = our_remote(local, f"ssh://root@127.0.0.1:{sshd.port}/{missing}")
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(lambda: listener.status().failures >= 3, "three failed attempts")
            assert "cd" in (listener.status().last_error or "")
        finally:
            await finish(listener, peers)

    run(scenario())
    assert calls.unsupported == []
    assert calls.changes == []


def test_reconnects_after_the_far_command_is_killed(
    private_ssh_home: ClientHome, private_sshd: SSHServer, tmp_path: Path, peers: Peers
) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, private_ssh_home.url(peer))
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(listening(listener), "listening")
            await eventually(lambda: far_notifiers(private_sshd), "notify-changes on the peer")
            (first,) = far_notifiers(private_sshd)
            os.kill(first, signal.SIGKILL)
            await eventually(
                lambda: (
                    listener.status().last_error is not None
                    and listener.status().state is ListenerState.LISTENING
                ),
                "listening again after the far command died",
            )
            assert "killed by signal" in (listener.status().last_error or "")
            (second,) = far_notifiers(private_sshd)
            assert second != first
            await in_thread(commit, peer, "after the reconnect")
            await eventually(lambda: calls.changes, "on_change after the reconnect")
        finally:
            await finish(listener, peers)

    run(scenario())
    assert len(calls.changes) == 1
    assert private_sshd.accepted() == 1  # the same ssh connection carried the new stream


def test_catches_up_after_sshd_restart(
    private_ssh_home: ClientHome, private_sshd: SSHServer, tmp_path: Path, peers: Peers
) -> None:
    """A commit made while the peer's sshd was down is signalled once it is back."""
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, private_ssh_home.url(peer))
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(listening(listener), "listening")
            await in_thread(private_sshd.stop)
            await eventually(
                lambda: "refused" in (listener.status().last_error or ""),
                "a refused reconnect while sshd is down",
                listener=listener,
            )
            await in_thread(commit, peer, "while sshd was down")
            assert calls.changes == []
            assert listener.status().state is not ListenerState.LISTENING
            await in_thread(private_sshd.start)
            await eventually(lambda: calls.changes, "on_change once sshd is back")
            await eventually(listening(listener), "listening again")
        finally:
            await finish(listener, peers)

    run(scenario())
    assert len(calls.changes) == 1
    assert calls.unsupported == []


@pytest.mark.parametrize(
    "command",
    [
        "/nonexistent/bin/annexsync notify-changes",
        "annexsync-not-installed-here notify-changes",
        THIS_CHECKOUT + "-m assistant_not_installed notify-changes",
    ],
)
def test_missing_command_is_reported_once(
    ssh_home: ClientHome, tmp_path: Path, peers: Peers, command: str
) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, ssh_home.url(peer), notify=command)
    calls = Calls()

    async def scenario() -> ChangeListener:
        listener = await session(remote, local, peers, calls)
        try:
            task = listener._task
            assert task is not None
            async with asyncio.timeout(WAIT):
                await task  # it ends by itself: no retry loop
        finally:
            await finish(listener, peers)
        return listener

    listener = run(scenario())
    assert len(calls.unsupported) == 1
    name, reason = calls.unsupported[0]
    assert name == "desk"
    assert "not installed" in reason
    assert listener.status().state is ListenerState.UNSUPPORTED
    assert listener.status().reason == reason
    assert calls.changes == []


def test_command_turned_off_is_reported_once_without_connecting(
    ssh_home: ClientHome, sshd: SSHServer, tmp_path: Path, peers: Peers
) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, ssh_home.url(peer), notify="false")
    assert remote.notify is None
    logins = sshd.accepted()
    calls = Calls()

    async def scenario() -> ChangeListener:
        listener = await session(remote, local, peers, calls)
        try:
            task = listener._task
            assert task is not None
            async with asyncio.timeout(WAIT):
                await task
        finally:
            await finish(listener, peers)
        return listener

    listener = run(scenario())
    assert calls.unsupported == [("desk", "remote.desk.annexsync-notify is off")]
    assert listener.status().state is ListenerState.UNSUPPORTED
    assert sshd.accepted() == logins


def test_stop_ends_the_far_command(ssh_home: ClientHome, sshd: SSHServer, tmp_path: Path) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    remote = our_remote(local, ssh_home.url(peer))
    peers = Peers()
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls)
        try:
            await eventually(listening(listener), "listening")
            await eventually(lambda: far_notifiers(sshd), "notify-changes on the peer")
            (pid,) = far_notifiers(sshd)
            await listener.stop()
            assert listener.status().state is ListenerState.STOPPED
            # the pool's connection is still open: the channel's end alone stops the command
            await eventually(lambda: not Path(f"/proc/{pid}").exists(), "far command gone")
        finally:
            await finish(listener, peers)

    run(scenario())


def test_missing_repository_is_retried_until_it_appears(tmp_path: Path) -> None:
    """A peer path that is not (yet) a repository is a passing failure, not "unsupported":
    the listener keeps retrying with backoff and connects once it is there. Local path
    peers run the command as a subprocess of this machine."""
    local = tmp_path / "local"
    local.mkdir()
    git(local, "init", "-q")
    peer = tmp_path / "peer"
    remote = our_remote(local, str(peer), notify=DEFAULT_COMMAND)
    assert remote.location == LocalLocation(str(peer))
    peers = Peers()
    calls = Calls()

    async def scenario() -> None:
        listener = await session(remote, local, peers, calls, backoff=Backoff(0.3, 0.3, 0.3))
        try:
            await eventually(lambda: listener.status().failures >= 2, "two failed attempts")
            status = listener.status()
            assert status.state in (ListenerState.RECONNECTING, ListenerState.CONNECTING)
            assert "not a git repository" in (status.last_error or "")
            await in_thread(make_peer, peer)
            listener.retry_now()
            await eventually(lambda: calls.changes, "on_change for the new repository's commit")
            assert listener.status().state is ListenerState.LISTENING
        finally:
            await finish(listener, peers)

    run(scenario())
    assert calls.unsupported == []
    assert len(calls.changes) == 1

"""Removable drives: which repository a local-path peer holds (recorded at the first sync, a
different one refused), an absent drive as a quiet offline peer, the drive watch against real
mounts, and an assistant syncing a drive the moment it is mounted.

Real mounts are made in a private mount namespace (``unshare -m --propagation private``), so
they exist only there and vanish with it; those tests are skipped, with the reason, where
that is not permitted (not root, no unshare).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from conftest import Daemon, annexsync, git, head_files, namespace_problem, wait_until

from assistant.daemon.drives import affected, lies_under, reports
from assistant.driveid import (
    ABSENT_SUMMARY,
    Decision,
    check_local_peer,
    decide,
    is_present,
    refusal_message,
)
from assistant.mounts import Mount
from assistant.node import NodeIdentity, ensure_initialised
from assistant.peers import Outcome, Peers, fetch_from, push_to
from assistant.remotes import read_remotes

ROOT = Path(__file__).resolve().parent.parent
A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"

# --- the identity rule, on plain data ----------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "found", "action", "uuid_"),
    [
        (None, None, "assign", None),  # a repository without a uuid gets one first
        (A, None, "assign", None),  # ... whatever was recorded; then decided again
        (None, A, "record", A),  # first sync
        ("", A, "record", A),  # an empty record is no record
        ("  ", f" {A}\n", "record", A),
        (A, "", "assign", None),
        (A, A, "fine", A),
        (A, A.upper(), "fine", A.upper()),  # uuids are case-insensitive
        (A, B, "refuse", B),
        (B, A, "refuse", A),
    ],
)
def test_identity_decision(
    recorded: str | None, found: str | None, action: str, uuid_: str
) -> None:
    decision = decide("usb", "/media/al/STICK/notes", recorded, found)
    assert (decision.action, decision.uuid) == (action, uuid_)
    assert bool(decision.message) == (action == "refuse")


def test_refusal_message_names_everything_on_one_line() -> None:
    decision = decide("usb", "/media/al/My Stick/notes", A, B)
    assert decision == Decision(
        "refuse", B, refusal_message("usb", "/media/al/My Stick/notes", A, B)
    )
    message = decision.message
    assert "\n" not in message
    for part in ("usb", "/media/al/My Stick/notes", A, B):
        assert part in message
    assert message.endswith(f"run: git config remote.usb.annexsync-uuid {B}")


def test_refusal_command_is_quoted_for_the_shell_when_the_remote_name_needs_it() -> None:
    message = decide("it's$usb", "/m", A, B).message
    command = message.split("run: ", 1)[1]
    assert shlex.split(command) == ["git", "config", "remote.it's$usb.annexsync-uuid", B]


# --- which remotes a mount change concerns, on plain data -----------------------------------


def _mount(mount_id: int, point: str) -> Mount:
    return Mount(mount_id, 1, 8, mount_id, "/", point, ("rw",), (), "vfat", "/dev/sdb1", ("rw",))


@pytest.mark.parametrize(
    ("path", "point", "expected"),
    [
        ("/mnt/usb/notes", "/mnt/usb", True),
        ("/mnt/usb", "/mnt/usb", True),
        ("/mnt/usb/notes", "/mnt", True),
        ("/mnt/usb/notes", "/", True),
        ("/mnt/usb/notes", "/mnt/us", False),
        ("/mnt/usb", "/mnt/usb/notes", False),  # a mount below the repository
        ("/mnt/usb/", "/mnt/usb", True),
        ("/media/al/My Stick/n", "/media/al/My Stick", True),
    ],
)
def test_lies_under(path: str, point: str, expected: bool) -> None:
    assert lies_under(path, point) is expected


PATHS = {
    "usb": "/media/al/STICK/notes.git",
    "backup": "/mnt/backup/notes",
    "home": "/home/al/hub.git",
}


@pytest.mark.parametrize(
    ("added", "removed", "expected"),
    [
        ([], [], set()),
        ([_mount(50, "/media/al/STICK")], [], {"usb"}),
        ([], [_mount(50, "/media/al/STICK")], {"usb"}),
        ([_mount(51, "/media/al/STICK2")], [], set()),  # a prefix by characters only
        ([_mount(52, "/mnt")], [_mount(50, "/media/al/STICK")], {"backup", "usb"}),
        ([_mount(53, "/media/al/STICK/notes.git/objects")], [], set()),
        ([_mount(54, "/run/user/1000")], [_mount(55, "/boot/efi")], set()),
    ],
)
def test_affected_remotes(added: list[Mount], removed: list[Mount], expected: set[str]) -> None:
    assert affected(PATHS, added, removed) == expected


@pytest.mark.parametrize(
    ("names", "was", "now", "expected"),
    [
        (["usb"], {"usb": False}, {"usb": True}, [("usb", True)]),  # mounted
        (["usb"], {"usb": True}, {"usb": False}, [("usb", False)]),  # unmounted
        (["usb"], {"usb": True}, {"usb": True}, [("usb", True)]),  # swapped: sync again
        (["usb"], {"usb": False}, {"usb": False}, []),  # a drive without it: quiet
        (["usb"], {}, {"usb": False}, []),
        (
            ["usb", "a"],
            {"a": True, "usb": False},
            {"a": False, "usb": True},
            [("a", False), ("usb", True)],
        ),
    ],
)
def test_drive_reports(
    names: list[str], was: dict[str, bool], now: dict[str, bool], expected: list[tuple[str, bool]]
) -> None:
    assert reports(names, was, now) == expected


# --- identity against real repositories -------------------------------------------------------


def make_ours(tmp_path: Path) -> Path:
    """Our node, 'laptop', with one commit."""
    ours = tmp_path / "ours"
    ours.mkdir()
    git(ours, "init", "-q")
    ensure_initialised(pygit2.Repository(str(ours)), "laptop")
    (ours / "a.txt").write_text("a\n")
    git(ours, "add", "a.txt")
    git(ours, "commit", "-q", "-m", "a")
    return ours


def make_repo(path: Path, bare: bool, files: dict[str, str] | None = None) -> Path:
    """A repository at ``path``, with one commit of ``files`` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not files:
        git(path.parent, "init", "-q", *(["--bare"] if bare else []), str(path))
        return path
    work = path if not bare else path.parent / f"{path.name}-work"
    git(path.parent, "init", "-q", str(work))
    for name, text in files.items():
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "theirs")
    if bare:
        git(path.parent, "clone", "-q", "--bare", str(work), str(path))
        shutil.rmtree(work)
    return path


def identity(ours: Path) -> NodeIdentity:
    return ensure_initialised(pygit2.Repository(str(ours)))


def transfer(ours: Path, remote_name: str, action: str) -> Outcome:
    """Push to or fetch from one remote through the real peers code."""
    repo = pygit2.Repository(str(ours))
    (remote,) = [r for r in read_remotes(repo, ours) if r.name == remote_name]

    async def run() -> Outcome:
        peers = Peers()
        try:
            if action == "push":
                return await push_to(peers, repo, identity(ours), remote)
            return await fetch_from(peers, repo, remote)
        finally:
            await peers.close()

    return asyncio.run(run())


def config(path: Path, key: str) -> str | None:
    out = git(path, "config", "--get", key, check=False).strip()
    return out or None


def refs(path: Path) -> str:
    return git(path, "for-each-ref", "--format=%(refname) %(objectname)")


def rev(path: Path, ref: str) -> str:
    return git(path, "rev-parse", "--verify", "-q", ref, check=False).strip()


@pytest.mark.parametrize("bare", [True, False], ids=["bare", "non-bare"])
def test_first_sync_gives_the_drive_repository_a_uuid_and_records_it(
    tmp_path: Path, bare: bool
) -> None:
    ours = make_ours(tmp_path)
    drive = make_repo(tmp_path / "stick" / ("notes.git" if bare else "notes"), bare)
    git(ours, "remote", "add", "usb", str(drive))

    assert transfer(ours, "usb", "push").ok
    peer_uuid = config(drive, "annexsync.uuid")
    assert peer_uuid is not None and str(uuid.UUID(peer_uuid)) == peer_uuid
    assert config(ours, "remote.usb.annexsync-uuid") == peer_uuid
    target = "refs/heads/main" if bare else "refs/remotes/laptop/synced/main"
    assert rev(drive, target) == rev(ours, "HEAD")

    assert transfer(ours, "usb", "fetch").ok
    assert transfer(ours, "usb", "push").ok
    assert config(drive, "annexsync.uuid") == peer_uuid  # given once, never replaced
    assert config(ours, "remote.usb.annexsync-uuid") == peer_uuid


def test_a_peer_with_its_own_uuid_keeps_it_and_it_is_recorded(tmp_path: Path) -> None:
    ours = make_ours(tmp_path)
    drive = make_repo(tmp_path / "stick" / "notes", bare=False)
    theirs = ensure_initialised(pygit2.Repository(str(drive)), "desk").uuid
    git(ours, "remote", "add", "usb", str(drive))

    assert transfer(ours, "usb", "fetch").ok

    assert config(drive, "annexsync.uuid") == theirs
    assert config(ours, "remote.usb.annexsync-uuid") == theirs


@pytest.mark.parametrize("bare", [True, False], ids=["bare", "non-bare"])
def test_a_different_repository_at_the_same_path_is_refused_and_nothing_moves(
    tmp_path: Path, bare: bool, caplog: pytest.LogCaptureFixture
) -> None:
    ours = make_ours(tmp_path)
    drive = make_repo(tmp_path / "stick" / ("notes.git" if bare else "notes"), bare)
    git(ours, "remote", "add", "usb", str(drive))
    assert transfer(ours, "usb", "push").ok
    recorded = config(ours, "remote.usb.annexsync-uuid")
    assert recorded is not None
    # Another drive, mounted at the same place, with a repository of its own.
    shutil.rmtree(drive)
    make_repo(drive, bare, {"theirs.txt": "not ours\n"})
    theirs_before, ours_before = refs(drive), refs(ours)

    with caplog.at_level(logging.WARNING, logger="annexsync"):
        pushed = transfer(ours, "usb", "push")
        fetched = transfer(ours, "usb", "fetch")

    new = config(drive, "annexsync.uuid")
    assert new is not None and new != recorded
    expected = refusal_message("usb", str(drive), recorded, new)
    for outcome in (pushed, fetched):
        assert (outcome.ok, outcome.absent, outcome.summary) == (False, False, expected)
    assert refs(drive) == theirs_before  # nothing pushed
    assert refs(ours) == ours_before  # nothing fetched
    assert config(ours, "remote.usb.annexsync-uuid") == recorded
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [expected]  # one warning, not one per attempt

    # The command in the message accepts the new repository.
    command = shlex.split(expected.split("run: ", 1)[1])
    subprocess.run(command, cwd=ours, check=True)
    assert transfer(ours, "usb", "fetch").ok
    assert rev(ours, "refs/remotes/usb/main") == rev(drive, "refs/heads/main")


@pytest.mark.parametrize(
    "where", ["missing path", "empty mount point", "empty mount point inside a repository"]
)
def test_an_absent_drive_is_a_quiet_absent_outcome_and_nothing_is_created(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    ours = make_ours(tmp_path)
    if where == "empty mount point inside a repository":
        outer = make_repo(tmp_path / "home", bare=False, files={"dotfile": "x\n"})
        mount_point = outer / "usb"
    else:
        outer = None
        mount_point = tmp_path / "media" / "STICK"
    mount_point.mkdir(parents=True)
    path = mount_point / "notes.git" if where == "missing path" else mount_point
    git(ours, "remote", "add", "usb", str(path))
    outer_before = refs(outer) if outer else ""

    with caplog.at_level(logging.DEBUG, logger="annexsync"):
        outcomes = [transfer(ours, "usb", "push"), transfer(ours, "usb", "fetch")]

    for outcome in outcomes:
        assert (outcome.ok, outcome.absent, outcome.summary) == (False, True, ABSENT_SUMMARY)
        assert outcome.line() == "usb: not present (drive not mounted?)"
    assert list(mount_point.iterdir()) == []
    assert config(ours, "remote.usb.annexsync-uuid") is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if outer is not None:  # the repository around the mount point is not taken for the drive
        assert refs(outer) == outer_before
        assert config(outer, "annexsync.uuid") is None


def test_presence_is_a_repository_at_exactly_that_path(tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "hub.git", bare=True)
    work = make_repo(tmp_path / "work", bare=False)
    (work / "sub").mkdir()
    (tmp_path / "file").write_text("x")
    assert is_present(str(bare)) and is_present(str(work))
    assert not is_present(str(work / "sub"))
    assert not is_present(str(tmp_path / "file"))
    assert not is_present(str(tmp_path / "nothing"))
    assert check_local_peer(str(work / ".git"), "usb", str(work / "sub")) is None


def test_sync_with_an_absent_drive_says_so_in_one_line_and_syncs_the_rest(tmp_path: Path) -> None:
    ours = make_ours(tmp_path)
    hub = make_repo(tmp_path / "hub.git", bare=True)
    git(ours, "remote", "add", "hub", str(hub))
    git(ours, "remote", "add", "usb", str(tmp_path / "media" / "STICK" / "notes.git"))

    proc = annexsync("-C", str(ours), "sync")

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["usb: not present (drive not mounted?)"]
    assert rev(hub, "refs/heads/main") == rev(ours, "HEAD")


def test_sync_with_a_swapped_drive_refuses_it_with_the_command_that_accepts_it(
    tmp_path: Path,
) -> None:
    ours = make_ours(tmp_path)
    drive = make_repo(tmp_path / "stick" / "notes.git", bare=True)
    git(ours, "remote", "add", "usb", str(drive))
    assert annexsync("-C", str(ours), "sync").returncode == 0
    shutil.rmtree(drive)
    make_repo(drive, bare=True)

    proc = annexsync("-C", str(ours), "sync")

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    new = config(drive, "annexsync.uuid")
    assert f"usb: refused: remote usb at {drive} holds a different repository" in proc.stderr
    assert f"run: git config remote.usb.annexsync-uuid {new}" in proc.stderr
    assert rev(drive, "refs/heads/main") == ""


# --- real mounts in a private mount namespace -------------------------------------------------


WATCH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, subprocess, sys, time
    from assistant.daemon.drives import DriveWatch
    from assistant.remotes import parse_url
    from pathlib import Path

    base, polling = Path(sys.argv[1]), sys.argv[2] == "polling"
    from assistant.remotes import Remote
    def remote(name, url):
        return Remote(name, url, parse_url(url, base))
    remotes = [
        remote("usb", str(base / "mnt" / "usb" / "notes.git")),
        remote("home", str(base / "home.git")),
        remote("far", "ssh://far.example/notes.git"),
    ]
    seen = []

    def run(*cmd):
        subprocess.run(cmd, check=True)

    async def main():
        arrived = asyncio.Event()

        def tell(name, present):
            seen.append([name, present, time.monotonic()])
            arrived.set()

        watch = DriveWatch(remotes, lambda n: tell(n, True), lambda n: tell(n, False),
                           polling=polling, interval=0.1)
        await watch.start()
        out = {"mode": watch.mode, "initial": [s[:2] for s in seen], "steps": []}
        seen.clear()

        async def step(label, *cmd, expect_report=True):
            arrived.clear()
            t0 = time.monotonic()
            run(*cmd)
            if expect_report:
                await asyncio.wait_for(arrived.wait(), 10)
            else:
                await watch.check()  # the change is handled before going on
            out["steps"].append([label, [s[:2] for s in seen], [s[2] - t0 for s in seen]])
            seen.clear()

        mnt = str(base / "mnt" / "usb")
        await step("a drive without the repository", "mount", "-t", "tmpfs", "none", mnt,
                   expect_report=False)
        await step("... unmounted", "umount", mnt, expect_report=False)
        await step("the drive", "mount", "--bind", str(base / "stick"), mnt)
        await step("hidden by a mount above it", "mount", "-t", "tmpfs", "none",
                   str(base / "mnt"))
        await step("uncovered", "umount", str(base / "mnt"))
        await step("unmounted", "umount", mnt)
        await watch.stop()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["events", "polling"])
def test_drive_watch_reports_a_drive_as_it_is_mounted_and_unmounted(
    tmp_path: Path, mode: str
) -> None:
    problem = namespace_problem("nsenter")
    if problem:
        pytest.skip(problem)
    make_repo(tmp_path / "stick" / "notes.git", bare=True)
    make_repo(tmp_path / "home.git", bare=True)
    (tmp_path / "mnt" / "usb").mkdir(parents=True)
    script = tmp_path / "watch.py"
    script.write_text(WATCH_SCRIPT)

    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(script),
         str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mode"] == mode
    assert out["initial"] == [["home", True], ["usb", False]]  # the ssh remote is not watched
    steps = {label: reported for label, reported, _ in out["steps"]}
    assert steps == {
        "a drive without the repository": [],
        "... unmounted": [],
        "the drive": [["usb", True]],
        "hidden by a mount above it": [["usb", False]],
        "uncovered": [["usb", True]],
        "unmounted": [["usb", False]],
    }
    for label, _, delays in out["steps"]:
        assert all(d < 2.0 for d in delays), (label, delays)
    assert list((tmp_path / "mnt" / "usb").iterdir()) == []  # nothing written to the mount point


# --- the assistant with a drive, in a private mount namespace ---------------------------------


@contextlib.contextmanager
def private_namespace() -> Iterator[int]:
    """A process holding a private mount namespace, for nsenter; ended (by its PID) after."""
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sleep", "3600"],
        stdin=subprocess.DEVNULL,
    )
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") != ours, timeout=10)
        yield holder.pid
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=10)


def in_namespace(pid: int, *command: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *command], check=True)


class NamespacedDaemon(Daemon):
    """An assistant started inside another process's mount namespace."""

    def __init__(self, repo: Path, namespace: int) -> None:
        super().__init__(repo)
        self.namespace = namespace

    def start(self, *extra: str, wait: bool = True) -> NamespacedDaemon:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                ["nsenter", "-t", str(self.namespace), "-m", "--", sys.executable, "-m",
                 "assistant", "-C", str(self.repo), "assistant", "--foreground", *extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )  # fmt: skip
        if wait:
            wait_until(self.ready, timeout=30)
        return self

    def peer_state(self, name: str) -> str:
        return {p["remote"]: p["state"] for p in self.status()["peers"]}[name]


@pytest.mark.parametrize("bare", [True, False], ids=["bare", "non-bare"])
def test_mounting_the_drive_syncs_both_ways_and_unplugging_it_is_quiet(
    tmp_path: Path, bare: bool
) -> None:
    problem = namespace_problem("nsenter")
    if problem:
        pytest.skip(problem)
    ours = make_ours(tmp_path)
    # The drive holds a copy of our repository that was written to elsewhere.
    stick = tmp_path / "stick"
    stick.mkdir()
    drive = stick / ("notes.git" if bare else "notes")
    git(stick, "clone", "-q", *(["--bare"] if bare else []), str(ours), str(drive))
    desk = drive
    if bare:
        desk = tmp_path / "desk"
        git(tmp_path, "clone", "-q", str(drive), str(desk))
    (desk / "desk.txt").write_text("written at the desk\n")
    git(desk, "add", "desk.txt")
    git(desk, "commit", "-q", "-m", "desk")
    if bare:
        git(desk, "push", "-q", "origin", "main")
    mount_point = tmp_path / "mnt" / "usb"
    mount_point.mkdir(parents=True)
    git(ours, "remote", "add", "usb", str(mount_point / drive.name))
    synced = "refs/heads/main" if bare else "refs/remotes/laptop/synced/main"

    with private_namespace() as namespace:
        daemon = NamespacedDaemon(ours, namespace)
        try:
            daemon.start()
            wait_until(lambda: daemon.peer_state("usb") == "absent", timeout=15)
            (ours / "while-away.txt").write_text("written while the drive was away\n")
            wait_until(lambda: "while-away.txt" in head_files(ours), timeout=15)

            in_namespace(namespace, "mount", "--bind", str(stick), str(mount_point))

            def synced_both_ways() -> bool:
                return "desk.txt" in head_files(ours) and rev(drive, synced) == rev(ours, "HEAD")

            wait_until(synced_both_ways, timeout=15)
            assert (ours / "desk.txt").read_text() == "written at the desk\n"
            assert config(ours, "remote.usb.annexsync-uuid") == config(drive, "annexsync.uuid")

            in_namespace(namespace, "umount", str(mount_point))
            wait_until(lambda: daemon.peer_state("usb") == "absent", timeout=15)
            (ours / "later.txt").write_text("later\n")
            wait_until(lambda: "later.txt" in head_files(ours), timeout=15)
            assert "later.txt" not in head_files_at(drive, synced)

            in_namespace(namespace, "mount", "--bind", str(stick), str(mount_point))
            wait_until(lambda: rev(drive, synced) == rev(ours, "HEAD"), timeout=15)
            assert "later.txt" in head_files_at(drive, synced)
        finally:
            with contextlib.suppress(Exception):
                daemon.stop(timeout=10)
            daemon.kill()
    log = (ours / ".git" / "annexsync" / "daemon.log").read_text()
    assert "Traceback" not in log and "Traceback" not in daemon.stderr()
    assert not [line for line in log.splitlines() if "usb" in line and " ERROR" in line]
    assert list(mount_point.iterdir()) == []  # nothing was ever written to the mount point


def head_files_at(repo: Path, ref: str) -> set[str]:
    """The paths in the tree of ``ref`` in ``repo`` (empty when the ref does not exist)."""
    if not rev(repo, ref):
        return set()
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).split())

"""annexsync's git hooks: installed beside the user's own and removed leaving them exactly as
they were; with real git and a real assistant, a hand commit is pushed at once, a checkout,
merge or rewrite makes the assistant look again, what a hub receives is recorded, and no hook
ever fails or holds up a git command."""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, annexsync, git, head_files, new_node, wait_until

from assistant import hooks, hookscript
from assistant.daemon.control import socket_path
from assistant.hooks import Action, Kind, OnDisk

ZERO = "0" * 40


def install(repo: Path) -> subprocess.CompletedProcess[str]:
    result = annexsync("-C", str(repo), "hooks", "install")
    assert result.returncode == 0, result.stderr
    return result


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD", check=False).strip()


def user_hook(path: Path, body: str, mode: int = 0o755) -> bytes:
    """Write a hook of the user's own; returns its bytes."""
    content = f"#!/bin/sh\n{body}\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return content


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry of a hooks directory: content, mode and inode (a rename keeps the inode)."""
    out = {}
    for entry in sorted(directory.iterdir()):
        st = entry.lstat()
        out[entry.name] = (entry.read_bytes(), stat.S_IMODE(st.st_mode), st.st_ino)
    return out


def commit_by_hand(repo: Path, message: str) -> subprocess.CompletedProcess[str]:
    """``git commit`` as a user types it (a commit the assistant would never make itself)."""
    return subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", message],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- the decisions, on plain data -----------------------------------------------------------


def test_a_sealed_hook_is_recognised_as_ours_and_any_edit_shows() -> None:
    rendered = hooks.render(hooks.template(), "/usr/bin/python3", "/opt/lib")
    assert hooks.classify(rendered) is Kind.OURS
    assert b"py=/usr/bin/python3 pkg=/opt/lib\n" in rendered
    assert hooks.classify(rendered.replace(b"exit 0", b"exit 1")) is Kind.EDITED
    assert hooks.classify(rendered + b"# mine\n") is Kind.EDITED
    assert hooks.classify(b"#!/bin/sh\necho my own hook\n") is Kind.FOREIGN
    assert hooks.classify(hooks.template()) is Kind.EDITED  # the unsealed source itself
    # A path that would need quoting is not written in: the hook falls back to python3.
    assert b"py=python3 pkg=\n" in hooks.render(hooks.template(), "/my python/bin/python3")


@pytest.mark.parametrize(
    ("found", "install_action", "uninstall_action"),
    [
        (OnDisk("h", Kind.ABSENT), Action.WRITE, Action.NOTHING),
        (OnDisk("h", Kind.ABSENT, original=True), Action.WRITE, Action.RESTORE),
        (OnDisk("h", Kind.OURS, current=True), Action.KEEP, Action.REMOVE),
        (OnDisk("h", Kind.OURS, current=True, original=True), Action.KEEP, Action.RESTORE),
        (OnDisk("h", Kind.OURS, current=False), Action.WRITE, Action.REMOVE),
        (OnDisk("h", Kind.EDITED), Action.LEAVE, Action.LEAVE),
        (OnDisk("h", Kind.EDITED, original=True), Action.LEAVE, Action.LEAVE),
        (OnDisk("h", Kind.FOREIGN), Action.CHAIN, Action.NOTHING),
        (OnDisk("h", Kind.FOREIGN, original=True), Action.LEAVE, Action.NOTHING),
        (OnDisk("h", Kind.OTHER), Action.LEAVE, Action.NOTHING),
    ],
)
def test_install_and_uninstall_only_ever_change_what_is_annexsyncs(
    found: OnDisk, install_action: Action, uninstall_action: Action
) -> None:
    assert hooks.plan_install(found).action is install_action
    assert hooks.plan_uninstall(found).action is uninstall_action
    # Whatever is left alone because it is in the way is reported as a problem (exit 1).
    assert hooks.plan_install(found).problem == (install_action is Action.LEAVE)
    assert hooks.plan_uninstall(found).problem == (found.kind is Kind.EDITED)


def test_the_hook_finds_the_same_socket_as_the_assistant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    short = tmp_path / "repo" / ".git" / "annexsync"
    long = tmp_path / ("d" * 120) / ".git" / "annexsync"
    for state in (short, long):
        state.mkdir(parents=True)
        assert hookscript.socket_path(str(state)) == str(socket_path(state))
    assert hookscript.socket_path(str(long)).startswith(str(tmp_path / "run"))


def test_received_updates_are_parsed_and_recorded_with_their_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "UTC-1")  # POSIX spelling of UTC+01:00
    time.tzset()
    monkeypatch.undo()
    data = f"{ZERO} {'a' * 40} refs/heads/main\n{'b' * 40} {ZERO} refs/heads/gone\n".encode()
    updates = hookscript.parse_updates(data)
    assert updates == [(ZERO, "a" * 40, "refs/heads/main"), ("b" * 40, ZERO, "refs/heads/gone")]
    try:
        lines = hookscript.record_lines(updates, 1_700_000_000.25).decode().splitlines()
    finally:
        time.tzset()  # back to the TZ the process had
    assert lines == [
        f"2023-11-14T23:13:20.250+01:00 {ZERO} {'a' * 40} refs/heads/main",
        f"2023-11-14T23:13:20.250+01:00 {'b' * 40} {ZERO} refs/heads/gone",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", True), ("true", True), ("Yes", True), ("on", True), ("1", True),
     ("false", False), ("no", False), ("off", False), ("0", False), ("maybe", None)],
)  # fmt: skip
def test_hooksync_is_read_as_git_reads_a_boolean(value: str | None, expected: bool | None) -> None:
    assert hookscript.parse_git_bool(value) is expected


# --- installing and removing ----------------------------------------------------------------


def test_install_twice_changes_nothing_and_uninstall_restores_the_users_hook_exactly(
    repo: Path,
) -> None:
    hooks_dir = repo / ".git" / "hooks"
    for sample in hooks_dir.glob("*.sample"):
        sample.unlink()
    mine = user_hook(hooks_dir / "post-merge", "echo merged >> merged.log", mode=0o750)
    os.utime(hooks_dir / "post-merge", (1_000_000_000, 1_000_000_000))
    before = snapshot(hooks_dir)

    first = install(repo)
    assert "post-merge:     installed; your hook is now post-merge.annexsync-orig" in first.stdout
    installed = snapshot(hooks_dir)
    assert set(installed) == {*hooks.WORKTREE_HOOKS, "post-merge.annexsync-orig"}
    assert installed["post-merge.annexsync-orig"] == before["post-merge"]

    second = install(repo)
    assert second.stdout.count("already installed") == len(hooks.WORKTREE_HOOKS)
    assert snapshot(hooks_dir) == installed

    removed = annexsync("-C", str(repo), "hooks", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert "post-merge:     removed; your own hook is back" in removed.stdout
    assert snapshot(hooks_dir) == before
    assert (hooks_dir / "post-merge").read_bytes() == mine
    assert (hooks_dir / "post-merge").stat().st_mtime == 1_000_000_000


def test_a_hook_edited_after_install_is_left_in_place_on_uninstall(repo: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    user_hook(hooks_dir / "post-commit", "true")
    install(repo)
    edited = hooks_dir / "post-commit"
    edited.write_bytes(edited.read_bytes() + b"# my addition\n")
    content = edited.read_bytes()

    result = annexsync("-C", str(repo), "hooks", "uninstall")

    assert result.returncode == 1
    assert "post-commit: edited since annexsync installed it; left in place" in result.stderr
    assert "Traceback" not in result.stderr
    assert edited.read_bytes() == content
    assert (hooks_dir / "post-commit.annexsync-orig").exists()
    assert not (hooks_dir / "post-checkout").exists()  # the others went
    status = annexsync("-C", str(repo), "hooks", "status").stdout
    assert "post-commit:    installed, then edited by hand" in status


def test_core_hooks_path_is_where_hooks_go_and_what_git_runs(repo: Path) -> None:
    git(repo, "config", "core.hooksPath", "my-hooks")
    user_hook(repo / "my-hooks" / "post-checkout", 'echo "$@" > checkout-args')

    install(repo)

    assert (repo / "my-hooks" / "post-checkout.annexsync-orig").exists()
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    assert hooks.classify((repo / "my-hooks" / "post-commit").read_bytes()) is Kind.OURS
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, "checkout", "-q", "-b", "topic")
    sha = head(repo)
    assert (repo / "checkout-args").read_text() == f"{sha} {sha} 1\n"


def test_init_with_hooks_installs_them(repo: Path) -> None:
    result = annexsync("-C", str(repo), "init", "--name", "solo", "--hooks")
    assert result.returncode == 0, result.stderr
    assert "annexsync node solo" in result.stdout
    for name in hooks.WORKTREE_HOOKS:
        assert hooks.classify((repo / ".git" / "hooks" / name).read_bytes()) is Kind.OURS


def test_hook_commands_fail_with_one_line(tmp_path: Path, repo: Path) -> None:
    outside = annexsync("-C", str(tmp_path), "hooks", "install")
    assert outside.returncode != 0
    assert outside.stderr.count("\n") == 1 and "not a git repository" in outside.stderr

    (repo / "not-a-dir").write_text("a file where the hooks directory should be\n")
    git(repo, "config", "core.hooksPath", "not-a-dir")
    blocked = annexsync("-C", str(repo), "hooks", "install")
    assert blocked.returncode == 1
    assert blocked.stderr == (
        f"annexsync: error: the hooks directory {repo / 'not-a-dir'} is not a directory\n"
    )


# --- the hooks at work, with real git -------------------------------------------------------


def test_the_users_hook_runs_first_with_the_same_arguments_input_and_exit_status(
    tmp_path: Path, repo: Path
) -> None:
    hooks_dir = repo / ".git" / "hooks"
    user_hook(hooks_dir / "post-checkout", 'echo "$@" > checkout-args; exit 3')
    user_hook(hooks_dir / "post-receive", 'cat > "$GIT_DIR/received-input"')
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    install(repo)
    sha = head(repo)

    checkout = subprocess.run(
        ["git", "-C", str(repo), "checkout", "-q", "-b", "topic"], capture_output=True, check=False
    )
    assert checkout.returncode != 0  # git passes post-checkout's status on, as without us
    assert (repo / "checkout-args").read_text() == f"{sha} {sha} 1\n"

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "commit", "-q", "--allow-empty", "-m", "from the clone")
    git(clone, "push", "-q", "origin", "HEAD:refs/heads/incoming")
    pushed = head(clone)
    expected = f"{ZERO} {pushed} refs/heads/incoming\n"
    assert (repo / ".git" / "received-input").read_text() == expected
    record = (repo / ".git" / "annexsync" / "received.log").read_text().split(" ", 1)[1]
    assert record == expected


def test_a_hub_records_what_lands_so_it_can_be_looked_up(tmp_path: Path) -> None:
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    result = annexsync("-C", str(hub), "hooks", "install")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (hub / "hooks").iterdir() if not p.name.endswith(".sample")] == [
        "post-receive"
    ]
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(hub), str(work))
    for message in ("one", "two"):
        git(work, "commit", "-q", "--allow-empty", "-m", message)
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")

    lines = (hub / "annexsync" / "received.log").read_text().splitlines()
    assert [line.split(" ")[2:] for line in lines] == [
        [git(work, "rev-parse", "HEAD~1").strip(), "refs/heads/main"],
        [head(work), "refs/heads/main"],
    ]
    status = annexsync("-C", str(hub), "hooks", "status").stdout
    assert "2 ref updates recorded" in status
    assert f"refs/heads/main -> {head(work)[:10]}" in status


def test_a_hook_without_the_package_or_any_python_still_runs_the_users_hook(
    repo: Path,
) -> None:
    hooks_dir = repo / ".git" / "hooks"
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    user_hook(hooks_dir / "post-checkout.annexsync-orig", "echo ran > ran-$1")
    hook = hooks_dir / "post-checkout"
    git_path = shutil.which("git")
    assert git_path is not None
    for n, python in enumerate((sys.executable, "/no/such/python")):
        hook.write_bytes(hooks.render(hooks.template(), python, None))
        hook.chmod(0o755)
        # Without a Python: the named one is gone, and none is on PATH either.
        env = {**os.environ, "PATH": "/nonexistent"} if python.startswith("/no/") else None
        proc = subprocess.run(
            [git_path, "-C", str(repo), "checkout", "-q", "-b", f"branch{n}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        # post-checkout's first argument is the old HEAD; the user's hook names a file after it
        ran = repo / f"ran-{head(repo)}"
        assert ran.read_text() == "ran\n"
        ran.unlink()


# --- with an assistant ----------------------------------------------------------------------


def test_a_hand_commit_reaches_the_peer_at_once_through_the_hook(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    for repo in (a, b):  # no periodic work that could carry the commit instead
        git(repo, "config", "annexsync.fullsync", "0")
        git(repo, "config", "annexsync.poll", "0")
    daemon_factory(a).start()
    daemon_factory(b).start()
    (a / "start.txt").write_text("auto-committed and pushed\n")
    wait_until(lambda: (b / "start.txt").exists(), timeout=30)

    # Without the hook, the assistant never learns of a commit made by hand.
    assert commit_by_hand(a, "by hand, no hook").returncode == 0
    unhooked = head(a)
    time.sleep(1.5)
    assert not has_commit(b, unhooked)

    install(a)
    result = commit_by_hand(a, "by hand, with the hook")
    committed_at = time.monotonic()
    assert result.returncode == 0 and result.stderr == ""
    hooked = head(a)
    wait_until(lambda: head(b) == hooked, timeout=10)
    arrival = time.monotonic() - committed_at
    assert has_commit(b, unhooked)  # carried along with the later one
    assert arrival < 5, f"took {arrival:.2f}s"


def background_syncs_done(repo: Path) -> bool:
    """No background sync is wanted, and none holds the runners' lock."""
    import fcntl

    state = repo / ".git" / "annexsync"
    if (state / "hooksync.pending").exists():
        return False
    fd = os.open(state / "hooksync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def has_commit(repo: Path, sha: str) -> bool:
    return (
        subprocess.run(
            ["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


@contextlib.contextmanager
def changed_behind_inotify(path: Path, data: bytes) -> Iterator[Callable[[], None]]:
    """Yield a function that rewrites ``path`` in place through a shared memory map: the
    kernel reports no inotify event for that, so only a rescan can find the change. The map
    (opened before the caller starts the assistant) is closed afterwards, which then reports
    the file closed."""
    fd = os.open(path, os.O_RDWR)
    try:
        mapped = mmap.mmap(fd, 0)
    finally:
        os.close(fd)  # the map keeps the file open: no close event now

    def change() -> None:
        mapped[: len(data)] = data
        mapped.flush()

    try:
        yield change
    finally:
        mapped.close()


@pytest.mark.parametrize("operation", ["checkout", "merge", "rewrite"])
def test_a_checkout_merge_or_rewrite_makes_the_assistant_look_at_the_tree_again(
    repo: Path, daemon_factory: Callable[[Path], Daemon], operation: str
) -> None:
    git(repo, "config", "annexsync.rescan", "1h")
    data = repo / "data.bin"
    data.write_bytes(b"o" * 4096)
    git(repo, "add", "data.bin")
    git(repo, "commit", "-q", "-m", "data")
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "side.txt").write_text("from side\n")
    git(repo, "add", "side.txt")
    git(repo, "commit", "-q", "-m", "side")
    git(repo, "checkout", "-q", "main")
    install(repo)
    edited = b"e" * 4096
    with changed_behind_inotify(data, edited) as change:
        daemon_factory(repo).start()
        (repo / "marker.txt").write_text("committed once the start-up scan is over\n")
        wait_until(lambda: "marker.txt" in head_files(repo), timeout=10)
        change()
        time.sleep(1.0)  # the assistant has not seen the change: no event, no rescan
        assert head_files(repo)["data.bin"] == b"o" * 4096

        if operation == "checkout":
            git(repo, "checkout", "-q", "-b", "topic")
        elif operation == "merge":
            git(repo, "merge", "-q", "--no-edit", "side")
        else:
            git(repo, "commit", "-q", "--amend", "--allow-empty", "-m", "data, reworded")

        wait_until(lambda: head_files(repo).get("data.bin") == edited, timeout=10)


# --- never in git's way ---------------------------------------------------------------------


@contextlib.contextmanager
def unanswering_assistant(path: Path, accept: bool) -> Iterator[list[bytes]]:
    """A unix socket at the assistant's address that never answers: with ``accept`` False
    the connections wait in its backlog (a stuck event loop), else they are accepted and
    held open. Yields a list that is filled, on the way out, with what each accepted
    connection sent. Closed by its own handle afterwards."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    received: list[bytes] = []
    stop = threading.Event()

    def take() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=take, daemon=True) if accept else None
    if thread:
        thread.start()
    try:
        yield received
    finally:
        stop.set()
        if thread:
            thread.join(timeout=5)
        for conn in held:
            conn.settimeout(1)
            with contextlib.suppress(OSError):
                received.append(conn.recv(4096))
            conn.close()
        server.close()
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("assistant", ["stale socket", "stuck loop", "never answers"])
def test_git_commit_succeeds_at_once_whatever_state_the_assistant_is_in(
    repo: Path, assistant: str
) -> None:
    assert annexsync("-C", str(repo), "init").returncode == 0
    git(repo, "config", "annexsync.hooksync", "true")
    install(repo)
    sock = socket_path(repo / ".git" / "annexsync")
    with contextlib.ExitStack() as stack:
        if assistant == "stale socket":  # the file of an assistant that died
            leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            leftover.bind(str(sock))
            leftover.close()
        else:
            stack.enter_context(unanswering_assistant(sock, accept=assistant == "never answers"))
        for n in range(3):
            started = time.monotonic()
            result = commit_by_hand(repo, f"commit {n}")
            took = time.monotonic() - started
            assert result.returncode == 0 and result.stderr == "", result.stderr
            assert took < 2.0, f"git commit took {took:.2f}s"
    # An assistant that is there but busy is not replaced by a background sync.
    wants_sync = (repo / ".git" / "annexsync" / "hooksync.log").exists()
    assert wants_sync == (assistant == "stale socket")
    wait_until(lambda: background_syncs_done(repo), timeout=60)


def test_with_no_assistant_a_commit_is_synced_in_the_background_only_when_configured(
    tmp_path: Path,
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    install(a)
    log = a / ".git" / "annexsync" / "hooksync.log"

    assert commit_by_hand(a, "not synced").returncode == 0
    assert not log.exists()  # the hook decided before git commit returned: nothing started

    git(a, "config", "annexsync.hooksync", "true")
    for n in range(3):  # quick commits: the one runner syncs until none is left waiting
        started = time.monotonic()
        result = commit_by_hand(a, f"synced {n}")
        assert result.returncode == 0 and result.stderr == ""
        assert time.monotonic() - started < 2.0
    last = head(a)

    wait_until(
        lambda: (
            git(
                b, "rev-parse", "-q", "--verify", "refs/remotes/alpha/synced/main", check=False
            ).strip()
            == last
        ),
        timeout=60,
    )
    wait_until(lambda: background_syncs_done(a), timeout=60)
    assert log.read_text().rstrip().endswith("exit status 0"), log.read_text()


def test_an_assistant_slow_to_answer_still_gets_every_request_and_git_goes_on(
    repo: Path,
) -> None:
    assert annexsync("-C", str(repo), "init").returncode == 0
    git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    git(repo, "branch", "side")
    git(repo, "commit", "-q", "--allow-empty", "-m", "ahead")
    git(repo, "checkout", "-q", "side")
    install(repo)
    sock = socket_path(repo / ".git" / "annexsync")

    with unanswering_assistant(sock, accept=True) as received:
        started = time.monotonic()
        merge = subprocess.run(
            ["git", "-C", str(repo), "merge", "-q", "main"], capture_output=True, text=True
        )
        took = time.monotonic() - started

    assert merge.returncode == 0 and merge.stderr == "", merge.stderr
    assert took < 2.0, f"git merge took {took:.2f}s"
    assert received == [b'{"cmd": "reread"}\n', b'{"cmd": "committed"}\n']


def test_the_record_of_what_landed_is_rotated_keeping_one_old_generation(tmp_path: Path) -> None:
    gitdir = tmp_path / "hub.git"
    state = gitdir / "annexsync"
    state.mkdir(parents=True)
    (state / "received.log").write_bytes(b"x" * hookscript.RECORD_MAX)
    (state / "received.log.1").write_bytes(b"older\n")
    update = [(ZERO, "a" * 40, "refs/heads/main")]

    hookscript.record(str(gitdir), str(state), update)

    assert (state / "received.log.1").read_bytes() == b"x" * hookscript.RECORD_MAX
    assert (state / "received.log").read_text().endswith(f"{ZERO} {'a' * 40} refs/heads/main\n")

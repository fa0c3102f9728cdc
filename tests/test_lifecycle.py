"""The daemon's lifecycle: detaching, the single-instance lock, stopping, status and sync."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, annexsync, commit_count, git, head_files, wait_until

from assistant.daemon.control import request, socket_path
from assistant.daemon.lifecycle import running_pid

Factory = Callable[[Path], Daemon]


def state(repo: Path) -> Path:
    return repo / ".git" / "annexsync"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int) -> None:
    """SIGTERM a daemon we started, then SIGKILL it if it lingers."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def detached(repo: Path) -> Iterator[Callable[[], int]]:
    """Start a detached assistant with the real CLI; every one is stopped afterwards by the pid
    it printed and the pid in its pidfile."""
    pids: list[int] = []

    def start() -> int:
        proc = annexsync("-C", str(repo), "assistant")
        assert proc.returncode == 0, proc.stderr
        match = re.search(r"\(pid (\d+)\)", proc.stdout)
        assert match, proc.stdout
        pid = int(match.group(1))
        pids.append(pid)
        return pid

    try:
        yield start
    finally:
        pidfile = state(repo) / "assistant.pid"
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pidfile.read_text()))
        for pid in pids:
            stop_pid(pid)


def test_assistant_detaches_prints_pid_and_writes_pidfile_and_log(
    repo: Path, detached: Callable[[], int]
) -> None:
    started = time.monotonic()
    pid = detached()
    assert time.monotonic() - started < 60
    assert pid != os.getpid() and pid_alive(pid)
    assert (state(repo) / "assistant.pid").read_text().strip() == str(pid)
    assert running_pid(state(repo)) == pid
    log = state(repo) / "daemon.log"
    wait_until(lambda: "assistant started" in log.read_text(), timeout=30)
    assert f"(pid {pid})" in log.read_text()
    (repo / "hello.txt").write_text("committed by the detached daemon\n")
    wait_until(lambda: head_files(repo).get("hello.txt") == b"committed by the detached daemon\n")
    wait_until(lambda: "committed" in log.read_text() and "Add hello.txt" in log.read_text())


def test_second_assistant_refuses_naming_the_running_pid(
    repo: Path, detached: Callable[[], int]
) -> None:
    pid = detached()
    again = annexsync("-C", str(repo), "assistant")
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert "already running" in again.stderr and f"pid {pid}" in again.stderr
    foreground = annexsync("-C", str(repo), "assistant", "--foreground", timeout=60)
    assert foreground.returncode != 0
    assert "already running" in foreground.stderr and f"pid {pid}" in foreground.stderr
    assert "Traceback" not in foreground.stderr
    assert pid_alive(pid)
    assert running_pid(state(repo)) == pid


def test_stop_stops_the_running_assistant_and_frees_the_lock(
    repo: Path, detached: Callable[[], int]
) -> None:
    pid = detached()
    proc = annexsync("-C", str(repo), "assistant", "--stop")
    assert proc.returncode == 0, proc.stderr
    assert f"pid {pid}" in proc.stdout
    wait_until(lambda: not pid_alive(pid), timeout=30)
    assert running_pid(state(repo)) is None
    assert not (state(repo) / "assistant.pid").exists()
    assert not socket_path(state(repo)).exists()
    again = annexsync("-C", str(repo), "assistant", "--stop")
    assert again.returncode != 0
    assert "no assistant is running" in again.stderr and "Traceback" not in again.stderr
    # the lock is free: a new assistant starts
    second = detached()
    assert second != pid and running_pid(state(repo)) == second


def test_control_socket_and_state_dir_are_private(repo: Path, daemon: Daemon) -> None:
    sock = socket_path(state(repo))
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state(repo)).st_mode) == 0o700
    reply = request(sock, {"cmd": "ping"})
    assert reply is not None and reply["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_status_shows_pending_held_last_commit_and_node(
    repo: Path, daemon_factory: Factory
) -> None:
    for name in ("a", "b", "c", "d"):
        (repo / f"{name}.txt").write_text(f"{name}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "four files")
    git(repo, "config", "annexsync.massdelete", "50%,1")
    git(repo, "config", "annexsync.delay", "30s")  # pending until the sync below
    git(repo, "config", "annexsync.maxdelay", "60s")
    git(repo, "config", "annexsync.name", "laptop")
    d = daemon_factory(repo).start()
    for name in ("a", "b", "c"):
        (repo / f"{name}.txt").unlink()
    wait_until(lambda: d.status()["pending_count"] == 3, timeout=30)

    text = annexsync("-C", str(repo), "status")
    assert text.returncode == 0, text.stderr
    assert "node:      laptop" in text.stdout
    assert f"running (pid {d.proc.pid})" in text.stdout  # type: ignore[union-attr]
    assert "branch:    main at" in text.stdout and "four files" in text.stdout
    assert "pending:   3 paths" in text.stdout
    assert "a.txt" in text.stdout

    sync = annexsync("-C", str(repo), "sync")
    assert sync.returncode == 3, sync.stderr
    assert "3 deletions are held by the mass-deletion guard" in sync.stderr
    assert sync.stdout == "nothing to commit\n"
    proc = annexsync("-C", str(repo), "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["running"] is True
    assert status["node"] == "laptop"
    assert status["uuid"] == git(repo, "config", "annexsync.uuid").strip()
    assert status["held"] == ["a.txt", "b.txt", "c.txt"]
    assert status["pending_count"] == 0
    assert status["last_commit"]["summary"] == "four files"
    assert status["last_commit"]["id"] == git(repo, "rev-parse", "HEAD").strip()
    assert status["branch"] == "main"
    text = annexsync("-C", str(repo), "status")
    assert "held:      3 deletions held by the mass-deletion guard" in text.stdout
    assert "--allow-deletions" in text.stdout


def test_status_without_a_daemon_says_it_is_not_running(repo: Path) -> None:
    (repo / "loose.txt").write_text("not committed yet\n")
    proc = annexsync("-C", str(repo), "status")
    assert proc.returncode == 0, proc.stderr
    assert "assistant: not running" in proc.stdout
    assert "no commits yet" in proc.stdout
    assert "uncommitted: 1 path" in proc.stdout
    status = json.loads(annexsync("-C", str(repo), "status", "--json").stdout)
    assert status["running"] is False and status["pending"] == ["loose.txt"]


def test_sync_commits_pending_changes_through_the_running_daemon(
    repo: Path, daemon_factory: Factory
) -> None:
    git(repo, "config", "annexsync.delay", "20s")
    git(repo, "config", "annexsync.maxdelay", "60s")
    d = daemon_factory(repo).start()
    (repo / "now.txt").write_text("commit me now\n")
    wait_until(lambda: "now.txt" in d.status()["pending"], timeout=30)
    assert commit_count(repo) == 0
    proc = annexsync("-C", str(repo), "sync")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"committed [0-9a-f]{10} Add now\.txt\n", proc.stdout)
    assert head_files(repo) == {"now.txt": b"commit me now\n"}
    status = d.status()
    assert status["commits"] == 1 and status["pending_count"] == 0
    again = annexsync("-C", str(repo), "sync", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["commit"] is None
    assert commit_count(repo) == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("annexsync.delay", "banana", "bad value for annexsync.delay: 'banana'"),
        ("annexsync.maxbatch", "0", "bad value for annexsync.maxbatch: '0'"),
        ("annexsync.massdelete", "lots", "bad value for annexsync.massdelete: 'lots'"),
    ],
)
@pytest.mark.parametrize("mode", [(), ("--foreground",)], ids=["detached", "foreground"])
def test_assistant_on_bad_config_fails_with_one_line_error(
    repo: Path, key: str, value: str, message: str, mode: tuple[str, ...]
) -> None:
    git(repo, "config", key, value)
    proc = annexsync("-C", str(repo), "assistant", *mode)
    assert proc.returncode != 0
    assert proc.stderr.startswith("annexsync: error: ")
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert running_pid(state(repo)) is None
    assert not (state(repo) / "assistant.pid").exists()

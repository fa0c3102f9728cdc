"""``annexsync notify-changes``: the real command as a subprocess against real repositories."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import annexsync, git

from assistant.notify import watch_remote
from assistant.transport.local import LocalTransport


class Notifier:
    """A running ``notify-changes`` whose output lines are collected by a reader thread."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "notify-changes", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 10.0) -> str:
        """The next line; fails the test if none arrives within ``timeout``."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None

    def until(self, wanted: str, timeout: float = 10.0) -> list[str]:
        """Lines up to and including ``wanted``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1] != wanted:
            seen.append(self.next(max(0.01, deadline - time.monotonic())))
        return seen

    def quiet(self, seconds: float = 0.5) -> list[str]:
        """Whatever arrives within ``seconds`` (expected: nothing)."""
        time.sleep(seconds)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def notifier() -> Iterator[type[Notifier]]:
    """Starts Notifiers and stops every one of them, by process, at the end."""
    started: list[Notifier] = []

    class Tracked(Notifier):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            started.append(self)

    yield Tracked
    for n in started:
        n.stop()


def commit(repo: Path, message: str = "change") -> str:
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def test_ready_and_initial_refs(repo: Path, notifier: type[Notifier]) -> None:
    oid = commit(repo)
    git(repo, "branch", "side")
    n = notifier(repo)
    assert n.next() == "ready"
    assert {n.next(), n.next()} == {f"ref {oid} refs/heads/main", f"ref {oid} refs/heads/side"}
    assert n.quiet(0.3) == []


def test_commit_reports_one_line(repo: Path, notifier: type[Notifier]) -> None:
    commit(repo)
    n = notifier(repo)
    n.until("ready")
    n.next()
    oid = commit(repo, "second")
    assert n.next() == f"ref {oid} refs/heads/main"
    assert n.quiet(0.3) == []


def test_first_commit_in_unborn_repository(repo: Path, notifier: type[Notifier]) -> None:
    n = notifier(repo)
    assert n.next() == "ready"
    oid = commit(repo)
    assert n.next() == f"ref {oid} refs/heads/main"


def test_push_into_new_remote_namespace(
    tmp_path: Path, repo: Path, notifier: type[Notifier]
) -> None:
    """A push creating refs/remotes/x/synced/main (directories that did not exist) is seen."""
    target = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(target))
    n = notifier(target)
    assert n.next() == "ready"
    oid = commit(repo)
    git(repo, "push", "-q", str(target), "main:refs/remotes/x/synced/main")
    assert n.next() == f"ref {oid} refs/remotes/x/synced/main"
    oid2 = commit(repo, "again")
    git(repo, "push", "-q", str(target), "main:refs/remotes/x/synced/main")
    assert n.next() == f"ref {oid2} refs/remotes/x/synced/main"


def test_pack_refs_is_silent_and_packed_changes_seen(repo: Path, notifier: type[Notifier]) -> None:
    commit(repo)
    git(repo, "branch", "side")
    git(repo, "update-ref", "refs/remotes/x/synced/main", "HEAD")
    n = notifier(repo)
    n.until("ready")
    assert len([n.next() for _ in range(3)]) == 3
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/side").exists()
    assert n.quiet(0.5) == []
    oid = commit(repo, "after packing")
    assert n.next() == f"ref {oid} refs/heads/main"
    git(repo, "pack-refs", "--all")
    git(repo, "gc", "-q")
    assert n.quiet(0.5) == []


def test_deleted_ref(repo: Path, notifier: type[Notifier]) -> None:
    commit(repo)
    git(repo, "branch", "loose")
    git(repo, "branch", "packed")
    git(repo, "pack-refs", "--all")
    git(repo, "branch", "loose2")
    n = notifier(repo)
    lines = n.until("ready") + [n.next() for _ in range(4)]
    assert sum(line.startswith("ref ") for line in lines) == 4
    git(repo, "branch", "-D", "loose2")
    assert n.next() == "deleted refs/heads/loose2"
    git(repo, "branch", "-D", "packed")
    assert n.next() == "deleted refs/heads/packed"
    assert n.quiet(0.3) == []


def test_burst_ends_with_final_oid(repo: Path, notifier: type[Notifier]) -> None:
    commit(repo)
    n = notifier(repo)
    n.until("ready")
    n.next()
    for i in range(20):
        last = commit(repo, f"burst {i}")
    seen = n.until(f"ref {last} refs/heads/main")
    assert 1 <= len(seen) <= 20
    assert all(line.startswith("ref ") and line.endswith(" refs/heads/main") for line in seen)
    assert n.quiet(0.3) == []


def test_eof_on_stdin_exits_zero(repo: Path, notifier: type[Notifier]) -> None:
    n = notifier(repo)
    assert n.next() == "ready"
    assert n.proc.stdin is not None
    n.proc.stdin.close()
    assert n.proc.wait(timeout=10) == 0
    assert n.proc.stderr is not None and n.proc.stderr.read() == ""


def test_sigterm_exits_zero(repo: Path, notifier: type[Notifier]) -> None:
    n = notifier(repo)
    assert n.next() == "ready"
    n.proc.terminate()
    assert n.proc.wait(timeout=10) == 0


def test_closed_output_exits_zero(repo: Path) -> None:
    """The reader going away (ssh channel closed) ends the command at its next line."""
    commit(repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "notify-changes", str(repo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.stdout.close()
        commit(repo, "nobody listens")
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_not_a_repository(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        result = annexsync("notify-changes", str(path), timeout=30)
        assert result.returncode != 0
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "not a git repository" in result.stderr


def test_watch_remote_local(repo: Path) -> None:
    """The near-side helper over the local transport: initial refs, then a change."""
    first = commit(repo)

    async def scenario() -> list[tuple[str, str | None]]:
        got: list[tuple[str, str | None]] = []
        stream = watch_remote(LocalTransport(), str(repo))
        try:
            async with asyncio.timeout(20):
                got.append(await anext(stream))
                await asyncio.to_thread(git, repo, "branch", "side")
                got.append(await anext(stream))
                await asyncio.to_thread(git, repo, "branch", "-D", "side")
                got.append(await anext(stream))
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        return got

    assert asyncio.run(scenario()) == [
        ("refs/heads/main", first),
        ("refs/heads/side", first),
        ("refs/heads/side", None),
    ]

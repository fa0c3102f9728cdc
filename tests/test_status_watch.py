"""The live view (``annexsync status --watch``) and what feeds it: the activity feed of recent
events, progress read from git's own meters, and the frames drawn from a status reply."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, annexsync, git, new_node, nodes_with_one_start, wait_until

from assistant.activity import Activity, progress, reporting_to
from assistant.daemon.worker import RepoWorker
from assistant.protocol.progress import Meter, read_meter, split_output
from assistant.watchview import frame_text, plain

NOW = 1_700_000_000.0


# --- the activity feed -----------------------------------------------------------------------
def test_the_feed_keeps_only_the_newest_events_oldest_first() -> None:
    feed = Activity(keep=3, clock=lambda: NOW)
    for n in range(5):
        feed.emit("commit", f"committed {n}", n=n)
    assert [e["text"] for e in feed.recent()] == ["committed 2", "committed 3", "committed 4"]
    assert feed.recent(1) == [{"time": NOW, "kind": "commit", "text": "committed 4", "n": 4}]


def test_a_failing_subscriber_does_not_stop_the_others_or_the_emitter() -> None:
    feed = Activity()
    seen: list[str] = []

    def broken(_event: object) -> None:
        raise RuntimeError("boom")

    feed.subscribe(broken)
    feed.subscribe(lambda event: seen.append(event.kind))  # type: ignore[attr-defined]
    feed.emit("variant", "kept both versions of a.txt")
    assert seen == ["variant"]
    assert feed.recent()[-1]["kind"] == "variant"


def test_progress_shows_while_the_work_runs_and_goes_when_it_ends() -> None:
    feed = Activity(clock=lambda: NOW)
    with reporting_to(feed, "desktop"), progress("fetching", "objects") as item:
        item.update(40, 300, "Receiving objects")
        assert feed.running() == [
            {
                "label": "desktop: fetching",
                "unit": "objects",
                "done": 40,
                "total": 300,
                "stage": "Receiving objects",
                "started": NOW,
            }
        ]
    assert feed.running() == []


def test_progress_with_nobody_asking_is_detached_and_harmless() -> None:
    feed = Activity()
    with progress("updating files", "files", 10) as item:
        item.update(5)
        assert item.done == 5 and item.total == 10
    assert feed.running() == []


def test_work_on_the_repository_thread_reports_to_the_caller_s_feed() -> None:
    feed = Activity()
    seen: list[list[dict[str, Any]]] = []

    def work() -> None:
        with progress("updating files", "files", 2):
            seen.append(feed.running())

    async def main() -> None:
        worker = RepoWorker()
        try:
            with reporting_to(feed, "laptop"):
                await worker.run(work)
        finally:
            worker.close()

    asyncio.run(main())
    assert [p["label"] for p in seen[0]] == ["laptop: updating files"]


# --- git's progress meters -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "meter"),
    [
        ("Receiving objects:   1% (4/302)", Meter("Receiving objects", 4, 302)),
        (
            "Writing objects:  45% (136/302), 1.20 MiB | 2.40 MiB/s",
            Meter("Writing objects", 136, 302),
        ),
        ("Resolving deltas: 100% (3/3), done.", Meter("Resolving deltas", 3, 3)),
        ("Enumerating objects: 302, done.", Meter("Enumerating objects", 302, None)),
        ("error: hasDotgit: contains '.git'", None),
        ("fatal: pack has bad object at offset 12: inflate returned -5", None),
        ("Total 302 (delta 0), reused 0 (delta 0), pack-reused 0", None),
        ("fatal: early EOF: 3 objects missing", None),
    ],
)
def test_git_progress_lines_are_read_and_other_lines_are_not(
    line: str, meter: Meter | None
) -> None:
    assert read_meter(line) == meter


def test_redrawn_meters_are_split_on_carriage_returns_and_the_rest_is_kept() -> None:
    lines, rest = split_output("Receiving objects:   0% (1/3)\rReceiving objects:  33% (1/3)\rRe")
    assert lines == ["Receiving objects:   0% (1/3)", "Receiving objects:  33% (1/3)"]
    assert rest == "Re"


# --- frames ----------------------------------------------------------------------------------
def _status(**extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "running": True,
        "pid": 4242,
        "node": "laptop",
        "root": "/home/me/notes",
        "branch": "main",
        "last_commit": {"id": "1a2b3c4d5e6f7a8b", "summary": "Update todo.md", "time": NOW - 12},
        "pending": [],
        "pending_count": 0,
        "writing": [],
        "held": [],
        "large": {},
        "held_merges": {},
        "watch": {"mode": "inotify", "directories": 45},
        "peers": [
            {
                "remote": "desktop",
                "state": "connected",
                "summary": "connected",
                "last_success": NOW - 3,
                "listening": True,
                "pending_push": False,
            },
            {
                "remote": "server",
                "state": "retrying",
                "summary": "retrying at 12:01:11 (in 8s)",
                "last_success": NOW - 300,
                "last_error": "connection refused",
                "polling": 60,
                "pending_push": True,
            },
        ],
        "activity": [
            {"time": NOW - 5, "kind": "commit", "text": "committed Update todo.md"},
            {"time": NOW - 4, "kind": "variant", "text": "kept both versions of plan.md"},
        ],
        "progress": [],
    }
    status.update(extra)
    return status


def test_a_frame_shows_the_node_its_peers_and_what_happened_recently() -> None:
    text = frame_text(_status(), NOW, width=110)
    assert "annexsync laptop  /home/me/notes" in text
    assert "assistant running (pid 4242), watching 45 directories" in text
    assert "branch main at 1a2b3c4d5e Update todo.md (12s ago)" in text
    desktop = next(line for line in text.splitlines() if line.strip().startswith("desktop"))
    assert "connected" in desktop and "3s ago" in desktop and "streamed" in desktop
    server = next(line for line in text.splitlines() if line.strip().startswith("server"))
    assert "retrying at 12:01:11 (in 8s)" in server
    assert "polled every 1m00s" in server and "pending" in server
    assert "└ connection refused" in text
    assert "committed Update todo.md" in text and "kept both versions of plan.md" in text


def test_long_work_is_drawn_as_a_bar_with_its_count() -> None:
    running = [
        {
            "label": "desktop: fetching",
            "unit": "objects",
            "done": 1204,
            "total": 3000,
            "stage": "Receiving objects",
            "started": NOW - 12,
        },
        {"label": "server: pushing", "unit": "objects", "done": 7, "total": None, "started": NOW},
    ]
    text = frame_text(_status(progress=running), NOW, width=120)
    line = next(line for line in text.splitlines() if "desktop: fetching" in line)
    assert "(receiving objects)" in line and "1,204/3,000 objects" in line and "12s" in line
    assert "━" in line  # the bar
    assert "7 objects" in text


def test_held_and_pending_changes_say_what_to_do() -> None:
    text = frame_text(
        _status(
            held=["a.txt", "b.txt"],
            pending=["draft.md"],
            pending_count=1,
            writing=["draft.md"],
            held_merges={"refs/remotes/x/main": "a path git refuses"},
        ),
        NOW,
        width=200,
    )
    assert "1 path pending (1 open for writing): draft.md" in text
    assert "2 deletions held by the mass-deletion guard" in text
    assert "annexsync sync --allow-deletions" in text
    assert "not merged: refs/remotes/x/main: a path git refuses" in text


def test_names_from_peers_cannot_move_the_cursor_or_inject_markup() -> None:
    evil = "\x1b[2J\x1b[31mevil[bold]x[/bold]\x07.txt"
    text = frame_text(
        _status(activity=[{"time": NOW, "kind": "variant", "text": f"kept {evil}"}]), NOW
    )
    assert "\x1b" not in text and "\x07" not in text
    assert "\ufffd[2J\ufffd[31mevil[bold]x[/bold]\ufffd.txt" in text
    assert plain("a\nb\tc\u202etxt.exe") == "a\ufffdb\ufffdc\ufffdtxt.exe"


def test_with_no_assistant_the_frame_says_so_and_shows_what_is_uncommitted() -> None:
    status = _status(running=False, peers=[], pending=["new.txt"], pending_count=1)
    text = frame_text(status, NOW)
    assert "assistant not running" in text and "this view waits for it" in text
    assert "1 path uncommitted: new.txt" in text
    assert "no peers" in text and "committed Update todo.md" not in text


# --- the daemon feeds it ---------------------------------------------------------------------
def big_history(tmp_path: Path, files: int, size: int) -> Path:
    """A node named ``big`` with one commit of ``files`` incompressible files of ``size``."""
    big = new_node(tmp_path, "big")
    for n in range(files):
        (big / f"f{n:03}.bin").write_bytes(os.urandom(size))
    git(big, "add", ".")
    git(big, "commit", "-qm", f"{files * size // 1_000_000} MB of history")
    return big


def test_status_lists_commits_merges_kept_variants_and_lost_peers(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = nodes_with_one_start(tmp_path, {"plan.md": "base\n"})
    (a / "plan.md").write_text("alpha's\n")
    (b / "plan.md").write_text("beta's\n")
    git(a, "remote", "add", "beta", str(b))
    git(a, "remote", "add", "gone", "ssh://root@127.0.0.1:1/nowhere")
    git(b, "remote", "add", "alpha", str(a))
    da = daemon_factory(a).start()
    db = daemon_factory(b).start()

    def events() -> list[dict[str, Any]]:
        return da.status()["activity"] + db.status()["activity"]

    # Whichever node merges first keeps the variant; the other fast-forwards to it.
    wait_until(
        lambda: {"commit", "merge", "variant", "peer-lost"} <= {e["kind"] for e in events()},
        timeout=30,
    )
    variant = next(e for e in events() if e["kind"] == "variant")
    assert variant["path"] == "plan.md" and variant["variant"].startswith("plan.variant-")
    wait_until(lambda: (a / variant["variant"]).exists(), timeout=30)
    lost = [e for e in da.status()["activity"] if e["kind"] == "peer-lost"]
    assert lost[0]["remote"] == "gone" and lost[0]["text"].startswith("gone: error: ")
    assert len(lost) == 1  # once per outage, not once per retry


def test_a_large_first_sync_shows_progress_while_it_runs(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    big = big_history(tmp_path, 400, 150_000)
    fresh = new_node(tmp_path, "fresh")
    git(fresh, "remote", "add", "big", str(big))
    daemon = daemon_factory(fresh).start(wait=False)

    labels: dict[str, tuple[int, int | None]] = {}

    def watch() -> bool:
        try:
            status = daemon.status() if daemon.ready() else {}
        except AssertionError:
            raise
        except Exception:
            return False
        for item in status.get("progress", []):
            done, total = labels.get(item["label"], (0, None))
            labels[item["label"]] = (max(done, item["done"]), item["total"] or total)
        return (fresh / "f399.bin").exists() and daemon.idle()

    wait_until(watch, timeout=90, interval=0.005)
    assert "big: fetching" in labels, labels
    assert labels["big: fetching"][1] == 402  # the commit, its tree and 400 blobs
    assert 0 < labels["big: fetching"][0] <= 402
    updating = [label for label in labels if label.endswith("updating files")]
    assert updating and labels[updating[0]][1] == 400, labels
    assert daemon.status()["progress"] == []


# --- the command -----------------------------------------------------------------------------
class Terminal:
    """``annexsync ARGS`` on a real pseudo-terminal, 120 columns wide; what it drew is kept."""

    def __init__(self, *args: str) -> None:
        self.fd, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(secondary)
        self.seen: list[str] = []

    def text(self) -> str:
        return "".join(self.seen)

    def read_until(self, wanted: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen.append(os.read(self.fd, 65536).decode(errors="replace"))
                except OSError:
                    break
            if wanted in self.text():
                return
        raise AssertionError(f"{wanted!r} not shown within {timeout}s:\n{self.text()[-3000:]}")

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


def test_watch_on_a_terminal_waits_for_the_assistant_and_shows_new_commits(
    repo: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    assert annexsync("-C", str(repo), "init", "--name", "laptop").returncode == 0
    with Terminal("-C", str(repo), "status", "--watch") as term:
        term.read_until("assistant not running", 20)
        daemon_factory(repo).start()
        term.read_until("assistant running", 20)
        (repo / "todo.md").write_text("buy milk\n")
        term.read_until("committed Add todo.md", 20)
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(timeout=10) == 0
        assert "Traceback" not in term.text()


def test_watch_into_a_pipe_prints_a_frame_when_it_changes_and_stops_on_sigterm(
    daemon: Daemon, repo: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "-C", str(repo), "status", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    wait_until(lambda: "assistant running" in "".join(out), timeout=20)
    (repo / "a.txt").write_text("a\n")
    wait_until(lambda: "committed Add a.txt" in "".join(out), timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    reader.join(timeout=5)
    text = "".join(out)
    assert "\x1b" not in text
    assert proc.stderr is not None and proc.stderr.read() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watch", "--json"], "--watch draws a view for people; use --json without it"),
        (["--watch", "--interval", "0"], "--interval takes 0.05 to 3600 seconds, not 0"),
    ],
)
def test_watch_refuses_bad_options_in_one_line(repo: Path, args: list[str], message: str) -> None:
    result = annexsync("-C", str(repo), "status", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"annexsync: error: {message}"]


def test_a_long_fetch_on_a_terminal_draws_a_bar_and_wipes_it(tmp_path: Path) -> None:
    big = big_history(tmp_path, 300, 200_000)
    here = new_node(tmp_path, "here")
    git(here, "remote", "add", "big", str(big))
    with Terminal("-C", str(here), "fetch") as term:
        term.read_until("big: fetched main", 60)
        assert term.proc.wait(timeout=30) == 0
    assert "big: fetching" in term.text() and "/302 objects" in term.text(), term.text()[-2000:]


def test_a_fetch_into_a_pipe_draws_nothing(tmp_path: Path) -> None:
    big = new_node(tmp_path, "big")
    (big / "a.bin").write_bytes(os.urandom(1000))
    git(big, "add", ".")
    git(big, "commit", "-qm", "one")
    here = new_node(tmp_path, "here")
    git(here, "remote", "add", "big", str(big))
    result = annexsync("-C", str(here), "fetch")
    assert result.returncode == 0
    assert result.stdout.startswith("big: fetched main") and result.stderr == ""

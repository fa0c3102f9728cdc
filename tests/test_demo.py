"""``annexsync demo``: the wiring and the lines it prints (pure), and the real command: the tour,
the live mode, Ctrl-C, and refusals of bad options."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import annexsync, git, head_files, wait_until

from assistant.daemon import lifecycle
from assistant.demo import UsageError, node_names, prepare_dir, wiring
from assistant.demotour import activity_line, arrivals_text, commit_note

STEPS = (
    r"1\. notes\.md written on laptop → on (desktop|server) after \d+ ms, on (desktop|server) "
    r"after \d+ ms",
    r"2\. notes\.md edited on desktop → on (laptop|server) after \d+ ms, on (laptop|server) "
    r"after \d+ ms",
    r"3\. notes\.md edited on laptop and server at once → both versions on every node after "
    r"\d+ ms:",
    r"notes\.variant-[0-9a-f]+\.md +(laptop|server)'s edit",
    r"4\. git log on laptop:",
    r"\*   [0-9a-f]+ Merge [0-9a-f]+ \((laptop|server)\) and [0-9a-f]+ \((laptop|server)\)",
)


# --- pure helpers --------------------------------------------------------------------------
def test_node_names_are_two_or_three_and_anything_else_is_a_usage_error() -> None:
    assert node_names(2) == ["laptop", "desktop"]
    assert node_names(3) == ["laptop", "desktop", "server"]
    for bad in (0, 1, 4, 7, -3):
        with pytest.raises(UsageError, match=f"--nodes takes 2 or 3, not {bad}") as caught:
            node_names(bad)
        assert caught.value.exit_code == 2


def test_wiring_is_a_full_mesh_with_each_remote_named_after_its_node() -> None:
    assert wiring(["laptop", "desktop"]) == {"laptop": ["desktop"], "desktop": ["laptop"]}
    plan = wiring(["laptop", "desktop", "server"])
    assert plan == {
        "laptop": ["desktop", "server"],
        "desktop": ["laptop", "server"],
        "server": ["laptop", "desktop"],
    }
    assert all(node not in peers for node, peers in plan.items())


def test_arrivals_are_listed_in_the_order_they_landed() -> None:
    assert (
        arrivals_text({"server": 0.0584, "desktop": 0.031})
        == "on desktop after 31 ms, on server after 58 ms"
    )
    assert arrivals_text({"desktop": 12.34}) == "on desktop after 12.3 s"


def test_commit_note_is_the_summary_with_the_variants_a_merge_kept() -> None:
    assert commit_note("Update notes.md\n\nAnnexsync-Node: laptop\n") == "Update notes.md"
    merge = (
        "Merge 1a2b3c4d5e (laptop) and 9f8e7d6c5b (server)\n\n"
        "Kept both versions of notes.md: the other is notes.variant-1005de14.md\n"
    )
    assert commit_note(merge) == (
        "Merge 1a2b3c4d5e (laptop) and 9f8e7d6c5b (server); "
        "Kept both versions of notes.md: the other is notes.variant-1005de14.md"
    )
    assert commit_note("") == "(no message)"
    assert commit_note("Add \x1b[2Jx.txt\n") == "Add \\x1b[2Jx.txt"


def test_activity_line_says_where_a_commit_came_from_and_how_long_it_took() -> None:
    assert activity_line("laptop", "Add a.txt", None, 5.0) == "  laptop   Add a.txt"
    assert activity_line("laptop", "Add a.txt", ("laptop", 5.0), 5.0) == "  laptop   Add a.txt"
    assert (
        activity_line("server", "Add a.txt", ("laptop", 5.0), 5.042)
        == "  server   ← Add a.txt  (from laptop, 42 ms)"
    )


def test_prepare_dir_takes_a_new_or_empty_directory_and_refuses_anything_else(
    tmp_path: Path,
) -> None:
    assert prepare_dir(tmp_path / "new" / "demo") == (tmp_path / "new" / "demo", True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_dir(empty) == (empty, False)
    (empty / "keep.txt").write_text("mine\n")
    with pytest.raises(UsageError, match="not empty"):
        prepare_dir(empty)
    with pytest.raises(UsageError, match="not a directory"):
        prepare_dir(empty / "keep.txt")
    assert (empty / "keep.txt").read_text() == "mine\n"


# --- the real command ------------------------------------------------------------------------
def test_tour_only_with_keep_shows_each_step_and_leaves_converged_repositories(
    tmp_path: Path,
) -> None:
    demo = tmp_path / "demo"

    proc = annexsync("demo", "--tour-only", "--keep", "--dir", str(demo), timeout=180)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    for step in STEPS:
        assert re.search(step, proc.stdout), f"{step!r} not in:\n{proc.stdout}"
    assert f"the repositories are kept in {demo}" in proc.stdout
    nodes = [demo / name for name in ("laptop", "desktop", "server")]
    trees = [head_files(node) for node in nodes]
    assert trees[0] == trees[1] == trees[2]
    variant = re.search(r"notes\.variant-[0-9a-f]+\.md", proc.stdout)
    assert variant is not None
    assert set(trees[0]) == {"notes.md", variant.group()}
    assert {trees[0]["notes.md"], trees[0][variant.group()]} == {
        b"# Notes\n\nwritten on laptop\ndesktop was here too\nlaptop's edit\n",
        b"# Notes\n\nwritten on laptop\ndesktop was here too\nserver's edit\n",
    }
    for node in nodes:
        assert {p.name for p in node.iterdir() if p.is_file()} == set(trees[0])
        assert git(node, "status", "--porcelain") == ""
        assert lifecycle.running_pid(node / ".git" / "annexsync") is None
        assert "assistant stopped" in (node / ".git" / "annexsync" / "daemon.log").read_text()
    assert git(nodes[0], "remote").split() == ["desktop", "server"]
    assert git(nodes[1], "config", "annexsync.name").strip() == "desktop"


def test_without_keep_the_repositories_are_removed(tmp_path: Path) -> None:
    demo = tmp_path / "demo"

    proc = annexsync("demo", "--tour-only", "--nodes", "2", "--dir", str(demo), timeout=180)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on desktop after" in proc.stdout and "server" not in proc.stdout
    assert "3. notes.md edited on laptop and desktop at once" in proc.stdout
    assert f"removed {demo}" in proc.stdout
    assert not demo.exists()


def _process_group(pgid: int) -> set[int]:
    """Every live process in the process group ``pgid``."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def _mentioning(path: Path) -> set[int]:
    """Processes whose command line names ``path`` or whose cwd lies inside it."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if os.fsencode(path) in cmdline or cwd == str(path) or cwd.startswith(f"{path}/"):
            found.add(int(entry.name))
    return found


@pytest.fixture
def live_demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """``annexsync demo`` in live mode, in a session of its own as a terminal would run it;
    killed afterwards if a test left it running."""
    demo, out = tmp_path / "demo", tmp_path / "demo.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "demo", "--dir", str(demo)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "Ctrl-C stops the demo" in out.read_text() or proc.poll(), 120)
        assert proc.poll() is None, out.read_text()
        yield proc, demo, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_live_mode_answers_status_shows_arrivals_and_stops_cleanly_on_ctrl_c(
    live_demo: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, demo, out = live_demo

    reply = annexsync("-C", str(demo / "desktop"), "status", "--json")
    assert reply.returncode == 0, reply.stderr
    status = json.loads(reply.stdout)
    assert status["running"] is True
    assert status["pid"] == proc.pid
    assert status["node"] == "desktop"
    assert {p["remote"]: p["state"] for p in status["peers"]} == {
        "laptop": "connected",
        "server": "connected",
    }
    second = annexsync("-C", str(demo / "server"), "assistant")
    assert second.returncode != 0
    assert f"already running for this repository (pid {proc.pid})" in second.stderr

    (demo / "laptop" / "hello.txt").write_text("hello\n")
    for node in ("desktop", "server"):
        line = rf"{node} +← Add hello\.txt  \(from laptop, \d+ ms\)"
        wait_until(lambda line=line: re.search(line, out.read_text()), 30)
    group = _process_group(proc.pid)
    assert proc.pid in group

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal does

    assert proc.wait(timeout=15) == 0, out.read_text()
    text = out.read_text()
    assert "Traceback" not in text
    assert text.rstrip().endswith(f"removed {demo}")
    assert not demo.exists()
    assert not _process_group(proc.pid)
    assert not _mentioning(demo)


def test_bad_node_count_is_a_one_line_error(tmp_path: Path) -> None:
    proc = annexsync("demo", "--nodes", "7", "--dir", str(tmp_path / "demo"))

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "annexsync: error: --nodes takes 2 or 3, not 7\n"
    assert not (tmp_path / "demo").exists()


def test_a_non_empty_dir_is_refused_in_one_line_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("mine\n")

    proc = annexsync("demo", "--tour-only", "--dir", str(tmp_path))

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"annexsync: error: --dir {tmp_path}: not empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]

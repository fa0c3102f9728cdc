"""Live replication between running assistants on local paths: each commit is pushed at once,
arrivals are merged at once, and nothing ping-pongs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from conftest import (
    Daemon,
    annexsync,
    commit_count,
    git,
    head_files,
    new_node,
    nodes_with_one_start,
    wait_until,
)


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD", check=False).strip()


def settled(*nodes: Path) -> None:
    """All heads equal, and no further commits appear (no ping-pong)."""
    wait_until(lambda: len({head(n) for n in nodes}) == 1, timeout=30)
    counts = [commit_count(n) for n in nodes]
    time.sleep(1.0)
    assert [commit_count(n) for n in nodes] == counts
    assert len({head(n) for n in nodes}) == 1


def test_edits_on_either_node_reach_the_other_at_once(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    da, db = daemon_factory(a).start(), daemon_factory(b).start()

    (a / "note.md").write_text("from alpha\n")
    wait_until(
        lambda: (b / "note.md").exists() and (b / "note.md").read_text() == "from alpha\n",
        timeout=30,
    )
    (b / "reply.md").write_text("from beta\n")
    wait_until(lambda: (a / "reply.md").exists(), timeout=30)

    settled(a, b)
    assert (
        head_files(a) == head_files(b) == {"note.md": b"from alpha\n", "reply.md": b"from beta\n"}
    )
    peers = {p["remote"]: p for p in da.status()["peers"]}
    assert peers["beta"]["state"] == "connected"
    assert "peer:      beta: connected" in annexsync("-C", str(a), "status").stdout
    assert db.status()["pending_count"] == 0


def test_a_node_without_remotes_merges_what_a_peer_pushes_to_it(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    daemon_factory(a).start()
    daemon_factory(b).start()

    (a / "only-pushed.txt").write_text("pushed\n")

    wait_until(lambda: (b / "only-pushed.txt").exists(), timeout=30)
    settled(a, b)
    assert git(b, "status", "--porcelain") == ""


def test_what_arrived_while_the_assistant_was_down_is_merged_when_it_starts(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    (a / "early.txt").write_text("early\n")
    assert annexsync("-C", str(a), "sync").returncode == 0  # lands in beta's synced ref
    assert "early.txt" not in head_files(b)

    daemon_factory(b).start()

    wait_until(lambda: (b / "early.txt").exists() and head(b) == head(a), timeout=30)


def test_concurrent_edits_of_one_file_converge_with_both_versions_kept(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    daemon_factory(a).start()
    daemon_factory(b).start()
    (a / "shared.md").write_text("base\n")
    wait_until(lambda: (b / "shared.md").exists(), timeout=30)
    settled(a, b)

    (a / "shared.md").write_text("alpha's edit\n")
    (b / "shared.md").write_text("beta's edit\n")

    def both_versions_everywhere() -> bool:
        for n in (a, b):
            versions = {d for p, d in head_files(n).items() if p.startswith("shared.")}
            if versions != {b"alpha's edit\n", b"beta's edit\n"}:
                return False
        return True

    wait_until(both_versions_everywhere, timeout=30)
    settled(a, b)
    for n in (a, b):
        files = head_files(n)
        assert not any(b"<<<<<<<" in data for data in files.values())
        on_disk = {p.name: p.read_bytes() for p in n.iterdir() if p.is_file()}
        assert {k: v for k, v in on_disk.items() if k.startswith("shared.")} == {
            k: v for k, v in files.items() if k.startswith("shared.")
        }


def take_lock(path: Path) -> bool:
    """Create a git lock file the way git does (O_EXCL), so a lock held at that moment by the
    assistant's own index write is waited for, never overwritten."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def test_a_merge_held_up_by_git_at_work_goes_ahead_once_git_is_done(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    daemon_factory(a).start()
    db = daemon_factory(b).start()
    (a / "base.txt").write_text("base\n")
    wait_until(lambda: (b / "base.txt").exists(), timeout=30)

    lock = b / ".git" / "index.lock"
    wait_until(lambda: take_lock(lock), timeout=10)  # someone's git command holds the index
    (a / "later.txt").write_text("arrives while beta's git is busy\n")
    wait_until(
        lambda: (
            git(
                b, "rev-parse", "-q", "--verify", "refs/remotes/alpha/synced/main", check=False
            ).strip()
            == head(a)
        ),
        timeout=30,
    )
    time.sleep(0.5)
    assert not (b / "later.txt").exists()  # nothing is merged under a held index

    lock.unlink()
    wait_until(lambda: (b / "later.txt").exists() and head(b) == head(a), timeout=15)
    assert db.status()["held_merges"] == {}


def test_a_remote_added_or_removed_while_the_assistant_runs_is_taken_into_account(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    da = daemon_factory(a).start()
    daemon_factory(b).start()
    (a / "before.txt").write_text("made before the remote existed\n")
    wait_until(lambda: head(a) != "HEAD", timeout=30)

    git(a, "remote", "add", "beta", str(b))
    wait_until(lambda: (b / "before.txt").exists(), timeout=30)
    (a / "after.txt").write_text("made once it did\n")
    wait_until(lambda: (b / "after.txt").exists(), timeout=30)
    assert [p["remote"] for p in da.status()["peers"]] == ["beta"]

    git(a, "remote", "remove", "beta")
    wait_until(lambda: da.status()["peers"] == [], timeout=30)
    (a / "gone.txt").write_text("the remote is gone\n")
    wait_until(lambda: "gone.txt" in head_files(a), timeout=30)
    time.sleep(1.0)  # not for correctness: the window in which a stray push would land
    assert not (b / "gone.txt").exists()


def test_a_file_being_written_when_a_peer_s_version_arrives_is_left_to_its_writer(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    a, b = nodes_with_one_start(tmp_path, {"f.txt": "base\n"})
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    daemon_factory(a).start()
    daemon_factory(b).start()
    # An editor saving in place on alpha: truncated, and (for now) nothing written yet.
    fd = os.open(a / "f.txt", os.O_WRONLY | os.O_TRUNC)
    try:
        (b / "f.txt").write_text("beta's\n")
        wait_until(lambda: any(p.name.startswith("f.variant-") for p in a.iterdir()), timeout=30)
        assert (a / "f.txt").read_bytes() == b""  # the incoming version went beside it
        os.write(fd, b"alpha's\n")
    finally:
        os.close(fd)
    wait_until(lambda: head_files(b).get("f.txt") == b"alpha's\n", timeout=30)
    settled(a, b)
    files = head_files(a)
    assert files["f.txt"] == b"alpha's\n"
    assert [v for k, v in files.items() if k.startswith("f.variant-")] == [b"beta's\n"]
    history = git(a, "log", "--format=%H", "--", "f.txt").split()
    contents = {git(a, "show", f"{h}:f.txt", check=False) for h in history}
    assert "" not in contents  # the moment between truncate and write was never committed

"""The auto-commit engine end to end: a real assistant process, real files, real inotify."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from conftest import (
    Daemon,
    annexsync,
    commit_count,
    git,
    head_files,
    head_modes,
    mounted_tmpfs,
    wait_until,
)

from assistant.config import read_settings
from assistant.daemon import app
from assistant.node import ensure_initialised

Factory = Callable[[Path], Daemon]


# --- helpers ---------------------------------------------------------------------------


def config(repo: Path, **values: str) -> None:
    for key, value in values.items():
        git(repo, "config", f"annexsync.{key}", value)


def commit_all(repo: Path, message: str = "setup") -> None:
    """Commit the whole tree with real git (used to prepare a repository before a daemon)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def disk_files(repo: Path) -> dict[str, bytes]:
    """Every file and symlink of the working tree (outside .git), path -> content."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        rel = os.path.relpath(dirpath, repo)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            path = name if rel == "." else f"{rel}/{name}"
            if os.path.islink(full):
                out[path] = os.fsencode(os.readlink(full))
            else:
                out[path] = Path(full).read_bytes()
    return out


def history_paths(repo: Path) -> set[str]:
    """Every path that appears in the tree of any commit reachable from any ref or HEAD."""
    r = pygit2.Repository(str(repo))
    if r.head_is_unborn:
        return set()
    paths: set[str] = set()
    seen_trees: set[pygit2.Oid] = set()
    starts = {r.head.target} | {
        r.references[name].peel(pygit2.Commit).id
        for name in r.references
        if name.startswith("refs/heads/")
    }
    seen_commits: set[pygit2.Oid] = set()
    for start in starts:
        for commit in r.walk(start, pygit2.enums.SortMode.NONE):
            if commit.id in seen_commits:
                continue
            seen_commits.add(commit.id)
            stack = [("", commit.tree)]
            while stack:
                prefix, tree = stack.pop()
                if tree.id in seen_trees:
                    continue
                seen_trees.add(tree.id)
                for entry in tree:
                    if entry.filemode == 0o040000:
                        stack.append((f"{prefix}{entry.name}/", r[entry.id]))
                    else:
                        paths.add(f"{prefix}{entry.name}")
    return paths


def versions(repo: Path, path: str) -> list[bytes]:
    """The content of ``path`` in every commit of HEAD's history that has it, newest first."""
    r = pygit2.Repository(str(repo))
    if r.head_is_unborn:
        return []
    out: list[bytes] = []
    for commit in r.walk(r.head.target):
        try:
            out.append(r[commit.tree[path].id].data)
        except KeyError:
            continue
    return out


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


def head_id(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def wait_synced(repo: Path, timeout: float = 30.0) -> None:
    """Until HEAD holds exactly what the working tree holds."""

    def head_matches_disk() -> bool:
        return head_files(repo) == disk_files(repo)

    wait_until(head_matches_disk, timeout=timeout)


def wait_clean(repo: Path, timeout: float = 30.0) -> None:
    """Until `git status` has nothing to say (HEAD, index and tree agree)."""

    def git_status_clean() -> bool:
        return git(repo, "status", "--porcelain", "--untracked-files=all") == ""

    wait_until(git_status_clean, timeout=timeout)


def wait_idle(d: Daemon, timeout: float = 30.0) -> None:
    wait_until(d.idle, timeout=timeout)


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


# --- editor-style saves -----------------------------------------------------------------


def test_in_place_write_is_committed(repo: Path, daemon: Daemon) -> None:
    write(repo / "notes.md", "first\n")
    wait_until(lambda: head_files(repo).get("notes.md") == b"first\n")
    with open(repo / "notes.md", "r+b") as f:
        f.write(b"FIRST, rewritten in place\n")
    wait_until(lambda: head_files(repo).get("notes.md") == b"FIRST, rewritten in place\n")
    wait_clean(repo)


def test_temp_file_renamed_over_target_commits_content_not_temp(repo: Path, daemon: Daemon) -> None:
    write(repo / "doc.txt", "v1\n")
    wait_until(lambda: head_files(repo).get("doc.txt") == b"v1\n")
    for n in range(2, 6):
        tmp = repo / f".goutputstream-{n}ABCDE"  # gedit's atomic save
        tmp.write_text(f"v{n}\n")
        os.replace(tmp, repo / "doc.txt")
    wait_until(lambda: head_files(repo).get("doc.txt") == b"v5\n")
    wait_idle(daemon)
    assert history_paths(repo) == {"doc.txt"}
    wait_clean(repo)


def test_jetbrains_safe_write_commits_content_not_temp_files(repo: Path, daemon: Daemon) -> None:
    write(repo / "Main.kt", "fun main() {}\n")
    wait_until(lambda: "Main.kt" in head_files(repo))
    (repo / "Main.kt___jb_tmp___").write_text("fun main() { println() }\n")
    os.rename(repo / "Main.kt", repo / "Main.kt___jb_old___")
    os.rename(repo / "Main.kt___jb_tmp___", repo / "Main.kt")
    os.unlink(repo / "Main.kt___jb_old___")
    wait_until(lambda: head_files(repo).get("Main.kt") == b"fun main() { println() }\n")
    wait_idle(daemon)
    assert history_paths(repo) == {"Main.kt"}


def test_file_written_outside_tree_and_renamed_in_is_committed(
    repo: Path, tmp_path: Path, daemon: Daemon
) -> None:
    write(repo / "report.txt", "draft 1\n")
    wait_until(lambda: "report.txt" in head_files(repo))
    outside = tmp_path / "report.tmp"
    outside.write_text("final report\n")
    os.replace(outside, repo / "report.txt")
    wait_until(lambda: head_files(repo).get("report.txt") == b"final report\n")
    fresh = tmp_path / "brand-new.tmp"
    fresh.write_text("new file\n")
    os.replace(fresh, repo / "brand-new.txt")
    wait_until(lambda: head_files(repo).get("brand-new.txt") == b"new file\n")
    assert history_paths(repo) == {"report.txt", "brand-new.txt"}


def test_vim_style_save_commits_new_content_and_no_swap_probe_or_backup(
    repo: Path, daemon: Daemon
) -> None:
    target = repo / "todo.md"
    write(target, "- buy milk\n")
    wait_until(lambda: head_files(repo).get("todo.md") == b"- buy milk\n")
    for n, text in enumerate(["- buy milk\n- call bob\n", "- call bob\n"]):
        swap = repo / ".todo.md.swp"
        swap.write_bytes(b"b0VIM 9.0\0" + bytes(1024))  # swap file, kept while editing
        probe = repo / "4913"  # vim's write test
        probe.write_bytes(b"")
        probe.unlink()
        os.rename(target, repo / "todo.md~")  # backup by rename
        with open(target, "wb") as f:  # the new file
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.unlink(repo / "todo.md~")
        if n == 1:
            swap.unlink()  # :q
    wait_until(lambda: head_files(repo).get("todo.md") == b"- call bob\n")
    wait_idle(daemon)
    assert history_paths(repo) == {"todo.md"}
    assert head_files(repo) == {"todo.md": b"- call bob\n"}
    wait_clean(repo)


# --- create, modify, delete, move ---------------------------------------------------------


def test_create_modify_delete_are_committed(repo: Path, daemon: Daemon) -> None:
    write(repo / "keep.txt", "keep\n")
    write(repo / "a.txt", "one\n")
    wait_until(lambda: head_files(repo) == {"keep.txt": b"keep\n", "a.txt": b"one\n"})
    write(repo / "a.txt", "two\n")
    wait_until(lambda: head_files(repo).get("a.txt") == b"two\n")
    (repo / "a.txt").unlink()
    wait_until(lambda: head_files(repo) == {"keep.txt": b"keep\n"})
    assert versions(repo, "a.txt") == [b"two\n", b"one\n"]
    wait_clean(repo)


def test_rename_and_move_within_tree_are_committed(repo: Path, daemon: Daemon) -> None:
    write(repo / "keep.txt", "keep\n")
    write(repo / "draft.md", "text\n")
    wait_until(lambda: "draft.md" in head_files(repo))
    os.rename(repo / "draft.md", repo / "final.md")
    wait_until(lambda: head_files(repo) == {"keep.txt": b"keep\n", "final.md": b"text\n"})
    assert subjects(repo)[0] == "Rename draft.md -> final.md"
    (repo / "archive" / "2024").mkdir(parents=True)
    os.rename(repo / "final.md", repo / "archive" / "2024" / "final.md")
    wait_until(
        lambda: head_files(repo) == {"keep.txt": b"keep\n", "archive/2024/final.md": b"text\n"}
    )
    wait_clean(repo)


def test_directory_moved_into_tree_commits_all_its_files(
    repo: Path, tmp_path: Path, daemon: Daemon
) -> None:
    write(repo / "readme.txt", "hi\n")
    wait_until(lambda: "readme.txt" in head_files(repo))
    incoming = tmp_path / "photos"
    expected = {}
    for i in range(30):
        rel = f"{'trip' if i % 2 else 'home'}/{'deep/' if i % 3 == 0 else ''}img{i:02d}.jpg"
        write(incoming / rel, f"jpeg {i}\n")
        expected[f"photos/{rel}"] = f"jpeg {i}\n".encode()
    os.rename(incoming, repo / "photos")
    wait_until(lambda: head_files(repo) == {"readme.txt": b"hi\n", **expected})
    wait_clean(repo)


def test_directory_moved_out_of_tree_deletes_all_its_files(
    repo: Path, tmp_path: Path, daemon: Daemon
) -> None:
    for i in range(5):
        write(repo / f"stay{i}.txt", f"stay {i}\n")
    for i in range(8):
        write(repo / "old" / f"sub{i % 2}" / f"f{i}.txt", f"old {i}\n")
    wait_synced(repo)
    os.rename(repo / "old", tmp_path / "old-moved-out")
    wait_until(
        lambda: head_files(repo) == {f"stay{i}.txt": f"stay {i}\n".encode() for i in range(5)}
    )
    wait_clean(repo)


def test_directory_rename_moves_all_its_files(repo: Path, daemon: Daemon) -> None:
    write(repo / "top.txt", "top\n")
    for i in range(6):
        write(repo / "src" / ("pkg/" if i % 2 else "") / f"m{i}.py", f"# module {i}\n")
    wait_synced(repo)
    before = {k: v for k, v in head_files(repo).items() if k.startswith("src/")}
    os.rename(repo / "src", repo / "lib")
    expected = {"top.txt": b"top\n"} | {"lib/" + k[4:]: v for k, v in before.items()}
    wait_until(lambda: head_files(repo) == expected)
    assert len(expected) == 7
    wait_clean(repo)


def test_symlinks_are_committed_as_links_and_never_followed(
    repo: Path, tmp_path: Path, daemon: Daemon
) -> None:
    outside = tmp_path / "outside-dir"
    write(outside / "secret.txt", "not part of the tree\n")
    write(repo / "target.txt", "target\n")
    os.symlink("target.txt", repo / "link-to-file")
    os.symlink(str(outside), repo / "link-to-dir")
    os.symlink("does/not/exist", repo / "dangling")
    wait_until(lambda: len(head_files(repo)) == 4)
    files, modes = head_files(repo), head_modes(repo)
    assert files["link-to-file"] == b"target.txt"
    assert files["link-to-dir"] == os.fsencode(str(outside))
    assert files["dangling"] == b"does/not/exist"
    for link in ("link-to-file", "link-to-dir", "dangling"):
        assert modes[link] == 0o120000
    assert modes["target.txt"] == 0o100644
    assert not any("secret" in p for p in history_paths(repo))
    os.unlink(repo / "link-to-file")
    os.symlink("elsewhere.txt", repo / "link-to-file")
    wait_until(lambda: head_files(repo).get("link-to-file") == b"elsewhere.txt")
    wait_clean(repo)


def test_executable_bit_is_committed(repo: Path, daemon: Daemon) -> None:
    write(repo / "run.sh", "#!/bin/sh\necho hi\n")
    write(repo / "other.txt", "x\n")
    wait_until(lambda: head_modes(repo).get("run.sh") == 0o100644)
    os.chmod(repo / "run.sh", 0o755)
    wait_until(lambda: head_modes(repo).get("run.sh") == 0o100755)
    assert subjects(repo)[0] == "Change mode of run.sh"
    os.chmod(repo / "run.sh", 0o644)
    wait_until(lambda: head_modes(repo).get("run.sh") == 0o100644)
    assert head_files(repo)["run.sh"] == b"#!/bin/sh\necho hi\n"
    wait_clean(repo)


def test_empty_file_is_committed(repo: Path, daemon: Daemon) -> None:
    (repo / "empty").touch()
    (repo / "dir").mkdir()
    (repo / "dir" / ".keep").touch()
    wait_until(lambda: head_files(repo) == {"empty": b"", "dir/.keep": b""})
    write(repo / "empty", "no longer\n")
    wait_until(lambda: head_files(repo).get("empty") == b"no longer\n")
    write(repo / "empty", "")
    wait_until(lambda: head_files(repo).get("empty") == b"")
    wait_clean(repo)


UNICODE_NAMES = [
    "café.md",
    "日本語/ノート.txt",
    "новый файл.txt",
    "emoji 🎉/party 🎈.txt",
    "spaces and 'quotes' & (parens).txt",
    "tab\there.txt",
    "naïve/Ünïcödé-NFD-e\u0301.txt",
]


def test_unicode_and_odd_names_are_committed(repo: Path, daemon: Daemon) -> None:
    for i, name in enumerate(UNICODE_NAMES):
        write(repo / name, f"content {i}\n")
    expected = {name: f"content {i}\n".encode() for i, name in enumerate(UNICODE_NAMES)}
    wait_until(lambda: head_files(repo) == expected)
    os.rename(repo / "café.md", repo / "résumé.md")
    expected["résumé.md"] = expected.pop("café.md")
    wait_until(lambda: head_files(repo) == expected)
    wait_clean(repo)


# --- batching ---------------------------------------------------------------------------------


def test_burst_of_1000_files_is_committed_completely_in_few_commits(
    repo: Path, daemon_factory: Factory
) -> None:
    # A quiet window long enough that the writer being descheduled on a loaded test machine
    # does not end the batch early, and a cap that still holds when writing 1000 files takes
    # seconds there (maxdelay cuts one batch per window while changes keep coming).
    config(repo, delay="100ms", maxdelay="3s")
    daemon_factory(repo).start()
    expected = {}
    for i in range(1000):
        rel = f"d{i // 100}/file{i:04d}.txt"
        expected[rel] = f"burst file {i}\n".encode()
    for rel, data in expected.items():
        write(repo / rel, data)
    wait_until(lambda: head_files(repo) == expected, timeout=60)
    assert commit_count(repo) <= 5, subjects(repo)
    wait_clean(repo)


def _watch_file_while_open(repo: Path, path: str, seconds: float) -> set[bytes | None]:
    """Every content of ``path`` seen in HEAD while polling for ``seconds``."""
    seen: set[bytes | None] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(head_files(repo).get(path))
        time.sleep(0.02)
    return seen


def test_existing_file_open_for_writing_is_not_committed_half_written(
    repo: Path, daemon_factory: Factory
) -> None:
    write(repo / "big.log", "old content\n")
    commit_all(repo)
    config(repo, maxdelay="5s")
    d = daemon_factory(repo).start()
    with open(repo / "big.log", "wb") as f:
        f.write(b"part one of the new content, ")
        f.flush()
        wait_until(lambda: "big.log" in d.status()["writing"])
        seen = _watch_file_while_open(repo, "big.log", 1.5)
        f.write(b"and part two\n")
    wait_until(
        lambda: head_files(repo).get("big.log") == b"part one of the new content, and part two\n"
    )
    assert seen == {b"old content\n"}
    assert set(versions(repo, "big.log")) == {
        b"old content\n",
        b"part one of the new content, and part two\n",
    }


def test_new_file_open_for_writing_is_not_committed_half_written(
    repo: Path, daemon_factory: Factory
) -> None:
    config(repo, maxdelay="5s")
    d = daemon_factory(repo).start()
    fd = os.open(repo / "fresh.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"first half|")
        wait_until(lambda: "fresh.bin" in d.status()["writing"])
        seen = _watch_file_while_open(repo, "fresh.bin", 1.5)
        os.write(fd, b"second half\n")
    finally:
        os.close(fd)
    wait_until(lambda: head_files(repo).get("fresh.bin") == b"first half|second half\n")
    assert b"first half|" not in seen
    assert b"first half|" not in versions(repo, "fresh.bin")


# --- start, stop, crash --------------------------------------------------------------------


def test_changes_made_while_stopped_are_committed_at_startup(
    repo: Path, daemon_factory: Factory
) -> None:
    write(repo / "keep.txt", "keep\n")
    write(repo / "mod.txt", "old-1\n")
    write(repo / "del.txt", "bye\n")
    write(repo / "sub" / "deep.txt", "deep\n")
    d = daemon_factory(repo).start()
    wait_synced(repo)
    wait_clean(repo)
    assert d.stop() == 0
    before = commit_count(repo)
    write(repo / "new.txt", "created offline\n")
    write(repo / "mod.txt", "new-1\n")  # same size: only the content differs
    write(repo / "sub" / "deep.txt", "deeper\n")
    (repo / "del.txt").unlink()
    d.start()
    wait_until(
        lambda: (
            head_files(repo)
            == {
                "keep.txt": b"keep\n",
                "mod.txt": b"new-1\n",
                "new.txt": b"created offline\n",
                "sub/deep.txt": b"deeper\n",
            }
        )
    )
    assert commit_count(repo) > before
    wait_clean(repo)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_termination_signal_commits_pending_batch_before_exit(
    repo: Path, daemon_factory: Factory, sig: signal.Signals
) -> None:
    config(repo, delay="2s", maxdelay="10s")
    d = daemon_factory(repo).start()
    write(repo / "pending.txt", "written just before shutdown\n")
    wait_until(lambda: "pending.txt" in d.status()["pending"])
    assert commit_count(repo) == 0
    assert d.proc is not None
    d.proc.send_signal(sig)
    assert d.proc.wait(timeout=30) == 0
    assert head_files(repo) == {"pending.txt": b"written just before shutdown\n"}
    wait_clean(repo)


def test_kill_9_while_committing_then_restart_loses_nothing(
    repo: Path, daemon_factory: Factory
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    d = daemon_factory(repo)
    n = 0
    for round_no in range(5):
        d.start()
        for _burst in range(3):
            for _ in range(120):
                write(repo / f"r{round_no}" / f"f{n:05d}.txt", f"file {n} round {round_no}\n")
                n += 1
            existing = sorted((repo / "r0").glob("*.txt"))
            for victim in rng.sample(existing, 5):
                write(victim, f"modified in round {round_no}\n")
            time.sleep(rng.uniform(0.0, 0.05))
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment, most likely mid-commit
        d.kill()
    marker = (repo / ".git" / "annexsync" / "index-behind").exists()
    d.start()
    wait_synced(repo, timeout=60)
    try:
        wait_clean(repo, timeout=60)
    except AssertionError:
        status = git(repo, "status", "--porcelain")
        raise AssertionError(
            f"seed {seed}: index-behind note before restart: {marker}; "
            f"{len(status.splitlines())} lines of git status, first: {status[:300]!r}"
        ) from None
    fsck = subprocess.run(
        ["git", "-C", str(repo), "fsck", "--strict", "--no-progress", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fsck.returncode == 0 and fsck.stdout == "" and fsck.stderr == "", (
        f"seed {seed}: {fsck.stdout}{fsck.stderr}"
    )
    assert len(head_files(repo)) == n, f"seed {seed}"


# --- never fight git -----------------------------------------------------------------------


def _conflicting_branches(repo: Path) -> None:
    write(repo / "a.txt", "base\n")
    write(repo / "keep.txt", "keep\n")
    commit_all(repo, "base")
    git(repo, "checkout", "-q", "-b", "other")
    write(repo / "a.txt", "theirs\n")
    commit_all(repo, "theirs")
    git(repo, "checkout", "-q", "main")
    write(repo / "a.txt", "ours\n")
    commit_all(repo, "ours")


def _start_conflicted_merge(repo: Path, d: Daemon) -> str:
    head = head_id(repo)
    proc = git(repo, "merge", "other", check=False)
    assert "CONFLICT" in proc
    wait_until(lambda: "merge" in (d.status()["paused"] or ""))
    write(repo / "b.txt", "written during the merge\n")
    wait_until(lambda: "b.txt" in d.status()["pending"])
    assert head_id(repo) == head
    return head


def test_merge_in_progress_pauses_auto_commit_until_aborted(
    repo: Path, daemon_factory: Factory
) -> None:
    _conflicting_branches(repo)
    d = daemon_factory(repo).start()
    head = _start_conflicted_merge(repo, d)
    assert "<<<<<<<" in (repo / "a.txt").read_text()
    assert head_id(repo) == head and "b.txt" not in head_files(repo)
    git(repo, "merge", "--abort")
    wait_until(lambda: head_files(repo).get("b.txt") == b"written during the merge\n")
    assert d.status()["paused"] is None
    assert git(repo, "rev-parse", "HEAD^").strip() == head
    assert head_files(repo)["a.txt"] == b"ours\n"
    assert not any(b"<<<<<<<" in v for v in versions(repo, "a.txt"))
    wait_clean(repo)


def test_merge_in_progress_pauses_auto_commit_until_resolved(
    repo: Path, daemon_factory: Factory
) -> None:
    _conflicting_branches(repo)
    d = daemon_factory(repo).start()
    head = _start_conflicted_merge(repo, d)
    write(repo / "a.txt", "ours and theirs\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "--no-edit")
    wait_until(lambda: head_files(repo).get("b.txt") == b"written during the merge\n")
    merge = git(repo, "rev-parse", "HEAD^").strip()
    assert git(repo, "rev-parse", f"{merge}^1").strip() == head
    assert git(repo, "rev-list", "--parents", "-n1", merge).split()[1:] == [
        head,
        git(repo, "rev-parse", "other").strip(),
    ]
    assert head_files(repo)["a.txt"] == b"ours and theirs\n"
    assert not any(b"<<<<<<<" in v for v in versions(repo, "a.txt"))
    wait_clean(repo)


def test_index_lock_held_by_another_process_blocks_commits_until_released(
    repo: Path, daemon: Daemon
) -> None:
    write(repo / "first.txt", "1\n")
    wait_until(lambda: "first.txt" in head_files(repo))
    wait_clean(repo)
    count = commit_count(repo)
    lock = repo / ".git" / "index.lock"
    lock.touch()
    try:
        write(repo / "second.txt", "2\n")
        wait_until(lambda: "index.lock" in (daemon.status()["paused"] or ""))
        assert "second.txt" not in head_files(repo)
        assert commit_count(repo) == count
    finally:
        lock.unlink()
    wait_until(lambda: head_files(repo).get("second.txt") == b"2\n")
    assert commit_count(repo) == count + 1
    wait_clean(repo)


def test_full_disk_pauses_auto_commit_and_the_change_commits_once_there_is_room(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    """A commit that cannot write its objects (the disk is full) keeps its changes pending and
    is retried; it used to crash the committer, which dropped the batch until the next rescan."""
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        repo = disk / "work"
        repo.mkdir()
        git(repo, "init", "-q")
        d = daemon_factory(repo)
        d.log = tmp_path / "assistant.stderr"  # off the disk that fills up
        d.start()
        try:
            write(repo / "first.txt", "1\n")
            wait_until(lambda: "first.txt" in head_files(repo))
            ballast = disk / "ballast"
            with open(repo / "second.txt", "wb") as f:  # not committed before it is closed
                f.write(b"written before the disk filled up\n")
                f.flush()
                stat = os.statvfs(disk)
                with open(ballast, "wb") as b:
                    os.posix_fallocate(b.fileno(), 0, stat.f_bavail * stat.f_frsize)
            wait_until(lambda: "No space left" in (d.status()["paused"] or ""), timeout=15)
            assert "second.txt" not in head_files(repo)
            ballast.unlink()
            wait_until(lambda: "second.txt" in head_files(repo), timeout=15)
            assert d.status()["paused"] is None
            assert d.proc is not None and d.proc.poll() is None
            assert "committer crashed" not in d.stderr(), d.stderr()
        finally:
            d.stop()
            d.kill()


def test_detached_head_pauses_auto_commit_and_says_so(repo: Path, daemon: Daemon) -> None:
    write(repo / "a.txt", "a\n")
    wait_until(lambda: "a.txt" in head_files(repo))
    wait_clean(repo)
    main = git(repo, "rev-parse", "main").strip()
    git(repo, "checkout", "-q", "--detach")
    write(repo / "while-detached.txt", "x\n")
    wait_until(lambda: "detached" in (daemon.status()["paused"] or ""))
    status = daemon.status()
    assert status["detached"] is True
    assert head_id(repo) == main
    assert git(repo, "rev-parse", "main").strip() == main
    git(repo, "checkout", "-q", "main")
    wait_until(lambda: head_files(repo).get("while-detached.txt") == b"x\n")
    assert git(repo, "rev-parse", "main^").strip() == main
    assert daemon.status()["paused"] is None
    wait_clean(repo)


def test_users_own_commit_is_picked_up(repo: Path, daemon: Daemon) -> None:
    write(repo / "a.txt", "a\n")
    wait_until(lambda: "a.txt" in head_files(repo))
    wait_clean(repo)
    git(repo, "commit", "-q", "--allow-empty", "-m", "user's own commit")
    user = head_id(repo)
    write(repo / "b.txt", "b\n")
    wait_until(lambda: "b.txt" in head_files(repo))
    assert git(repo, "rev-parse", "HEAD^").strip() == user
    assert subjects(repo)[:2] == ["Add b.txt", "user's own commit"]
    wait_clean(repo)


def test_branch_switch_is_picked_up_and_checkout_alone_commits_nothing(
    repo: Path, daemon_factory: Factory
) -> None:
    write(repo / "a.txt", "on main\n")
    commit_all(repo, "main start")
    git(repo, "checkout", "-q", "-b", "side")
    write(repo / "a.txt", "on side\n")
    write(repo / "side-only" / "s.txt", "side\n")
    commit_all(repo, "side start")
    side = head_id(repo)
    git(repo, "checkout", "-q", "main")
    main = head_id(repo)
    d = daemon_factory(repo).start()

    git(repo, "checkout", "-q", "-b", "other")
    write(repo / "on-other.txt", "edit after checkout -b\n")
    wait_until(lambda: head_files(repo).get("on-other.txt") == b"edit after checkout -b\n")
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "other"
    assert git(repo, "rev-parse", "other^").strip() == main
    assert git(repo, "rev-parse", "main").strip() == main
    wait_clean(repo)

    git(repo, "checkout", "-q", "side")
    wait_idle(d)
    write(repo / "sentinel.txt", "after checkout\n")
    wait_until(lambda: "sentinel.txt" in head_files(repo))
    assert git(repo, "rev-parse", "side^").strip() == side
    changed = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "side").split()
    assert changed == ["sentinel.txt"]
    assert head_files(repo)["a.txt"] == b"on side\n"
    assert git(repo, "rev-parse", "main").strip() == main
    wait_clean(repo)


# --- mass deletion guard -----------------------------------------------------------------------


def _forty_files(repo: Path) -> dict[str, bytes]:
    files = {f"notes/n{i:02d}.txt": f"note {i}\n".encode() for i in range(40)}
    for rel, data in files.items():
        write(repo / rel, data)
    commit_all(repo, "forty notes")
    # one quiet window holds a whole `rm` of 30 files, even on a busy machine
    config(repo, delay="300ms", maxdelay="5s")
    return files


def test_mass_deletion_is_held_until_sync_allow_deletions(
    repo: Path, daemon_factory: Factory
) -> None:
    files = _forty_files(repo)
    d = daemon_factory(repo).start()
    count = commit_count(repo)
    doomed = sorted(files)[:30]
    for rel in doomed:
        (repo / rel).unlink()
    wait_until(lambda: len(d.status()["held"]) == 30)
    assert d.status()["held"] == doomed
    assert head_files(repo) == files
    assert commit_count(repo) == count
    wait_until(lambda: "holding 30 deletions" in d.stderr())
    log = (repo / ".git" / "annexsync" / "daemon.log").read_text()
    assert "holding 30 deletions" in log and "--allow-deletions" in log

    # other changes still get committed while deletions are held
    write(repo / "notes" / "new.txt", "new\n")
    wait_until(lambda: "notes/new.txt" in head_files(repo))
    assert all(rel in head_files(repo) for rel in doomed)

    proc = annexsync("-C", str(repo), "sync", "--allow-deletions")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("committed ")
    remaining = {rel: data for rel, data in files.items() if rel not in doomed}
    assert head_files(repo) == {**remaining, "notes/new.txt": b"new\n"}
    assert d.status()["held"] == []
    wait_clean(repo)


def test_restoring_mass_deleted_files_clears_the_hold(repo: Path, daemon_factory: Factory) -> None:
    files = _forty_files(repo)
    d = daemon_factory(repo).start()
    count = commit_count(repo)
    doomed = sorted(files)[5:35]
    for rel in doomed:
        (repo / rel).unlink()
    wait_until(lambda: len(d.status()["held"]) == 30)
    for rel in doomed:
        write(repo / rel, files[rel])
    wait_until(lambda: d.status()["held"] == [])
    wait_idle(d)
    assert head_files(repo) == files
    assert commit_count(repo) == count
    wait_clean(repo)


def test_emptied_working_tree_is_held_not_committed(repo: Path, daemon_factory: Factory) -> None:
    files = {"a.txt": b"a\n", "b.txt": b"b\n", "docs/c.md": b"c\n", "docs/deep/d.md": b"d\n"}
    for rel, data in files.items():
        write(repo / rel, data)
    commit_all(repo)
    config(repo, delay="300ms", maxdelay="5s")
    d = daemon_factory(repo).start()
    count = commit_count(repo)
    for item in repo.iterdir():
        if item.name == ".git":
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    wait_until(lambda: len(d.status()["held"]) == 4)
    assert sorted(d.status()["held"]) == sorted(files)
    assert head_files(repo) == files
    assert commit_count(repo) == count


# --- inotify watch limit ---------------------------------------------------------------------


def test_watch_limit_too_low_falls_back_to_rescans_that_still_commit(
    repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config(repo, rescan="1s")
    monkeypatch.setattr(app, "read_watch_limit", lambda *a: 2)
    r = pygit2.Repository(str(repo))
    identity = ensure_initialised(r)
    settings = read_settings(r.config)

    async def scenario() -> dict:
        assistant = app.Assistant(r, identity, settings)
        runner = asyncio.create_task(assistant.run())
        try:
            await asyncio.wait_for(assistant.started.wait(), 30)
            status = await assistant.status()
            write(repo / "seen-by-rescan.txt", "found\n")
            deadline = time.monotonic() + 30
            while head_files(repo).get("seen-by-rescan.txt") != b"found\n":
                assert time.monotonic() < deadline, "the rescan did not commit the change"
                assert not runner.done()
                await asyncio.sleep(0.05)
            return status
        finally:
            assistant.stop()
            await asyncio.wait_for(runner, 30)

    logger = logging.getLogger("annexsync")
    logger.addHandler(caplog.handler)  # also when an earlier test turned propagation off
    try:
        with caplog.at_level("ERROR", logger="annexsync"):
            status = asyncio.run(scenario())
    finally:
        logger.removeHandler(caplog.handler)
    assert status["watch"]["mode"] == "rescan"
    assert "fs.inotify.max_user_watches" in status["watch"]["message"]
    assert any("fs.inotify.max_user_watches" in rec.getMessage() for rec in caplog.records)
    assert head_files(repo) == {"seen-by-rescan.txt": b"found\n"}

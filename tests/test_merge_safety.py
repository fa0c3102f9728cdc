"""Merging and auto-commit never lose data when git, the user or the disk move underneath."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pygit2
import pytest
from conftest import ROOT, annexsync, git, head_files, mounted_tmpfs
from test_autocommit import engine
from test_sync import disk_files, incoming, put, seeded_engine, user_edit

import assistant.integrate as integrate_module
from assistant.changes import Entry
from assistant.checkout import plan, stamp, write_entry
from assistant.integrate import integrate
from assistant.locks import LockNotes, clear_stale_ref_locks


def test_a_commit_made_by_the_user_during_the_tree_update_is_never_overwritten(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = seeded_engine(repo, {"notes.md": "base\n", "other.txt": "o\n"})
    peer = incoming(ac, {"notes.md": "incoming\n"})
    real_apply = integrate_module.apply
    calls = []

    def apply_while_the_user_commits(*args, **kwargs):  # type: ignore[no-untyped-def]
        done = real_apply(*args, **kwargs)
        if not calls:
            put(repo, "mine.txt", "the user's own commit\n")
            git(repo, "add", "mine.txt")
            git(repo, "commit", "-q", "-m", "by hand")
        calls.append(1)
        return done

    monkeypatch.setattr(integrate_module, "apply", apply_while_the_user_commits)
    result = integrate(ac)
    user_commit = git(repo, "log", "--format=%H", "--grep=by hand").strip()
    assert result.paused is None, result.paused
    head = ac.repo.head.peel(pygit2.Commit).id
    assert ac.repo.descendant_of(head, pygit2.Oid(hex=user_commit)), "user's commit kept"
    assert ac.repo.descendant_of(head, peer), "the peer's commit merged"
    assert disk_files(repo) == {
        "notes.md": b"incoming\n",
        "other.txt": b"o\n",
        "mine.txt": b"the user's own commit\n",
    }
    assert head_files(repo) == disk_files(repo)


def test_a_save_landing_while_the_new_version_is_written_stays(repo: Path) -> None:
    """The file is compared once more after the (possibly long) write of the temporary
    file, just before the rename."""
    r = pygit2.Repository(str(repo))
    put(repo, "big.bin", "before\n")
    seen = stamp(repo / "big.bin")
    user_edit(repo / "big.bin", "saved by the user meanwhile\n")
    entry = Entry(str(r.create_blob(b"merged\n")), 0o100644)

    assert write_entry(r, repo, "big.bin", entry, seen) is False

    assert (repo / "big.bin").read_text() == "saved by the user meanwhile\n"
    assert [p.name for p in repo.iterdir() if p.name.startswith(".annexsync-tmp")] == []


def test_a_version_that_does_not_fit_on_the_disk_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    with mounted_tmpfs(tmp_path / "disk", "1m") as disk:
        r = pygit2.init_repository(str(tmp_path / "objects.git"), bare=True)
        entry = Entry(str(r.create_blob(os.urandom(2 << 20))), 0o100644)
        (disk / "old.bin").write_bytes(b"the version that stays\n")

        with pytest.raises(OSError):
            write_entry(r, disk, "old.bin", entry)

        assert sorted(p.name for p in disk.iterdir()) == ["old.bin"]
        assert (disk / "old.bin").read_bytes() == b"the version that stays\n"


def test_a_folder_replaced_by_a_symlink_is_held_whole_by_the_deletion_guard(
    repo: Path, tmp_path: Path
) -> None:
    files = {f"d/f{i:02d}.txt": f"{i}\n" for i in range(30)}
    files.update({f"top{i}.txt": "t\n" for i in range(5)})
    ac = seeded_engine(repo, files)
    elsewhere = tmp_path / "external"
    (repo / "d").rename(elsewhere)
    os.symlink(elsewhere, repo / "d")

    result = ac.commit_paths(["d"])

    assert sorted(result.held) == sorted(p for p in files if p.startswith("d/"))
    assert head_files(repo) == {p: d.encode() for p, d in files.items()}, "nothing replaced"
    later = ac.commit_paths(["d"])  # an event on the link alone must not slip through
    assert later.commit is None
    assert head_files(repo) == {p: d.encode() for p, d in files.items()}

    released = ac.commit_paths([], allow_deletions=True)

    assert released.commit is not None
    after = head_files(repo)
    assert after["d"] == os.fsencode(elsewhere)
    assert not any(p.startswith("d/") for p in after)


def test_a_merge_that_cannot_write_its_tree_on_a_full_disk_pauses_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """Both sides changed files, so the merge writes new trees; with the disk full it pauses
    (the daemon tries again), where it used to raise and crash the merge loop."""
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        repo = disk / "work"
        repo.mkdir()
        git(repo, "init", "-q")
        ac = seeded_engine(repo, {"a/notes.md": "base\n", "b/other.txt": "o\n"})
        seed = ac.repo.head.target
        put(repo, "a/notes.md", "ours\n")
        assert ac.commit_paths(["a/notes.md"]).commit is not None
        ours = ac.repo.head.target
        peer = incoming(ac, {"b/other.txt": "theirs\n"}, parent=seed)
        ballast = disk / "ballast"
        with open(ballast, "wb") as b:
            stat = os.statvfs(disk)
            os.posix_fallocate(b.fileno(), 0, stat.f_bavail * stat.f_frsize)

        result = integrate(ac)

        assert result.paused is not None and "No space left" in result.paused, result.paused
        assert ac.repo.head.target == ours
        assert disk_files(repo) == {"a/notes.md": b"ours\n", "b/other.txt": b"o\n"}
        ballast.unlink()
        assert integrate(ac).paused is None
        assert ac.repo.descendant_of(ac.repo.head.target, peer)
        assert disk_files(repo) == {"a/notes.md": b"ours\n", "b/other.txt": b"theirs\n"}


KILLED_IN_REF_UPDATE = """
import os, sys
import pygit2
from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.integrate import integrate
from assistant.node import ensure_initialised

class Killed:
    '''The branch, but the process dies inside its update, holding git's lock file.'''
    def __init__(self, ref, gitdir):
        self._ref, self._gitdir = ref, gitdir
    def __getattr__(self, name):
        return getattr(self._ref, name)
    def set_target(self, *args, **kwargs):
        open(os.path.join(self._gitdir, "refs", "heads", "main.lock"), "x").close()
        os._exit(137)

class Repository(pygit2.Repository):
    def lookup_reference(self, name):
        ref = super().lookup_reference(name)
        return Killed(ref, self.path) if name == "refs/heads/main" else ref

repo = Repository(sys.argv[1])
committer = AutoCommitter(repo, ensure_initialised(repo), Settings())
committer.git_settle = 0.0
integrate(committer)
"""


def test_a_kill_inside_the_merges_branch_update_leaves_no_lock_that_blocks_the_next_start(
    repo: Path,
) -> None:
    """kill -9 while git's lock on the branch is held: the next start clears it, as it does
    for a commit's, where it used to make every later commit and merge fail."""
    ac = seeded_engine(repo, {"notes.md": "base\n", "other.txt": "o\n"})
    seed = ac.repo.head.target
    put(repo, "notes.md", "ours\n")
    assert ac.commit_paths(["notes.md"]).commit is not None
    peer = incoming(ac, {"other.txt": "theirs\n"}, parent=seed)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_IN_REF_UPDATE, str(repo)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 137, child.stderr
    assert (repo / ".git" / "refs" / "heads" / "main.lock").exists()

    restarted = engine(repo)  # the next start: clears what a crash left, then merges
    assert restarted.locks.clear_stale() == ["refs/heads/main.lock"]
    result = integrate(restarted)

    assert result.paused is None, result.paused
    assert restarted.repo.descendant_of(restarted.repo.head.target, peer)
    assert disk_files(repo) == {"notes.md": b"ours\n", "other.txt": b"theirs\n"}


def test_a_path_that_cannot_be_committed_here_does_not_stop_merging(repo: Path) -> None:
    """A file the peer added at a path this node ignores (only here) stays as it is; the
    peer's version goes beside it and the merge completes."""
    ac = seeded_engine(repo, {"notes.md": "base\n"})
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("local.cfg\n")
    put(repo, "local.cfg", "this node's own settings\n")
    peer = incoming(ac, {"local.cfg": "the peer's settings\n", "notes.md": "peer\n"})

    result = integrate(ac)

    assert result.paused is None, result.paused
    assert ac.repo.descendant_of(ac.repo.head.target, peer)
    files = disk_files(repo)
    assert files["local.cfg"] == b"this node's own settings\n"
    assert b"the peer's settings\n" in [d for p, d in files.items() if p.startswith("local")]
    assert files["notes.md"] == b"peer\n"


def test_paths_whose_index_entries_a_user_commit_dropped_are_committed_again(
    repo: Path,
) -> None:
    ac = seeded_engine(repo, {"a.txt": "a\n", "b.txt": "b\n"})
    put(repo, "a.txt", "a2\n")
    assert ac.commit_paths(["a.txt"]).commit is not None  # the index write is still pending
    put(repo, "b.txt", "b2\n")
    git(repo, "add", "b.txt")
    git(repo, "commit", "-q", "-m", "by hand")  # made from an index with the old a.txt
    assert head_files(repo)["a.txt"] == b"a\n"

    ac.sync_index()

    assert ac.recheck == {"a.txt"}
    assert ac.commit_paths(sorted(ac.recheck)).commit is not None
    assert head_files(repo) == {"a.txt": b"a2\n", "b.txt": b"b2\n"}


def test_a_lock_a_live_git_created_after_the_crash_is_left_alone(tmp_path: Path) -> None:
    gitdir = tmp_path / "git"
    state = gitdir / "annexsync"
    state.mkdir(parents=True)
    notes = LockNotes(state, gitdir)
    (state / "locks-in-flight").write_text("index.lock\n")
    noted = time.time() - 30
    os.utime(state / "locks-in-flight", (noted, noted))
    (gitdir / "index.lock").write_text("")  # a user's git, long after the crash

    assert notes.clear_stale() == []
    assert (gitdir / "index.lock").exists()


def test_a_crash_left_lock_from_the_noted_moment_is_removed(tmp_path: Path) -> None:
    gitdir = tmp_path / "git"
    state = gitdir / "annexsync"
    state.mkdir(parents=True)
    notes = LockNotes(state, gitdir)
    with notes.creating("index.lock"):
        (gitdir / "index.lock").write_text("")
        os.link(state / "locks-in-flight", tmp_path / "kept-note")  # the crash: note stays
    os.link(tmp_path / "kept-note", state / "locks-in-flight")

    assert notes.clear_stale() == ["index.lock"]
    assert not (gitdir / "index.lock").exists()


def test_nothing_is_read_or_removed_through_a_symlinked_directory(
    repo: Path, tmp_path: Path
) -> None:
    ac = seeded_engine(repo, {"d/f.txt": "f\n", "keep.txt": "k\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("f\n")  # same content: it looks unchanged through the link
    old_tree = ac.repo.head.peel(pygit2.Commit).tree
    (repo / "d" / "f.txt").unlink()
    (repo / "d").rmdir()
    os.symlink(outside, repo / "d")
    incoming(ac, {"d/f.txt": None})
    work = plan(
        old_tree, ac.repo[ac.repo.references["refs/remotes/peer/main"].target].tree, ["d/f.txt"]
    )
    dirty, _stamps = integrate_module.inspect(ac.repo, repo, old_tree, work.paths())

    assert dirty == ["d/f.txt"]
    assert (outside / "f.txt").exists()


def test_submodule_entries_from_a_peer_are_never_checked_out(repo: Path) -> None:
    ac = seeded_engine(repo, {"a.txt": "a\n"})
    head = ac.repo.head.peel(pygit2.Commit)
    builder = ac.repo.TreeBuilder(head.tree)
    builder.insert("sub", pygit2.Oid(hex="1" * 40), 0o160000)
    work = plan(head.tree, ac.repo[builder.write()], ["sub"])  # type: ignore[arg-type]
    assert work.paths() == []


def test_a_configured_bare_switch_decides_the_ref_mapping_without_asking(tmp_path: Path) -> None:
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    node = tmp_path / "node"
    node.mkdir()
    git(node, "init", "-q")
    put(node, "a.txt", "a\n")
    git(node, "remote", "add", "hub", str(hub))
    git(node, "config", "remote.hub.annexsync-bare", "false")  # treat it as a working tree
    proc = annexsync("-C", str(node), "sync")
    assert proc.returncode == 0, proc.stderr
    refs = git(hub, "for-each-ref", "--format=%(refname)")
    assert "refs/remotes/" in refs and "refs/heads/main" not in refs


def test_only_remotes_this_sync_pulls_from_are_merged(tmp_path: Path) -> None:
    """A ref fetched by hand (git fetch upstream) or from a remote with pulls switched off
    is not merged and spread to every peer; what peers pushed here always is."""
    node = tmp_path / "node"
    node.mkdir()
    git(node, "init", "-q")
    ac = seeded_engine(node, {"a.txt": "a\n"})
    incoming(ac, {"upstream.txt": "from upstream\n"})
    ac.repo.references.create(
        "refs/remotes/up/stream/main", ac.repo.references["refs/remotes/peer/main"].target
    )
    ac.repo.references.delete("refs/remotes/peer/main")

    assert integrate(ac, pull_from=set()).kind == "up-to-date"
    assert "upstream.txt" not in head_files(node)
    assert integrate(ac, pull_from={"up/stream"}).kind == "fast-forward"
    assert head_files(node)["upstream.txt"] == b"from upstream\n"


def test_a_ref_lock_left_by_a_cut_off_push_is_cleared_and_a_fresh_one_kept(
    tmp_path: Path,
) -> None:
    gitdir = tmp_path / "git"
    stale = gitdir / "refs" / "remotes" / "peer" / "synced" / "main.lock"
    fresh = gitdir / "refs" / "remotes" / "other" / "synced" / "main.lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True)
        lock.write_text("")
    now = time.time()
    os.utime(stale, (now - 600, now - 600))

    removed = clear_stale_ref_locks(gitdir, now)

    assert removed == ["refs/remotes/peer/synced/main.lock"]
    assert not stale.exists() and fresh.exists()


def test_a_peer_turning_a_submodule_entry_into_a_file_pauses_the_merge_in_one_line(
    repo: Path,
) -> None:
    ac = seeded_engine(repo, {"a.txt": "a\n"})
    head = ac.repo.head.peel(pygit2.Commit)
    builder = ac.repo.TreeBuilder(head.tree)
    builder.insert("sub", pygit2.Oid(hex="1" * 40), 0o160000)  # a commit not in this repository
    tree = builder.write()
    sig = pygit2.Signature("u", "u@example.com")
    ours = ac.repo.create_commit("HEAD", sig, sig, "add a submodule", tree, [head.id])
    (repo / "sub").mkdir()  # what git leaves for a submodule not checked out
    incoming(ac, {"sub": "now a file\n"})

    result = integrate(ac)

    assert result.paused is not None and "sub" in result.paused
    assert "\n" not in result.paused
    assert git(repo, "rev-parse", "HEAD") == f"{ours}\n"  # nothing merged
    assert git(repo, "ls-tree", "HEAD", "sub").split()[:2] == ["160000", "commit"]
    assert (repo / "a.txt").read_text() == "a\n" and (repo / "sub").is_dir()

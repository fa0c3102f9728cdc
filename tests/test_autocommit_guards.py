"""The auto-commit engine never fights git or the user, and holds back mass deletions."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pygit2
import pytest
from conftest import commit_count, git, head_files
from test_autocommit import engine, porcelain, put

import assistant.autocommit as autocommit_module
from assistant.autocommit import AutoCommitter, moved_paths
from assistant.changes import Entry
from assistant.config import MassDeletePolicy, Settings
from assistant.node import ensure_initialised


def refs(repo: Path) -> str:
    """Every ref and HEAD, to prove nothing moved."""
    return git(repo, "show-ref") + git(repo, "rev-parse", "HEAD")


def user_commit(repo: Path, message: str, files: dict[str, str]) -> str:
    """The user commits with real git."""
    for rel, data in files.items():
        put(repo, rel, data)
    git(repo, "add", "-A", *files)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def seeded(repo: Path, files: dict[str, str], **settings: object) -> AutoCommitter:
    for rel, data in files.items():
        put(repo, rel, data)
    ac = engine(repo, **settings)
    assert ac.commit_paths([""]).commit is not None
    assert ac.sync_index()
    return ac


@pytest.fixture
def diverged(repo: Path) -> Path:
    """main and 'other' both changed f.txt since their common base: merging conflicts."""
    user_commit(repo, "base", {"f.txt": "base\n", "keep.txt": "k\n"})
    git(repo, "checkout", "-q", "-b", "other")
    user_commit(repo, "theirs", {"f.txt": "theirs\n"})
    git(repo, "checkout", "-q", "main")
    user_commit(repo, "ours", {"f.txt": "ours\n"})
    return repo


def assert_blocked_until(repo: Path, word: str, finish: list[str]) -> None:
    """A commit attempt is refused naming ``word`` and leaves every ref alone; after git
    ``finish``es, the same change commits."""
    ac = engine(repo)
    put(repo, "new.txt", "new\n")
    before = refs(repo)

    result = ac.commit_paths(["new.txt"])

    assert result.blocked is not None and word in result.blocked
    assert result.commit is None and result.retry_soon is False
    assert ac.blocked_reason() is not None
    assert refs(repo) == before
    git(repo, *finish)
    assert ac.blocked_reason() is None
    assert ac.commit_paths(["new.txt"]).commit is not None
    assert head_files(repo)["new.txt"] == b"new\n"


# --- git operations in progress ------------------------------------------------------------


def test_no_commit_while_a_conflicting_merge_is_in_progress(diverged: Path) -> None:
    merge = git(diverged, "merge", "other", check=False)
    assert "CONFLICT" in merge
    assert (diverged / ".git/MERGE_HEAD").exists()
    assert_blocked_until(diverged, "merge", ["merge", "--abort"])
    assert head_files(diverged)["f.txt"] == b"ours\n"


def test_no_commit_while_a_rebase_is_in_progress(diverged: Path) -> None:
    git(diverged, "checkout", "-q", "other")
    git(diverged, "rebase", "main", check=False)
    assert (diverged / ".git/rebase-merge").exists()
    # git detaches HEAD while it rebases; either reason pauses auto-commit
    ac = engine(diverged)
    put(diverged, "new.txt", "new\n")
    before = refs(diverged)
    result = ac.commit_paths(["new.txt"])
    assert result.blocked is not None and result.commit is None
    assert refs(diverged) == before
    git(diverged, "rebase", "--abort")
    assert ac.commit_paths(["new.txt"]).commit is not None
    assert git(diverged, "rev-parse", "--abbrev-ref", "HEAD").strip() == "other"
    assert "new.txt" not in git(diverged, "ls-tree", "--name-only", "main")


def test_no_commit_while_a_conflicting_cherry_pick_is_in_progress(diverged: Path) -> None:
    git(diverged, "cherry-pick", "other", check=False)
    assert (diverged / ".git/CHERRY_PICK_HEAD").exists()
    assert_blocked_until(diverged, "cherry-pick", ["cherry-pick", "--abort"])


def test_no_commit_while_a_conflicting_revert_is_in_progress(repo: Path) -> None:
    user_commit(repo, "one", {"f.txt": "1\n"})
    middle = user_commit(repo, "two", {"f.txt": "2\n"})
    user_commit(repo, "three", {"f.txt": "3\n"})
    git(repo, "revert", "--no-edit", middle, check=False)
    assert (repo / ".git/REVERT_HEAD").exists()
    assert_blocked_until(repo, "revert", ["revert", "--abort"])


def test_no_commit_while_a_bisect_is_in_progress(repo: Path) -> None:
    user_commit(repo, "one", {"f.txt": "1\n"})
    user_commit(repo, "two", {"f.txt": "2\n"})
    git(repo, "bisect", "start")
    assert_blocked_until(repo, "bisect", ["bisect", "reset"])


def test_no_commit_while_another_process_holds_index_lock(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    lock = repo / ".git/index.lock"
    lock.write_bytes(b"")
    put(repo, "a.txt", "a2")
    before = refs(repo)

    result = ac.commit_paths(["a.txt"])

    assert result.blocked is not None and "index.lock" in result.blocked
    assert result.retry_soon is True
    assert refs(repo) == before and lock.exists()
    lock.unlink()
    assert ac.commit_paths(["a.txt"]).commit is not None
    assert head_files(repo) == {"a.txt": b"a2"}


def test_detached_head_pauses_auto_commit(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    git(repo, "checkout", "-q", "--detach")
    put(repo, "a.txt", "a2")
    before = refs(repo)

    result = ac.commit_paths(["a.txt"])

    assert result.blocked is not None and "detached" in result.blocked
    assert result.retry_soon is False
    assert refs(repo) == before
    git(repo, "checkout", "-q", "main")
    assert ac.commit_paths(["a.txt"]).commit is not None
    assert git(repo, "show", "main:a.txt") == "a2"


def test_vanished_working_tree_root_commits_nothing(tmp_path: Path) -> None:
    gitdir, work = tmp_path / "gitdir", tmp_path / "work"
    git(tmp_path, "init", "-q", f"--separate-git-dir={gitdir}", str(work))
    ac = seeded(work, {"a.txt": "a", "b.txt": "b"})
    head = git(work, "rev-parse", "HEAD").strip()
    shutil.move(work, tmp_path / "unplugged")

    result = ac.commit_paths(["", "a.txt", "b.txt"])

    assert result.blocked is not None and "missing" in result.blocked
    assert result.commit is None
    assert pygit2.Repository(str(gitdir)).head.target == pygit2.Oid(hex=head)


# --- others moving the branch ----------------------------------------------------------------


def test_branch_moved_between_read_and_commit_is_retried_on_the_new_tip(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    original = git(repo, "rev-parse", "HEAD").strip()
    put(repo, "mine.txt", "mine")
    real_apply = autocommit_module.apply_edits
    theirs: list[str] = []

    def apply_then_someone_commits(*args: object) -> pygit2.Oid:
        tree = real_apply(*args)  # type: ignore[arg-type]
        if not theirs:
            theirs.append(user_commit(repo, "theirs", {"theirs.txt": "theirs"}))
        return tree

    monkeypatch.setattr(autocommit_module, "apply_edits", apply_then_someone_commits)
    result = ac.commit_paths(["mine.txt"])

    assert result.commit is not None
    assert git(repo, "rev-parse", "HEAD").strip() == result.commit
    assert git(repo, "rev-parse", "HEAD~1").strip() == theirs[0]
    assert git(repo, "rev-parse", "HEAD~2").strip() == original
    assert head_files(repo) == {"a.txt": b"a", "mine.txt": b"mine", "theirs.txt": b"theirs"}
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["mine.txt"]
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_branch_that_keeps_moving_gives_up_and_asks_for_a_retry(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    put(repo, "mine.txt", "mine")
    real_apply = autocommit_module.apply_edits
    count = iter(range(100))

    def apply_then_someone_commits(*args: object) -> pygit2.Oid:
        tree = real_apply(*args)  # type: ignore[arg-type]
        n = next(count)
        user_commit(repo, f"theirs {n}", {f"theirs{n}.txt": "t"})
        return tree

    monkeypatch.setattr(autocommit_module, "apply_edits", apply_then_someone_commits)
    result = ac.commit_paths(["mine.txt"])

    assert result.commit is None and result.blocked is not None and result.retry_soon
    assert "mine.txt" not in head_files(repo)
    monkeypatch.undo()
    assert ac.commit_paths(["mine.txt"]).commit is not None
    assert head_files(repo)["mine.txt"] == b"mine"


def test_users_own_commit_is_picked_up_as_parent(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a", "b.txt": "b"})
    users = user_commit(repo, "by hand", {"b.txt": "b by hand"})
    put(repo, "a.txt", "a2")

    result = ac.commit_paths(["a.txt"])

    assert git(repo, "rev-parse", "HEAD~1").strip() == users
    assert git(repo, "rev-parse", "HEAD").strip() == result.commit
    assert head_files(repo) == {"a.txt": b"a2", "b.txt": b"b by hand"}
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_branch_switch_is_followed_by_the_next_commit(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    main_before = git(repo, "rev-parse", "main").strip()
    git(repo, "checkout", "-q", "-b", "other")
    put(repo, "b.txt", "on other")

    result = ac.commit_paths(["b.txt"])

    assert git(repo, "rev-parse", "other").strip() == result.commit
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert ac.sync_index()
    assert porcelain(repo) == ""

    git(repo, "checkout", "-q", "main")
    assert not (repo / "b.txt").exists()
    put(repo, "c.txt", "on main")
    assert ac.commit_paths(["c.txt", "b.txt"]).commit is not None
    assert head_files(repo) == {"a.txt": b"a", "c.txt": b"on main"}
    assert git(repo, "ls-tree", "--name-only", "other").split() == ["a.txt", "b.txt"]


def test_pulled_commits_are_picked_up(repo: Path, tmp_path: Path) -> None:
    ac = seeded(repo, {"a.txt": "a"})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    pulled = user_commit(clone, "elsewhere", {"remote.txt": "r"})
    git(repo, "pull", "-q", "--ff-only", str(clone), "main")
    put(repo, "local.txt", "l")

    ac.commit_paths(["local.txt"])

    assert git(repo, "rev-parse", "HEAD~1").strip() == pulled
    assert head_files(repo) == {"a.txt": b"a", "remote.txt": b"r", "local.txt": b"l"}


def test_commit_after_someone_else_moved_head_leaves_their_index_alone(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a")
    ac.commit_paths(["a.txt"])
    git(repo, "reset", "-q", "--hard")  # a user command that owns the index now
    user_commit(repo, "by hand", {"b.txt": "b"})

    assert ac.sync_index()
    assert not ac.index_dirty
    assert porcelain(repo) == ""


# --- mass-deletion guard ---------------------------------------------------------------------


def tracked(n: int, prefix: str = "f") -> dict[str, str]:
    return {f"{prefix}{i:03}.txt": f"{prefix} {i}" for i in range(n)}


def test_mass_deletion_is_held_while_other_changes_in_the_batch_commit(repo: Path) -> None:
    ac = seeded(repo, {**tracked(39), "keep.txt": "k"})
    doomed = [f"f{i:03}.txt" for i in range(25)]
    for rel in doomed:
        (repo / rel).unlink()
    put(repo, "keep.txt", "k2")
    put(repo, "new.txt", "n")

    result = ac.commit_paths([*doomed, "keep.txt", "new.txt"])

    assert result.held == doomed
    assert ac.held == set(doomed)
    assert result.commit is not None
    assert sorted((c.kind, c.path) for c in result.changes) == [
        ("add", "new.txt"),
        ("update", "keep.txt"),
    ]
    files = head_files(repo)
    assert all(rel in files for rel in doomed)
    assert files["keep.txt"] == b"k2" and files["new.txt"] == b"n"


def test_moving_a_folder_of_most_files_is_no_mass_deletion(repo: Path) -> None:
    """Every file of the moved folder is added again at its new path: nothing is gone, so
    nothing is held (it used to hold the old paths until sync --allow-deletions), and the
    move does not count against a real deletion made just after it."""
    files = {f"big/f{i:02d}.txt": f"{i}\n" for i in range(30)}
    files.update({f"top{i}.txt": "t\n" for i in range(10)})
    ac = seeded(repo, files)
    (repo / "big").rename(repo / "moved")

    result = ac.commit_paths(["big", "moved"])

    assert result.held == [] and result.commit is not None
    assert sorted(head_files(repo)) == sorted(
        [f"moved/f{i:02d}.txt" for i in range(30)] + [f"top{i}.txt" for i in range(10)]
    )
    (repo / "top0.txt").unlink()
    assert ac.commit_paths(["top0.txt"]).held == []
    assert "top0.txt" not in head_files(repo)


def _e(oid: str) -> Entry:
    return Entry(oid * 40, 0o100644)


@pytest.mark.parametrize(
    ("old", "new", "moved"),
    [
        ({"a": _e("1")}, {"a": None, "b": _e("1")}, {"a"}),  # renamed
        ({"a": _e("1")}, {"a": None}, set()),  # deleted
        ({"a": _e("1")}, {"a": None, "b": _e("2")}, set()),  # another content added
        # a hundred identical files deleted and one such file added: one move, 99 deletions
        (
            {f"f{i}": _e("e") for i in range(100)},
            {**{f"f{i}": None for i in range(100)}, "new": _e("e")},
            {"f0"},
        ),
        ({"a": _e("1"), "b": _e("1")}, {"a": None, "b": _e("1")}, set()),  # b unchanged
    ],
)
def test_only_deleted_paths_whose_content_is_added_elsewhere_count_as_moves(
    old: dict[str, Entry | None], new: dict[str, Entry | None], moved: set[str]
) -> None:
    assert moved_paths(old, new) == moved


def test_deletion_below_the_threshold_commits(repo: Path) -> None:
    ac = seeded(repo, tracked(40))
    doomed = [f"f{i:03}.txt" for i in range(20)]  # half, and not over 20
    for rel in doomed:
        (repo / rel).unlink()

    result = ac.commit_paths(doomed)

    assert result.held == [] and result.commit is not None
    assert len(head_files(repo)) == 20


@pytest.mark.parametrize("index_written", [True, False], ids=["synced", "index-lagging"])
def test_mass_deletion_split_over_several_calls_is_still_caught(
    repo: Path, index_written: bool
) -> None:
    ac = seeded(repo, tracked(50))
    batches = [[f"f{i:03}.txt" for i in range(b * 10, b * 10 + 10)] for b in range(3)]
    for i in range(30):
        (repo / f"f{i:03}.txt").unlink()

    first = ac.commit_paths(batches[0], now=100.0)
    assert not index_written or ac.sync_index()
    second = ac.commit_paths(batches[1], now=101.0)
    assert not index_written or ac.sync_index()
    third = ac.commit_paths(batches[2], now=102.0)

    assert first.held == [] and second.held == []
    assert third.held == batches[2] and third.commit is None
    assert len(head_files(repo)) == 30


def test_deletions_spread_beyond_the_window_are_not_held(repo: Path) -> None:
    ac = seeded(repo, tracked(50))
    batches = [[f"f{i:03}.txt" for i in range(b * 10, b * 10 + 10)] for b in range(3)]
    for i in range(30):
        (repo / f"f{i:03}.txt").unlink()

    for n, batch in enumerate(batches):
        assert ac.commit_paths(batch, now=1000.0 * n).held == []
        assert ac.sync_index()

    assert len(head_files(repo)) == 20


def test_held_files_coming_back_clear_the_hold(repo: Path) -> None:
    ac = seeded(repo, tracked(40))
    doomed = [f"f{i:03}.txt" for i in range(30)]
    for rel in doomed:
        (repo / rel).unlink()
    assert ac.commit_paths(doomed).held == doomed
    head = git(repo, "rev-parse", "HEAD").strip()

    git(repo, "checkout", "--", ".")  # the drive is back
    result = ac.commit_paths(doomed)

    assert result.held == [] and result.commit is None
    assert ac.held == set()
    assert git(repo, "rev-parse", "HEAD").strip() == head
    (repo / "f039.txt").unlink()
    assert ac.commit_paths(["f039.txt"]).commit is not None
    assert "f039.txt" not in head_files(repo)


def test_while_deletions_are_held_further_deletions_are_held_too(repo: Path) -> None:
    ac = seeded(repo, tracked(40))
    doomed = [f"f{i:03}.txt" for i in range(30)]
    for rel in doomed:
        (repo / rel).unlink()
    ac.commit_paths(doomed)
    (repo / "f039.txt").unlink()

    result = ac.commit_paths(["f039.txt"])

    assert result.held == ["f039.txt"]
    assert ac.held == {*doomed, "f039.txt"}
    assert len(head_files(repo)) == 40


def test_allow_deletions_commits_the_held_deletions(repo: Path) -> None:
    ac = seeded(repo, tracked(40))
    doomed = [f"f{i:03}.txt" for i in range(30)]
    for rel in doomed:
        (repo / rel).unlink()
    assert ac.commit_paths(doomed).held == doomed

    result = ac.commit_paths([], allow_deletions=True)

    assert result.commit is not None and result.held == []
    assert sorted(c.path for c in result.changes if c.kind == "delete") == doomed
    assert ac.held == set()
    assert sorted(head_files(repo)) == [f"f{i:03}.txt" for i in range(30, 40)]
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_deleting_everything_in_the_tree_is_held(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a", "b.txt": "b", "d/c.txt": "c"})
    for child in repo.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    result = ac.commit_paths([""])

    assert result.held == ["a.txt", "b.txt", "d/c.txt"]
    assert result.commit is None
    assert commit_count(repo) == 1
    assert len(head_files(repo)) == 3


def test_policy_off_commits_mass_deletions(repo: Path) -> None:
    off = MassDeletePolicy(fraction=None)
    ac = seeded(repo, tracked(40), massdelete=off)
    doomed = [f"f{i:03}.txt" for i in range(30)]
    for rel in doomed:
        (repo / rel).unlink()

    assert ac.commit_paths(doomed).held == []
    assert len(head_files(repo)) == 10

    for rel in [f"f{i:03}.txt" for i in range(30, 40)]:
        (repo / rel).unlink()
    result = ac.commit_paths([""])
    assert result.held == [] and result.commit is not None
    assert head_files(repo) == {}
    git(repo, "fsck", "--strict")


def test_custom_policy_threshold_applies(repo: Path) -> None:
    ac = seeded(repo, tracked(20), massdelete=MassDeletePolicy(fraction=0.2, minimum=3))
    doomed = ["f000.txt", "f001.txt", "f002.txt", "f003.txt", "f004.txt"]
    for rel in doomed:
        (repo / rel).unlink()

    assert ac.commit_paths(doomed).held == doomed
    assert len(head_files(repo)) == 20


def test_small_deletion_right_after_a_commit_is_not_held(repo: Path) -> None:
    """The index lags HEAD until sync_index runs; the guard must still count the files."""
    for rel, data in tracked(30).items():
        put(repo, rel, data)
    ac = engine(repo)
    ac.commit_paths([""])
    (repo / "f000.txt").unlink()
    (repo / "f001.txt").unlink()

    result = ac.commit_paths(["f000.txt", "f001.txt"])

    assert result.held == []
    assert len(head_files(repo)) == 28


def test_conflict_entries_left_by_stash_pop_block_commits_until_resolved(repo: Path) -> None:
    """A conflicted 'git stash pop' leaves no MERGE_HEAD, only conflict entries and markers
    in the file: nothing may be committed until the user resolves them."""
    user_commit(repo, "base", {"f.txt": "base\n"})
    put(repo, "f.txt", "stashed\n")
    git(repo, "stash", "-q")
    user_commit(repo, "upstream", {"f.txt": "upstream\n"})
    git(repo, "stash", "pop", check=False)
    assert "<<<<<<<" in (repo / "f.txt").read_text()
    ac = engine(repo)
    before = refs(repo)

    result = ac.commit_paths(["f.txt"])

    assert result.blocked is not None and "conflicts" in result.blocked
    assert refs(repo) == before
    put(repo, "f.txt", "resolved\n")
    git(repo, "add", "f.txt")
    assert ac.commit_paths(["f.txt"]).commit is not None
    assert head_files(repo)["f.txt"] == b"resolved\n"


def test_rebase_stopped_on_a_conflict_is_named_rather_than_detached_head(diverged: Path) -> None:
    git(diverged, "rebase", "other", check=False)
    reason = engine(diverged).blocked_reason()
    assert reason is not None and "rebase" in reason[0]


def test_restart_leaves_what_the_user_staged_in_the_index(repo: Path) -> None:
    """Without a crash between a commit and its index write, start-up does not touch the
    index, so a file the user staged stays staged."""
    seeded(repo, {"a.txt": "a\n"})
    put(repo, "staged.txt", "s\n")
    git(repo, "add", "staged.txt")

    engine(repo).repair_index()

    assert "A  staged.txt" in porcelain(repo)


def test_restart_after_a_crash_before_the_index_write_repairs_the_index(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a\n")
    assert ac.commit_paths(["a.txt"]).commit is not None  # the index write never happens

    engine(repo).repair_index()

    assert porcelain(repo) == ""
    assert not (repo / ".git" / "annexsync" / "index-behind").exists()


# --- git half-way through a checkout ----------------------------------------------------------


def test_checkout_that_has_written_the_tree_but_not_yet_moved_head_is_not_committed(
    repo: Path,
) -> None:
    """git checkout writes the new branch's files and index, releases index.lock, and only
    then points HEAD at the new branch: a commit in between would put the other branch's
    content onto the old one."""
    user_commit(repo, "base", {"f.txt": "main\n"})
    git(repo, "checkout", "-q", "-b", "side")
    user_commit(repo, "side", {"f.txt": "side\n"})
    git(repo, "checkout", "-q", "main")
    main_before = git(repo, "rev-parse", "main").strip()
    git(repo, "read-tree", "-m", "-u", "main", "side")  # files and index now are 'side'
    ac = AutoCommitter(
        pygit2.Repository(str(repo)), ensure_initialised(pygit2.Repository(str(repo))), Settings()
    )

    result = ac.commit_paths(["f.txt"])

    assert result.blocked is not None and result.retry_soon
    assert git(repo, "rev-parse", "main").strip() == main_before
    git(repo, "symbolic-ref", "HEAD", "refs/heads/side")  # the checkout finishes
    time.sleep(ac.git_settle)
    assert ac.commit_paths(["f.txt"]).commit is None  # disk matches side: nothing to commit
    assert git(repo, "rev-parse", "main").strip() == main_before


def test_git_files_dated_in_the_future_do_not_pause_commits(repo: Path) -> None:
    """HEAD and the index written just before the clock was set back (or on a file server
    whose clock runs ahead) carry a time in the future: that is no sign of git at work, and
    it used to pause auto-commit until the clock caught up."""
    user_commit(repo, "base", {"f.txt": "v1\n"})
    ac = AutoCommitter(
        pygit2.Repository(str(repo)), ensure_initialised(pygit2.Repository(str(repo))), Settings()
    )
    put(repo, "f.txt", "v2\n")
    hour_ahead = time.time_ns() + 3600 * 10**9
    for name in ("HEAD", "index"):
        os.utime(repo / ".git" / name, ns=(hour_ahead, hour_ahead))

    result = ac.commit_paths(["f.txt"])

    assert result.blocked is None and result.commit is not None
    assert head_files(repo) == {"f.txt": b"v2\n"}


def test_index_lock_taken_while_the_tree_is_read_stops_the_commit(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_commit(repo, "base", {"f.txt": "v1\n"})
    ac = engine(repo)
    put(repo, "f.txt", "v2\n")
    before = refs(repo)
    real_read = autocommit_module.read_path

    def read_then_git_locks(*args: object, **kwargs: object) -> object:
        (repo / ".git" / "index.lock").write_text("")
        return real_read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(autocommit_module, "read_path", read_then_git_locks)
    result = ac.commit_paths(["f.txt"])

    assert result.commit is None and result.blocked is not None and result.retry_soon
    assert refs(repo) == before


def test_repair_after_a_crash_touches_only_the_paths_being_committed(repo: Path) -> None:
    """The note names the paths of the interrupted commit; what the user staged elsewhere
    stays staged."""
    seeded(repo, {"a.txt": "a\n", "b.txt": "b\n"})
    put(repo, "b.txt", "staged by the user\n")
    git(repo, "add", "b.txt")
    ac = engine(repo)
    put(repo, "a.txt", "auto\n")
    assert ac.commit_paths(["a.txt"]).commit is not None  # crash: no sync_index

    engine(repo).repair_index()

    status = porcelain(repo)
    assert "M  b.txt" in status
    assert "a.txt" not in status

"""The auto-commit engine on real repositories: what lands in HEAD for each kind of change,
what is kept out, how the index follows, and what a commit costs."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
from pathlib import Path

import pygit2
import pytest
from conftest import commit_count, git, head_files, head_modes

import assistant.autocommit as autocommit_module
import assistant.worktree as worktree_module
from assistant.autocommit import AutoCommitter
from assistant.changes import Change
from assistant.config import Settings
from assistant.node import ensure_initialised

NODE = "laptop"
LINK = 0o120000
EXEC = 0o100755
FILE = 0o100644


def engine(path: Path, **settings: object) -> AutoCommitter:
    """A fresh engine on the repository at ``path``, as the daemon builds it."""
    r = pygit2.Repository(str(path))
    identity = ensure_initialised(r, name=NODE)
    ac = AutoCommitter(r, identity, Settings(**settings))  # type: ignore[arg-type]
    ac.git_settle = 0.0  # these tests run git and the engine back to back on purpose
    return ac


def put(root: Path, rel: str, data: bytes | str = b"") -> Path:
    """Write a file (creating its directories) and return its path."""
    full = root / rel
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_bytes(data.encode() if isinstance(data, str) else data)
    return full


def porcelain(repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def assert_fsck_clean(repo: Path) -> None:
    proc_out = git(repo, "fsck", "--strict", "--no-dangling")
    assert "error" not in proc_out and "warning" not in proc_out, proc_out


def assert_index_matches_head(repo: Path) -> None:
    """git itself writes the very tree we committed from the index we synced."""
    assert git(repo, "write-tree").strip() == git(repo, "rev-parse", "HEAD^{tree}").strip()


def head_message(repo: Path) -> str:
    return git(repo, "log", "-1", "--format=%B")


def seeded(repo: Path, files: dict[str, bytes | str], **settings: object) -> AutoCommitter:
    """An engine whose first commit holds ``files``, index written."""
    for rel, data in files.items():
        put(repo, rel, data)
    ac = engine(repo, **settings)
    result = ac.commit_paths([""])
    assert result.commit is not None
    assert ac.sync_index()
    return ac


# --- the first commit and basic changes ----------------------------------------------------


def test_first_commit_on_unborn_branch_creates_root_commit_on_main(repo: Path) -> None:
    put(repo, "readme.md", "hello\n")
    put(repo, "docs/guide.md", "guide\n")
    ac = engine(repo)
    assert ac.repo.head_is_unborn

    result = ac.commit_paths(["readme.md", "docs"])

    assert result.commit is not None and result.blocked is None
    assert head_files(repo) == {"readme.md": b"hello\n", "docs/guide.md": b"guide\n"}
    assert commit_count(repo) == 1
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "rev-list", "--parents", "-n1", "HEAD").split() == [result.commit]
    assert {c.kind for c in result.changes} == {"add"}
    assert ac.last_commit == result.commit
    assert ac.last_summary == head_message(repo).splitlines()[0]
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_create_modify_delete_each_become_one_commit(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "one\n")
    created = ac.commit_paths(["a.txt"])
    assert created.changes == [Change("add", "a.txt")]

    put(repo, "a.txt", "two\n")
    modified = ac.commit_paths(["a.txt"])
    assert modified.changes == [Change("update", "a.txt")]
    assert head_files(repo) == {"a.txt": b"two\n"}

    put(repo, "b.txt", "keep\n")
    ac.commit_paths(["b.txt"])
    (repo / "a.txt").unlink()
    deleted = ac.commit_paths(["a.txt"])
    assert deleted.changes == [Change("delete", "a.txt")]
    assert deleted.held == []
    assert head_files(repo) == {"b.txt": b"keep\n"}
    assert commit_count(repo) == 4
    assert git(repo, "rev-parse", "HEAD~1").strip() != git(repo, "rev-parse", "HEAD").strip()
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_unchanged_paths_make_no_commit(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "same\n"})
    before = git(repo, "rev-parse", "HEAD").strip()

    result = ac.commit_paths(["a.txt", "missing.txt", ""])

    assert result.commit is None and result.changes == []
    assert git(repo, "rev-parse", "HEAD").strip() == before


def test_rename_with_same_content_is_one_rename_change(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "content\n", "other.txt": "x\n"})
    (repo / "a.txt").rename(repo / "b.txt")

    result = ac.commit_paths(["a.txt", "b.txt"])

    assert result.changes == [Change("rename", "b.txt", old_path="a.txt")]
    assert head_message(repo).splitlines()[0] == "Rename a.txt -> b.txt"
    assert head_files(repo) == {"b.txt": b"content\n", "other.txt": b"x\n"}
    assert "R100\ta.txt\tb.txt" in git(repo, "show", "-M", "--name-status", "--format=", "HEAD")


def test_move_between_directories_is_one_rename(repo: Path) -> None:
    ac = seeded(repo, {"notes/a.md": "note\n", "keep.txt": "k\n"})
    (repo / "archive").mkdir()
    (repo / "notes/a.md").rename(repo / "archive/a.md")

    result = ac.commit_paths(["notes/a.md", "archive/a.md"])

    assert result.changes == [Change("rename", "archive/a.md", old_path="notes/a.md")]
    assert head_message(repo).splitlines()[0] == "Rename notes/a.md -> archive/a.md"
    # the emptied directory disappears from the tree
    assert head_files(repo) == {"archive/a.md": b"note\n", "keep.txt": b"k\n"}


def test_move_into_tree_adds_and_move_out_of_tree_deletes(repo: Path, tmp_path: Path) -> None:
    ac = seeded(repo, {"keep.txt": "k\n", "leaving.txt": "bye\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    put(outside, "arriving.txt", "hi\n")

    (outside / "arriving.txt").rename(repo / "arriving.txt")
    (repo / "leaving.txt").rename(outside / "leaving.txt")
    result = ac.commit_paths(["arriving.txt", "leaving.txt"])

    assert sorted(result.changes, key=lambda c: c.path) == [
        Change("add", "arriving.txt"),
        Change("delete", "leaving.txt"),
    ]
    assert head_files(repo) == {"keep.txt": b"k\n", "arriving.txt": b"hi\n"}


def test_whole_directory_moved_is_committed_as_renames(repo: Path) -> None:
    ac = seeded(
        repo,
        {
            "photos/a.jpg": "a",
            "photos/b.jpg": "b",
            "photos/2024/c.jpg": "c",
            "keep.txt": "k",
        },
    )
    (repo / "archive").mkdir()
    (repo / "photos").rename(repo / "archive/photos")

    result = ac.commit_paths(["photos", "archive/photos"])

    assert sorted((c.kind, c.old_path, c.path) for c in result.changes) == [
        ("rename", "photos/2024/c.jpg", "archive/photos/2024/c.jpg"),
        ("rename", "photos/a.jpg", "archive/photos/a.jpg"),
        ("rename", "photos/b.jpg", "archive/photos/b.jpg"),
    ]
    assert head_files(repo) == {
        "archive/photos/a.jpg": b"a",
        "archive/photos/b.jpg": b"b",
        "archive/photos/2024/c.jpg": b"c",
        "keep.txt": b"k",
    }
    assert commit_count(repo) == 2


def test_whole_directory_deleted_by_directory_path(repo: Path) -> None:
    ac = seeded(repo, {"old/x": "x", "old/deep/y": "y", "keep.txt": "k", "other/z": "z"})
    shutil.rmtree(repo / "old")

    result = ac.commit_paths(["old"])

    assert sorted(c.path for c in result.changes if c.kind == "delete") == ["old/deep/y", "old/x"]
    assert head_files(repo) == {"keep.txt": b"k", "other/z": b"z"}
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_whole_directory_created_by_directory_path(repo: Path) -> None:
    ac = seeded(repo, {"keep.txt": "k"})
    put(repo, "new/a.txt", "a")
    put(repo, "new/sub/b.txt", "b")
    put(repo, "new/sub/deeper/c.txt", "c")

    result = ac.commit_paths(["new"])

    assert sorted(c.path for c in result.changes) == [
        "new/a.txt",
        "new/sub/b.txt",
        "new/sub/deeper/c.txt",
    ]
    assert head_message(repo).splitlines()[0] == "Add 3 files under new/"
    assert head_files(repo)["new/sub/deeper/c.txt"] == b"c"


def test_empty_files_are_committed_empty(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "empty", b"")
    put(repo, "dir/also-empty", b"")

    ac.commit_paths([""])
    assert head_files(repo) == {"empty": b"", "dir/also-empty": b""}

    put(repo, "full", "x")
    ac.commit_paths(["full"])
    put(repo, "full", b"")
    result = ac.commit_paths(["full"])
    assert result.changes == [Change("update", "full")]
    assert head_files(repo)["full"] == b""
    assert_fsck_clean(repo)


# --- symlinks ------------------------------------------------------------------------------


def test_symlink_is_committed_as_link_with_its_target(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "target.txt", "real\n")
    os.symlink("target.txt", repo / "link")
    os.symlink("does/not/exist", repo / "dangling")

    ac.commit_paths([""])

    files, modes = head_files(repo), head_modes(repo)
    assert files["link"] == b"target.txt" and modes["link"] == LINK
    assert files["dangling"] == b"does/not/exist" and modes["dangling"] == LINK
    assert modes["target.txt"] == FILE

    os.unlink(repo / "link")
    os.symlink("elsewhere.txt", repo / "link")
    result = ac.commit_paths(["link"])
    assert result.changes == [Change("update", "link")]
    assert head_files(repo)["link"] == b"elsewhere.txt"
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_symlink_to_outside_directory_is_never_followed(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put(outside, "secret.txt", "secret")
    put(outside, "sub/more.txt", "more")
    ac = engine(repo)
    put(repo, "keep.txt", "k")
    os.symlink(outside, repo / "ext")

    ac.commit_paths([""])
    ac.commit_paths(["ext"])
    ac.commit_paths(["ext/secret.txt", "ext/sub/more.txt"])

    assert head_files(repo) == {"keep.txt": b"k", "ext": str(outside).encode()}
    assert head_modes(repo)["ext"] == LINK


def test_directory_replaced_by_symlink_deletes_the_directory_files(
    repo: Path, tmp_path: Path
) -> None:
    ac = seeded(repo, {"d/x": "x", "d/sub/y": "y", "keep.txt": "k"})
    elsewhere = tmp_path / "elsewhere"
    put(elsewhere, "x", "other x")
    put(elsewhere, "sub/y", "other y")
    shutil.rmtree(repo / "d")
    os.symlink(elsewhere, repo / "d")

    result = ac.commit_paths(["d"])

    assert head_files(repo) == {"keep.txt": b"k", "d": str(elsewhere).encode()}
    assert head_modes(repo)["d"] == LINK
    assert sorted((c.kind, c.path) for c in result.changes) == [
        ("add", "d"),
        ("delete", "d/sub/y"),
        ("delete", "d/x"),
    ]
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_symlink_replaced_by_directory_commits_its_files(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "keep.txt", "k")
    os.symlink("keep.txt", repo / "d")
    ac.commit_paths([""])
    os.unlink(repo / "d")
    put(repo, "d/inside.txt", "in")

    ac.commit_paths(["d"])

    assert head_files(repo) == {"keep.txt": b"k", "d/inside.txt": b"in"}


# --- modes ---------------------------------------------------------------------------------


def test_executable_bit_set_and_cleared_is_a_mode_only_change(repo: Path) -> None:
    ac = seeded(repo, {"run.sh": "#!/bin/sh\necho hi\n"})
    blob = git(repo, "rev-parse", "HEAD:run.sh").strip()
    script = repo / "run.sh"

    script.chmod(0o755)
    made_exec = ac.commit_paths(["run.sh"])
    assert made_exec.changes == [Change("mode", "run.sh")]
    assert head_modes(repo)["run.sh"] == EXEC
    assert git(repo, "rev-parse", "HEAD:run.sh").strip() == blob
    assert head_message(repo).splitlines()[0] == "Change mode of run.sh"
    assert "old mode 100644\nnew mode 100755" in git(repo, "show", "--format=", "HEAD")

    script.chmod(0o644)
    cleared = ac.commit_paths(["run.sh"])
    assert cleared.changes == [Change("mode", "run.sh")]
    assert head_modes(repo)["run.sh"] == FILE
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_new_executable_file_is_added_with_mode_100755(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "tool", "#!/bin/sh\n").chmod(0o750)
    ac.commit_paths(["tool"])
    assert head_modes(repo) == {"tool": EXEC}


# --- names ---------------------------------------------------------------------------------

ODD_NAMES = [
    "with space.txt",
    'double"quote.txt',
    "single'quote.txt",
    "-leading-dash.txt",
    "--",
    "tab\tinside",
    "back\\slash",
    "star*question?bracket[1]",
    "colon:pipe|semi;amp&",
    "percent%20dollar$",
    "#hash-start",
    "café.md",
    "naïve/résumé.txt",
    "日本語/ファイル.txt",
    "emoji 🎉.txt",
    "Ω≈ç√",
    "x" * 251 + ".txt",
    "/".join(["deep"] * 30) + "/leaf.txt",
]


@pytest.mark.parametrize("name", ODD_NAMES, ids=range(len(ODD_NAMES)))
def test_unicode_and_odd_names_round_trip(repo: Path, name: str) -> None:
    ac = engine(repo)
    put(repo, name, f"content of {name}\n")

    ac.commit_paths([name])
    assert head_files(repo) == {name: f"content of {name}\n".encode()}

    put(repo, name, "changed\n")
    assert ac.commit_paths([""]).changes == [Change("update", name)]
    renamed = "moved/" + name
    (repo / renamed).parent.mkdir(parents=True)
    (repo / name).rename(repo / renamed)
    result = ac.commit_paths([name, renamed])
    assert result.changes == [Change("rename", renamed, old_path=name)]
    assert head_files(repo) == {renamed: b"changed\n"}
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_all_odd_names_in_one_commit(repo: Path) -> None:
    ac = engine(repo)
    for name in ODD_NAMES:
        put(repo, name, name)
    ac.commit_paths([""])
    assert head_files(repo) == {name: name.encode() for name in ODD_NAMES}
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_name_that_is_not_utf8_is_committed_byte_for_byte_as_git_does(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "good.txt", "g")
    with open(os.path.join(os.fsencode(repo), b"bad\xff.txt"), "wb") as bad:
        bad.write(b"b")

    result = ac.commit_paths([""])

    assert head_files(repo) == {"good.txt": b"g", os.fsdecode(b"bad\xff.txt"): b"b"}
    assert 'A "bad\\377.txt"' in ac.repo[result.commit].message  # type: ignore[index]
    assert ac.commit_paths([""]).commit is None
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_trees_sort_like_gits_own_with_similar_names(repo: Path) -> None:
    ac = engine(repo)
    for rel in ("foo/x", "foo.txt", "foo-bar", "foo0", "fo", "foo/bar/y", "foo/bar.c", "Foo"):
        put(repo, rel, rel)
    ac.commit_paths([""])
    (repo / "foo0").unlink()
    put(repo, "foo0/z", "z")
    put(repo, "foo/bar.c", "changed")
    ac.commit_paths(["foo0", "foo/bar.c"])

    assert ac.sync_index()
    assert_index_matches_head(repo)
    assert_fsck_clean(repo)


# --- files and directories swapping places --------------------------------------------------


def test_file_replaced_by_directory(repo: Path) -> None:
    ac = seeded(repo, {"a": "file", "keep.txt": "k"})
    (repo / "a").unlink()
    put(repo, "a/inner.txt", "inner")
    put(repo, "a/sub/deep.txt", "deep")

    ac.commit_paths(["a"])

    assert head_files(repo) == {
        "keep.txt": b"k",
        "a/inner.txt": b"inner",
        "a/sub/deep.txt": b"deep",
    }
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_fsck_clean(repo)


def test_directory_replaced_by_file(repo: Path) -> None:
    ac = seeded(repo, {"a/inner.txt": "inner", "a/sub/deep.txt": "deep", "keep.txt": "k"})
    shutil.rmtree(repo / "a")
    put(repo, "a", "now a file")

    ac.commit_paths(["a"])

    assert head_files(repo) == {"keep.txt": b"k", "a": b"now a file"}
    assert head_modes(repo)["a"] == FILE
    assert ac.sync_index()
    assert porcelain(repo) == ""
    assert_index_matches_head(repo)
    assert_fsck_clean(repo)


def test_directory_replaced_by_file_reported_by_child_paths(repo: Path) -> None:
    ac = seeded(repo, {"a/inner.txt": "inner", "keep.txt": "k"})
    shutil.rmtree(repo / "a")
    put(repo, "a", "file")

    ac.commit_paths(["a/inner.txt", "a"])

    assert head_files(repo) == {"keep.txt": b"k", "a": b"file"}


# --- what gets restaged and how the commit reads ---------------------------------------------


def test_only_the_given_changed_paths_are_restaged(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a1", "b.txt": "b1", "c.txt": "c1"})
    put(repo, "a.txt", "a2")
    put(repo, "b.txt", "b2, longer")  # a new size: same-tick mtimes cannot hide the change

    result = ac.commit_paths(["a.txt", "c.txt"])

    assert result.changes == [Change("update", "a.txt")]
    assert head_files(repo) == {"a.txt": b"a2", "b.txt": b"b1", "c.txt": b"c1"}
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["a.txt"]
    assert ac.sync_index()
    assert porcelain(repo) == " M b.txt\n"


def test_only_the_given_path_is_read(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ac = seeded(repo, {f"d{i}/f{j}.txt": f"{i} {j}" for i in range(5) for j in range(5)})
    put(repo, "d3/f3.txt", "changed")
    reads: list[str] = []
    real = autocommit_module.read_path

    def counting(root: Path, rel: str, largefiles: int) -> object:
        reads.append(rel)
        return real(root, rel, largefiles)

    monkeypatch.setattr(autocommit_module, "read_path", counting)
    ac.commit_paths(["d3/f3.txt"])
    assert reads == ["d3/f3.txt"]


def test_commit_message_says_what_changed_and_names_the_node(repo: Path) -> None:
    ac = seeded(repo, {"notes/todo.md": "- one\n", "readme.md": "r\n"})
    put(repo, "notes/todo.md", "- one\n- two\n")
    for name in ("a.png", "b.png", "c.png"):
        put(repo, f"img/{name}", name)

    ac.commit_paths(["notes/todo.md", "img"])

    message = head_message(repo)
    lines = message.splitlines()
    assert lines[0] == "Update notes/todo.md; add 3 files under img/"
    assert "M notes/todo.md" in lines and "A img/a.png" in lines
    trailer = git(repo, "log", "-1", "--format=%(trailers:key=Annexsync-Node,valueonly)")
    assert trailer.strip() == NODE
    assert ac.last_summary == lines[0]


def test_author_and_committer_come_from_user_name_and_email(repo: Path) -> None:
    git(repo, "config", "user.name", "Alice Example")
    git(repo, "config", "user.email", "alice@example.org")
    ac = engine(repo)
    put(repo, "a.txt", "a")

    ac.commit_paths(["a.txt"])

    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
        "Alice Example <alice@example.org>|Alice Example <alice@example.org>"
    )


# --- what is never committed ---------------------------------------------------------------


def test_gitignore_patterns_are_not_committed_but_gitignore_itself_is(repo: Path) -> None:
    ac = engine(repo)
    put(repo, ".gitignore", "*.log\nbuild/\n")
    put(repo, "app.log", "log")
    put(repo, "sub/deep.log", "log")
    put(repo, "build/out.o", "obj")
    put(repo, "main.c", "int main;")

    ac.commit_paths([""])
    ac.commit_paths(["app.log", "build/out.o", "build", "sub/deep.log"])

    assert head_files(repo) == {".gitignore": b"*.log\nbuild/\n", "main.c": b"int main;"}
    assert ac.sync_index()
    assert porcelain(repo) == ""


def test_info_exclude_patterns_are_not_committed(repo: Path) -> None:
    put(repo / ".git", "info/exclude", "secret.txt\nprivate/\n")
    ac = engine(repo)
    put(repo, "secret.txt", "s")
    put(repo, "private/key", "k")
    put(repo, "public.txt", "p")

    ac.commit_paths([""])
    ac.commit_paths(["secret.txt", "private/key"])

    assert head_files(repo) == {"public.txt": b"p"}


def test_core_excludes_file_patterns_are_not_committed(repo: Path, tmp_path: Path) -> None:
    excludes = tmp_path / "global-ignore"
    excludes.write_text("*.bak\n")
    git(repo, "config", "core.excludesFile", str(excludes))
    ac = engine(repo)
    put(repo, "doc.bak", "b")
    put(repo, "doc.txt", "t")

    ac.commit_paths([""])
    ac.commit_paths(["doc.bak"])

    assert head_files(repo) == {"doc.txt": b"t"}
    assert ac.sync_index()
    assert porcelain(repo) == ""  # git agrees that doc.bak is ignored


TEMP_FILES = [
    ".notes.md.swp",
    ".notes.md.swo",
    "sub/.x.swp",
    "4913",
    "sub/5036",
    "#notes.md#",
    "notes.md~",
    ".DS_Store",
    "sub/.DS_Store",
]


@pytest.mark.parametrize("temp", TEMP_FILES)
def test_editor_and_os_temp_files_are_not_committed(repo: Path, temp: str) -> None:
    ac = engine(repo)
    put(repo, "notes.md", "n")
    put(repo, temp, "scratch")

    ac.commit_paths([temp])
    ac.commit_paths([""])

    assert head_files(repo) == {"notes.md": b"n"}


def test_emacs_lock_symlink_is_not_committed(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "notes.md", "n")
    os.symlink("user@host.1234:1700000000", repo / ".#notes.md")

    ac.commit_paths([".#notes.md"])
    ac.commit_paths([""])

    assert head_files(repo) == {"notes.md": b"n"}


def test_configured_ignore_patterns_are_not_committed(repo: Path) -> None:
    ac = engine(repo, ignore=("*.tmp", "scratch/*"))
    put(repo, "a.tmp", "t")
    put(repo, "sub/b.tmp", "t")
    put(repo, "scratch/notes.txt", "s")
    put(repo, "kept.txt", "k")

    ac.commit_paths([""])
    ac.commit_paths(["a.tmp", "scratch/notes.txt"])

    assert head_files(repo) == {"kept.txt": b"k"}


def test_tracked_files_matching_gitignore_are_still_followed(repo: Path) -> None:
    ac = seeded(repo, {"debug.log": "v1", "build/keep.txt": "k1", "src.c": "c"})
    put(repo, ".gitignore", "*.log\nbuild/\n")
    put(repo, "debug.log", "v2")
    put(repo, "build/keep.txt", "k2")
    put(repo, "build/new.o", "ignored")

    ac.commit_paths([""])
    assert head_files(repo) == {
        ".gitignore": b"*.log\nbuild/\n",
        "debug.log": b"v2",
        "build/keep.txt": b"k2",
        "src.c": b"c",
    }

    (repo / "debug.log").unlink()
    ac.commit_paths(["debug.log"])
    assert "debug.log" not in head_files(repo)


def test_git_directory_contents_are_never_committed(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a")
    ac.commit_paths([".git/config", ".git", ".git/HEAD", "a.txt"])
    assert head_files(repo) == {"a.txt": b"a"}


def test_nested_git_repository_is_never_a_gitlink_and_warned_once(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(repo, "sub/inner.txt", "inner")
    git(repo / "sub", "init", "-q")
    git(repo / "sub", "add", "inner.txt")
    git(repo / "sub", "commit", "-q", "-m", "inner")
    put(repo, "top.txt", "t")
    ac = engine(repo)

    with caplog.at_level(logging.WARNING, logger="annexsync"):
        ac.commit_paths([""])
        ac.commit_paths(["sub"])
        ac.commit_paths(["sub/inner.txt", "sub/.git/HEAD"])
        ac.commit_paths([""])

    assert head_files(repo) == {"top.txt": b"t"}
    assert 0o160000 not in head_modes(repo).values()
    assert git(repo, "ls-tree", "-r", "HEAD").count("commit") == 0
    assert ac.nested == {"sub"}
    warnings = [r for r in caplog.records if "nested git repository" in r.getMessage()]
    assert len(warnings) == 1 and "sub" in warnings[0].getMessage()


def test_tracked_directory_becoming_a_nested_repository_is_not_deleted(repo: Path) -> None:
    ac = seeded(repo, {"lib/x.py": "x", "keep.txt": "k"})
    git(repo / "lib", "init", "-q")

    ac.commit_paths(["lib", "lib/x.py"])
    ac.commit_paths([""])

    assert head_files(repo) == {"lib/x.py": b"x", "keep.txt": b"k"}
    assert ac.nested == {"lib"}


def test_files_over_largefiles_are_skipped_listed_and_logged_once(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ac = engine(repo, largefiles=1000)
    put(repo, "big.bin", b"x" * 2000)
    put(repo, "limit.bin", b"y" * 1000)

    with caplog.at_level(logging.WARNING, logger="annexsync"):
        ac.commit_paths([""])
        ac.commit_paths(["big.bin"])

    assert head_files(repo) == {"limit.bin": b"y" * 1000}
    assert ac.large == {"big.bin": 2000}
    logged = [r for r in caplog.records if "big.bin" in r.getMessage()]
    assert len(logged) == 1 and "largefiles" in logged[0].getMessage()

    (repo / "big.bin").unlink()
    ac.commit_paths(["big.bin"])
    assert ac.large == {}


def test_tracked_file_growing_past_largefiles_keeps_its_last_version(repo: Path) -> None:
    ac = seeded(repo, {"data.bin": b"small", "keep.txt": "k"}, largefiles=1000)
    put(repo, "data.bin", b"z" * 5000)

    result = ac.commit_paths(["data.bin"])

    assert result.commit is None
    assert head_files(repo) == {"data.bin": b"small", "keep.txt": b"k"}
    assert ac.large == {"data.bin": 5000}

    put(repo, "data.bin", b"small again")
    ac.commit_paths(["data.bin"])
    assert head_files(repo)["data.bin"] == b"small again"
    assert ac.large == {}


# --- files that cannot be read now ---------------------------------------------------------


def test_file_changing_while_read_is_requeued_not_committed(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = seeded(repo, {"log.txt": "line 1\n", "keep.txt": "k"})
    put(repo, "log.txt", "line 1\nline 2\n")
    put(repo, "other.txt", "o")
    real_read = os.read
    appended: list[int] = []

    def read_while_appending(fd: int, n: int) -> bytes:
        chunk = real_read(fd, n)
        if chunk and not appended and os.fstat(fd).st_size == len(b"line 1\nline 2\n"):
            with open(repo / "log.txt", "ab") as writer:  # another process keeps writing
                writer.write(b"line 3\n")
            appended.append(fd)
        return chunk

    monkeypatch.setattr(worktree_module.os, "read", read_while_appending)
    result = ac.commit_paths(["log.txt", "other.txt"])
    monkeypatch.undo()

    assert appended
    assert result.requeue == ["log.txt"]
    assert head_files(repo) == {"log.txt": b"line 1\n", "keep.txt": b"k", "other.txt": b"o"}

    again = ac.commit_paths(result.requeue)
    assert again.requeue == []
    assert head_files(repo)["log.txt"] == b"line 1\nline 2\nline 3\n"


def test_file_whose_size_changes_between_stats_is_requeued(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = engine(repo)
    put(repo, "growing.txt", "partial")
    real_fstat = os.fstat
    calls: list[int] = []

    class Grown:
        def __init__(self, st: os.stat_result) -> None:
            self.st_mode = st.st_mode
            self.st_mtime_ns = st.st_mtime_ns + 1
            self.st_size = st.st_size + 10

    def fstat(fd: int) -> object:
        calls.append(fd)
        st = real_fstat(fd)
        return Grown(st) if len(calls) % 2 == 0 else st

    monkeypatch.setattr(worktree_module.os, "fstat", fstat)
    result = ac.commit_paths(["growing.txt"])
    monkeypatch.undo()

    assert result.requeue == ["growing.txt"] and result.commit is None
    assert ac.repo.head_is_unborn
    assert ac.commit_paths(["growing.txt"]).commit is not None
    assert head_files(repo) == {"growing.txt": b"partial"}


def test_fifo_is_skipped_without_hanging(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    ac = engine(repo)
    os.mkfifo(repo / "pipe")
    put(repo, "a.txt", "a")

    with caplog.at_level(logging.WARNING, logger="annexsync"):
        ac.commit_paths(["pipe"])
        ac.commit_paths([""])

    assert head_files(repo) == {"a.txt": b"a"}
    assert stat.S_ISFIFO(os.lstat(repo / "pipe").st_mode)
    assert len([r for r in caplog.records if "pipe" in r.getMessage()]) == 1


def test_unix_socket_is_skipped(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a")
    monkeypatch.chdir(repo)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("app.sock")
        ac.commit_paths([""])
        ac.commit_paths(["app.sock"])
    finally:
        sock.close()
    assert head_files(repo) == {"a.txt": b"a"}


def test_special_file_replacing_a_tracked_file_keeps_the_last_version(repo: Path) -> None:
    ac = seeded(repo, {"pipe": "was a file", "keep.txt": "k"})
    (repo / "pipe").unlink()
    os.mkfifo(repo / "pipe")

    result = ac.commit_paths(["pipe"])

    assert result.commit is None
    assert head_files(repo) == {"pipe": b"was a file", "keep.txt": b"k"}


# --- the index, whole-tree scans ------------------------------------------------------------


def test_sync_index_leaves_git_status_clean_after_every_kind_of_change(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a")
    put(repo, "b.txt", "b")
    put(repo, "dir/c.txt", "c")
    put(repo, "d.txt", "d")
    ac.commit_paths([""])
    put(repo, "a.txt", "a2")
    ac.commit_paths(["a.txt"])
    (repo / "b.txt").rename(repo / "dir/b.txt")
    ac.commit_paths(["b.txt", "dir/b.txt"])
    (repo / "d.txt").chmod(0o755)
    os.symlink("a.txt", repo / "link")
    ac.commit_paths(["d.txt", "link"])
    shutil.rmtree(repo / "dir")
    put(repo, "dir", "file now")
    ac.commit_paths(["dir"])

    assert ac.index_dirty
    assert ac.sync_index()
    assert not ac.index_dirty
    assert porcelain(repo) == ""
    assert_index_matches_head(repo)
    assert git(repo, "diff", "--cached", "--name-only", "HEAD") == ""
    assert_fsck_clean(repo)


def test_sync_index_waits_while_index_lock_is_held(repo: Path) -> None:
    ac = engine(repo)
    put(repo, "a.txt", "a")
    ac.commit_paths(["a.txt"])
    lock = repo / ".git/index.lock"
    lock.write_bytes(b"")

    assert ac.sync_index() is False
    assert lock.exists()
    lock.unlink()
    assert ac.sync_index() is True
    assert porcelain(repo) == ""


def test_repair_index_fixes_an_index_that_lags_head(repo: Path) -> None:
    first = seeded(repo, {"a.txt": "a", "b.txt": "b", "c.txt": "c"})
    put(repo, "a.txt", "a2")
    (repo / "b.txt").unlink()
    put(repo, "new/d.txt", "d")
    (repo / "c.txt").chmod(0o755)
    first.commit_paths(["a.txt", "b.txt", "new", "c.txt"])
    # the process dies here: the commit exists, its index write never happened
    assert porcelain(repo) != ""

    engine(repo).repair_index()

    assert porcelain(repo) == ""
    assert git(repo, "diff", "--cached", "--name-only", "HEAD") == ""
    assert head_files(repo) == {"a.txt": b"a2", "c.txt": b"c", "new/d.txt": b"d"}


def test_repair_index_leaves_the_users_unstaged_work_alone(repo: Path) -> None:
    seeded(repo, {"a.txt": "a", "b.txt": "b"})
    put(repo, "b.txt", "edited, not committed")

    engine(repo).repair_index()

    assert porcelain(repo) == " M b.txt\n"
    assert (repo / "b.txt").read_text() == "edited, not committed"


def test_scan_candidates_finds_changes_made_behind_the_engines_back(repo: Path) -> None:
    ac = seeded(repo, {"a.txt": "a", "b.txt": "b", "dir/c.txt": "c", ".gitignore": "*.log\n"})
    assert ac.scan_candidates() == []
    put(repo, "a.txt", "changed")
    (repo / "b.txt").unlink()
    put(repo, "new/deep/d.txt", "d")
    put(repo, "ignored.log", "x")
    (repo / "dir/c.txt").chmod(0o755)

    found = ac.scan_candidates()
    assert found == ["a.txt", "b.txt", "dir/c.txt", "new/deep/d.txt"]

    ac.commit_paths(found)
    assert ac.sync_index()
    assert ac.scan_candidates() == []
    assert head_files(repo) == {
        "a.txt": b"changed",
        "dir/c.txt": b"c",
        "new/deep/d.txt": b"d",
        ".gitignore": b"*.log\n",
    }
    assert head_modes(repo)["dir/c.txt"] == EXEC


def test_scan_candidates_on_unborn_branch_lists_every_file(repo: Path) -> None:
    put(repo, "a.txt", "a")
    put(repo, "d/b.txt", "b")
    assert engine(repo).scan_candidates() == ["a.txt", "d/b.txt"]


# --- cost ----------------------------------------------------------------------------------


def loose_objects(repo: Path) -> set[str]:
    objects = repo / ".git/objects"
    return {f"{d.name}{f.name}" for d in objects.iterdir() if len(d.name) == 2 for f in d.iterdir()}


def test_one_file_commit_in_large_tree_writes_only_trees_along_its_path(repo: Path) -> None:
    for d in range(100):
        for f in range(20):
            put(repo, f"dir{d:02}/sub/file{f:02}.txt", f"{d} {f}\n")
    ac = engine(repo)
    ac.commit_paths([""])
    assert len(head_files(repo)) == 2000

    written: list[str] = []
    real_builder = ac.repo.TreeBuilder

    class CountingBuilder:
        def __init__(self, *args: object) -> None:
            self._inner = real_builder(*args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        def __len__(self) -> int:
            return len(self._inner)

        def write(self) -> pygit2.Oid:
            oid = self._inner.write()
            written.append(str(oid))
            return oid

    ac.repo.TreeBuilder = CountingBuilder  # type: ignore[method-assign]
    before = loose_objects(repo)
    put(repo, "dir42/sub/file07.txt", "changed\n")

    result = ac.commit_paths(["dir42/sub/file07.txt"])

    assert result.changes == [Change("update", "dir42/sub/file07.txt")]
    head = ac.repo.head.peel(pygit2.Commit)
    assert written == [
        str(head.tree["dir42/sub"].id),
        str(head.tree["dir42"].id),
        str(head.tree.id),
    ]
    new = loose_objects(repo) - before
    assert new == {
        result.commit,
        *written,
        git(repo, "rev-parse", "HEAD:dir42/sub/file07.txt").strip(),
    }
    assert git(repo, "diff", "--name-only", "HEAD~1", "HEAD").split() == ["dir42/sub/file07.txt"]


def test_a_large_batch_is_stored_as_one_pack_not_a_thousand_loose_objects(repo: Path) -> None:
    ac = engine(repo)
    for i in range(200):
        put(repo, f"many/f{i:03d}.txt", f"content {i}\n")
    loose_before = sum(1 for _ in (repo / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))

    result = ac.commit_paths(["many"])

    assert result.commit is not None and len(result.changes) == 200
    assert len(list((repo / ".git" / "objects" / "pack").glob("*.pack"))) == 1
    loose_after = sum(1 for _ in (repo / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))
    assert loose_after - loose_before <= 5  # the trees and the commit only
    assert head_files(repo)["many/f123.txt"] == b"content 123\n"
    assert git(repo, "fsck", "--strict") == ""

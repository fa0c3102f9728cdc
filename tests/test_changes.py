"""Describing a commit: classifying changes, pairing renames, and the commit message."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.changes import (
    BODY_LIMIT,
    SUMMARY_LIMIT,
    Change,
    Entry,
    classify,
    commit_message,
    quote_path,
    summarize,
)

FILE = 0o100644
EXEC = 0o100755
LINK = 0o120000


def e(oid: str, mode: int = FILE) -> Entry:
    return Entry(oid.ljust(40, "0"), mode)


# --- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {"a": e("1")}, [Change("add", "a")]),
        ({"a": e("1")}, {"a": None}, [Change("delete", "a")]),
        ({"a": None}, {"a": e("1")}, [Change("add", "a")]),
        ({"a": e("1")}, {"a": e("2")}, [Change("update", "a")]),
        ({"a": e("1")}, {"a": e("1", EXEC)}, [Change("mode", "a")]),
        ({"a": e("1", FILE)}, {"a": e("2", EXEC)}, [Change("update", "a")]),
        ({"a": e("1")}, {"a": e("1")}, []),
        ({"a": None}, {"a": None}, []),
        ({"a": e("1"), "b": None}, {"a": None, "b": e("1")}, [Change("rename", "b", "a")]),
        (
            {"doc/a.md": e("1"), "x": None},
            {"doc/a.md": None, "x": e("2")},
            [Change("delete", "doc/a.md"), Change("add", "x")],
        ),
        (
            {"a": e("1", FILE), "b": None},
            {"a": None, "b": e("1", EXEC)},
            [Change("delete", "a"), Change("add", "b")],
        ),
        (
            {"l": e("1", LINK), "f": None},
            {"l": None, "f": e("1", FILE)},
            [Change("add", "f"), Change("delete", "l")],
        ),
    ],
    ids=[
        "add",
        "delete",
        "add-over-absent",
        "update",
        "chmod",
        "content-and-mode",
        "unchanged",
        "absent-both",
        "rename",
        "delete-and-unrelated-add",
        "same-content-other-mode-is-not-a-rename",
        "symlink-to-file-is-not-a-rename",
    ],
)
def test_classify_names_each_kind_of_change(
    old: dict[str, Entry | None], new: dict[str, Entry | None], expected: list[Change]
) -> None:
    assert classify(old, new) == expected


def test_classify_prefers_a_move_with_the_same_base_name() -> None:
    old = {"a/x.txt": e("1"), "a/y.txt": e("1"), "b/x.txt": None}
    new = {"a/x.txt": None, "a/y.txt": None, "b/x.txt": e("1")}
    assert classify(old, new) == [
        Change("delete", "a/y.txt"),
        Change("rename", "b/x.txt", old_path="a/x.txt"),
    ]


def test_classify_prefers_a_rename_within_the_same_directory() -> None:
    old = {"a/one": e("1"), "b/two": e("1"), "a/three": None}
    new = {"a/one": None, "b/two": None, "a/three": e("1")}
    changes = classify(old, new)
    assert Change("rename", "a/three", old_path="a/one") in changes
    assert Change("delete", "b/two") in changes


def test_classify_pairs_each_deleted_copy_with_one_new_copy() -> None:
    old = {"a": e("1"), "b": e("1"), "c": None, "d": None, "z": None}
    new = {"a": None, "b": None, "c": e("1"), "d": e("1"), "z": e("1")}
    changes = classify(old, new)
    renames = [c for c in changes if c.kind == "rename"]
    assert len(renames) == 2
    assert {c.old_path for c in renames} == {"a", "b"}
    assert [c for c in changes if c.kind == "add"] == [Change("add", "z")]


def test_classify_moves_a_whole_directory_as_renames() -> None:
    old = {f"old/{n}": e(str(i)) for i, n in enumerate("abc")}
    old.update({f"new/{n}": None for n in "abc"})
    new = {f"old/{n}": None for n in "abc"}
    new.update({f"new/{n}": e(str(i)) for i, n in enumerate("abc")})
    assert classify(old, new) == [Change("rename", f"new/{n}", f"old/{n}") for n in "abc"]


_entries = st.one_of(
    st.none(),
    st.builds(e, st.sampled_from(["1", "2", "3"]), st.sampled_from([FILE, EXEC, LINK])),
)
_paths = st.sampled_from(["a", "b", "c", "d/a", "d/b", "e/f/a", "\u00e9t\u00e9", "sp ace"])


@settings(max_examples=300)
@given(st.dictionaries(_paths, st.tuples(_entries, _entries), max_size=8))
def test_classify_never_loses_or_invents_a_path(pairs: dict) -> None:
    old = {p: before for p, (before, _) in pairs.items()}
    new = {p: after for p, (_, after) in pairs.items()}
    changes = classify(old, new)
    changed = {p for p in pairs if old[p] != new[p]}
    mentioned = [c.path for c in changes] + [c.old_path for c in changes if c.old_path]
    assert sorted(mentioned) == sorted(changed), "each changed path exactly once"
    for c in changes:
        if c.kind == "add":
            assert old[c.path] is None and new[c.path] is not None
        elif c.kind == "delete":
            assert old[c.path] is not None and new[c.path] is None
        elif c.kind == "rename":
            assert c.old_path is not None
            assert old[c.path] is None and new[c.old_path] is None
            assert old[c.old_path] == new[c.path]
        elif c.kind == "mode":
            assert old[c.path].oid == new[c.path].oid
            assert old[c.path].mode != new[c.path].mode
        else:
            assert old[c.path] is not None and new[c.path] is not None
            assert old[c.path].oid != new[c.path].oid
    assert changes == sorted(changes, key=lambda c: (c.path, c.kind))


# --- summarize ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "summary"),
    [
        ([], "No changes"),
        ([Change("update", "notes/todo.md")], "Update notes/todo.md"),
        ([Change("add", "a.txt")], "Add a.txt"),
        ([Change("delete", "old.txt")], "Delete old.txt"),
        ([Change("mode", "run.sh")], "Change mode of run.sh"),
        ([Change("rename", "b.md", "a.md")], "Rename a.md -> b.md"),
        (
            [Change("update", "notes/todo.md")]
            + [Change("add", f"img/{n}.png") for n in ("a", "b", "c")],
            "Update notes/todo.md; add 3 files under img/",
        ),
        ([Change("add", "a"), Change("add", "b")], "Add 2 files"),
        (
            [Change("add", "img/2024/a.png"), Change("add", "img/2025/b.png")],
            "Add 2 files under img/",
        ),
        (
            [Change("delete", "x/a"), Change("delete", "y/b"), Change("update", "z")],
            "Update z; delete 2 files",
        ),
        (
            [Change("rename", "new/a", "old/a"), Change("rename", "new/b", "old/b")],
            "Rename 2 files under new/",
        ),
        (
            [Change("delete", "d"), Change("mode", "m"), Change("add", "a"), Change("update", "u")],
            "Update u; add a; change mode of m; delete d",
        ),
    ],
    ids=[
        "nothing",
        "one-update",
        "one-add",
        "one-delete",
        "one-chmod",
        "one-rename",
        "update-and-adds-in-a-directory",
        "adds-at-top-level",
        "adds-in-common-parent",
        "deletes-in-different-dirs",
        "directory-moved",
        "fixed-order-of-kinds",
    ],
)
def test_summary_says_what_changed(changes: list[Change], summary: str) -> None:
    assert summarize(changes) == summary


def test_long_summary_falls_back_to_counts() -> None:
    long_dir = "projects/" + "very-long-directory-name/" * 3
    changes = [
        Change("update", long_dir + "notes.md"),
        Change("add", "img/a.png"),
        Change("add", "img/b.png"),
        Change("delete", "old/x.txt"),
    ]
    summary = summarize(changes)
    assert summary == "Update 1 file; add 2 files; delete 1 file"
    assert len(summary) <= SUMMARY_LIMIT


def test_single_path_too_long_for_the_summary_is_counted() -> None:
    path = "a/" * 40 + "file.txt"
    assert summarize([Change("add", path)]) == "Add 1 file"


def test_summary_of_unicode_and_spaced_names_keeps_them() -> None:
    assert (
        summarize([Change("add", "caf\u00e9/men\u00fc 1.txt")]) == "Add caf\u00e9/men\u00fc 1.txt"
    )


# --- commit_message -------------------------------------------------------------------


def test_commit_message_has_summary_path_list_and_node_trailer() -> None:
    changes = [
        Change("add", "img/a.png"),
        Change("delete", "gone.txt"),
        Change("mode", "run.sh"),
        Change("rename", "new.md", "old.md"),
        Change("update", "notes/todo.md"),
    ]
    message = commit_message(changes, "laptop-notes")
    lines = message.split("\n")
    assert lines[0] == summarize(changes)
    assert lines[1] == ""
    assert lines[2:7] == [
        "A img/a.png",
        "D gone.txt",
        "T run.sh",
        "R old.md -> new.md",
        "M notes/todo.md",
    ]
    assert lines[7] == ""
    assert lines[8] == "Annexsync-Node: laptop-notes"
    assert message.endswith("\n")


def test_commit_message_caps_the_path_list() -> None:
    changes = [Change("add", f"f{i:04d}") for i in range(BODY_LIMIT + 37)]
    message = commit_message(changes, "n")
    lines = message.splitlines()
    assert lines[0] == f"Add {BODY_LIMIT + 37} files"
    listed = [line for line in lines if line.startswith("A ")]
    assert len(listed) == BODY_LIMIT
    assert "... and 37 more" in lines
    assert lines[-1] == "Annexsync-Node: n"


def test_node_trailer_is_a_git_trailer() -> None:
    message = commit_message([Change("update", "a: b.txt")], "desk-notes")
    proc = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "Annexsync-Node: desk-notes\n"


@settings(max_examples=60)
@given(
    st.lists(
        st.builds(
            Change,
            st.sampled_from(["add", "update", "delete", "mode"]),
            st.from_regex(r"[a-z]{1,12}(/[a-z]{1,12}){0,4}", fullmatch=True),
        ),
        min_size=1,
        max_size=40,
        unique_by=lambda c: c.path,
    )
)
def test_commit_message_lists_every_change_and_one_summary_line(changes: list[Change]) -> None:
    message = commit_message(changes, "node-1")
    summary, blank, *rest = message.split("\n")
    assert blank == ""
    assert summary[0].isupper()
    assert "\n" not in summary
    body = rest[: len(changes)]
    assert sorted(line.split(" ", 1)[1] for line in body) == sorted(c.path for c in changes)
    assert message.endswith("\n\nAnnexsync-Node: node-1\n")


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("plain name.md", "plain name.md"),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("bell\x07", '"bell\\007"'),
    ],
    ids=["plain", "newline", "quotes", "backslash", "control"],
)
def test_paths_with_control_characters_are_quoted_like_git(path: str, shown: str) -> None:
    assert quote_path(path) == shown


def test_a_newline_in_a_file_name_cannot_break_the_message_lines() -> None:
    message = commit_message([Change("add", "evil\nAnnexsync-Node: other")], "laptop")
    lines = message.splitlines()
    assert lines[0] == 'Add "evil\\nAnnexsync-Node: other"'
    assert lines[-1] == "Annexsync-Node: laptop"
    assert sum(line.startswith("Annexsync-Node:") for line in lines) == 1


def test_summary_of_every_kind_of_change_stays_within_the_limit() -> None:
    kinds = ["update", "add", "rename", "mode", "delete"]
    changes = [
        Change(kind, f"{kind}{i}/{'x' * 20}", old_path="o" if kind == "rename" else None)  # type: ignore[arg-type]
        for kind in kinds
        for i in range(2)
    ]
    summary = summarize(changes)
    assert len(summary) <= SUMMARY_LIMIT
    assert summary == "Change 10 files"

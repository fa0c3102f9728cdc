"""The pure conflict resolution: a table of every conflict kind, variant names, and properties
checked on generated cases (no changed version is ever lost, and swapping which side is
newer only changes which version keeps the path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.changes import Entry
from assistant.merge import Resolution, resolve, variant_path

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
FILE, EXEC, LINK = 0o100644, 0o100755, 0o120000


def f(oid: str, mode: int = FILE) -> Entry:
    return Entry(oid, mode)


def nothing(_path: str) -> Entry | None:
    return None


def run(
    base: Mapping[str, Entry],
    newer: Mapping[str, Entry],
    older: Mapping[str, Entry],
    existing: Callable[[str], Entry | None] = nothing,
    changed: set[str] | None = None,
) -> Resolution:
    paths = set(base) | set(newer) | set(older) if changed is None else changed
    return resolve(paths, dict(base), dict(newer), dict(older), existing)


def present(res: Resolution) -> dict[str, Entry]:
    return {p: e for p, e in res.entries.items() if e is not None}


# --- the table -------------------------------------------------------------------------------

CASES = [
    pytest.param({"p": f(A)}, {"p": f(B)}, {"p": f(A)}, {"p": f(B)}, [], id="newer-changed"),
    pytest.param({"p": f(A)}, {"p": f(A)}, {"p": f(B)}, {"p": f(B)}, [], id="older-changed"),
    pytest.param({}, {"p": f(B)}, {}, {"p": f(B)}, [], id="newer-added"),
    pytest.param({}, {}, {"p": f(B)}, {"p": f(B)}, [], id="older-added"),
    pytest.param({"p": f(A)}, {}, {"p": f(A)}, {}, [], id="newer-deleted"),
    pytest.param({"p": f(A)}, {"p": f(A)}, {}, {}, [], id="older-deleted"),
    pytest.param({"p": f(A)}, {"p": f(B)}, {"p": f(B)}, {"p": f(B)}, [], id="both-changed-same"),
    pytest.param({}, {"p": f(B)}, {"p": f(B)}, {"p": f(B)}, [], id="both-added-same"),
    pytest.param({"p": f(A)}, {}, {}, {}, [], id="both-deleted"),
    pytest.param(
        {"p.md": f(A)},
        {"p.md": f(B)},
        {"p.md": f(C)},
        {"p.md": f(B), "p.variant-cccccccc.md": f(C)},
        [("p.md", "p.variant-cccccccc.md", f(C))],
        id="modify-modify",
    ),
    pytest.param({"p": f(A)}, {"p": f(B)}, {}, {"p": f(B)}, [], id="modify-delete-newer-modified"),
    pytest.param({"p": f(A)}, {}, {"p": f(C)}, {"p": f(C)}, [], id="modify-delete-older-modified"),
    pytest.param(
        {"p": f(A)}, {"p": f(A, EXEC)}, {}, {"p": f(A, EXEC)}, [], id="mode-change-vs-delete"
    ),
    pytest.param(
        {},
        {"n.txt": f(B)},
        {"n.txt": f(C)},
        {"n.txt": f(B), "n.variant-cccccccc.txt": f(C)},
        [("n.txt", "n.variant-cccccccc.txt", f(C))],
        id="add-add-different",
    ),
    pytest.param(
        {"p": f(A)},
        {"p": f(A, EXEC)},
        {"p": f(C)},
        {"p": f(C, EXEC)},
        [],
        id="newer-mode-older-content-combine",
    ),
    pytest.param(
        {"p": f(A)},
        {"p": f(B)},
        {"p": f(A, EXEC)},
        {"p": f(B, EXEC)},
        [],
        id="newer-content-older-mode-combine",
    ),
    pytest.param(
        {"p": f(A)},
        {"p": f(A, EXEC)},
        {"p": f(A, EXEC)},
        {"p": f(A, EXEC)},
        [],
        id="both-same-mode",
    ),
    pytest.param(
        {"p": f(A)},
        {"p": f(B, EXEC)},
        {"p": f(C)},
        {"p": f(B, EXEC), "p.variant-cccccccc": f(C)},
        [("p", "p.variant-cccccccc", f(C))],
        id="newer-content-and-mode-older-content",
    ),
    pytest.param(
        {"p": f(A, EXEC)},
        {"p": f(A, FILE)},
        {"p": f(A, LINK)},
        {"p": f(A, FILE), "p.variant-aaaaaaaa": f(A, LINK)},
        [("p", "p.variant-aaaaaaaa", f(A, LINK))],
        id="both-changed-mode-differently-file-vs-link",
    ),
    pytest.param(
        {},
        {"p": f(A, LINK)},
        {"p": f(A, FILE)},
        {"p": f(A, LINK), "p.variant-aaaaaaaa": f(A, FILE)},
        [("p", "p.variant-aaaaaaaa", f(A, FILE))],
        id="symlink-vs-file-same-bytes",
    ),
    pytest.param(
        {},
        {"l": f(B, LINK)},
        {"l": f(C)},
        {"l": f(B, LINK), "l.variant-cccccccc": f(C)},
        [("l", "l.variant-cccccccc", f(C))],
        id="newer-symlink-vs-older-file",
    ),
    pytest.param(
        {"l": f(A, LINK)},
        {"l": f(B)},
        {"l": f(C, LINK)},
        {"l": f(B), "l.variant-cccccccc": f(C, LINK)},
        [("l", "l.variant-cccccccc", f(C, LINK))],
        id="newer-file-vs-older-retargeted-symlink",
    ),
    pytest.param(
        {"l": f(A, LINK)},
        {"l": f(A)},
        {"l": f(C, LINK)},
        {"l": f(A), "l.variant-cccccccc": f(C, LINK)},
        [("l", "l.variant-cccccccc", f(C, LINK))],
        id="link-made-file-vs-link-retargeted",
    ),
    pytest.param(
        {},
        {"d": f(B)},
        {"d/x": f(C)},
        {"d/x": f(C), "d.variant-bbbbbbbb": f(B)},
        [("d", "d.variant-bbbbbbbb", f(B))],
        id="newer-file-vs-older-directory",
    ),
    pytest.param(
        {},
        {"d/x": f(C)},
        {"d": f(B)},
        {"d/x": f(C), "d.variant-bbbbbbbb": f(B)},
        [("d", "d.variant-bbbbbbbb", f(B))],
        id="newer-directory-vs-older-file",
    ),
    pytest.param(
        {"d": f(A)},
        {"d": f(B)},
        {"d/x": f(C)},
        {"d/x": f(C), "d.variant-bbbbbbbb": f(B)},
        [("d", "d.variant-bbbbbbbb", f(B))],
        id="modified-file-vs-file-replaced-by-directory",
    ),
    pytest.param(
        {"d/x": f(A)},
        {"d": f(B)},
        {"d/x": f(C)},
        {"d/x": f(C), "d.variant-bbbbbbbb": f(B)},
        [("d", "d.variant-bbbbbbbb", f(B))],
        id="directory-replaced-by-file-vs-modified-inside",
    ),
    pytest.param(
        {"d/x": f(A)},
        {"d": f(B)},
        {"d/x": f(A)},
        {"d": f(B)},
        [],
        id="directory-replaced-by-file-unopposed",
    ),
    pytest.param(
        {"x/n.md": f(A)},
        {"x/n.md": f(B)},
        {"x/n.md": f(C)},
        {"x/n.md": f(B), "x/n.variant-cccccccc.md": f(C)},
        [("x/n.md", "x/n.variant-cccccccc.md", f(C))],
        id="nested-modify-modify",
    ),
]


@pytest.mark.parametrize(("base", "newer", "older", "expected", "variants"), CASES)
def test_resolve_table(
    base: dict[str, Entry],
    newer: dict[str, Entry],
    older: dict[str, Entry],
    expected: dict[str, Entry],
    variants: list[tuple[str, str, Entry]],
) -> None:
    res = run(base, newer, older)
    assert present(res) == expected
    assert [(v.path, v.variant, v.entry) for v in res.variants] == variants
    for v in res.variants:
        assert v.reason


def test_deleted_paths_are_reported_as_none() -> None:
    res = run({"p": f(A), "q": f(A)}, {"q": f(A)}, {})
    assert res.entries == {"p": None, "q": None}


def test_variant_name_taken_by_a_different_unchanged_file_gets_more_digits() -> None:
    taken = {"n.variant-cccccccc.md": f(D)}
    res = run({"n.md": f(A)}, {"n.md": f(B)}, {"n.md": f(C)}, existing=taken.get)
    assert present(res) == {"n.md": f(B), "n.variant-cccccccccccc.md": f(C)}
    assert res.variants[0].variant == "n.variant-cccccccccccc.md"


def test_variant_name_taken_twice_keeps_growing() -> None:
    taken = {"n.variant-cccccccc": f(D), "n.variant-cccccccccccc": f(A)}
    res = run({"n": f(A)}, {"n": f(B)}, {"n": f(C)}, existing=taken.get)
    assert present(res) == {"n": f(B), "n.variant-cccccccccccccccc": f(C)}


def test_variant_name_already_holding_the_same_version_is_reused() -> None:
    taken = {"n.variant-cccccccc.md": f(C)}
    res = run({"n.md": f(A)}, {"n.md": f(B)}, {"n.md": f(C)}, existing=taken.get)
    assert present(res) == {"n.md": f(B), "n.variant-cccccccc.md": f(C)}


def test_variant_name_taken_by_a_path_the_merge_also_changes() -> None:
    """The variant's natural name is itself changed by the merge (sorted after the
    conflicting path): neither version may be lost."""
    name = "n.variant-cccccccc.md"
    res = run({"n.md": f(A)}, {"n.md": f(B), name: f(D)}, {"n.md": f(C)})
    kept = present(res)
    assert kept["n.md"] == f(B)
    assert kept[name] == f(D)
    (variant,) = res.variants
    assert variant.variant != name
    assert kept[variant.variant] == f(C)


def test_variant_name_of_a_path_the_merge_deletes_is_free() -> None:
    name = "n.variant-cccccccc.md"
    res = run({"n.md": f(A), name: f(D)}, {"n.md": f(B)}, {"n.md": f(C), name: f(D)})
    assert present(res) == {"n.md": f(B), name: f(C)}


@pytest.mark.parametrize(
    ("path", "digits", "expected"),
    [
        pytest.param("notes.md", 8, "notes.variant-1a2b3c4d.md", id="extension"),
        pytest.param("archive.tar.gz", 8, "archive.tar.variant-1a2b3c4d.gz", id="last-extension"),
        pytest.param("Makefile", 8, "Makefile.variant-1a2b3c4d", id="no-extension"),
        pytest.param(".bashrc", 8, ".bashrc.variant-1a2b3c4d", id="dotfile"),
        pytest.param(".config.json", 8, ".config.variant-1a2b3c4d.json", id="dotfile-extension"),
        pytest.param("a/b/c.txt", 8, "a/b/c.variant-1a2b3c4d.txt", id="nested"),
        pytest.param("v1.2/README", 8, "v1.2/README.variant-1a2b3c4d", id="dot-in-directory"),
        pytest.param("dir/.env", 8, "dir/.env.variant-1a2b3c4d", id="nested-dotfile"),
        pytest.param("notes.md", 12, "notes.variant-1a2b3c4d5e6f.md", id="more-digits"),
    ],
)
def test_variant_path(path: str, digits: int, expected: str) -> None:
    oid = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d"
    assert variant_path(path, oid, digits) == expected


def test_variant_path_default_uses_eight_digits() -> None:
    assert variant_path("x.md", "0123456789" * 4) == "x.variant-01234567.md"


# --- properties --------------------------------------------------------------------------------

# two of the names are what a conflict on b.md would name its variant
PATHS = ["a", "b.md", "b.variant-aaaaaaaa.md", "b.variant-bbbbbbbb.md", "d", "d/x", "e/f/g", "e/f"]
OIDS = [A, B, C]
MODES = [FILE, EXEC, LINK]
entries = st.builds(Entry, st.sampled_from(OIDS), st.sampled_from(MODES))


def _as_tree(side: dict[str, Entry]) -> dict[str, Entry]:
    """Drop files that would need to be a directory too (a tree cannot hold both)."""
    return {p: e for p, e in side.items() if not any(q.startswith(p + "/") for q in side)}


sides = st.dictionaries(st.sampled_from(PATHS), entries).map(_as_tree)


def kind(entry: Entry) -> str:
    return "link" if entry.mode == LINK else "file"


def holders(res: Resolution, path: str) -> list[Entry]:
    """What the result has at ``path`` and at every variant made for it."""
    out = [e for e in [res.entries.get(path)] if e is not None]
    out += [res.entries[v.variant] for v in res.variants if v.path == path]
    return [e for e in out if e is not None]


def assert_kept(res: Resolution, path: str, entry: Entry, base: Entry | None) -> None:
    """A changed version survives: its content (and kind) at its path or as a variant; a
    change of the mode alone survives as the mode at the path (combined with the other
    side's new content) or as a variant, unless the other side changed the mode of the same
    content differently (then the newer side's mode wins)."""
    found = holders(res, path)
    at_path = res.entries.get(path)
    if base is not None and entry.oid == base.oid:
        assert (
            entry in found
            or (at_path is not None and at_path.mode == entry.mode)
            or (at_path is not None and at_path.oid == entry.oid and kind(at_path) == kind(entry))
        ), (path, entry, found)
    else:
        assert any(e.oid == entry.oid and kind(e) == kind(entry) for e in found), (
            path,
            entry,
            found,
        )


def by_origin(res: Resolution, paths: set[str]) -> dict[str, set[tuple[str, str]]]:
    """Each path a side holds: its versions (content and kind) in the result, at the path
    itself or as its variants. A variant that reuses a file already holding the same version counts
    for both paths. The executable bit is left out: when both sides give the same content
    different bits, the newer side's bit wins."""
    out: dict[str, set[tuple[str, str]]] = {}
    for path, entry in res.entries.items():
        if entry is None:
            continue
        origins = {v.path for v in res.variants if v.variant == path}
        if path in paths:
            origins.add(path)
        for origin in origins:
            out.setdefault(origin, set()).add((entry.oid, kind(entry)))
    return out


@settings(max_examples=400, deadline=None, derandomize=True)
@given(base=sides, newer=sides, older=sides)
def test_resolve_never_loses_a_changed_version(
    base: dict[str, Entry], newer: dict[str, Entry], older: dict[str, Entry]
) -> None:
    res = run(base, newer, older)
    for side in (newer, older):
        for path, entry in side.items():
            if entry != base.get(path):
                assert_kept(res, path, entry, base.get(path))
    merged = present(res)
    for path in merged:
        assert not any(q.startswith(path + "/") for q in merged), (path, merged)
    for v in res.variants:
        assert res.entries[v.variant] == v.entry


@settings(max_examples=400, deadline=None, derandomize=True)
@given(base=sides, newer=sides, older=sides)
def test_resolve_is_symmetric_up_to_which_version_holds_the_path(
    base: dict[str, Entry], newer: dict[str, Entry], older: dict[str, Entry]
) -> None:
    one, two = run(base, newer, older), run(base, older, newer)
    sides_hold = set(newer) | set(older)
    assert by_origin(one, sides_hold) == by_origin(two, sides_hold)
    for res, other in ((one, two), (two, one)):
        for v in res.variants:
            assert v.path in {w.path for w in other.variants}, v


@settings(max_examples=200, deadline=None, derandomize=True)
@given(base=sides, side=sides)
def test_resolve_with_an_unchanged_side_takes_the_changed_one(
    base: dict[str, Entry], side: dict[str, Entry]
) -> None:
    for res in (run(base, side, base), run(base, base, side)):
        assert present(res) == side
        assert res.variants == []

"""Merging real commits: fast-forward and up to date, the merge commit as a pure function of
its two parents (same id from either order and in any clone), and one test per conflict kind,
each checked for lost versions and conflict markers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pygit2
import pytest
from conftest import git

from assistant.changes import Entry
from assistant.merge import MERGE_EMAIL, MERGE_NAME, MergeOutcome, merge_commits, variant_path

FILE, EXEC, LINK, TREE = 0o100644, 0o100755, 0o120000, 0o040000
T0 = 1_700_000_000
Files = dict[str, "bytes | tuple[bytes, int]"]


# --- building histories ------------------------------------------------------------------------


def make_tree(repo: pygit2.Repository, files: Files) -> pygit2.Oid:
    """A tree holding exactly ``files`` (path -> content, or (content, mode))."""
    index = pygit2.Index()
    for path, value in files.items():
        data, mode = value if isinstance(value, tuple) else (value, FILE)
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
    return index.write_tree(repo)


def commit(
    repo: pygit2.Repository,
    files: Files,
    parents: list[pygit2.Oid],
    when: int,
    node: str | None = None,
    summary: str = "change",
) -> pygit2.Oid:
    sig = pygit2.Signature("Test User", "test@example.com", when, 60)
    message = f"{summary}\n" + (f"\nAnnexsync-Node: {node}\n" if node else "")
    return repo.create_commit(None, sig, sig, message, make_tree(repo, files), parents)


def entries(repo: pygit2.Repository, oid: pygit2.Oid) -> dict[str, Entry]:
    """Every blob entry of a commit's tree, path -> Entry."""
    out: dict[str, Entry] = {}
    stack = [("", repo[oid].peel(pygit2.Tree))]
    while stack:
        prefix, tree = stack.pop()
        for item in tree:
            path = prefix + item.name
            if item.filemode == TREE:
                stack.append((path + "/", repo[item.id]))
            else:
                out[path] = Entry(str(item.id), item.filemode)
    return out


def contents(repo: pygit2.Repository, oid: pygit2.Oid) -> dict[str, bytes]:
    return {p: repo[e.oid].data for p, e in entries(repo, oid).items()}


def kind(entry: Entry) -> str:
    return "link" if entry.mode == LINK else "file"


def assert_no_markers(repo: pygit2.Repository, oid: pygit2.Oid) -> None:
    for path, data in contents(repo, oid).items():
        for marker in (b"<<<<<<<", b">>>>>>>", b"|||||||"):
            assert marker not in data, f"conflict marker in {path}"


def assert_versions_kept(
    repo: pygit2.Repository, result: pygit2.Oid, base: pygit2.Oid | None, *tips: pygit2.Oid
) -> None:
    """Every version a tip changed relative to ``base`` is in the result: its content at its
    path or at a variant name derived from its blob id; a mode-only change as the mode at its
    path (possibly combined with the other side's new content)."""
    final = entries(repo, result)
    before = entries(repo, base) if base is not None else {}
    for tip in tips:
        for path, entry in entries(repo, tip).items():
            old = before.get(path)
            if entry == old:
                continue
            names = [path] + [variant_path(path, entry.oid, d) for d in range(8, 41)]
            found = [final[n] for n in names if n in final]
            if old is not None and old.oid == entry.oid:
                assert entry in found or (path in final and final[path].mode == entry.mode), (
                    f"mode change of {path} lost"
                )
            else:
                assert any(e.oid == entry.oid and kind(e) == kind(entry) for e in found), (
                    f"version {entry} of {path} from {str(tip)[:8]} lost: {sorted(final)}"
                )


def both_orders(repo: pygit2.Repository, a: pygit2.Oid, b: pygit2.Oid) -> MergeOutcome:
    """Merge both ways: the same commit, no conflict markers, a tree git accepts."""
    one, two = merge_commits(repo, a, b), merge_commits(repo, b, a)
    assert one.commit == two.commit
    assert one.kind == two.kind
    assert sorted(v.variant for v in one.variants) == sorted(v.variant for v in two.variants)
    assert_no_markers(repo, one.commit)
    return one


@pytest.fixture
def store(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "store.git"), bare=True)


def diverge(
    repo: pygit2.Repository,
    base: Files,
    older: Files,
    newer: Files,
    older_time: int = T0 + 10,
    newer_time: int = T0 + 20,
) -> tuple[pygit2.Oid, pygit2.Oid, pygit2.Oid]:
    root = commit(repo, base, [], T0, summary="base")
    return (
        root,
        commit(repo, older, [root], older_time, "older", "older side"),
        commit(repo, newer, [root], newer_time, "newer", "newer side"),
    )


def fsck(repo: pygit2.Repository) -> None:
    out = subprocess.run(
        ["git", "--git-dir", repo.path, "fsck", "--strict", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


# --- up to date, fast-forward, and the merge commit itself --------------------------------------


def test_merging_a_commit_with_itself_is_up_to_date(store: pygit2.Repository) -> None:
    a = commit(store, {"x": b"1"}, [], T0)
    assert merge_commits(store, a, a) == MergeOutcome(a, "up-to-date", [])


def test_descendant_fast_forwards_and_ancestor_is_up_to_date(store: pygit2.Repository) -> None:
    a = commit(store, {"x": b"1"}, [], T0)
    b = commit(store, {"x": b"2"}, [a], T0 + 1)
    c = commit(store, {"x": b"3", "y": b"4"}, [b], T0 + 2)
    before = set(store.odb)
    assert merge_commits(store, a, c) == MergeOutcome(c, "fast-forward", [])
    assert merge_commits(store, c, a) == MergeOutcome(c, "up-to-date", [])
    assert merge_commits(store, b, c).kind == "fast-forward"
    assert set(store.odb) == before, "no object is written for a fast-forward"


def test_merge_of_disjoint_changes_is_the_same_commit_from_both_orders(
    store: pygit2.Repository,
) -> None:
    _, older, newer = diverge(
        store,
        {"keep": b"k", "a": b"1", "b": b"2"},
        {"keep": b"k", "a": b"changed", "b": b"2", "o/new": b"o"},
        {"keep": b"k", "a": b"1", "n/new": b"n"},
    )
    out = both_orders(store, older, newer)
    assert out.kind == "merge"
    assert out.variants == []
    assert contents(store, out.commit) == {
        "keep": b"k",
        "a": b"changed",
        "o/new": b"o",
        "n/new": b"n",
    }
    fsck(store)


def test_merge_commit_shape(store: pygit2.Repository) -> None:
    _, older, newer = diverge(store, {"a": b"1"}, {"a": b"1", "o": b"o"}, {"a": b"2"})
    out = both_orders(store, older, newer)
    merged = store[out.commit]
    assert isinstance(merged, pygit2.Commit)
    assert [str(p) for p in merged.parent_ids] == sorted([str(older), str(newer)])
    for who in (merged.author, merged.committer):
        assert (who.name, who.email) == (MERGE_NAME, MERGE_EMAIL)
        assert who.time == T0 + 20 == max(store[older].commit_time, store[newer].commit_time)
        assert who.offset == 0
    first = merged.message.splitlines()[0]
    assert str(older)[:10] in first and str(newer)[:10] in first
    assert "older" in first and "newer" in first  # the nodes named in the parents' trailers
    assert first.index(min(str(older), str(newer))[:10]) < first.index(
        max(str(older), str(newer))[:10]
    )


def test_merge_time_is_the_later_parent_even_when_it_is_the_older_in_id_order(
    store: pygit2.Repository,
) -> None:
    _, older, newer = diverge(
        store, {"a": b"1"}, {"a": b"1", "o": b"o"}, {"a": b"2"}, T0 + 500, T0 + 7
    )
    merged = store[both_orders(store, older, newer).commit]
    assert merged.commit_time == T0 + 500
    assert merged.author.time == T0 + 500


def test_variants_are_named_in_the_message(store: pygit2.Repository) -> None:
    _, older, newer = diverge(store, {"n.md": b"base"}, {"n.md": b"old"}, {"n.md": b"new"})
    out = both_orders(store, older, newer)
    (variant,) = out.variants
    assert variant.variant in store[out.commit].message
    assert "n.md" in store[out.commit].message


def test_same_merge_commit_in_two_clones(tmp_path: Path) -> None:
    """Two nodes merge the same pair independently, each in its own clone, in opposite orders:
    the very same commit, so no further merge follows."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q")
    (seed / "notes.md").write_text("shared\n")
    (seed / "other.txt").write_text("other\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "seed")
    one, two = tmp_path / "one", tmp_path / "two"
    git(tmp_path, "clone", "-q", str(seed), str(one))
    git(tmp_path, "clone", "-q", str(seed), str(two))
    for clone, text, when in ((one, "from one\n", T0 + 5), (two, "from two\n", T0 + 9)):
        (clone / "notes.md").write_text(text)
        (clone / f"{clone.name}.txt").write_text(clone.name)
        git(clone, "add", "-A")
        env_date = f"{when} +0200"
        subprocess.run(
            ["git", "-C", str(clone), "commit", "-qm", f"edit on {clone.name}"],
            env={
                **os.environ,
                "GIT_AUTHOR_DATE": env_date,
                "GIT_COMMITTER_DATE": env_date,
            },
            check=True,
        )
    git(one, "fetch", "-q", str(two), "main:refs/remotes/two/main")
    git(two, "fetch", "-q", str(one), "main:refs/remotes/one/main")
    r1, r2 = pygit2.Repository(str(one)), pygit2.Repository(str(two))
    m1 = merge_commits(r1, r1.head.target, r1.references["refs/remotes/two/main"].target)
    m2 = merge_commits(r2, r2.head.target, r2.references["refs/remotes/one/main"].target)
    assert m1.kind == m2.kind == "merge"
    assert m1.commit == m2.commit
    assert git(one, "cat-file", "-p", str(m1.commit)) == git(two, "cat-file", "-p", str(m2.commit))
    files = contents(r1, m1.commit)
    assert files["notes.md"] == b"from two\n"  # two's commit is newer
    (variant,) = m1.variants
    assert files[variant.variant] == b"from one\n"
    assert files["one.txt"] == b"one" and files["two.txt"] == b"two"


# --- one test per conflict kind -------------------------------------------------------------------


def test_both_changed_the_newer_keeps_the_path(store: pygit2.Repository) -> None:
    base, older, newer = diverge(
        store, {"notes.md": b"base\n"}, {"notes.md": b"older\n"}, {"notes.md": b"newer\n"}
    )
    out = both_orders(store, older, newer)
    blob = str(store.create_blob(b"older\n"))
    expected_variant = f"notes.variant-{blob[:8]}.md"
    assert contents(store, out.commit) == {"notes.md": b"newer\n", expected_variant: b"older\n"}
    (variant,) = out.variants
    assert (variant.path, variant.variant, variant.entry.oid) == (
        "notes.md",
        expected_variant,
        blob,
    )
    assert_versions_kept(store, out.commit, base, older, newer)


def test_both_changed_at_the_same_time_the_larger_commit_id_wins(
    store: pygit2.Repository,
) -> None:
    base, x, y = diverge(store, {"f.txt": b"base"}, {"f.txt": b"x"}, {"f.txt": b"y"}, T0, T0)
    winner, loser = (x, y) if str(x) > str(y) else (y, x)
    out = both_orders(store, x, y)
    files = contents(store, out.commit)
    assert files["f.txt"] == store[winner].peel(pygit2.Tree)["f.txt"].data
    (variant,) = out.variants
    assert files[variant.variant] == store[loser].peel(pygit2.Tree)["f.txt"].data
    assert_versions_kept(store, out.commit, base, x, y)


def test_conflicting_line_edits_are_never_merged_line_by_line(store: pygit2.Repository) -> None:
    text = b"".join(b"line %d\n" % i for i in range(20))
    base, older, newer = diverge(
        store,
        {"doc.txt": text},
        {"doc.txt": text.replace(b"line 5\n", b"older five\n")},
        {"doc.txt": text.replace(b"line 5\n", b"newer five\n").replace(b"line 15", b"x")},
    )
    out = both_orders(store, older, newer)
    files = contents(store, out.commit)
    assert files["doc.txt"] == store[newer].peel(pygit2.Tree)["doc.txt"].data
    assert sorted(files.values()) == sorted(
        [files["doc.txt"], store[older].peel(pygit2.Tree)["doc.txt"].data]
    )
    assert_versions_kept(store, out.commit, base, older, newer)


@pytest.mark.parametrize("deleter", ["older", "newer"])
def test_modified_beats_deleted(store: pygit2.Repository, deleter: str) -> None:
    keep = {"other": b"o"}
    modified = {**keep, "f.md": b"modified"}
    older, newer = (keep, modified) if deleter == "older" else (modified, keep)
    base, o, n = diverge(store, {**keep, "f.md": b"base"}, older, newer)
    out = both_orders(store, o, n)
    assert contents(store, out.commit) == {"other": b"o", "f.md": b"modified"}
    assert out.variants == []
    assert_versions_kept(store, out.commit, base, o, n)


def test_deleted_on_both_sides_stays_deleted(store: pygit2.Repository) -> None:
    _, o, n = diverge(store, {"a": b"1", "b": b"2"}, {"b": b"2"}, {"b": b"2", "c": b"3"})
    assert contents(store, both_orders(store, o, n).commit) == {"b": b"2", "c": b"3"}


def test_added_on_both_sides_with_different_content(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store, {"x": b"x"}, {"x": b"x", "new.txt": b"o"}, {"x": b"x", "new.txt": b"n"}
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files["new.txt"] == b"n"
    assert files[variant_path("new.txt", str(store.create_blob(b"o")))] == b"o"
    assert len(files) == 3
    assert_versions_kept(store, out.commit, base, o, n)


def test_added_on_both_sides_with_the_same_content(store: pygit2.Repository) -> None:
    _, o, n = diverge(store, {"x": b"x"}, {"x": b"x", "new": b"same"}, {"x": b"x", "new": b"same"})
    out = both_orders(store, o, n)
    assert contents(store, out.commit) == {"x": b"x", "new": b"same"}
    assert out.variants == []


@pytest.mark.parametrize("file_side", ["older", "newer"])
def test_file_vs_directory_the_directory_keeps_the_path(
    store: pygit2.Repository, file_side: str
) -> None:
    as_file = {"keep": b"k", "d": b"a file"}
    as_dir = {"keep": b"k", "d/inner.txt": b"inside", "d/sub/deep": b"deep"}
    older, newer = (as_file, as_dir) if file_side == "older" else (as_dir, as_file)
    base, o, n = diverge(store, {"keep": b"k"}, older, newer)
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    variant = variant_path("d", str(store.create_blob(b"a file")))
    assert files == {
        "keep": b"k",
        "d/inner.txt": b"inside",
        "d/sub/deep": b"deep",
        variant: b"a file",
    }
    assert [v.variant for v in out.variants] == [variant]
    assert_versions_kept(store, out.commit, base, o, n)
    fsck(store)


def test_file_modified_vs_replaced_by_a_directory(store: pygit2.Repository) -> None:
    base, o, n = diverge(store, {"d": b"file"}, {"d": b"file edited"}, {"d/now-a-dir": b"inside"})
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files["d/now-a-dir"] == b"inside"
    assert b"file edited" in files.values()
    assert_versions_kept(store, out.commit, base, o, n)
    fsck(store)


def test_directory_edited_vs_replaced_by_a_file(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store,
        {"d/a": b"a", "d/b": b"b"},
        {"d/a": b"a edited", "d/b": b"b"},
        {"d": b"now a file"},
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files["d/a"] == b"a edited"
    assert "d/b" not in files  # deleted by the newer side, unchanged by the older
    assert files[variant_path("d", str(store.create_blob(b"now a file")))] == b"now a file"
    assert_versions_kept(store, out.commit, base, o, n)
    fsck(store)


@pytest.mark.parametrize("link_side", ["older", "newer"])
def test_symlink_vs_file(store: pygit2.Repository, link_side: str) -> None:
    link = {"p": (b"target.txt", LINK)}
    regular = {"p": b"regular content"}
    older, newer = (link, regular) if link_side == "older" else (regular, link)
    base, o, n = diverge(store, {"p": b"base"}, older, newer)
    out = both_orders(store, o, n)
    got = entries(store, out.commit)
    winner = newer["p"]
    assert store[got["p"].oid].data == (winner[0] if isinstance(winner, tuple) else winner)
    assert got["p"].mode == (LINK if link_side == "newer" else FILE)
    (variant,) = out.variants
    assert got[variant.variant].mode == (FILE if link_side == "newer" else LINK)
    assert_versions_kept(store, out.commit, base, o, n)


def test_symlink_vs_file_with_the_same_bytes(store: pygit2.Repository) -> None:
    base, o, n = diverge(store, {"k": b"k"}, {"k": b"k", "p": (b"t", LINK)}, {"k": b"k", "p": b"t"})
    out = both_orders(store, o, n)
    got = entries(store, out.commit)
    assert got["p"].mode == FILE
    (variant,) = out.variants
    assert got[variant.variant] == Entry(got["p"].oid, LINK)
    assert_versions_kept(store, out.commit, base, o, n)


def test_mode_only_change_combines_with_a_content_change(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store, {"run.sh": b"echo 1\n"}, {"run.sh": (b"echo 1\n", EXEC)}, {"run.sh": b"echo 2\n"}
    )
    out = both_orders(store, o, n)
    got = entries(store, out.commit)
    assert got == {"run.sh": Entry(str(store.create_blob(b"echo 2\n")), EXEC)}
    assert out.variants == []
    assert_versions_kept(store, out.commit, base, o, n)


def test_same_mode_change_on_both_sides(store: pygit2.Repository) -> None:
    _, o, n = diverge(
        store,
        {"run.sh": b"x", "a": b"a"},
        {"run.sh": (b"x", EXEC), "a": b"a"},
        {"run.sh": (b"x", EXEC), "a": b"b"},
    )
    got = entries(store, both_orders(store, o, n).commit)
    assert got["run.sh"].mode == EXEC and len(got) == 2


def test_both_changed_content_and_mode(store: pygit2.Repository) -> None:
    base, o, n = diverge(store, {"s": b"0"}, {"s": (b"older", EXEC)}, {"s": b"newer"})
    out = both_orders(store, o, n)
    got = entries(store, out.commit)
    assert store[got["s"].oid].data == b"newer"
    (variant,) = out.variants
    assert got[variant.variant] == Entry(str(store.create_blob(b"older")), EXEC)
    assert_versions_kept(store, out.commit, base, o, n)


def test_binary_files_changed_on_both_sides(store: pygit2.Repository) -> None:
    blob = bytes(range(256)) * 40
    older_data = b"\x00\xff" + blob[2:]
    newer_data = blob[:-3] + b"\x89PN"
    base, o, n = diverge(store, {"img.png": blob}, {"img.png": older_data}, {"img.png": newer_data})
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    variant = f"img.variant-{str(store.create_blob(older_data))[:8]}.png"
    assert files == {"img.png": newer_data, variant: older_data}
    assert_versions_kept(store, out.commit, base, o, n)


def test_rename_on_one_side_modification_on_the_other(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store,
        {"a.txt": b"original\n", "z": b"z"},
        {"a.txt": b"original, edited\n", "z": b"z"},
        {"moved/b.txt": b"original\n", "z": b"z"},
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files["a.txt"] == b"original, edited\n"
    assert files["moved/b.txt"] == b"original\n"
    assert_versions_kept(store, out.commit, base, o, n)


def test_rename_with_modification_vs_modification(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store,
        {"a.txt": b"original\n"},
        {"b.txt": b"renamed and edited\n"},
        {"a.txt": b"edited in place\n"},
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files == {"a.txt": b"edited in place\n", "b.txt": b"renamed and edited\n"}
    assert_versions_kept(store, out.commit, base, o, n)


def test_renames_on_both_sides_to_different_names(store: pygit2.Repository) -> None:
    base, o, n = diverge(
        store, {"a.txt": b"data\n"}, {"left.txt": b"data\n"}, {"dir/right.txt": b"data\n"}
    )
    out = both_orders(store, o, n)
    assert contents(store, out.commit) == {"left.txt": b"data\n", "dir/right.txt": b"data\n"}
    assert_versions_kept(store, out.commit, base, o, n)


def test_renames_on_both_sides_to_the_same_name_with_different_edits(
    store: pygit2.Repository,
) -> None:
    base, o, n = diverge(
        store, {"a.txt": b"data\n"}, {"b.txt": b"data, older\n"}, {"b.txt": b"data, newer\n"}
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert "a.txt" not in files
    assert files["b.txt"] == b"data, newer\n"
    assert sorted(files.values()) == [b"data, newer\n", b"data, older\n"]
    assert_versions_kept(store, out.commit, base, o, n)


def test_rename_on_one_side_and_delete_on_the_other(store: pygit2.Repository) -> None:
    base, o, n = diverge(store, {"a": b"data", "k": b"k"}, {"k": b"k"}, {"b": b"data", "k": b"k"})
    out = both_orders(store, o, n)
    assert contents(store, out.commit) == {"b": b"data", "k": b"k"}
    assert_versions_kept(store, out.commit, base, o, n)


def test_variant_name_taken_by_an_unrelated_file_gets_more_digits(
    store: pygit2.Repository,
) -> None:
    older_blob = str(store.create_blob(b"older"))
    squatter = variant_path("n.md", older_blob)
    base_files: Files = {"n.md": b"base", squatter: b"someone else's file"}
    _, o, n = diverge(
        store,
        base_files,
        {**base_files, "n.md": b"older"},
        {**base_files, "n.md": b"newer"},
    )
    out = both_orders(store, o, n)
    files = contents(store, out.commit)
    assert files[squatter] == b"someone else's file"
    (variant,) = out.variants
    assert variant.variant == variant_path("n.md", older_blob, 12)
    assert files[variant.variant] == b"older"


def test_many_conflicts_at_once_lose_nothing(store: pygit2.Repository) -> None:
    base_files: Files = {
        "both.md": b"base",
        "mod-del": b"base",
        "del-mod": b"base",
        "mode": b"base",
        "dir/a": b"a",
        "ren": b"ren",
        "bin": bytes(range(200)),
    }
    older: Files = {
        "both.md": b"older",
        "mod-del": b"older",
        "mode": (b"base", EXEC),
        "dir/a": b"a2",
        "ren-old": b"ren",
        "bin": bytes(range(1, 201)),
        "add": b"older",
        "f-or-d": b"file",
    }
    newer: Files = {
        "both.md": b"newer",
        "del-mod": b"newer",
        "mode": b"changed",
        "dir": b"dir is a file now",
        "ren-new": b"ren",
        "bin": bytes(range(2, 202)),
        "add": b"newer",
        "f-or-d/x": b"dir",
    }
    base, o, n = diverge(store, base_files, older, newer)
    out = both_orders(store, o, n)
    assert_versions_kept(store, out.commit, base, o, n)
    fsck(store)


# --- histories with two merge bases and without any --------------------------------------------


def merge_bases(repo: pygit2.Repository, a: pygit2.Oid, b: pygit2.Oid) -> set[str]:
    out = subprocess.run(
        ["git", "--git-dir", repo.path, "merge-base", "--all", str(a), str(b)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_criss_cross_history_gives_the_same_commit_from_both_orders(
    store: pygit2.Repository, tmp_path: Path
) -> None:
    root = commit(store, {"f": b"0", "g": b"0", "h": b"0"}, [], T0)
    a1 = commit(store, {"f": b"a1", "g": b"0", "h": b"0"}, [root], T0 + 10, "a")
    b1 = commit(store, {"f": b"b1", "g": b"0", "h": b"0"}, [root], T0 + 11, "b")
    m1 = merge_commits(store, a1, b1).commit  # a node merged a1 and b1 ...
    b2 = commit(store, {"f": b"b1", "g": b"b2", "h": b"0"}, [b1], T0 + 12, "b")
    m2 = merge_commits(store, b2, a1).commit  # ... another had moved on to b2 first
    tip1 = commit(store, {**contents(store, m1), "h": b"tip1"}, [m1], T0 + 20, "a")
    tip2 = commit(store, {**contents(store, m2), "g": b"tip2"}, [m2], T0 + 21, "b")
    assert merge_bases(store, tip1, tip2) == {str(a1), str(b1)}
    out = both_orders(store, tip1, tip2)
    assert out.kind == "merge"
    files = contents(store, out.commit)
    assert files["h"] == b"tip1"
    assert b"a1" in files.values() and b"b1" in files.values()
    assert files["g"] == b"tip2"
    for base in (a1, b1, root):
        assert_versions_kept(store, out.commit, base, a1, b1)
    assert_versions_kept(store, out.commit, root, tip1, tip2)

    # a second store holding the same objects, filled in a different order, agrees
    other = pygit2.init_repository(str(tmp_path / "other.git"), bare=True)
    for oid in sorted((str(tip2), str(tip1)), reverse=True):
        subprocess.run(
            ["git", "--git-dir", other.path, "fetch", "-q", store.path, f"{oid}:refs/tmp/{oid}"],
            check=True,
        )
    assert merge_commits(other, tip2, tip1).commit == out.commit


def test_unrelated_histories_merge_as_if_from_an_empty_tree(store: pygit2.Repository) -> None:
    a = commit(store, {"same": b"s", "clash": b"from a", "only-a": b"a"}, [], T0 + 1, "a")
    b = commit(store, {"same": b"s", "clash": b"from b", "only-b": b"b"}, [], T0 + 2, "b")
    out = both_orders(store, a, b)
    files = contents(store, out.commit)
    assert files["clash"] == b"from b"
    assert files[variant_path("clash", str(store.create_blob(b"from a")))] == b"from a"
    assert files["same"] == b"s" and files["only-a"] == b"a" and files["only-b"] == b"b"
    assert_versions_kept(store, out.commit, None, a, b)


def test_merging_a_merge_again_is_up_to_date(store: pygit2.Repository) -> None:
    _, o, n = diverge(store, {"f": b"0"}, {"f": b"1"}, {"f": b"2"})
    m = both_orders(store, o, n).commit
    assert merge_commits(store, m, o).kind == "up-to-date"
    assert merge_commits(store, n, m) == MergeOutcome(m, "fast-forward", [])

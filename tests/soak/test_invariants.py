"""Each soak invariant holds on a good record and fails on a crafted bad one: a check that
cannot fail proves nothing."""

from __future__ import annotations

from assistant.merge import variant_path
from soak import invariants
from soak.records import Commit, Edit, History

BASE, OURS, THEIRS, LATER = "b" * 40, "0a" * 20, "0c" * 20, "0d" * 20
C0, C1, C2, C3, M = "c0" * 20, "c1" * 20, "c2" * 20, "c3" * 20, "ee" * 20


def edit(seq: int, node: str, head: str, before: dict, after: dict, kind: str = "modify") -> Edit:
    return Edit(seq, node, kind, head, before, after)


def history(tree: dict[str, str], **extra: object) -> History:
    """C0 (notes.txt = BASE) with C1 (A: OURS) and C2 (B: THEIRS) on top, merged in M."""
    commits = {
        C0: Commit([], {("notes.txt", BASE)}),
        C1: Commit([C0], {("notes.txt", OURS)}),
        C2: Commit([C0], {("notes.txt", THEIRS)}),
        M: Commit(sorted([C1, C2]), {(p, b) for p, b in tree.items() if b == OURS}, merge=True),
    }
    return History(head=M, commits=commits, tree=tree, **extra)  # type: ignore[arg-type]


CONCURRENT = [
    edit(0, "A", C0, {"notes.txt": BASE}, {"notes.txt": OURS}),
    edit(1, "B", C0, {"notes.txt": BASE}, {"notes.txt": THEIRS}),
]
KEPT = {"notes.txt": THEIRS, variant_path("notes.txt", OURS): OURS}


def test_edit_knows_what_it_made_moved_and_retired() -> None:
    rename = edit(0, "A", C0, {"a": OURS, "b": None}, {"a": None, "b": OURS}, "rename")
    assert rename.created() == {"b": OURS} and rename.moved() == {OURS}
    assert rename.retired() == set()
    overwrite = edit(1, "A", C0, {"a": OURS}, {"a": THEIRS})
    assert overwrite.created() == {"a": THEIRS} and overwrite.retired() == {OURS}


def test_ancestry_follows_both_parents_of_a_merge() -> None:
    ancestry = invariants.Ancestry(history(KEPT).commits)
    assert ancestry.is_ancestor(C1, M) and ancestry.is_ancestor(C2, M)
    assert ancestry.is_ancestor(M, M)
    assert not ancestry.is_ancestor(C1, C2) and not ancestry.is_ancestor(M, C0)
    assert not ancestry.is_ancestor("ff" * 20, M)


def test_trees_differ_names_the_node_and_the_path() -> None:
    tree = {"a.txt": OURS}
    good = invariants.trees_differ({"A": M, "B": M}, {"A": tree, "B": tree}, {"A": tree, "B": tree})
    assert good == []
    heads = invariants.trees_differ(
        {"A": M, "B": C1}, {"A": tree, "B": tree}, {"A": tree, "B": tree}
    )
    assert heads and "different commits" in heads[0]
    disk = invariants.trees_differ({"A": M, "B": M}, {"A": tree, "B": tree}, {"A": tree, "B": {}})
    assert disk == ["B: working tree differs from its commit: a.txt"]


def test_a_commit_a_branch_once_had_must_be_in_the_final_history() -> None:
    ancestry = invariants.Ancestry(history(KEPT).commits)
    assert invariants.commits_lost({"A": {C0, C1, M}, "B": {C2}}, ancestry, M) == []
    lost = invariants.commits_lost({"A": {C3}}, ancestry, M)
    assert lost == [f"A: commit {C3[:12]} its branch had is not in the history"]


def test_a_reflog_entry_the_branch_never_took_is_not_a_head_it_had() -> None:
    """C2's entry was written, but the branch update failed: the next starts from C1."""
    entries = [("0" * 40, C0), (C0, C1), (C1, C2), (C1, M)]
    assert invariants.reflog_heads(entries, M) == ({C0, C1, M}, 1)
    assert invariants.reflog_heads([(C0, C1)], C0) == (set(), 1)  # the last one failed too


def test_a_version_on_disk_at_the_stop_must_be_in_some_commit() -> None:
    in_history = invariants.versions_in_history(history(KEPT))
    assert invariants.disk_versions_lost({"A": {"notes.txt": OURS}}, in_history) == []
    lost = invariants.disk_versions_lost({"B": {"notes.txt": LATER}}, in_history)
    assert len(lost) == 1 and lost[0].startswith("B: notes.txt")


def test_concurrent_versions_kept_at_the_path_and_as_a_variant_pass() -> None:
    h = history(KEPT)
    assert invariants.versions_lost(CONCURRENT, h.tree) == []
    check = invariants.concurrent_versions_kept(CONCURRENT, h, invariants.Ancestry(h.commits))
    assert check.pairs == 1 and check.problems == []


def test_a_concurrent_version_missing_from_the_final_tree_is_lost() -> None:
    h = history({"notes.txt": THEIRS})  # the merge dropped A's version
    lost = invariants.versions_lost(CONCURRENT, h.tree)
    assert lost == [f"version {OURS[:10]} of notes.txt is not in the final tree"]
    check = invariants.concurrent_versions_kept(CONCURRENT, h, invariants.Ancestry(h.commits))
    assert check.pairs == 1 and len(check.problems) == 1 and "A's version" in check.problems[0]


def test_a_version_the_other_writer_had_seen_may_be_replaced() -> None:
    """B wrote on top of a history holding A's version: not concurrent, nothing to keep."""
    edits = [
        edit(0, "A", C0, {"notes.txt": BASE}, {"notes.txt": OURS}),
        edit(1, "B", C1, {"notes.txt": LATER}, {"notes.txt": THEIRS}),
    ]
    h = history({"notes.txt": THEIRS})
    check = invariants.concurrent_versions_kept(edits, h, invariants.Ancestry(h.commits))
    assert check.pairs == 0 and check.problems == []


def test_a_version_overwritten_by_someone_who_saw_it_may_leave_the_tree() -> None:
    edits = [*CONCURRENT, edit(2, "C", C0, {"notes.txt": OURS}, {"notes.txt": LATER})]
    kept = {"notes.txt": LATER, variant_path("notes.txt", THEIRS): THEIRS}
    assert invariants.versions_lost(edits, kept) == []  # OURS is gone, as C replaced it
    assert invariants.versions_lost(edits, {"notes.txt": THEIRS, "x": LATER}) == [
        f"version {LATER[:10]} of notes.txt is at x, not at its path or a variant of it"
    ]
    assert invariants.versions_lost(edits, {"notes.txt": LATER, "n.variant": THEIRS}) == [
        f"version {THEIRS[:10]} of notes.txt is at n.variant, not at its path or a variant of it"
    ]


def test_a_moved_version_is_expected_where_it_was_moved() -> None:
    edits = [
        edit(0, "A", C0, {"d/f.txt": BASE}, {"d/f.txt": OURS}),
        edit(1, "A", C1, {"d/f.txt": OURS}, {"d/f.txt": None, "e/f.txt": OURS}, "move-dir"),
    ]
    assert invariants.versions_lost(edits, {"e/f.txt": OURS}) == []
    assert invariants.versions_lost(edits, {"d/f.txt": OURS}) == []  # where it was first
    assert invariants.versions_lost(edits, {"e/g.txt": OURS})


def test_a_conflict_marker_placed_by_a_merge_is_found() -> None:
    clean = history(KEPT, contents={OURS: b"", THEIRS: b""})
    assert invariants.conflict_markers(clean) == []
    marked = history(KEPT, contents={OURS: b"<<<<<<< ours\n=======\n>>>>>>> theirs", THEIRS: b""})
    assert invariants.conflict_markers(marked) == [f"blob {OURS[:10]} holds a conflict marker"]


def test_stuck_state_fsck_and_ping_pong_report_what_they_find() -> None:
    assert invariants.stuck_state({"A": [], "B": []}) == []
    assert invariants.stuck_state({"B": ["MERGE_HEAD", "index.lock"]}) == [
        "B: MERGE_HEAD left behind",
        "B: index.lock left behind",
    ]
    assert invariants.fsck_problems({"A": (0, "")}) == []
    assert invariants.fsck_problems({"A": (0, "warning: bad date\n")})
    assert invariants.fsck_problems({"C": (1, "error: broken link\n")})
    assert invariants.still_committing({"A": (M, 4)}, {"A": (M, 4)}) == []
    assert invariants.still_committing({"A": (M, 4)}, {"A": (C3, 5)}) == [
        "A: still committing: 4 -> 5 commits"
    ]

"""The soak's invariants, each a plain function of recorded data returning what is wrong (an
empty list when the invariant holds). No disk, no git: tests/soak/test_invariants.py feeds
them crafted histories to show each one fails when it should.

A *version* is a content an edit wrote (every edit writes content no other edit writes, so a
blob id names one version). An edit *retires* the versions it replaced or deleted on its own
disk: its writer had seen them, so they may leave the tree. Every version no edit retired must
survive into the final tree: at a path some edit put it at, or beside it as a merge variant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from assistant.merge import VARIANT_HEX, variant_path
from soak.records import Blob, Commit, Edit, History, Tree


class Ancestry:
    """Ancestor queries over a commit graph, one bit per commit (fast for thousands)."""

    def __init__(self, commits: Mapping[str, Commit]) -> None:
        self.index: dict[str, int] = {}
        self.below: dict[str, int] = {}
        for oid in _topological(commits):
            bit = 1 << len(self.index)
            self.index[oid] = len(self.index)
            mask = bit
            for parent in commits[oid].parents:
                mask |= self.below.get(parent, 0)
            self.below[oid] = mask

    def contains(self, oid: str) -> bool:
        return oid in self.index

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether ``older`` is ``newer`` or one of its ancestors."""
        if older not in self.index or newer not in self.below:
            return False
        return bool(self.below[newer] >> self.index[older] & 1)


def _topological(commits: Mapping[str, Commit]) -> list[str]:
    """Parents before children (iteratively: histories are deep)."""
    order: list[str] = []
    done: set[str] = set()
    for start in commits:
        stack = [(start, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                order.append(oid)
                continue
            stack.append((oid, True))
            stack.extend((p, False) for p in commits[oid].parents if p in commits and p not in done)
    return order


def versions_in_history(history: History) -> set[tuple[str, Blob]]:
    """Every (path, blob) any commit of the history holds."""
    out: set[tuple[str, Blob]] = set()
    for commit in history.commits.values():
        out |= commit.new
    return out


def introduced_by(history: History) -> dict[tuple[str, Blob], list[str]]:
    """(path, blob) -> the commits where it first appears on a line of history."""
    out: dict[tuple[str, Blob], list[str]] = defaultdict(list)
    for oid, commit in history.commits.items():
        for pair in commit.new:
            out[pair].append(oid)
    return out


# --- the invariants --------------------------------------------------------------------------


def trees_differ(
    heads: Mapping[str, str], trees: Mapping[str, Tree], disks: Mapping[str, Tree]
) -> list[str]:
    """Every node on one commit, and every working tree exactly that commit's tree."""
    problems = []
    if len(set(heads.values())) != 1:
        problems.append(f"nodes on different commits: {dict(sorted(heads.items()))}")
    reference = next(iter(trees.values()), {})
    for node in sorted(trees):
        if trees[node] != reference:
            problems.append(f"{node}: committed tree differs: {_tree_diff(reference, trees[node])}")
    for node in sorted(disks):
        if disks[node] != trees.get(node):
            diff = _tree_diff(trees.get(node, {}), disks[node])
            problems.append(f"{node}: working tree differs from its commit: {diff}")
    return problems


def _tree_diff(a: Tree, b: Tree, limit: int = 5) -> str:
    changed = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))
    more = f" (+{len(changed) - limit} more)" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more


def commits_lost(ever: Mapping[str, Iterable[str]], ancestry: Ancestry, head: str) -> list[str]:
    """Every commit a node's branch ever pointed at is in the final head's history."""
    problems = []
    for node in sorted(ever):
        for oid in sorted(ever[node]):
            if oid and not ancestry.is_ancestor(oid, head):
                problems.append(f"{node}: commit {oid[:12]} its branch had is not in the history")
    return problems


def reflog_heads(entries: list[tuple[str, str]], current: str) -> tuple[set[str], int]:
    """The commits a branch really pointed at, from its reflog (oldest entry first), and how
    many entries name a commit it never did: libgit2 writes the reflog entry before it moves
    the branch, so an update that then failed (a full disk, a kill) leaves an entry whose
    commit the next entry does not start from."""
    heads: set[str] = set()
    broken = 0
    for i, (_old, new) in enumerate(entries):
        following = entries[i + 1][0] if i + 1 < len(entries) else current
        if new == following:
            heads.add(new)
        else:
            broken += 1
    return heads, broken


def disk_versions_lost(
    snapshots: Mapping[str, Tree], in_history: set[tuple[str, Blob]]
) -> list[str]:
    """Every version a node had on disk when activity stopped was committed somewhere."""
    problems = []
    for node in sorted(snapshots):
        for path, blob in sorted(snapshots[node].items()):
            if (path, blob) not in in_history:
                problems.append(f"{node}: {path} ({blob[:10]}) on disk at the stop is in no commit")
    return problems


def _places(edits: Iterable[Edit]) -> dict[Blob, set[str]]:
    """Blob -> every path an edit put it at."""
    out: dict[Blob, set[str]] = defaultdict(set)
    for edit in edits:
        for path, blob in edit.created().items():
            out[blob].add(path)
    return out


def _retired(edits: Iterable[Edit]) -> set[Blob]:
    out: set[Blob] = set()
    for edit in edits:
        out |= edit.retired()
    return out


def placed(blob: Blob, paths: set[str], tree: Tree) -> bool:
    """Whether ``tree`` holds ``blob`` at one of ``paths`` or at a variant name of one (the
    variant tag is the blob's id prefix: 8 hex digits, more when that name was taken)."""
    where = {p for p, b in tree.items() if b == blob}
    allowed = set(paths)
    for _round in range(2):  # a variant of a variant, when the variant name itself conflicted
        allowed |= {
            variant_path(p, blob, digits)
            for p in allowed
            for digits in range(VARIANT_HEX, len(blob) + 1, 4)
        }
    return bool(where & allowed)


def versions_lost(edits: list[Edit], tree: Tree) -> list[str]:
    """Every version no edit retired is in the final tree, where an edit put it or as a
    variant beside that path."""
    places = _places(edits)
    retired = _retired(edits)
    present = set(tree.values())
    problems = []
    for blob in sorted(places.keys() - retired):
        paths = places[blob]
        if blob not in present:
            problems.append(f"version {blob[:10]} of {sorted(paths)[0]} is not in the final tree")
        elif not placed(blob, paths, tree):
            found = sorted(p for p, b in tree.items() if b == blob)
            problems.append(
                f"version {blob[:10]} of {sorted(paths)[0]} is at {found[0]}, not at its path "
                "or a variant of it"
            )
    return problems


@dataclass(frozen=True)
class PairCheck:
    """How many pairs of concurrent last versions were checked, and what failed."""

    pairs: int
    problems: list[str]


def concurrent_versions_kept(edits: list[Edit], history: History, ancestry: Ancestry) -> PairCheck:
    """Where two nodes' last versions of a file were concurrent (neither writer had seen the
    other's: it was not on the disk it overwrote, and no commit holding it was in the writer's
    history), both are in the final tree, at the path or as a variant.

    A version some edit retired (replaced or deleted after seeing it) is exempt."""
    last: dict[tuple[str, str], Edit] = {}
    for edit in sorted(edits, key=lambda e: e.seq):
        for path in edit.after:
            last[(edit.node, path)] = edit
    retired = _retired(edits)
    places = _places(edits)
    intro = introduced_by(history)
    by_path: dict[str, list[tuple[Edit, Blob]]] = defaultdict(list)
    for (_node, path), edit in last.items():
        blob = edit.after[path]
        if blob is not None and blob not in retired:
            by_path[path].append((edit, blob))

    def seen(path: str, blob: Blob, by: Edit) -> bool:
        if by.before.get(path) == blob:
            return True
        return any(ancestry.is_ancestor(c, by.head) for c in intro.get((path, blob), []))

    pairs = 0
    problems = []
    for path, versions in sorted(by_path.items()):
        for i, (ex, bx) in enumerate(versions):
            for ey, by in versions[i + 1 :]:
                if ex.node == ey.node or bx == by:
                    continue
                if seen(path, bx, ey) or seen(path, by, ex):
                    continue
                pairs += 1
                for edit, blob in ((ex, bx), (ey, by)):
                    if not placed(blob, places[blob] | {path}, history.tree):
                        problems.append(
                            f"{path}: {edit.node}'s version {blob[:10]} (edit {edit.seq}) was "
                            "concurrent with another node's but is not in the final tree"
                        )
    return PairCheck(pairs, problems)


def conflict_markers(history: History) -> list[str]:
    """No conflict marker in the final tree or in any blob a merge placed."""
    blobs = set(history.tree.values())
    for commit in history.commits.values():
        if commit.merge:
            blobs |= {blob for _path, blob in commit.new}
    return [
        f"blob {blob[:10]} holds a conflict marker"
        for blob in sorted(blobs)
        if has_conflict_marker(history.contents.get(blob, b""))
    ]


def has_conflict_marker(data: bytes) -> bool:
    """A line as git's line merge writes around a conflict."""
    return any(line.startswith((b"<<<<<<<", b">>>>>>>")) for line in data.split(b"\n"))


def stuck_state(leftovers: Mapping[str, list[str]]) -> list[str]:
    """No node is left mid-merge or holding a git lock (``MERGE_HEAD``, ``index.lock``, a ref
    lock), as listed per node by the collector."""
    return [f"{node}: {name} left behind" for node in sorted(leftovers) for name in leftovers[node]]


def fsck_problems(results: Mapping[str, tuple[int, str]]) -> list[str]:
    """``git fsck --strict`` exited 0 with nothing to say on every node."""
    problems = []
    for node, (code, output) in sorted(results.items()):
        if code != 0 or output.strip():
            problems.append(f"{node}: git fsck --strict exit {code}: {output.strip()[:500]}")
    return problems


def still_committing(
    before: Mapping[str, tuple[str, int]], after: Mapping[str, tuple[str, int]]
) -> list[str]:
    """Once converged, heads and commit counts stay put: no merge ping-pong."""
    return [
        f"{node}: still committing: {before[node][1]} -> {after[node][1]} commits"
        for node in sorted(before)
        if before[node] != after.get(node)
    ]

"""Deterministic, conflict-free merging: the merge of two commits is a pure function of the
pair, so every node that merges the same two commits creates the very same commit.

Conflicts never stop a merge and never lose a version: where both sides changed a file
differently, the side whose commit is newer (ties broken by commit id) keeps the path and the
other version is kept beside it as ``name.variant-<blob id prefix>.ext``. Nothing is ever
merged line by line, so no conflict marker can be written.
"""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pygit2

from assistant.changes import Entry
from assistant.names import name_problem
from assistant.treeedit import apply_edits, entry_at

MODE_LINK = 0o120000
MODE_TREE = 0o040000
VARIANT_HEX = 8
MERGE_NAME = "annexsync"
MERGE_EMAIL = "annexsync@merge"


@dataclass(frozen=True)
class Variant:
    """A losing version kept beside the path it lost: why, where, and which blob."""

    path: str
    variant: str
    entry: Entry
    reason: str


@dataclass
class Resolution:
    """The merged entry of every changed path (None removes it) and the variants made."""

    entries: dict[str, Entry | None] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)


def variant_path(path: str, oid: str, digits: int = VARIANT_HEX) -> str:
    """``dir/notes.md`` -> ``dir/notes.variant-1a2b3c4d.md``: the tag goes before the last
    extension, or at the end when there is none (``Makefile``, ``.bashrc``)."""
    head, name = posixpath.split(path)
    tag = f"variant-{oid[:digits]}"
    lead = "." if name.startswith(".") else ""
    rest = name[len(lead) :]
    stem, dot, ext = rest.rpartition(".")
    new = f"{lead}{stem}.{tag}.{ext}" if dot and stem and ext else f"{name}.{tag}"
    return posixpath.join(head, new) if head else new


def _kind(entry: Entry) -> str:
    return "link" if entry.mode == MODE_LINK else "file"


def resolve(
    changed: set[str],
    base: Mapping[str, Entry],
    newer: Mapping[str, Entry],
    older: Mapping[str, Entry],
    existing: Callable[[str], Entry | None] = lambda path: None,
) -> Resolution:
    """Merge every ``changed`` path from its base, newer-side and older-side entries (absent
    means no file there). ``existing`` looks up a path the merge does not change, so variant
    names never clobber a file."""
    out = Resolution()
    losers: list[tuple[str, Entry]] = []
    for path in sorted(changed):
        b, n, o = base.get(path), newer.get(path), older.get(path)
        if n == o or o == b:
            out.entries[path] = n
        elif n == b:
            out.entries[path] = o
        elif n is None or o is None:
            out.entries[path] = n if o is None else o  # modified beats deleted
        elif n.oid == o.oid and _kind(n) == _kind(o):
            out.entries[path] = n  # both changed only the mode: content is the same
        elif b is not None and n.oid == b.oid and _kind(n) == _kind(o):
            out.entries[path] = Entry(o.oid, n.mode)  # newer changed the mode, older the data
        elif b is not None and o.oid == b.oid and _kind(n) == _kind(o):
            out.entries[path] = Entry(n.oid, o.mode)
        else:
            out.entries[path] = n
            losers.append((path, o))
    # Variant names are chosen once every changed path is resolved, so a later path of the
    # merge can neither take nor overwrite a variant's name.
    for path, entry in losers:
        _keep_variant(out, path, entry, "changed on both sides", existing)
    _separate_files_from_directories(out, existing)
    return out


def _keep_variant(
    out: Resolution,
    path: str,
    entry: Entry,
    reason: str,
    existing: Callable[[str], Entry | None],
) -> None:
    digits = VARIANT_HEX
    while True:
        candidate = variant_path(path, entry.oid, digits)
        taken = out.entries.get(candidate) if candidate in out.entries else existing(candidate)
        if taken is None or taken == entry or digits >= len(entry.oid):
            break
        digits += 4
    out.entries[candidate] = entry
    out.variants.append(Variant(path, candidate, entry, reason))


def _separate_files_from_directories(
    out: Resolution, existing: Callable[[str], Entry | None]
) -> None:
    """A file on one side where the other has a directory: the directory keeps the path and
    the file moves to a variant name beside it."""
    present = sorted(p for p, e in out.entries.items() if e is not None)
    for path in list(present):
        entry = out.entries[path]
        prefix = path + "/"
        at = bisect.bisect_left(present, prefix)
        if entry is not None and at < len(present) and present[at].startswith(prefix):
            out.entries[path] = None
            _keep_variant(out, path, entry, "a directory has the same name", existing)


# --- the merge commit ------------------------------------------------------------------------


def newer_first(a: pygit2.Commit, b: pygit2.Commit) -> tuple[pygit2.Commit, pygit2.Commit]:
    """The two commits ordered newer, older: by commit time, ties broken by id."""
    key_a, key_b = (a.commit_time, str(a.id)), (b.commit_time, str(b.id))
    return (a, b) if key_a > key_b else (b, a)


def merge_base(repo: pygit2.Repository, a: pygit2.Oid, b: pygit2.Oid) -> pygit2.Oid | None:
    """A merge base chosen the same way whichever order the pair comes in."""
    found = {base for base in (repo.merge_base(a, b), repo.merge_base(b, a)) if base is not None}
    return min(found, key=str) if found else None


def _changed_paths(repo: pygit2.Repository, old: pygit2.Tree | None, new: pygit2.Tree) -> set[str]:
    diff = new.diff_to_tree(old, swap=True) if old is not None else new.diff_to_tree(swap=True)
    paths: set[str] = set()
    for delta in diff.deltas:
        paths.add(delta.old_file.path)
        paths.add(delta.new_file.path)
    return paths


def _entries(tree: pygit2.Tree | None, paths: set[str]) -> dict[str, Entry]:
    out = {}
    for path in paths:
        node = entry_at(tree, path)
        if node is not None and node.filemode != MODE_TREE:
            out[path] = Entry(str(node.id), node.filemode)
    return out


def _node_name(commit: pygit2.Commit) -> str | None:
    """The node a commit says it was made on; a name annexsync refuses (control characters,
    shell syntax) is not repeated in our merge messages."""
    for line in reversed(commit.message.splitlines()):
        if line.startswith("Annexsync-Node: "):
            name = line.removeprefix("Annexsync-Node: ").strip()
            return name if name_problem(name) is None else None
    return None


def merge_message(a: pygit2.Commit, b: pygit2.Commit, variants: list[Variant]) -> str:
    """A message fixed by the pair: both commits (by id order) and the variants kept."""
    first, second = sorted((a, b), key=lambda c: str(c.id))
    names = [
        f"{str(c.id)[:10]}" + (f" ({node})" if (node := _node_name(c)) else "")
        for c in (first, second)
    ]
    lines = [f"Merge {names[0]} and {names[1]}"]
    if variants:
        lines.append("")
        lines.extend(f"Kept both versions of {v.path}: the other is {v.variant}" for v in variants)
    return "\n".join(lines) + "\n"


@dataclass
class MergeOutcome:
    """What merging ``theirs`` into ``ours`` gives: the resulting commit id, and how."""

    commit: pygit2.Oid
    kind: str  # "up-to-date", "fast-forward", "merge"
    variants: list[Variant] = field(default_factory=list)


def merge_commits(repo: pygit2.Repository, ours: pygit2.Oid, theirs: pygit2.Oid) -> MergeOutcome:
    """Merge two commits: up to date, fast-forward, or a merge commit that is a pure function
    of the pair (parents in id order, fixed identity, time from the parents)."""
    if ours == theirs or repo.descendant_of(ours, theirs):
        return MergeOutcome(ours, "up-to-date")
    if repo.descendant_of(theirs, ours):
        return MergeOutcome(theirs, "fast-forward")
    a, b = repo[ours], repo[theirs]
    newer, older = newer_first(a, b)  # type: ignore[arg-type]
    base_id = merge_base(repo, ours, theirs)
    base_tree = repo[base_id].tree if base_id is not None else None  # type: ignore[attr-defined]
    changed = _changed_paths(repo, base_tree, newer.tree) | _changed_paths(
        repo, base_tree, older.tree
    )
    merged_tree_lookup = _lookup_unchanged(newer.tree, changed)
    resolution = resolve(
        changed,
        _entries(base_tree, changed),
        _entries(newer.tree, changed),
        _entries(older.tree, changed),
        merged_tree_lookup,
    )
    tree = apply_edits(repo, base_tree, resolution.entries)
    when = max(a.commit_time, b.commit_time)  # type: ignore[attr-defined]
    signature = pygit2.Signature(MERGE_NAME, MERGE_EMAIL, when, 0)
    parents = sorted([a.id, b.id], key=str)
    message = merge_message(a, b, resolution.variants)  # type: ignore[arg-type]
    commit = repo.create_commit(None, signature, signature, message, tree, parents)
    return MergeOutcome(commit, "merge", resolution.variants)


def _lookup_unchanged(tree: pygit2.Tree, changed: set[str]) -> Callable[[str], Entry | None]:
    """Paths the merge leaves alone are the same on both sides: look them up on one."""

    def lookup(path: str) -> Entry | None:
        if path in changed:
            return None
        node = entry_at(tree, path)
        if node is None or node.filemode == MODE_TREE:
            return None
        return Entry(str(node.id), node.filemode)

    return lookup

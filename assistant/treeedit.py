"""Build a new tree from a base tree and per-path edits, touching only the changed subtrees."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import pygit2

from assistant.changes import Entry
from assistant.worktree import MODE_TREE


def apply_edits(
    repo: pygit2.Repository, base: pygit2.Tree | None, edits: Mapping[str, Entry | None]
) -> pygit2.Oid:
    """Write the tree ``base`` with each path set to its entry (None deletes it); empty
    subtrees are pruned. Cost grows with the edited paths, not with the tree."""
    nested: dict[tuple[str, ...], Entry | None] = {tuple(p.split("/")): e for p, e in edits.items()}
    oid = _apply(repo, base, nested)
    if oid is None:
        return repo.TreeBuilder().write()
    return oid


def _apply(
    repo: pygit2.Repository, base: pygit2.Tree | None, edits: dict[tuple[str, ...], Entry | None]
) -> pygit2.Oid | None:
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    # names that are not UTF-8 (git takes any bytes; libgit2's builder only UTF-8 text)
    raw: dict[bytes, tuple[pygit2.Oid, int]] = {}

    def insert(name: str, oid: pygit2.Oid, mode: int) -> None:
        try:
            builder.insert(name, oid, mode)
        except UnicodeEncodeError:
            if builder.get(name) is not None:
                builder.remove(name)
            raw[os.fsencode(name)] = (oid, mode)

    deeper: dict[str, dict[tuple[str, ...], Entry | None]] = {}
    for parts, entry in edits.items():
        if len(parts) > 1:
            deeper.setdefault(parts[0], {})[parts[1:]] = entry
            continue
        name = parts[0]
        if entry is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            insert(name, pygit2.Oid(hex=entry.oid), entry.mode)
    for name, sub_edits in deeper.items():
        existing = builder.get(name)
        subtree = None
        if existing is not None and existing.filemode == MODE_TREE:
            subtree = repo[existing.id]
        new = _apply(repo, subtree, sub_edits)  # type: ignore[arg-type]
        if new is None:
            if existing is not None and existing.filemode == MODE_TREE:
                builder.remove(name)
        else:
            insert(name, new, MODE_TREE)
    if raw:
        return _with_raw_names(repo, builder.write(), raw)
    if len(builder) == 0:
        return None
    return builder.write()


def _with_raw_names(
    repo: pygit2.Repository, tree: pygit2.Oid, extra: dict[bytes, tuple[pygit2.Oid, int]]
) -> pygit2.Oid:
    """Write ``tree`` plus ``extra`` entries named by raw bytes, in git's own tree format and
    order (a subtree sorts as if its name ended in '/')."""
    entries = {e.raw_name: (e.id, e.filemode) for e in repo[tree]}  # type: ignore[attr-defined]
    entries.update(extra)
    ordered = sorted(
        entries.items(), key=lambda item: item[0] + (b"/" if item[1][1] == MODE_TREE else b"")
    )
    data = b"".join(b"%o %s\0%s" % (mode, name, oid.raw) for name, (oid, mode) in ordered)
    return repo.write(pygit2.enums.ObjectType.TREE, data)


def entry_at(tree: pygit2.Tree | None, path: str) -> pygit2.Object | None:
    """The tree entry at a slash-separated path, or None."""
    if tree is None:
        return None
    try:
        return tree[path]
    except (KeyError, ValueError):
        return None


def files_under(
    repo: pygit2.Repository, tree: pygit2.Tree | None, path: str
) -> Iterator[tuple[str, Entry]]:
    """Every blob entry at or below ``path`` in ``tree`` (path '' is the whole tree)."""
    node = tree if path == "" else entry_at(tree, path)
    if node is None:
        return
    if node.filemode != MODE_TREE and path:
        yield path, Entry(str(node.id), node.filemode)
        return
    stack: list[tuple[str, pygit2.Tree]] = [(path, repo[node.id] if path else node)]  # type: ignore[list-item]
    while stack:
        prefix, current = stack.pop()
        for item in current:
            rel = f"{prefix}/{item.name}" if prefix else item.name
            if item.filemode == MODE_TREE:
                stack.append((rel, repo[item.id]))  # type: ignore[arg-type]
            elif item.filemode != 0o160000:
                yield rel, Entry(str(item.id), item.filemode)

"""Which objects a peer lacks, and a pack of them.

Small pushes (the common case: one auto-commit) are packed in-process without deltas, which
costs microseconds; large ones go through ``git pack-objects``, whose delta compression pays
off there. What is missing is found by comparing each new commit's tree with its parents'
trees, so the cost follows the change, not the repository.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable, Sequence

import pygit2

MODE_TREE = 0o040000
MODE_GITLINK = 0o160000
# Above either limit, git pack-objects (with deltas) builds the pack instead.
INPROCESS_MAX_OBJECTS = 2000
INPROCESS_MAX_BYTES = 8 << 20


def new_commits(
    repo: pygit2.Repository, wants: Iterable[pygit2.Oid], haves: Iterable[pygit2.Oid]
) -> list[pygit2.Commit]:
    """Commits reachable from ``wants`` but not from ``haves`` (haves the repo lacks are
    skipped)."""
    wants = list(wants)
    if not wants:
        return []
    walker = repo.walk(wants[0], pygit2.enums.SortMode.TOPOLOGICAL)
    for oid in wants[1:]:
        walker.push(oid)
    for oid in haves:
        commit = _peel_commit(repo, oid)
        if commit is not None:
            walker.hide(commit)
    return list(walker)


def _peel_commit(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Oid | None:
    """The commit ``oid`` names (through tags), or None: a peer's refs may point at tags of
    trees or blobs, and at objects we lack."""
    try:
        return repo[oid].peel(pygit2.Commit).id
    except (KeyError, ValueError, pygit2.GitError):
        return None


def missing_objects(
    repo: pygit2.Repository, wants: Iterable[pygit2.Oid], haves: Iterable[pygit2.Oid]
) -> list[pygit2.Oid]:
    """Every object the peer needs: new commits, and the trees and blobs in them that are
    not in any parent's tree at the same place."""
    out: list[pygit2.Oid] = []
    seen: set[pygit2.Oid] = set()
    # Parents first: skipping what a parent's tree holds is only sound once that parent is
    # complete on the peer or in ``out`` (a commit reverting to an older tree would otherwise
    # lose blobs that neither side sends).
    for commit in reversed(new_commits(repo, wants, haves)):
        out.append(commit.id)
        _collect(repo, commit.tree, [p.tree for p in commit.parents], out, seen)
    return out


def _collect(
    repo: pygit2.Repository,
    tree: pygit2.Tree,
    bases: list[pygit2.Tree],
    out: list[pygit2.Oid],
    seen: set[pygit2.Oid],
) -> None:
    if tree.id in seen or any(base.id == tree.id for base in bases):
        return
    seen.add(tree.id)
    out.append(tree.id)
    for entry in tree:
        if entry.filemode == MODE_GITLINK:
            continue
        same_place = [_child(base, entry.name) for base in bases]
        if entry.filemode == MODE_TREE:
            sub_bases = [
                repo[b.id] for b in same_place if b is not None and b.filemode == MODE_TREE
            ]
            _collect(repo, repo[entry.id], sub_bases, out, seen)  # type: ignore[arg-type]
        elif entry.id not in seen and not any(
            b is not None and b.id == entry.id for b in same_place
        ):
            seen.add(entry.id)
            out.append(entry.id)


def _child(tree: pygit2.Tree, name: str) -> pygit2.Object | None:
    try:
        return tree[name]
    except KeyError:
        return None


def _object_header(kind: int, size: int) -> bytes:
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def encode_pack(objects: Sequence[tuple[int, bytes]]) -> bytes:
    """A version-2 pack of (object type, content) pairs, each stored whole (no deltas)."""
    parts = [b"PACK", struct.pack(">II", 2, len(objects))]
    for kind, data in objects:
        parts.append(_object_header(kind, len(data)))
        parts.append(zlib.compress(data, 1))
    body = b"".join(parts)
    return body + hashlib.sha1(body).digest()


def write_pack(repo: pygit2.Repository, oids: list[pygit2.Oid]) -> bytes:
    """A version-2 pack holding ``oids`` whole (no deltas)."""
    objects = []
    for oid in oids:
        kind, data = repo.odb.read(oid)
        objects.append((int(kind), data))
    return encode_pack(objects)


def pack_is_small(repo: pygit2.Repository, oids: list[pygit2.Oid]) -> bool:
    """Whether an in-process pack is the cheaper way to send ``oids``."""
    if len(oids) > INPROCESS_MAX_OBJECTS:
        return False
    total = 0
    for oid in oids:
        total += repo.odb.read_header(oid)[1]
        if total > INPROCESS_MAX_BYTES:
            return False
    return True

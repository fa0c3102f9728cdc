"""What a soak run records, as plain data: the edits made on each node, and the history the
nodes ended with. The invariant checks (invariants.py) are functions of these alone."""

from __future__ import annotations

from dataclasses import dataclass, field

Blob = str  # a git blob id (hex): every edit writes content no other edit writes
Tree = dict[str, Blob]  # path -> blob


@dataclass(frozen=True)
class Edit:
    """One change made on a node's disk, as a user would make it.

    ``before`` holds what each touched path held on disk just before the change (None:
    nothing), ``after`` what it holds once done. ``head`` is the node's branch just before
    the change: the history its writer had seen."""

    seq: int
    node: str
    kind: str  # create, modify, rewrite, append, rename, delete, move-dir, collide, burst, ...
    head: str
    before: dict[str, Blob | None]
    after: dict[str, Blob | None]
    at: float = 0.0  # seconds since the run started

    def created(self) -> dict[str, Blob]:
        """The versions this edit made: a content it wrote, or one it moved to a new path."""
        return {p: b for p, b in self.after.items() if b is not None and self.before.get(p) != b}

    def moved(self) -> set[Blob]:
        """Contents this edit only moved (a rename): they live on at another path."""
        kept = {b for b in self.after.values() if b is not None}
        return {b for b in self.before.values() if b is not None and b in kept}

    def retired(self) -> set[Blob]:
        """Contents this edit replaced or deleted while they were on its disk: the writer saw
        them, so they may leave the tree."""
        gone = {b for p, b in self.before.items() if b is not None and self.after.get(p) != b}
        return gone - self.moved()


@dataclass
class Commit:
    """One commit of the final history: parents, and the (path, blob) pairs of its tree that
    none of its parents has (for a root commit, its whole tree)."""

    parents: list[str]
    new: set[tuple[str, Blob]]
    merge: bool = False


@dataclass
class History:
    """The final state every node agreed on, and what each node's branch ever pointed at."""

    head: str
    commits: dict[str, Commit]  # every commit reachable from head
    tree: Tree  # head's tree
    ever: dict[str, set[str]] = field(default_factory=dict)  # node -> commits its branch had
    contents: dict[Blob, bytes] = field(default_factory=dict)  # blobs to scan for markers

"""Pure description of a commit's changes: classify, pair renames, and write the message."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ChangeKind = Literal["add", "update", "delete", "rename", "mode"]


@dataclass(frozen=True)
class Entry:
    """A tree entry's content: the object id (hex) and the git file mode."""

    oid: str
    mode: int


@dataclass(frozen=True)
class Change:
    """One path's change in a commit; ``old_path`` is set for renames."""

    kind: ChangeKind
    path: str
    old_path: str | None = None


def classify(old: Mapping[str, Entry | None], new: Mapping[str, Entry | None]) -> list[Change]:
    """Changes from each path's old and new entry; a deleted and an added path with the same
    content and mode become one rename. Paths whose entries are equal are skipped."""
    added: list[str] = []
    deleted: list[str] = []
    changes: list[Change] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        if before is None:
            added.append(path)
        elif after is None:
            deleted.append(path)
        elif before.oid == after.oid:
            changes.append(Change("mode", path))
        else:
            changes.append(Change("update", path))
    unmatched_deleted: dict[Entry, list[str]] = {}
    for path in deleted:
        entry = old[path]
        assert entry is not None
        unmatched_deleted.setdefault(entry, []).append(path)
    for path in added:
        entry = new[path]
        sources = unmatched_deleted.get(entry) if entry is not None else None
        if sources:
            changes.append(Change("rename", path, old_path=_closest(sources, path)))
            sources.remove(changes[-1].old_path)  # type: ignore[arg-type]
        else:
            changes.append(Change("add", path))
    for paths in unmatched_deleted.values():
        changes.extend(Change("delete", path) for path in paths)
    return sorted(changes, key=lambda c: (c.path, c.kind))


def _closest(candidates: list[str], path: str) -> str:
    """Prefer a rename source with the same base name (a move), then the same directory."""
    base, parent = posixpath.basename(path), posixpath.dirname(path)
    return min(
        candidates,
        key=lambda c: (posixpath.basename(c) != base, posixpath.dirname(c) != parent, c),
    )


_VERBS: dict[ChangeKind, str] = {
    "update": "update",
    "add": "add",
    "delete": "delete",
    "rename": "rename",
    "mode": "change mode of",
}
SUMMARY_LIMIT = 72


def _raw_byte(ch: str) -> bool:
    """A byte that is not UTF-8, as os.fsdecode carries it (a lone surrogate)."""
    return "\udc80" <= ch <= "\udcff"


def _escape(ch: str) -> str:
    if _raw_byte(ch):
        return f"\\{ord(ch) - 0xDC00:03o}"
    return f"\\{ord(ch):03o}" if ch < " " or ch == "\x7f" else ch


def quote_path(path: str) -> str:
    """A path as git shows it: in double quotes with C escapes when it holds control
    characters, quotes, backslashes or bytes that are not UTF-8 (``"caf\\351.txt"``), so a
    name can never break a message's lines and every message is valid UTF-8."""
    if not any(ch < " " or ch in '"\\' or ch == "\x7f" or _raw_byte(ch) for ch in path):
        return path
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
    body = "".join(escapes.get(ch) or _escape(ch) for ch in path)
    return f'"{body}"'


def _group(kind: ChangeKind, changes: list[Change]) -> str:
    verb = _VERBS[kind]
    if len(changes) == 1:
        change = changes[0]
        if kind == "rename":
            return f"{verb} {quote_path(change.old_path or '')} -> {quote_path(change.path)}"
        return f"{verb} {quote_path(change.path)}"
    common = posixpath.commonpath([c.path for c in changes])
    parent = common if common not in {c.path for c in changes} else posixpath.dirname(common)
    where = f" under {quote_path(parent + '/')}" if parent else ""
    return f"{verb} {len(changes)} files{where}"


def summarize(changes: list[Change]) -> str:
    """One line such as 'Update notes/todo.md; add 3 files under img/'."""
    if not changes:
        return "No changes"
    order: list[ChangeKind] = ["update", "add", "rename", "mode", "delete"]
    parts = [
        _group(kind, [c for c in changes if c.kind == kind])
        for kind in order
        if any(c.kind == kind for c in changes)
    ]
    line = "; ".join(parts)
    if len(line) > SUMMARY_LIMIT:
        counts = [
            f"{_VERBS[k]} {n} file{'s' if n > 1 else ''}"
            for k in order
            if (n := sum(1 for c in changes if c.kind == k))
        ]
        line = "; ".join(counts)
    if len(line) > SUMMARY_LIMIT:
        line = f"change {len(changes)} files"
    return line[0].upper() + line[1:]


_LETTERS: dict[ChangeKind, str] = {
    "add": "A",
    "update": "M",
    "delete": "D",
    "rename": "R",
    "mode": "T",
}
BODY_LIMIT = 200


def commit_message(changes: list[Change], node: str) -> str:
    """The full commit message: summary, the changed paths (capped), and the node's name."""
    lines = [summarize(changes), ""]
    for change in changes[:BODY_LIMIT]:
        if change.kind == "rename":
            lines.append(f"R {quote_path(change.old_path or '')} -> {quote_path(change.path)}")
        else:
            lines.append(f"{_LETTERS[change.kind]} {quote_path(change.path)}")
    if len(changes) > BODY_LIMIT:
        lines.append(f"... and {len(changes) - BODY_LIMIT} more")
    lines += ["", f"Annexsync-Node: {node}"]
    return "\n".join(lines) + "\n"

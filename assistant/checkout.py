"""Move the working tree from one commit's tree to another's, touching only the paths that
differ, and never overwriting or deleting a file the user changed."""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from assistant.changes import Entry
from assistant.treeedit import entry_at
from assistant.worktree import (
    MODE_EXEC,
    MODE_LINK,
    MODE_TREE,
    Absent,
    ParentCheck,
    Present,
    read_path,
)

MODE_GITLINK = 0o160000

TEMP_PREFIX = ".annexsync-tmp-"


class UnsafePath(Exception):
    """A path git itself would refuse to check out (``..``, ``.git``, absolute, through a
    symlink)."""


@dataclass
class Plan:
    """What moving the tree takes: paths to remove and paths to write, in a safe order."""

    remove: list[str] = field(default_factory=list)
    write: dict[str, Entry] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return sorted(set(self.remove) | set(self.write))


def check_path(path: str) -> None:
    """Refuse what git refuses: empty, absolute, '.', '..' or '.git' components."""
    if not path or path.startswith("/") or "\0" in path:
        raise UnsafePath(f"refusing to check out unsafe path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", "..") or part.lower() in (".git", ".git."):
            raise UnsafePath(f"refusing to check out unsafe path {path!r}")


def plan(old: pygit2.Tree | None, new: pygit2.Tree, changed: Iterable[str]) -> Plan:
    """For each changed path, remove it or write its new entry."""
    result = Plan()
    for path in sorted(set(changed)):
        check_path(path)
        node = entry_at(new, path)
        if node is not None and node.filemode == MODE_GITLINK:
            continue  # a submodule entry: annexsync never checks those out
        if node is None or node.filemode == MODE_TREE:
            old_node = entry_at(old, path)
            if old_node is not None and old_node.filemode != MODE_TREE:
                result.remove.append(path)
        else:
            result.write[path] = Entry(str(node.id), node.filemode)
    return result


Stamp = tuple[int, int, int] | None


def stamp(full: Path) -> Stamp:
    """What identifies a file's current version cheaply: inode, size, mtime (None: absent)."""
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def inspect(
    root: Path, old: pygit2.Tree | None, paths: Iterable[str]
) -> tuple[list[str], dict[str, Stamp]]:
    """Paths whose file on disk is no longer what ``old`` has (the user edited, created or
    deleted it: those must not be touched), and a stamp of every other path, taken before
    reading it, so a change made after this look is still noticed by ``apply``."""
    dirty: list[str] = []
    stamps: dict[str, Stamp] = {}
    check = ParentCheck(root, lambda _dir: None)
    for path in paths:
        node = entry_at(old, path)
        expected = (
            None
            if node is None or node.filemode == MODE_TREE
            else Entry(str(node.id), node.filemode)
        )
        if not check.parents_ok(path):
            dirty.append(path)  # never look, or write, through a symlinked directory
            continue
        before = stamp(root / path)
        state = read_path(root, path, largefiles=1 << 62)
        if isinstance(state, Present):
            clean = state.entry == expected
        elif isinstance(state, Absent):
            clean = expected is None or (root / path).is_dir()
        else:
            clean = False
        if clean:
            stamps[path] = before
        else:
            dirty.append(path)
    return dirty, stamps


def _safe_parent(root: Path, path: str) -> Path:
    """Create the parent directories of ``path`` as real directories (a file in the way was
    removed by the plan); refuse to go through a symlink."""
    parent = root
    for part in path.split("/")[:-1]:
        parent = parent / part
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            os.mkdir(parent)
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"refusing to write {path!r}: {parent} is not a directory")
    return parent


def _remove(root: Path, path: str) -> None:
    full = root / path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(full)
    parent = posixpath.dirname(path)
    while parent:
        try:
            os.rmdir(root / parent)
        except OSError:
            break
        parent = posixpath.dirname(parent)


def write_entry(
    repo: pygit2.Repository, root: Path, path: str, entry: Entry, expect: object = ...
) -> bool:
    """Write one blob to ``path`` through a temporary file renamed into place. With
    ``expect`` (a stamp), the file is compared once more just before the rename, after the
    possibly long write of the temporary file: if the user saved meanwhile, their file stays
    and False is returned."""
    parent = _safe_parent(root, path)
    data = repo[pygit2.Oid(hex=entry.oid)].data  # type: ignore[attr-defined]
    final = root / path
    if final.is_dir() and not final.is_symlink():
        raise UnsafePath(f"refusing to replace the directory {path!r} with a file")
    temp = parent / f"{TEMP_PREFIX}{os.getpid()}-{final.name[:100]}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    if entry.mode == MODE_LINK:
        os.symlink(os.fsdecode(data), temp)
    else:
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
            0o777 if entry.mode == MODE_EXEC else 0o666,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    if expect is not ... and stamp(final) != expect:
        os.unlink(temp)
        return False
    os.replace(temp, final)
    return True


def apply(
    repo: pygit2.Repository, root: Path, work: Plan, stamps: dict[str, Stamp]
) -> tuple[list[str], list[str]]:
    """Carry out a plan: removals first (a file may make way for a directory), then writes,
    each atomically through a temporary file renamed into place. A path whose file changed
    since ``inspect`` stamped it is left as the user has it. Returns (paths changed, paths
    left as the user has them)."""
    done: list[str] = []
    skipped: list[str] = []
    check = ParentCheck(root, lambda _dir: None)
    for path in work.remove:
        if not check.parents_ok(path) or stamp(root / path) != stamps.get(path):
            skipped.append(path)
            continue
        _remove(root, path)
        done.append(path)
    for path, entry in sorted(work.write.items()):
        expected = stamps.get(path)
        if stamp(root / path) != expected or not write_entry(repo, root, path, entry, expected):
            skipped.append(path)
            continue
        done.append(path)
    return done, skipped


def restore(
    repo: pygit2.Repository, root: Path, old: pygit2.Tree | None, work: Plan, done: list[str]
) -> None:
    """Undo ``apply`` on the paths it changed and nobody touched since: each gets its
    version from ``old`` back (or goes away), so an interrupted update leaves no trace."""
    for path in done:
        state = read_path(root, path, largefiles=1 << 62)
        wanted = work.write.get(path)
        untouched = (isinstance(state, Present) and state.entry == wanted) or (
            wanted is None and isinstance(state, Absent)
        )
        if not untouched:
            continue
        node = entry_at(old, path)
        if node is None or node.filemode == MODE_TREE:
            _remove(root, path)
        else:
            write_entry(repo, root, path, Entry(str(node.id), node.filemode))

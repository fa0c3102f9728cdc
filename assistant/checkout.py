"""Move the working tree from one commit's tree to another's, touching only the paths that
differ, and never overwriting or deleting a file the user changed."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from assistant.activity import progress
from assistant.changes import Entry
from assistant.objects import blob_size
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


# --- what git refuses to check out (read-cache.c verify_path, with core.protectHFS and
# core.protectNTFS both on, as git fsck checks every tree) ----------------------------------

# Code points HFS+ ignores when it compares names: ".g\u200cit" is ".git" there.
_HFS_IGNORED = frozenset(
    [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _hfs_name(part: str) -> str:
    """A name as HFS+ compares it: ignorable code points dropped, ASCII case folded."""
    return "".join(c for c in part if ord(c) not in _HFS_IGNORED).translate(_ASCII_LOWER)


def _only_spaces_and_periods(rest: str) -> bool:
    """NTFS drops trailing spaces and periods, and ':' starts an alternate data stream."""
    return all(c in " ." for c in rest.split(":", 1)[0])


def _ntfs_dotgit(part: str) -> bool:
    """``.git`` as NTFS may read it: ``.GIT . .``, ``.git::$INDEX_ALLOCATION``, ``GIT~1``."""
    low = part.translate(_ASCII_LOWER)
    for stem in (".git", "git~1"):
        if low.startswith(stem) and _only_spaces_and_periods(low[len(stem) :]):
            return True
    return False


def _ntfs_dotgitmodules(part: str) -> bool:
    """``.gitmodules`` as NTFS may read it, short names (``GITMOD~1``, ``GI7EBA~9``)
    included (git's is_ntfs_dotgitmodules)."""
    low = part.translate(_ASCII_LOWER)
    if low.startswith(".gitmodules"):
        return _only_spaces_and_periods(low[len(".gitmodules") :])
    if low[:6] == "gitmod" and low[6:7] == "~" and low[7:8] in ("1", "2", "3", "4"):
        return _only_spaces_and_periods(low[8:])
    i, saw_tilde = 0, False  # the fall-back short name: a prefix of "gi7eba", ~, digits
    while i < 8:
        if i >= len(low):
            return False
        c = low[i]
        if saw_tilde:
            if not "0" <= c <= "9":
                return False
        elif c == "~":
            i += 1
            if i >= len(low) or not "1" <= low[i] <= "9":
                return False
            saw_tilde = True
        elif i >= 6 or c != "gi7eba"[i]:
            return False
        i += 1
    return _only_spaces_and_periods(low[8:])


def path_problem(path: str, mode: int | None = None) -> str | None:
    """Why git would refuse to check out ``path`` (an entry of ``mode``), or None: empty,
    absolute, NUL, a ``.``, ``..`` or ``.git`` component (also as HFS+ or NTFS would read
    one), or a symlink named ``.gitmodules``."""
    if not path:
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    if path.startswith("/"):
        return "the path is absolute"
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return f"it has a {part!r} component" if part else "it has an empty component"
        if _hfs_name(part) == ".git" or any(_ntfs_dotgit(p) for p in part.split("\\")):
            return "it has a .git component (or a name HFS+ or NTFS would read as .git)"
    if mode == MODE_LINK and (
        _hfs_name(parts[-1]) == ".gitmodules"
        or any(_ntfs_dotgitmodules(p) for p in parts[-1].split("\\"))
    ):
        return "it is a symlink named .gitmodules"
    return None


def check_path(path: str, mode: int | None = None) -> None:
    """Raise UnsafePath for a path git would refuse to check out (see ``path_problem``)."""
    problem = path_problem(path, mode)
    if problem is not None:
        raise UnsafePath(f"refusing to check out {path!r}: {problem}")


def _sort_key(entry: pygit2.Object) -> bytes:
    """git's tree order: a subtree sorts as if its name ended in '/'."""
    return entry.raw_name + (b"/" if entry.filemode == MODE_TREE else b"")


def tree_problem(repo: pygit2.Repository, old: pygit2.Tree | None, new: pygit2.Tree) -> str | None:
    """Why checking out ``new`` over ``old`` is refused, or None: a path git would refuse (see
    ``path_problem``), an entry name with '/', duplicate or unsorted entries (one name as
    both a symlink and a directory), or a tree that cannot be read. Only the subtrees that
    differ from ``old`` are visited, so the cost follows the change. Trees fetched from peers
    were already checked by ``git index-pack --strict``; trees pushed here by peers were not."""
    stack: list[tuple[str, pygit2.Tree | None, pygit2.Tree]] = [("", old, new)]
    while stack:
        prefix, before, after = stack.pop()
        try:
            entries = list(after)
        except (pygit2.GitError, ValueError) as exc:
            return f"the tree at {prefix or '/'!r} cannot be read ({exc})"
        previous: bytes | None = None
        names: set[bytes] = set()
        for entry in entries:
            path = f"{prefix}{entry.name}"
            if entry.raw_name in names:
                return f"{path!r} appears twice in one tree"
            names.add(entry.raw_name)
            key = _sort_key(entry)
            if previous is not None and key <= previous:
                return f"the tree at {prefix or '/'!r} is not sorted as git sorts trees"
            previous = key
            if "/" in entry.name:
                return f"{path!r} is one entry whose name contains '/'"
            old_entry = _entry_named(before, entry.name)
            if (
                old_entry is not None
                and old_entry.id == entry.id
                and old_entry.filemode == entry.filemode
            ):
                continue  # unchanged: already in our tree
            problem = path_problem(path, entry.filemode)
            if problem is not None:
                return f"{path!r}: {problem}"
            if entry.filemode == MODE_TREE:
                below = (
                    repo[old_entry.id]
                    if old_entry is not None and old_entry.filemode == MODE_TREE
                    else None
                )
                stack.append((f"{path}/", below, repo[entry.id]))  # type: ignore[arg-type]
    return None


def _entry_named(tree: pygit2.Tree | None, name: str) -> pygit2.Object | None:
    if tree is None:
        return None
    try:
        return tree[name]
    except (KeyError, ValueError, UnicodeError, pygit2.GitError):
        return None


def plan(old: pygit2.Tree | None, new: pygit2.Tree, changed: Iterable[str]) -> Plan:
    """For each changed path, remove it or write its new entry."""
    result = Plan()
    for path in sorted(set(changed)):
        node = entry_at(new, path)
        check_path(path, node.filemode if node is not None else None)
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
    except OSError as exc:
        if exc.errno in UNREPRESENTABLE:
            return None  # a name this filesystem cannot hold: nothing can be there
        raise
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# A name or path this filesystem cannot hold at all: too long, or bytes it refuses.
UNREPRESENTABLE = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})


def unrepresentable(root: Path, path: str) -> bool:
    """Whether ``path`` can never exist in this working tree (a name longer than the
    filesystem allows, a path longer than the system allows, bytes it refuses)."""
    full = root
    for part in path.split("/"):
        full = full / part
        try:
            os.lstat(full)
        except OSError as exc:
            return exc.errno in UNREPRESENTABLE
    return False


def inspect(
    repo: pygit2.Repository, root: Path, old: pygit2.Tree | None, paths: Iterable[str]
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
        if unrepresentable(root, path):
            stamps[path] = None  # nothing of the user's can be there
            continue
        if not check.parents_ok(path):
            dirty.append(path)  # never look, or write, through a symlinked directory
            continue
        before = stamp(root / path)
        # a file of another size is another version: never read (a 2 GiB file stays on disk)
        limit = blob_size(repo, expected)
        state = read_path(root, path, largefiles=limit)
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
        except BaseException:  # a full disk: no half-written file is left in the tree
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        finally:
            os.close(fd)
    if expect is not ... and stamp(final) != expect:
        os.unlink(temp)
        return False
    try:
        os.replace(temp, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return True


def apply(
    repo: pygit2.Repository,
    root: Path,
    work: Plan,
    stamps: dict[str, Stamp],
    failed: dict[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Carry out a plan: removals first (a file may make way for a directory), then writes,
    each atomically through a temporary file renamed into place. A path whose file changed
    since ``inspect`` stamped it is left as the user has it. A path this filesystem cannot
    hold (see ``UNREPRESENTABLE``) goes into ``failed`` with the reason, when given, and the
    rest is written. Returns (paths changed, paths left as the user has them)."""
    done: list[str] = []
    skipped: list[str] = []
    check = ParentCheck(root, lambda _dir: None)
    total = len(work.remove) + len(work.write)
    with progress("updating files", "files", total) as item:
        for path in work.remove:
            if unrepresentable(root, path):
                done.append(path)  # it never was on disk here
                continue
            if not check.parents_ok(path) or stamp(root / path) != stamps.get(path):
                skipped.append(path)
                continue
            _remove(root, path)
            done.append(path)
        count = len(work.remove)
        for path, entry in sorted(work.write.items()):
            count += 1
            item.update(count)
            expected = stamps.get(path)
            try:
                written = stamp(root / path) == expected and write_entry(
                    repo, root, path, entry, expected
                )
            except OSError as exc:
                if failed is None or exc.errno not in UNREPRESENTABLE:
                    raise
                failed[path] = exc.strerror or str(exc)
                continue
            if not written:
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
        wanted = work.write.get(path)
        state = read_path(root, path, largefiles=blob_size(repo, wanted))
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

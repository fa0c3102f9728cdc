"""Read what the working tree holds at a path: never following symlinks, never into .git,
and noticing files that change while they are read."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from assistant.changes import Entry

MODE_FILE = 0o100644
MODE_EXEC = 0o100755
MODE_LINK = 0o120000
MODE_TREE = 0o040000
# File times come from the kernel's coarse clock (one tick: 1 to 10 ms), so two writes within
# a tick leave the same mtime: a read overlapping the second is not caught by comparing stat
# before and after. A file modified this recently is read twice, and must read the same.
RACY_NS = 20_000_000


@dataclass(frozen=True)
class Present:
    """A file or symlink to commit: its entry and the bytes of its blob."""

    entry: Entry
    data: bytes


@dataclass(frozen=True)
class Absent:
    """Nothing committable at the path: deleted, or a directory where a file was."""


@dataclass(frozen=True)
class Skipped:
    """Something is there but must not be committed now; ``reason`` says why."""

    reason: str  # "large", "unreadable", "special", "unsettled", "badname"
    detail: str = ""


FileState = Present | Absent | Skipped
ABSENT = Absent()


def git_mode(st: os.stat_result) -> int:
    """git's mode for a regular file or symlink."""
    if stat.S_ISLNK(st.st_mode):
        return MODE_LINK
    return MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE


def read_path(root: Path, relpath: str, largefiles: int) -> FileState:
    """The state of one file path; parents must have been checked by the caller."""
    full = root / relpath
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT
    except OSError as exc:
        return Skipped("unreadable", exc.strerror or str(exc))
    if stat.S_ISDIR(st.st_mode):
        return ABSENT
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(os.fsencode(full))
        except FileNotFoundError:
            return ABSENT
        except OSError as exc:
            return Skipped("unreadable", exc.strerror or str(exc))
        return Present(Entry(str(pygit2.hash(target)), MODE_LINK), target)
    if not stat.S_ISREG(st.st_mode):
        return Skipped("special", "not a regular file, directory or symlink")
    if st.st_size > largefiles:
        return Skipped("large", f"{st.st_size} bytes")
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        return Skipped("unreadable", exc.strerror or str(exc))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return Skipped("unsettled", "replaced while being opened")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        return Skipped("unreadable", exc.strerror or str(exc))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size) or len(
        data
    ) != after.st_size:
        return Skipped("unsettled", "changed while being read")
    if time.time_ns() - after.st_mtime_ns < RACY_NS and _read_again(full) != data:
        return Skipped("unsettled", "changed while being read")
    return Present(Entry(str(pygit2.hash(data)), git_mode(after)), data)


def _read_again(full: Path) -> bytes | None:
    """The file's bytes once more, or None if it cannot be read now."""
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


class ParentCheck:
    """Caches, for one pass, which directories may be descended: real directories (not
    symlinks) that are not nested git repositories. A directory that cannot be looked at (no
    permission, a name too long) is not descended either, and ``problem`` says why: what lies
    below it is unknown, not gone."""

    def __init__(self, root: Path, on_nested: Callable[[str], None]) -> None:
        self.root = root
        self.on_nested = on_nested
        self._cache: dict[str, bool] = {"": True}
        self._problems: dict[str, str] = {}

    def dir_ok(self, reldir: str) -> bool:
        """True when ``reldir`` and all its parents are plain directories of this tree."""
        cached = self._cache.get(reldir)
        if cached is not None:
            return cached
        parent = reldir.rsplit("/", 1)[0] if "/" in reldir else ""
        ok = self.dir_ok(parent)
        if ok:
            full = self.root / reldir
            try:
                ok = stat.S_ISDIR(os.lstat(full).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                ok = False
            except OSError as exc:
                ok = False
                self._problems[reldir] = exc.strerror or str(exc)
            if ok and os.path.lexists(full / ".git"):
                self.on_nested(reldir)
                ok = False
        elif parent in self._problems:
            self._problems[reldir] = self._problems[parent]
        self._cache[reldir] = ok
        return ok

    def parents_ok(self, relpath: str) -> bool:
        """True when every directory above ``relpath`` may be descended."""
        return self.dir_ok(relpath.rsplit("/", 1)[0] if "/" in relpath else "")

    def dir_problem(self, reldir: str) -> str | None:
        """Why ``reldir`` itself could not be looked at, once ``dir_ok`` said no."""
        return self._problems.get(reldir)

    def problem(self, relpath: str) -> str | None:
        """Why a directory above ``relpath`` could not be looked at, once ``parents_ok``
        said no; None when it is simply not there (or a symlink, or a nested repository)."""
        return self._problems.get(relpath.rsplit("/", 1)[0] if "/" in relpath else "")


def walk_files(
    root: Path,
    reldir: str,
    skip_dir: Callable[[str], bool],
    skip_file: Callable[[str], bool],
    on_error: Callable[[str, OSError], None] = lambda _dir, _exc: None,
) -> Iterator[str]:
    """Every file and symlink path below ``reldir`` (posix, relative), never entering
    symlinked directories, .git, or directories ``skip_dir`` rejects. A directory that cannot
    be listed (no permission, a path too long) is passed to ``on_error`` and left out."""
    stack = [reldir]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(root / current if current else root) as entries:
                found = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            on_error(current, exc)
            continue
        for item in found:
            rel = f"{current}/{item.name}" if current else item.name
            if item.name == ".git":
                continue
            try:
                is_dir = item.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if not skip_dir(rel):
                    stack.append(rel)
            elif not skip_file(rel):
                yield rel

"""inotify watch limits: how many directories we need to watch against what the kernel allows."""

from __future__ import annotations

import os
from pathlib import Path

WATCH_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
FALLBACK_RESCAN = 10.0


def read_watch_limit(path: Path = WATCH_LIMIT_FILE) -> int | None:
    """The kernel's per-user inotify watch limit, or None where there is no such limit."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def count_dirs(root: Path) -> int:
    """Directories a recursive watch needs (the root, .git included; symlinks not followed)."""
    count = 0
    stack = [str(root)]
    while stack:
        current = stack.pop()
        count += 1
        try:
            with os.scandir(current) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count


def watch_shortage(dirs: int, limit: int | None, rescan: float = FALLBACK_RESCAN) -> str | None:
    """A loud explanation when ``dirs`` watches will not fit under ``limit``, else None."""
    if limit is None or dirs < limit:
        return None
    return (
        f"inotify watch limit too low: the tree has {dirs} directories but "
        f"fs.inotify.max_user_watches is {limit}; raise it, for example with "
        f"'sudo sysctl fs.inotify.max_user_watches={max(dirs * 2, 524288)}'. "
        f"Until then changes are found by rescanning every {rescan:g}s"
    )

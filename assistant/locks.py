"""Recover from a crash inside git's lock files without ever removing someone else's lock.

Before creating a git lock file (``index.lock``, ``refs/heads/x.lock``), the committer notes it
in ``.git/annexsync/locks-in-flight``; afterwards it removes the note. A successor that holds
the instance lock (so its predecessor is dead) and finds the note removes exactly those lock
files, and only when they date from the noted moment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("annexsync.locks")

MARKER = "locks-in-flight"
# Only a lock created this close to the note can be ours; a later one is a live git's.
SLACK_SECONDS = 1.0


class LockNotes:
    """Notes git lock files about to be created, and clears those a crash left behind."""

    def __init__(self, state: Path, gitdir: Path) -> None:
        self.marker = state / MARKER
        self.gitdir = gitdir

    @contextlib.contextmanager
    def creating(self, *locks: str) -> Iterator[None]:
        """Around an operation that creates (and normally removes) the given lock files."""
        with contextlib.suppress(OSError):  # without a note only the recovery is lost
            self.marker.write_text("\n".join(locks) + "\n")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.marker.unlink()

    def clear_stale(self) -> list[str]:
        """Remove lock files a crashed predecessor left; returns the ones removed."""
        try:
            noted_at = self.marker.stat().st_mtime
            names = [n for n in self.marker.read_text().splitlines() if n]
        except OSError:
            return []
        removed = []
        for name in names:
            path = self.gitdir / name
            try:
                if abs(path.stat().st_mtime - noted_at) <= SLACK_SECONDS:
                    path.unlink()
                    removed.append(name)
                    log.warning("removed %s left behind by an interrupted commit", path)
            except OSError:
                continue
        with contextlib.suppress(OSError):
            os.unlink(self.marker)
        return removed


STALE_REF_LOCK = 60.0


def clear_stale_ref_locks(
    gitdir: Path, now: float, older_than: float = STALE_REF_LOCK
) -> list[str]:
    """Remove ref locks under ``refs/remotes`` that a peer's receive-pack left when its
    connection died mid-push. receive-pack holds such a lock only for the moment it moves the
    ref (after the whole pack has arrived), so one this old is certainly abandoned; left in
    place it would make every later push from that peer fail."""
    removed = []
    for lock in (gitdir / "refs" / "remotes").rglob("*.lock"):
        try:
            if lock.is_file() and lock.stat().st_mtime < now - older_than:
                lock.unlink()
                removed.append(str(lock.relative_to(gitdir)))
                log.warning("removed %s, left by a push that was cut off", lock)
        except OSError:
            continue
    return removed

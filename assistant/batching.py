"""Pure batching policy: which changed paths make the next commit, and when it is due.

Time is passed in, nothing here touches a disk or a clock, so every rule is table-testable.

- A batch is due after a quiet window with no new event, or ``maxdelay`` after its first
  event while changes keep coming. The quiet window is ``delay`` (an editor's save: a few
  paths), and ``burst_delay`` once ``burst_paths`` paths are waiting (a copy, an unpack, a
  checkout), so a writer that pauses for a moment does not split its burst into many commits.
- A file still open for writing (written and not yet closed) stays behind until it is closed
  or its own ``maxdelay`` cap passes.
- A batch holding a path whose last event removed it waits until that removal is
  ``gone_delay`` old: editors that save by renaming the old file away and writing a new one
  must not produce a commit in which the file is briefly gone. The whole batch waits, so a
  rename (one path gone, one new) stays one commit.
"""

from __future__ import annotations

from dataclasses import dataclass

BURST_PATHS = 32
BURST_DELAY = 0.05
GONE_DELAY = 0.02


@dataclass
class _Pending:
    first: float
    last: float
    writing: bool
    gone_until: float = 0.0


class Batcher:
    """Collects changed paths and hands them out in due batches of at most ``maxbatch``."""

    def __init__(
        self,
        delay: float,
        maxdelay: float,
        maxbatch: int,
        burst_paths: int = BURST_PATHS,
        burst_delay: float | None = None,
        gone_delay: float | None = None,
    ) -> None:
        self.delay = delay
        self.maxdelay = maxdelay
        self.maxbatch = maxbatch
        self.burst_paths = burst_paths
        self.burst_delay = max(
            delay, min(BURST_DELAY if burst_delay is None else burst_delay, maxdelay)
        )
        self.gone_delay = max(
            delay, min(GONE_DELAY if gone_delay is None else gone_delay, maxdelay)
        )
        self._pending: dict[str, _Pending] = {}
        self._last_event = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def paths(self) -> list[str]:
        """Every path waiting to be committed."""
        return list(self._pending)

    def writing(self) -> list[str]:
        """Paths held because they are still open for writing."""
        return [path for path, p in self._pending.items() if p.writing]

    def note(self, path: str, now: float, writing: bool | None = None, gone: bool = False) -> None:
        """Record an event on ``path``: ``writing`` True on a write, False on a close;
        ``gone`` when the event removed the path (deleted, renamed away)."""
        pending = self._pending.get(path)
        if pending is None:
            pending = self._pending[path] = _Pending(first=now, last=now, writing=bool(writing))
        else:
            pending.last = now
            if writing is not None:
                pending.writing = writing
        pending.gone_until = now + self.gone_delay if gone else 0.0
        self._last_event = max(self._last_event, now)

    def _quiet(self) -> float:
        return self.burst_delay if len(self._pending) >= self.burst_paths else self.delay

    def _batch_due(self) -> float:
        first = min(p.first for p in self._pending.values())
        settled = max(p.gone_until for p in self._pending.values())
        return max(min(self._last_event + self._quiet(), first + self.maxdelay), settled)

    def _eligible_at(self, pending: _Pending) -> float:
        """When a path may join a due batch: at once, or after its close (or its cap)."""
        return pending.first + self.maxdelay if pending.writing else 0.0

    def deadline(self) -> float | None:
        """When ``take`` will next return something (None when nothing is pending)."""
        if not self._pending:
            return None
        soonest = min(self._eligible_at(p) for p in self._pending.values())
        return max(self._batch_due(), soonest)

    def take(self, now: float, force: bool = False, keep_writing: bool = False) -> list[str]:
        """Remove and return the paths due at ``now``, oldest first; ``force`` takes all at
        once, except, with ``keep_writing``, files still open for writing."""
        if not self._pending:
            return []
        if force:
            batch = sorted(
                (path for path, p in self._pending.items() if not (keep_writing and p.writing)),
                key=lambda path: self._pending[path].first,
            )
            for path in batch:
                del self._pending[path]
            return batch
        if now < self._batch_due():
            return []
        ready = [path for path, p in self._pending.items() if now >= self._eligible_at(p)]
        ready.sort(key=lambda path: self._pending[path].first)
        batch = ready[: self.maxbatch]
        for path in batch:
            del self._pending[path]
        return batch

    def discard(self, path: str) -> None:
        """Forget a path (it turned out to be ignored)."""
        self._pending.pop(path, None)

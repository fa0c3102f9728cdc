"""Pure batching policy: which changed paths make the next commit, and when it is due.

Time is passed in, nothing here touches a disk or a clock, so every rule is table-testable.
A batch is due after a quiet window of ``delay`` with no new event, or ``maxdelay`` after its
first event while changes keep coming. A file still open for writing (modified and not yet
closed) stays behind until it is closed or its own ``maxdelay`` cap passes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Pending:
    first: float
    last: float
    writing: bool


class Batcher:
    """Collects changed paths and hands them out in due batches of at most ``maxbatch``."""

    def __init__(self, delay: float, maxdelay: float, maxbatch: int) -> None:
        self.delay = delay
        self.maxdelay = maxdelay
        self.maxbatch = maxbatch
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

    def note(self, path: str, now: float, writing: bool | None = None) -> None:
        """Record an event on ``path``: ``writing`` True on a write, False on a close."""
        pending = self._pending.get(path)
        if pending is None:
            pending = self._pending[path] = _Pending(first=now, last=now, writing=bool(writing))
        else:
            pending.last = now
            if writing is not None:
                pending.writing = writing
        self._last_event = max(self._last_event, now)

    def _batch_due(self) -> float:
        first = min(p.first for p in self._pending.values())
        return min(self._last_event + self.delay, first + self.maxdelay)

    def _eligible(self, path: str, now: float) -> bool:
        pending = self._pending[path]
        return not pending.writing or now >= pending.first + self.maxdelay

    def deadline(self) -> float | None:
        """When ``take`` will next return something (None when nothing is pending)."""
        if not self._pending:
            return None
        due = self._batch_due()
        if any(not p.writing for p in self._pending.values()):
            return due
        return max(due, min(p.first for p in self._pending.values()) + self.maxdelay)

    def take(self, now: float, force: bool = False) -> list[str]:
        """Remove and return the paths due at ``now``, oldest first; ``force`` takes all at once."""
        if not self._pending:
            return []
        if force:
            batch = sorted(self._pending, key=lambda path: self._pending[path].first)
            self._pending.clear()
            return batch
        if now < self._batch_due():
            return []
        ready = [path for path in self._pending if self._eligible(path, now)]
        ready.sort(key=lambda path: self._pending[path].first)
        batch = ready[: self.maxbatch]
        for path in batch:
            del self._pending[path]
        return batch

    def discard(self, path: str) -> None:
        """Forget a path (it turned out to be ignored)."""
        self._pending.pop(path, None)

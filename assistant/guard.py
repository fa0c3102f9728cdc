"""Pure mass-deletion guard: decide whether a batch's deletions must be held back."""

from __future__ import annotations

from collections import deque

from assistant.config import MassDeletePolicy


def is_mass_deletion(deleted: int, tracked: int, policy: MassDeletePolicy) -> bool:
    """True when ``deleted`` of ``tracked`` files is over the policy's fraction and minimum."""
    if policy.fraction is None:
        return False
    return deleted > policy.minimum and deleted > policy.fraction * tracked


class DeletionWindow:
    """Deletions committed recently, so a large deletion split over several batches still
    counts as one: the guard judges the window's total, not each batch alone."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._events: deque[tuple[float, int]] = deque()

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.seconds:
            self._events.popleft()

    def recent(self, now: float) -> int:
        """Deletions committed within the window ending at ``now``."""
        self._expire(now)
        return sum(count for _, count in self._events)

    def record(self, now: float, count: int) -> None:
        """Remember that ``count`` deletions were committed at ``now``."""
        if count:
            self._events.append((now, count))

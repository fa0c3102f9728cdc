"""What the assistant has been doing: a short feed of recent events (commits, merges, kept
variants, held deletions, peers lost and found) and the progress of long work (large fetches
and pushes, the checkout of a big merge). ``status`` and ``status --watch`` show both, and
desktop notifications are drawn from the events.

Progress is reported from wherever the work runs (the event loop, the repository thread, a
subprocess reader) through :func:`progress`, which finds the feed of the current task or thread
in a context variable: the code doing the work needs no handle passed down to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KEEP = 50  # recent events kept for status


@dataclass(frozen=True)
class Event:
    """One thing that happened, as a human line plus the fields a program needs."""

    time: float
    kind: str  # commit, merge, variant, held, peer-lost, peer-back, push, fetch
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "text": self.text, **self.data}


@dataclass
class Progress:
    """One long piece of work. ``total`` is None while unknown; ``unit`` names what
    ``done`` and ``total`` count (objects, files, bytes)."""

    key: int
    label: str
    unit: str
    started: float
    done: int = 0
    total: int | None = None
    stage: str = ""

    def update(self, done: int, total: int | None = None, stage: str | None = None) -> None:
        """Set how far the work is (called from any thread: plain attribute writes)."""
        self.done = done
        if total is not None:
            self.total = total
        if stage is not None:
            self.stage = stage

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "stage": self.stage,
            "started": self.started,
        }


class Activity:
    """The feed: recent events, work in progress, and who is told of new events."""

    def __init__(self, keep: int = KEEP, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._running: dict[int, Progress] = {}
        self._keys = itertools.count(1)
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[Event], None]] = []
        self.clock = clock

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback`` with each new event, in the thread that emits it."""
        self._subscribers.append(callback)

    def emit(self, kind: str, text: str, **data: Any) -> Event:
        event = Event(self.clock(), kind, text, data)
        with self._lock:
            self._events.append(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber's failure must not stop the work that emitted
                log.exception("an activity subscriber failed")
        return event

    def recent(self, limit: int = KEEP) -> list[dict[str, Any]]:
        """The newest ``limit`` events, oldest first."""
        with self._lock:
            events = list(self._events)[-limit:] if limit > 0 else []
        return [e.as_dict() for e in events]

    @contextlib.contextmanager
    def track(self, label: str, unit: str, total: int | None = None) -> Iterator[Progress]:
        """Show ``label`` as work in progress for the duration of the ``with`` block."""
        with self._lock:
            item = Progress(next(self._keys), label, unit, self.clock(), total=total)
            self._running[item.key] = item
        try:
            yield item
        finally:
            with self._lock:
                self._running.pop(item.key, None)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._running.values(), key=lambda p: p.key)
        return [p.as_dict() for p in items]


_current: contextvars.ContextVar[tuple[Activity, str] | None] = contextvars.ContextVar(
    "annexsync_activity", default=None
)


@contextlib.contextmanager
def reporting_to(activity: Activity | None, context: str = "") -> Iterator[None]:
    """Send the progress of work done inside the block to ``activity``; ``context`` (a peer's
    name, say) prefixes each label."""
    token = _current.set((activity, context) if activity is not None else None)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def labelled(context: str) -> Iterator[None]:
    """Prefix the labels of work inside the block with ``context`` (a peer's name), in
    whichever feed is current."""
    current = _current.get()
    token = _current.set((current[0], context) if current is not None else None)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def progress(label: str, unit: str, total: int | None = None) -> Iterator[Progress]:
    """A :class:`Progress` shown in the current feed, or a detached one when nobody asked
    for progress (the one-shot commands): callers update it the same way either way."""
    current = _current.get()
    if current is None:
        yield Progress(0, label, unit, time.time(), total=total)
        return
    activity, context = current
    with activity.track(f"{context}: {label}" if context else label, unit, total) as item:
        yield item

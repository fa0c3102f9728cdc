"""Pure per-peer bookkeeping for the assistant: retry backoff and each remote's status record.

Nothing here touches a disk, a socket or a clock: the current time (wall-clock seconds since
the epoch) and a random source are passed in, so every rule is table-testable.

- ``Backoff`` says how long to wait after the n-th consecutive failure: exponential from
  ``initial`` doubling up to ``cap``, with *equal jitter*, and never below ``floor``.
- ``PeerStatus`` is one remote's record (state, last success, last error, failures, next retry,
  pending push). Transitions are methods returning a new record; the record itself is frozen,
  so a status snapshot handed to ``annexsync status`` can never change under the reader.

Times are wall-clock so that ``describe`` can say "offline since 12:01:03" and ``status --json``
can give absolute times. A wall-clock jump (resume from sleep, a clock set backwards) is for the
caller to notice; it answers with ``on_retry_now``, which is exactly the issue's "resume from
sleep triggers an immediate retry".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from enum import Enum
from typing import Any, Protocol

DEFAULT_INITIAL = 1.0
DEFAULT_CAP = 300.0
DEFAULT_FLOOR = 0.5
ERROR_LINE_MAX = 200


class Rng(Protocol):
    """The random source: anything with ``random() -> float`` in [0, 1), e.g. ``random.Random``."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Backoff:
    """Retry delays after consecutive failures: exponential with equal jitter, capped, floored.

    The upper bound after ``n`` failures is ``initial * 2**(n-1)``, at most ``cap``; the delay
    is drawn uniformly from the upper half of it, ``[upper/2, upper)``, then raised to ``floor``.

    Why equal jitter rather than full jitter (uniform in ``[0, upper)``): full jitter spreads
    retries best when many clients hammer one server, but it can also pick a delay near zero
    at any failure count, so a peer that has been down for an hour might be retried a few
    milliseconds after its last failure. Equal jitter still spreads retries (nodes retrying one
    hub after it restarts do not arrive in lockstep) while guaranteeing the wait really grows
    with the failure count. The ``floor`` bounds the retry rate even when ``initial`` is set
    tiny, so a peer that fails instantly (connection refused) cannot make the assistant spin.

    Resetting on success is the record's job: ``PeerStatus.on_success`` sets failures to 0.
    """

    initial: float = DEFAULT_INITIAL
    cap: float = DEFAULT_CAP
    floor: float = DEFAULT_FLOOR

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.floor > 0):
            raise ValueError(f"backoff initial and floor must be positive: {self}")
        if self.cap < self.floor:
            raise ValueError(f"backoff cap {self.cap} is below its floor {self.floor}")

    def upper(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures (at least 1 is assumed).

        Non-decreasing in ``failures``, and within ``[floor, cap]``.
        """
        exponent = min(max(failures, 1) - 1, 1023)  # 2.0**1024 would overflow
        return max(self.floor, min(self.cap, self.initial * 2.0**exponent))

    def lower(self, failures: int) -> float:
        """The smallest delay after ``failures`` consecutive failures."""
        return max(self.floor, self.upper(failures) / 2)

    def next_delay(self, failures: int, rng: Rng) -> float:
        """Seconds to wait before the next attempt, after ``failures`` consecutive failures."""
        upper = self.upper(failures)
        return max(self.floor, upper / 2 + rng.random() * upper / 2)


class PeerState(Enum):
    """What the assistant knows about a peer right now; each state carries a description."""

    description: str

    def __new__(cls, value: str, description: str) -> PeerState:
        member = object.__new__(cls)
        member._value_ = value
        member.description = description
        return member

    CONNECTED = "connected", "the last sync succeeded; nothing is in flight"
    SYNCING = "syncing", "a sync with this peer is in progress"
    OFFLINE = "offline", "not reached yet or the last attempt failed; waiting for the next retry"
    RETRYING = "retrying", "a retry is in progress after one or more failures"
    DISABLED = "disabled", "sync with this peer is turned off; it is never retried"
    ABSENT = "absent", "a drive that is not mounted; synced the moment it appears"


def one_line(error: str | BaseException) -> str:
    """An error as one short line: the first non-blank line, at most ``ERROR_LINE_MAX`` chars.

    Status output is one line per peer, and git or ssh errors are often multi-line.
    """
    text = str(error).strip()
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) > ERROR_LINE_MAX:
        line = line[: ERROR_LINE_MAX - 1] + "…"
    return line


def format_duration(seconds: float) -> str:
    """A short human duration, rounded up so a retry is never announced "in 0s": 8s, 2m05s,
    1h02m."""
    total = max(0, math.ceil(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def format_time(when: float, now: float, tz: tzinfo | None = None) -> str:
    """Clock time of ``when`` ("12:01:03"), with the date too when it is not ``now``'s day."""
    moment = datetime.fromtimestamp(when, tz)
    if moment.date() == datetime.fromtimestamp(now, tz).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class PeerStatus:
    """One remote's status. A fresh record is OFFLINE with no failures and due at once: at
    startup the assistant syncs with every peer.

    ``offline_since`` is the first failure of the current run of failures and ``last_failure``
    the latest; ``next_retry_at`` is None when nothing is scheduled (or, while OFFLINE with no
    failures, when the first attempt is due now). ``pending_push`` says local commits have not
    reached this peer yet.
    """

    remote: str
    state: PeerState = PeerState.OFFLINE
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0
    next_retry_at: float | None = None
    pending_push: bool = False
    offline_since: float | None = None
    last_failure: float | None = None
    backoff: Backoff = field(default_factory=Backoff, compare=False)

    # -- transitions -------------------------------------------------------------------------

    def on_attempt(self) -> PeerStatus:
        """A sync with the peer starts: SYNCING, or RETRYING when it follows failures."""
        if self.state is PeerState.DISABLED:
            return self
        state = PeerState.RETRYING if self.failures else PeerState.SYNCING
        return replace(self, state=state, next_retry_at=None)

    def on_success(self, now: float, pending_push: bool = False) -> PeerStatus:
        """A sync succeeded: CONNECTED, failures reset (so the backoff starts over).

        ``pending_push`` is for the caller to say that commits made during the sync are still
        to be pushed. ``last_error`` is kept: status shows the last error even once recovered.
        """
        if self.state is PeerState.DISABLED:
            return self
        return replace(
            self,
            state=PeerState.CONNECTED,
            last_success=now,
            failures=0,
            next_retry_at=None,
            pending_push=pending_push,
            offline_since=None,
            last_failure=None,
        )

    def on_failure(self, now: float, error: str | BaseException, rng: Rng) -> PeerStatus:
        """A sync failed: OFFLINE, one more failure, next retry scheduled by the backoff."""
        if self.state is PeerState.DISABLED:
            return self
        failures = self.failures + 1
        return replace(
            self,
            state=PeerState.OFFLINE,
            last_error=one_line(error),
            failures=failures,
            next_retry_at=now + self.backoff.next_delay(failures, rng),
            offline_since=now if self.offline_since is None else self.offline_since,
            last_failure=now,
        )

    def on_retry_now(self, now: float) -> PeerStatus:
        """Something changed that may have brought the peer back (resume from sleep, network
        change, drive mounted): an OFFLINE peer becomes due now.

        The failure count is kept, so if the peer is still gone the backoff carries on where it
        was instead of starting over at 1 s. The one exception to "now" is the floor: within
        ``backoff.floor`` of the last failure the retry waits for the floor, so a flapping
        trigger cannot make a dead peer spin. A clock that went backwards (``now`` before the
        last failure) gives no such wait. Other states are left alone: a sync in flight, a
        connected peer and a disabled one have nothing to retry.
        """
        if self.state is not PeerState.OFFLINE:
            return self
        at = now
        if self.last_failure is not None and 0 <= now - self.last_failure < self.backoff.floor:
            at = self.last_failure + self.backoff.floor
        if self.next_retry_at is not None and self.next_retry_at <= at:
            return self
        return replace(self, next_retry_at=at)

    def on_absent(self, now: float) -> PeerStatus:
        """The peer's path is not there (a drive not mounted): ABSENT, quietly, with nothing
        scheduled; its mount, not a timer, brings it back. The failure count restarts."""
        if self.state is PeerState.DISABLED:
            return self
        return replace(
            self,
            state=PeerState.ABSENT,
            failures=0,
            next_retry_at=None,
            offline_since=self.offline_since if self.offline_since is not None else now,
            last_failure=None,
        )

    def on_present(self) -> PeerStatus:
        """An ABSENT peer's drive appeared: OFFLINE and due now."""
        if self.state is not PeerState.ABSENT:
            return self
        return replace(self, state=PeerState.OFFLINE, next_retry_at=None)

    def on_pending(self) -> PeerStatus:
        """Local commits this peer does not have yet."""
        return self if self.pending_push else replace(self, pending_push=True)

    def on_disable(self) -> PeerStatus:
        """Sync with the peer was turned off: DISABLED, never due."""
        return replace(self, state=PeerState.DISABLED, next_retry_at=None)

    def on_enable(self) -> PeerStatus:
        """Sync was turned back on: a fresh start, due now, history (last success, error)
        kept."""
        if self.state is not PeerState.DISABLED:
            return self
        return replace(
            self,
            state=PeerState.OFFLINE,
            failures=0,
            next_retry_at=None,
            offline_since=None,
            last_failure=None,
        )

    # -- queries -----------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether the assistant should start an attempt with this peer at ``now``."""
        if self.state is not PeerState.OFFLINE:
            return False
        return self.next_retry_at is None or now >= self.next_retry_at

    def as_dict(self) -> dict[str, Any]:
        """The record for ``status --json``: plain JSON types, times as epoch seconds."""
        return {
            "remote": self.remote,
            "state": self.state.value,
            "state_description": self.state.description,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failures": self.failures,
            "next_retry_at": self.next_retry_at,
            "pending_push": self.pending_push,
            "offline_since": self.offline_since,
        }

    def describe(self, now: float, tz: tzinfo | None = None) -> str:
        """One human line for ``annexsync status``, e.g.
        "offline since 12:01:03, retrying at 12:01:11 (in 8s): connection refused".

        ``tz`` is the zone clock times are shown in (None: the local zone).
        """
        parts: list[str] = []
        state = self.state
        if state in (PeerState.OFFLINE, PeerState.RETRYING) and self.offline_since is not None:
            parts.append(f"offline since {format_time(self.offline_since, now, tz)}")
            if state is PeerState.RETRYING:
                parts.append("retrying now")
            elif self.due(now):
                parts.append("retry due")
            elif self.next_retry_at is not None:
                parts.append(
                    f"retrying at {format_time(self.next_retry_at, now, tz)} "
                    f"(in {format_duration(self.next_retry_at - now)})"
                )
        elif state is PeerState.OFFLINE:
            parts.append("not synced yet, due" if self.due(now) else "not synced yet")
        elif state is PeerState.ABSENT:
            parts.append("not present (drive not mounted?)")
            if self.last_success is not None:
                parts.append(f"last sync {format_time(self.last_success, now, tz)}")
        else:
            parts.append(state.value)
            if state is not PeerState.DISABLED:
                if self.last_success is None:
                    parts.append("never synced")
                else:
                    parts.append(f"last sync {format_time(self.last_success, now, tz)}")
        if self.pending_push:
            parts.append("push pending")
        line = ", ".join(parts)
        if state in (PeerState.OFFLINE, PeerState.RETRYING) and self.failures and self.last_error:
            line += f": {self.last_error}"
        return line

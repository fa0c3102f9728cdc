"""Per-peer bookkeeping: the backoff sequence, the status transitions and their wording."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.peerstate import (
    Backoff,
    PeerState,
    PeerStatus,
    format_duration,
    one_line,
)

# 12:01:03 UTC on a fixed day; every describe() test shows times in UTC.
T0 = datetime(2024, 5, 1, 12, 1, 3, tzinfo=UTC).timestamp()


@dataclass
class FixedRng:
    """A random source that always returns the same value."""

    value: float

    def random(self) -> float:
        return self.value


LOW = FixedRng(0.0)
HIGH = FixedRng(0.999999)
MID = FixedRng(0.5)


# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "lower", "upper"),
    [
        pytest.param(1, 0.5, 1.0, id="first-failure"),
        pytest.param(2, 1.0, 2.0, id="second-doubles"),
        pytest.param(3, 2.0, 4.0, id="third"),
        pytest.param(9, 128.0, 256.0, id="ninth-below-cap"),
        pytest.param(10, 150.0, 300.0, id="tenth-capped"),
        pytest.param(50, 150.0, 300.0, id="stays-capped"),
        pytest.param(5000, 150.0, 300.0, id="huge-count-no-overflow"),
        pytest.param(0, 0.5, 1.0, id="zero-treated-as-one"),
    ],
)
def test_default_backoff_bounds(failures: int, lower: float, upper: float) -> None:
    b = Backoff()
    assert b.lower(failures) == lower
    assert b.upper(failures) == upper
    assert b.next_delay(failures, LOW) == lower
    assert lower < b.next_delay(failures, MID) < upper
    assert upper * 0.999 < b.next_delay(failures, HIGH) <= upper


@pytest.mark.parametrize(
    ("backoff", "failures", "rng", "expected"),
    [
        pytest.param(Backoff(initial=0.01, floor=0.5), 1, HIGH, 0.5, id="floor-beats-tiny-initial"),
        pytest.param(Backoff(initial=0.01, floor=0.5), 3, LOW, 0.5, id="floor-on-low-draw"),
        pytest.param(Backoff(initial=0.01, floor=0.5), 8, LOW, 0.64, id="grows-past-floor"),
        pytest.param(Backoff(initial=2, cap=10), 4, LOW, 5.0, id="custom-cap-low"),
        pytest.param(Backoff(initial=2, cap=10), 4, MID, 7.5, id="custom-cap-mid"),
        pytest.param(Backoff(floor=1, cap=1), 7, HIGH, 1.0, id="cap-equals-floor"),
    ],
)
def test_backoff_floor_and_cap(
    backoff: Backoff, failures: int, rng: FixedRng, expected: float
) -> None:
    assert backoff.next_delay(failures, rng) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"initial": 0}, id="zero-initial"),
        pytest.param({"floor": 0}, id="zero-floor"),
        pytest.param({"floor": 10, "cap": 5}, id="cap-below-floor"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_success_resets_the_backoff() -> None:
    s = PeerStatus("hub")
    for i in range(6):
        s = s.on_attempt().on_failure(T0 + i, "connection refused", LOW)
    assert s.failures == 6
    assert s.next_retry_at == T0 + 5 + 16.0
    s = s.on_attempt().on_success(T0 + 100)
    assert s.failures == 0
    s = s.on_attempt().on_failure(T0 + 200, "connection refused", LOW)
    assert s.failures == 1
    assert s.next_retry_at == T0 + 200 + 0.5


# -- transitions -------------------------------------------------------------------------------


def failed(times: int = 1, at: float = T0, error: str = "connection refused") -> PeerStatus:
    s = PeerStatus("laptop")
    for _ in range(times):
        s = s.on_attempt().on_failure(at, error, LOW)
    return s


@pytest.mark.parametrize(
    ("start", "step", "state", "failures", "due_at_t0"),
    [
        pytest.param(PeerStatus("p"), lambda s: s, PeerState.OFFLINE, 0, True, id="fresh-is-due"),
        pytest.param(
            PeerStatus("p"), lambda s: s.on_attempt(), PeerState.SYNCING, 0, False, id="attempt"
        ),
        pytest.param(
            failed(2),
            lambda s: s.on_attempt(),
            PeerState.RETRYING,
            2,
            False,
            id="attempt-after-fail",
        ),
        pytest.param(
            PeerStatus("p"),
            lambda s: s.on_attempt().on_success(T0),
            PeerState.CONNECTED,
            0,
            False,
            id="success",
        ),
        pytest.param(failed(1), lambda s: s, PeerState.OFFLINE, 1, False, id="failure-waits"),
        pytest.param(
            failed(3),
            lambda s: s.on_retry_now(T0 + 60),
            PeerState.OFFLINE,
            3,
            False,
            id="retry-now-keeps-count",
        ),
        pytest.param(
            failed(1), lambda s: s.on_disable(), PeerState.DISABLED, 1, False, id="disable"
        ),
        pytest.param(
            failed(1),
            lambda s: s.on_disable().on_retry_now(T0 + 60).on_attempt(),
            PeerState.DISABLED,
            1,
            False,
            id="disabled-ignores-triggers",
        ),
        pytest.param(
            failed(4),
            lambda s: s.on_disable().on_enable(),
            PeerState.OFFLINE,
            0,
            True,
            id="enable-starts-fresh",
        ),
        pytest.param(
            PeerStatus("p").on_attempt().on_success(T0),
            lambda s: s.on_retry_now(T0 + 5),
            PeerState.CONNECTED,
            0,
            False,
            id="retry-now-leaves-connected-alone",
        ),
    ],
)
def test_transitions(
    start: PeerStatus,
    step: Callable[[PeerStatus], PeerStatus],
    state: PeerState,
    failures: int,
    due_at_t0: bool,
) -> None:
    s = step(start)
    assert s.state is state
    assert s.failures == failures
    assert s.due(T0) is due_at_t0


def test_failure_records_the_error_and_keeps_offline_since() -> None:
    s = failed(1, at=T0, error="ssh: connect to host x port 22:\n  Connection refused\n")
    assert s.last_error == "ssh: connect to host x port 22:"
    assert s.offline_since == T0
    s = s.on_attempt().on_failure(T0 + 10, OSError("network is unreachable"), LOW)
    assert s.offline_since == T0
    assert s.last_failure == T0 + 10
    assert s.last_error == "network is unreachable"
    assert s.next_retry_at == T0 + 10 + 1.0


def test_success_keeps_last_error_and_takes_pending_push() -> None:
    s = failed(2).on_attempt().on_success(T0 + 30, pending_push=True)
    assert s.last_error == "connection refused"
    assert s.pending_push
    assert s.offline_since is None and s.next_retry_at is None
    assert not s.on_attempt().on_success(T0 + 40).pending_push


def test_transitions_return_new_records() -> None:
    s = PeerStatus("p")
    t = s.on_attempt()
    assert s.state is PeerState.OFFLINE and t.state is PeerState.SYNCING


@pytest.mark.parametrize(
    ("since_failure", "due_in"),
    [
        pytest.param(60.0, 0.0, id="long-after-failure-now"),
        pytest.param(0.5, 0.0, id="exactly-floor-now"),
        pytest.param(0.2, 0.3, id="within-floor-waits-for-floor"),
        pytest.param(-3600.0, 0.0, id="clock-went-back-now"),
    ],
)
def test_retry_now_respects_the_floor(since_failure: float, due_in: float) -> None:
    s = failed(8, at=T0)  # next retry in minutes
    now = T0 + since_failure
    r = s.on_retry_now(now)
    assert r.next_retry_at == pytest.approx(now + due_in)
    assert r.due(now + due_in)
    assert r.failures == 8


def test_retry_now_never_postpones() -> None:
    s = failed(1, at=T0)  # due at T0 + 0.5
    assert s.on_retry_now(T0 + 0.1) == s


# -- describe / as_dict ------------------------------------------------------------------------


def with_push_pending(s: PeerStatus) -> PeerStatus:
    return replace(s, pending_push=True)


@pytest.mark.parametrize(
    ("status", "now", "line"),
    [
        pytest.param(PeerStatus("p"), T0, "not synced yet, due", id="fresh"),
        pytest.param(PeerStatus("p").on_attempt(), T0, "syncing, never synced", id="first-sync"),
        pytest.param(
            PeerStatus("p").on_attempt().on_success(T0),
            T0 + 5,
            "connected, last sync 12:01:03",
            id="connected",
        ),
        pytest.param(
            PeerStatus("p").on_attempt().on_success(T0, pending_push=True),
            T0 + 5,
            "connected, last sync 12:01:03, push pending",
            id="connected-pending",
        ),
        pytest.param(
            PeerStatus("p").on_attempt().on_success(T0).on_attempt(),
            T0 + 5,
            "syncing, last sync 12:01:03",
            id="syncing-again",
        ),
        pytest.param(
            PeerStatus("p").on_attempt().on_success(T0),
            T0 + 86400,
            "connected, last sync 2024-05-01 12:01:03",
            id="other-day-shows-date",
        ),
        pytest.param(
            failed(4, at=T0).on_retry_now(T0 + 100).on_attempt().on_failure(T0 + 100, "x", LOW),
            T0 + 100,
            "offline since 12:01:03, retrying at 12:02:51 (in 8s): x",
            id="waiting",
        ),
        pytest.param(
            failed(1, at=T0),
            T0 + 0.2,
            "offline since 12:01:03, retrying at 12:01:03 (in 1s): connection refused",
            id="rounds-up",
        ),
        pytest.param(
            failed(10, at=T0),
            T0,
            "offline since 12:01:03, retrying at 12:03:33 (in 2m30s): connection refused",
            id="minutes",
        ),
        pytest.param(
            failed(1, at=T0),
            T0 + 5,
            "offline since 12:01:03, retry due: connection refused",
            id="due",
        ),
        pytest.param(
            failed(2, at=T0).on_attempt(),
            T0 + 5,
            "offline since 12:01:03, retrying now: connection refused",
            id="retrying",
        ),
        pytest.param(
            with_push_pending(failed(1, at=T0)),
            T0,
            "offline since 12:01:03, retrying at 12:01:03 (in 1s), push pending: "
            "connection refused",
            id="offline-pending",
        ),
        pytest.param(failed(1).on_disable(), T0, "disabled", id="disabled"),
    ],
)
def test_describe(status: PeerStatus, now: float, line: str) -> None:
    assert status.describe(now, tz=UTC) == line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(-4, "0s", id="past"),
        pytest.param(7.01, "8s", id="rounds-up"),
        pytest.param(59.5, "1m00s", id="minute"),
        pytest.param(125, "2m05s", id="minutes"),
        pytest.param(3720, "1h02m", id="hours"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("error", "line"),
    [
        pytest.param("\n\n  fatal: bad\nmore\n", "fatal: bad", id="first-nonblank-line"),
        pytest.param(TimeoutError(), "TimeoutError", id="empty-exception-uses-type"),
        pytest.param("x" * 500, "x" * 199 + "…", id="truncated"),
    ],
)
def test_one_line(error: str | BaseException, line: str) -> None:
    assert one_line(error) == line


def test_as_dict_is_json_ready() -> None:
    s = with_push_pending(failed(3, at=T0))
    d = json.loads(json.dumps(s.as_dict()))
    assert d == {
        "remote": "laptop",
        "state": "offline",
        "state_description": PeerState.OFFLINE.description,
        "last_success": None,
        "last_error": "connection refused",
        "failures": 3,
        "next_retry_at": T0 + 2.0,
        "pending_push": True,
        "offline_since": T0,
    }


def test_every_state_has_a_description() -> None:
    assert [s.value for s in PeerState] == [
        "connected",
        "syncing",
        "offline",
        "retrying",
        "disabled",
        "absent",
    ]
    assert all(s.description for s in PeerState)


# -- properties --------------------------------------------------------------------------------

backoffs = st.builds(
    lambda floor, initial, extra: Backoff(initial=initial, cap=floor + extra, floor=floor),
    st.floats(0.01, 10),
    st.floats(0.001, 100),
    st.floats(0, 1000),
)
failure_counts = st.integers(0, 2000)


@given(backoffs, failure_counts, st.floats(0, 1, exclude_max=True))
def test_delay_within_floor_and_cap(b: Backoff, failures: int, draw: float) -> None:
    delay = b.next_delay(failures, FixedRng(draw))
    assert b.floor <= delay <= b.cap
    assert b.lower(failures) <= delay <= b.upper(failures)


@given(backoffs, failure_counts)
def test_upper_bound_never_decreases(b: Backoff, failures: int) -> None:
    assert b.upper(failures) <= b.upper(failures + 1)
    assert b.lower(failures) <= b.lower(failures + 1)


@given(
    st.integers(1, 40),
    st.floats(0, 1e6),
    st.floats(0, 1e6),
    st.integers(0, 2**32),
)
def test_retry_now_makes_offline_peer_due(
    failures: int, offset: float, gap: float, seed: int
) -> None:
    rng = random.Random(seed)
    s = PeerStatus("p")
    for _ in range(failures):
        s = s.on_attempt().on_failure(T0 + offset, "down", rng)
    now = T0 + offset + gap
    r = s.on_retry_now(now)
    assert r.failures == failures
    assert r.due(now + r.backoff.floor)
    if gap >= r.backoff.floor:
        assert r.due(now)


def test_absent_drive_is_quiet_and_never_due() -> None:
    status = failed(3).on_absent(T0 + 5)
    assert status.state is PeerState.ABSENT
    assert status.failures == 0
    assert status.next_retry_at is None
    assert not status.due(T0 + 10_000)
    assert status.on_retry_now(T0 + 6) == status  # a network change does not wake a drive
    assert status.describe(T0 + 6, UTC).startswith("not present (drive not mounted?)")


def test_present_drive_is_due_at_once_and_keeps_pending_push() -> None:
    status = PeerStatus("usb").on_pending().on_absent(T0).on_present()
    assert status.state is PeerState.OFFLINE
    assert status.due(T0)
    assert status.pending_push


def test_present_leaves_other_states_alone() -> None:
    status = failed(2)
    assert status.on_present() == status

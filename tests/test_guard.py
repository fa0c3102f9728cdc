"""The mass-deletion guard: when a batch's deletions must be held, and the deletion window."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.config import MassDeletePolicy
from assistant.guard import DeletionWindow, is_mass_deletion

DEFAULT = MassDeletePolicy()


@pytest.mark.parametrize(
    ("deleted", "tracked", "held"),
    [
        (0, 0, False),
        (1, 1, False),
        (20, 20, False),
        (21, 21, True),
        (21, 40, True),
        (21, 42, False),
        (20, 30, False),
        (30, 100, False),
        (51, 100, True),
        (50, 100, False),
        (600, 1000, True),
        (499, 1000, False),
    ],
    ids=[
        "nothing",
        "single-file-repo",
        "twenty-of-twenty",
        "twenty-one-of-twenty-one",
        "over-half-and-over-twenty",
        "exactly-half",
        "over-half-but-only-twenty",
        "under-half",
        "just-over-half",
        "exactly-half-of-hundred",
        "most-of-a-large-tree",
        "under-half-of-a-large-tree",
    ],
)
def test_default_policy_holds_over_half_and_over_twenty(
    deleted: int, tracked: int, held: bool
) -> None:
    assert is_mass_deletion(deleted, tracked, DEFAULT) is held


@pytest.mark.parametrize(
    ("policy", "deleted", "tracked", "held"),
    [
        (MassDeletePolicy(0.3, 20), 31, 100, True),
        (MassDeletePolicy(0.3, 20), 30, 100, False),
        (MassDeletePolicy(0.5, 0), 1, 1, True),
        (MassDeletePolicy(0.5, 0), 0, 0, False),
        (MassDeletePolicy(0.0, 5), 6, 1000, True),
        (MassDeletePolicy(1.0, 0), 10, 10, False),
        (MassDeletePolicy(fraction=None), 10_000, 10_000, False),
    ],
    ids=[
        "thirty-percent-over",
        "thirty-percent-at",
        "no-minimum-one-of-one",
        "no-minimum-nothing",
        "zero-percent-means-minimum-only",
        "hundred-percent-never-holds",
        "off",
    ],
)
def test_configured_policy_sets_the_thresholds(
    policy: MassDeletePolicy, deleted: int, tracked: int, held: bool
) -> None:
    assert is_mass_deletion(deleted, tracked, policy) is held


@given(
    deleted=st.integers(min_value=0, max_value=10_000),
    extra=st.integers(min_value=0, max_value=10_000),
    fraction=st.floats(min_value=0, max_value=1),
    minimum=st.integers(min_value=0, max_value=100),
)
def test_guard_is_monotonic_in_the_number_deleted(
    deleted: int, extra: int, fraction: float, minimum: int
) -> None:
    tracked = deleted + extra
    policy = MassDeletePolicy(fraction, minimum)
    if is_mass_deletion(deleted, tracked, policy):
        assert is_mass_deletion(deleted + 1, tracked, policy)
    if deleted <= minimum:
        assert not is_mass_deletion(deleted, tracked, policy)


def test_empty_window_counts_nothing() -> None:
    assert DeletionWindow().recent(0.0) == 0


def test_window_sums_deletions_recorded_within_it() -> None:
    window = DeletionWindow(seconds=30)
    window.record(0.0, 5)
    window.record(10.0, 7)
    window.record(20.0, 0)
    assert window.recent(20.0) == 12


def test_window_forgets_deletions_older_than_its_length() -> None:
    window = DeletionWindow(seconds=30)
    window.record(0.0, 5)
    window.record(10.0, 7)
    assert window.recent(30.0) == 12, "an event exactly at the edge still counts"
    assert window.recent(30.5) == 7
    assert window.recent(40.5) == 0


def test_deletion_split_over_batches_is_still_seen_as_one() -> None:
    window = DeletionWindow()
    tracked = 40
    for i in range(3):
        batch = 7
        assert not is_mass_deletion(batch, tracked, DEFAULT)
        window.record(float(i), batch)
    total = window.recent(3.0)
    assert total == 21
    assert is_mass_deletion(total, tracked, DEFAULT)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=0, max_value=50)),
        max_size=30,
    ),
    st.floats(min_value=1, max_value=20),
)
def test_window_total_matches_the_events_inside_it(
    events: list[tuple[float, int]], seconds: float
) -> None:
    window = DeletionWindow(seconds=seconds)
    now = 0.0
    history: list[tuple[float, int]] = []
    for dt, count in events:
        now += dt
        window.record(now, count)
        history.append((now, count))
        expected = sum(c for t, c in history if t >= now - seconds)
        assert window.recent(now) == expected

"""The batching policy: quiet window, maxdelay cap, maxbatch, and files held while written."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.batching import Batcher

DELAY = 0.005
MAXDELAY = 1.0


def make(maxbatch: int = 100) -> Batcher:
    return Batcher(delay=DELAY, maxdelay=MAXDELAY, maxbatch=maxbatch)


def test_empty_batcher_has_no_deadline_and_gives_nothing() -> None:
    b = make()
    assert len(b) == 0
    assert b.deadline() is None
    assert b.take(100.0) == []
    assert b.take(100.0, force=True) == []


def test_single_change_waits_for_the_quiet_window() -> None:
    b = make()
    b.note("a", 10.0)
    assert b.deadline() == pytest.approx(10.0 + DELAY)
    assert b.take(10.0 + DELAY / 2) == []
    assert b.take(10.0 + DELAY) == ["a"]
    assert len(b) == 0
    assert b.deadline() is None


def test_each_new_event_restarts_the_quiet_window() -> None:
    b = make()
    for i, t in enumerate([0.0, 0.004, 0.008]):
        b.note(f"f{i}", t)
    assert b.take(0.010) == []
    assert b.deadline() == pytest.approx(0.008 + DELAY)
    assert b.take(0.008 + DELAY) == ["f0", "f1", "f2"]


def test_an_editor_save_burst_becomes_one_batch() -> None:
    b = make()
    # write to a temp name, fsync, rename over the file, chmod: all within a millisecond
    for t in (0.0, 0.0002, 0.0004, 0.0007):
        b.note("notes/todo.md", t)
    b.note("notes/other.md", 0.0009)
    assert b.take(0.0009 + DELAY) == ["notes/todo.md", "notes/other.md"]
    assert b.take(1.0) == []


def test_changes_that_keep_coming_are_committed_at_maxdelay() -> None:
    b = make()
    t = 0.0
    while t < MAXDELAY + 0.5:
        b.note(f"f{int(t * 1000)}", t)
        t += DELAY / 2
        if t < MAXDELAY:
            assert b.take(t) == [], "nothing is due while changes keep coming"
    assert b.deadline() == pytest.approx(MAXDELAY)
    batch = b.take(MAXDELAY)
    assert batch and batch[0] == "f0"


def test_maxdelay_counts_from_a_paths_first_event_even_when_noted_again() -> None:
    b = make()
    b.note("a", 0.0)
    for i in range(1, 400):
        b.note("a", i * 0.003)
    assert b.deadline() == pytest.approx(MAXDELAY)
    assert b.take(MAXDELAY) == ["a"]


@pytest.mark.parametrize(
    ("count", "maxbatch", "sizes"),
    [(5, 2, [2, 2, 1]), (4, 4, [4]), (3, 10, [3]), (7, 1, [1] * 7)],
    ids=["split-in-three", "exactly-full", "under-the-cap", "one-at-a-time"],
)
def test_batches_hold_at_most_maxbatch_paths_oldest_first(
    count: int, maxbatch: int, sizes: list[int]
) -> None:
    b = make(maxbatch)
    for i in range(count):
        b.note(f"f{i}", i * 0.001)
    now = (count - 1) * 0.001 + DELAY
    got: list[list[str]] = []
    while len(b):
        got.append(b.take(now))
    assert [len(batch) for batch in got] == sizes
    assert [p for batch in got for p in batch] == [f"f{i}" for i in range(count)]


def test_file_open_for_writing_is_held_while_others_are_committed() -> None:
    b = make()
    b.note("big.iso", 0.0, writing=True)
    b.note("note.md", 0.001)
    assert b.writing() == ["big.iso"]
    assert b.take(0.001 + DELAY) == ["note.md"]
    assert b.paths() == ["big.iso"]
    assert b.take(0.5) == []


def test_file_is_taken_after_it_is_closed_and_the_window_passes() -> None:
    b = make()
    b.note("big.iso", 0.0, writing=True)
    b.note("big.iso", 0.1, writing=True)
    assert b.take(0.2) == []
    b.note("big.iso", 0.3, writing=False)
    assert b.writing() == []
    assert b.deadline() == pytest.approx(0.3 + DELAY)
    assert b.take(0.3 + DELAY / 2) == []
    assert b.take(0.3 + DELAY) == ["big.iso"]


def test_file_never_closed_is_taken_at_its_cap() -> None:
    b = make()
    b.note("log.txt", 0.0, writing=True)
    assert b.deadline() == pytest.approx(MAXDELAY)
    assert b.take(MAXDELAY - 0.001) == []
    assert b.take(MAXDELAY) == ["log.txt"]


def test_event_without_write_or_close_keeps_the_writing_state() -> None:
    b = make()
    b.note("a", 0.0, writing=True)
    b.note("a", 0.001)
    assert b.writing() == ["a"]
    b.note("a", 0.002, writing=False)
    b.note("a", 0.003)
    assert b.writing() == []


def test_deadline_with_only_writing_files_is_the_oldest_cap() -> None:
    b = make()
    b.note("a", 0.2, writing=True)
    b.note("b", 0.1, writing=True)
    assert b.deadline() == pytest.approx(0.1 + MAXDELAY)
    assert b.take(0.1 + MAXDELAY) == ["b"]
    assert b.take(0.2 + MAXDELAY) == ["a"]


def test_force_takes_everything_at_once_including_files_being_written() -> None:
    b = make(maxbatch=2)
    b.note("c", 0.3)
    b.note("a", 0.1, writing=True)
    b.note("b", 0.2)
    b.note("d", 0.4)
    assert b.take(0.4, force=True) == ["a", "b", "c", "d"]
    assert len(b) == 0


def test_a_forced_take_before_a_merge_leaves_files_being_written_pending() -> None:
    b = make(maxbatch=2)
    b.note("c", 0.3)
    b.note("a", 0.1, writing=True)
    b.note("b", 0.2)
    assert b.take(0.4, force=True, keep_writing=True) == ["b", "c"]
    assert b.writing() == ["a"] and len(b) == 1
    b.note("a", 0.5, writing=False)  # closed
    assert b.take(0.6, force=True, keep_writing=True) == ["a"]


def test_discarded_path_is_never_taken() -> None:
    b = make()
    b.note("a", 0.0)
    b.note(".a.swp", 0.0)
    b.discard(".a.swp")
    b.discard("never-noted")
    assert b.take(1.0) == ["a"]


def test_path_noted_again_after_it_was_taken_starts_a_new_batch() -> None:
    b = make()
    b.note("a", 0.0)
    assert b.take(DELAY) == ["a"]
    b.note("a", 5.0)
    assert b.take(5.0 + DELAY / 2) == []
    assert b.take(5.0 + DELAY) == ["a"]


# --- invariants over arbitrary event sequences ---------------------------------------------


@dataclass
class _Model:
    first: float
    writing: bool


PATHS = [f"p{i}" for i in range(8)]

_note = st.tuples(
    st.just("note"),
    st.sampled_from(PATHS),
    st.floats(min_value=0, max_value=0.02),
    st.sampled_from([None, True, False]),
)
_take = st.tuples(st.just("take"), st.floats(min_value=0, max_value=0.5))
_ops = st.lists(st.one_of(_note, _take), max_size=60)


def _check_batch(
    b: Batcher,
    model: dict[str, _Model],
    batch: list[str],
    now: float,
    last_event: float,
) -> None:
    assert len(batch) == len(set(batch)), "a batch never repeats a path"
    assert len(batch) <= b.maxbatch
    for path in batch:
        assert path in model, f"{path} was taken without a pending event"
    if batch:
        oldest = min(m.first for m in model.values())
        assert now >= last_event + b.delay or now >= oldest + b.maxdelay, "taken too early"
    for path in batch:
        if model[path].writing:
            assert now >= model[path].first + b.maxdelay, "a file being written was taken"
    firsts = [model[p].first for p in batch]
    assert firsts == sorted(firsts), "oldest first"


@settings(max_examples=300, deadline=None)
@given(
    ops=_ops,
    delay=st.sampled_from([0.001, 0.005, 0.02]),
    maxdelay=st.sampled_from([0.02, 0.1, 1.0]),
    maxbatch=st.integers(min_value=1, max_value=5),
)
def test_every_noted_path_is_taken_exactly_once_within_the_rules(
    ops: list[tuple], delay: float, maxdelay: float, maxbatch: int
) -> None:
    b = Batcher(delay=delay, maxdelay=maxdelay, maxbatch=maxbatch)
    model: dict[str, _Model] = {}
    now = 0.0
    last_event = 0.0
    for op in ops:
        if op[0] == "note":
            _, path, dt, writing = op
            now += dt
            if path in model:
                if writing is not None:
                    model[path].writing = writing
            else:
                model[path] = _Model(first=now, writing=bool(writing))
            b.note(path, now, writing)
            last_event = now
        else:
            now += op[1]
            deadline = b.deadline()
            if deadline is not None and now < deadline:
                assert copy.deepcopy(b).take(now) == [], "nothing is taken before the deadline"
            batch = b.take(now)
            _check_batch(b, model, batch, now, last_event)
            for path in batch:
                del model[path]
        assert sorted(b.paths()) == sorted(model)
        assert sorted(b.writing()) == sorted(p for p, m in model.items() if m.writing)
    # Drain: waking at each deadline always makes progress and loses nothing.
    for _ in range(len(model) + 1):
        deadline = b.deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        batch = b.take(now)
        assert batch, "take at the deadline returns something"
        _check_batch(b, model, batch, now, last_event)
        for path in batch:
            del model[path]
    assert model == {}
    assert len(b) == 0
    assert b.deadline() is None


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.floats(min_value=0, max_value=0.01), min_size=1, max_size=40),
    maxbatch=st.integers(min_value=1, max_value=10),
)
def test_due_batches_take_as_many_eligible_paths_as_allowed(
    times: list[float], maxbatch: int
) -> None:
    b = Batcher(delay=DELAY, maxdelay=MAXDELAY, maxbatch=maxbatch)
    now = 0.0
    for i, dt in enumerate(times):
        now += dt
        b.note(f"f{i}", now)
    quiet = DELAY if len(times) < b.burst_paths else b.burst_delay
    batch = b.take(now + quiet)
    assert len(batch) == min(maxbatch, len(times))
    assert batch == [f"f{i}" for i in range(len(batch))]


def test_a_burst_waits_for_a_longer_quiet_window_so_a_short_pause_does_not_split_it() -> None:
    b = Batcher(delay=0.005, maxdelay=1.0, maxbatch=5000)
    for i in range(40):
        b.note(f"f{i}", i * 0.001)
    pause_end = 0.039 + 0.02  # the writer stalls for 20 ms: longer than delay
    assert b.take(pause_end) == []
    for i in range(40, 60):
        b.note(f"f{i}", pause_end + (i - 40) * 0.001)
    last = pause_end + 0.019
    assert b.deadline() == pytest.approx(last + b.burst_delay)
    assert len(b.take(last + b.burst_delay)) == 60


def test_a_few_paths_keep_the_short_quiet_window() -> None:
    b = Batcher(delay=0.005, maxdelay=1.0, maxbatch=5000)
    b.note("notes.md", 0.0)
    assert b.take(0.005) == ["notes.md"]


def test_burst_window_never_exceeds_maxdelay() -> None:
    b = Batcher(delay=0.005, maxdelay=0.03, maxbatch=5000)
    assert b.burst_delay == 0.03
    assert b.gone_delay == 0.02


def test_a_save_by_rename_away_and_rewrite_never_shows_the_file_gone() -> None:
    """vim: rename x to x~, write a new x. A quiet window between the two must not commit
    x as deleted."""
    b = Batcher(delay=0.005, maxdelay=1.0, maxbatch=5000)
    b.note("x", 0.0, gone=True)
    assert b.take(0.006) == []
    assert b.deadline() == pytest.approx(b.gone_delay)
    b.note("x", 0.008, writing=True)
    b.note("x", 0.009, writing=False)
    assert b.take(0.014) == ["x"]


def test_a_rename_waits_for_the_gone_delay_and_stays_one_batch() -> None:
    b = Batcher(delay=0.005, maxdelay=1.0, maxbatch=5000)
    b.note("old.txt", 0.0, gone=True)
    b.note("new.txt", 0.0)
    assert b.take(0.005) == []
    assert sorted(b.take(b.gone_delay)) == ["new.txt", "old.txt"]

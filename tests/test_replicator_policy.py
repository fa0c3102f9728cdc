"""The replicator's decisions as plain functions: what a peer loop does, when a refused push
means "the hub moved on", and which peers are polled."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.daemon.replicator import (
    FETCH,
    PUSH,
    early_retry_allowed,
    hub_moved_on,
    needs_poll,
    peer_has,
    work_for,
)
from assistant.peers import Outcome
from assistant.remotes import Remote, parse_url


def remote(push: bool = True, pull: bool = True) -> Remote:
    url = "ssh://host/srv/notes"
    return Remote("hub", url, parse_url(url, Path("/")), push=push, pull=pull)


@pytest.mark.parametrize(
    ("push", "pull", "want", "work"),
    [
        (True, True, {FETCH, PUSH}, {FETCH, PUSH}),
        (False, True, {FETCH, PUSH}, {FETCH}),
        (True, False, {FETCH, PUSH}, {PUSH}),
        (True, False, {FETCH}, set()),
        (False, False, {FETCH, PUSH}, set()),
    ],
)
def test_work_follows_the_remote_switches(
    push: bool, pull: bool, want: set[str], work: set[str]
) -> None:
    assert work_for(remote(push, pull), want) == work


def refused(*reasons: tuple[str, str]) -> Outcome:
    return Outcome(
        "hub",
        False,
        "rejected",
        {f"refs/heads/b{i}": {"status": s, "reason": r} for i, (s, r) in enumerate(reasons)},
    )


@pytest.mark.parametrize(
    ("outcome", "moved_on"),
    [
        (refused(("rejected", "non-fast-forward")), True),
        (refused(("ok", ""), ("rejected", "non-fast-forward")), True),
        (refused(("rejected", "pre-receive hook declined")), False),
        (refused(("rejected", "non-fast-forward"), ("rejected", "disk full")), False),
        (Outcome("hub", False, "error: connection refused"), False),
        (Outcome("hub", True, "pushed", {"main": {"status": "ok", "reason": ""}}), False),
    ],
)
def test_only_a_non_fast_forward_refusal_means_the_hub_moved_on(
    outcome: Outcome, moved_on: bool
) -> None:
    assert hub_moved_on(outcome) is moved_on


@pytest.mark.parametrize(
    ("pull", "listening", "interval", "poll"),
    [
        (True, False, 60.0, True),
        (True, True, 60.0, False),
        (False, False, 60.0, False),
        (True, False, 0.0, False),
    ],
)
def test_only_pulled_peers_without_a_change_stream_are_polled(
    pull: bool, listening: bool, interval: float, poll: bool
) -> None:
    assert needs_poll(remote(pull=pull), listening, interval) is poll


@pytest.mark.parametrize(
    ("last", "now", "spacing", "allowed"),
    [
        (None, 5.0, 150.0, True),
        (0.0, 149.0, 150.0, False),
        (0.0, 150.0, 150.0, True),
        (10.0, 10.5, 0.5, True),
    ],
)
def test_wake_ups_retry_a_peer_early_at_most_once_per_backoff_step(
    last: float | None, now: float, spacing: float, allowed: bool
) -> None:
    assert early_retry_allowed(last, now, spacing) is allowed


@pytest.mark.parametrize(
    ("ours", "theirs", "has"),
    [
        ({"refs/heads/main": "a"}, {"refs/heads/main": "a"}, True),
        ({"refs/heads/main": "a"}, {"refs/heads/main": "b"}, False),
        ({"refs/heads/main": "a", "refs/heads/x": "c"}, {"refs/heads/main": "a"}, False),
        ({"refs/heads/main": "a"}, {}, False),
        ({}, {}, False),
    ],
)
def test_a_peer_whose_branches_are_ours_needs_no_push(
    ours: dict[str, str], theirs: dict[str, str], has: bool
) -> None:
    assert peer_has(ours, theirs) is has

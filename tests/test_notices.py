"""The notice policy: which desktop notifications a run of events and peer states gives, when,
and in what words. Pure: times are passed in, nothing touches a desktop."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant.activity import Event
from assistant.notices import GAP, Notice, NoticePolicy, label_for, printable
from assistant.peerstate import PeerState, PeerStatus

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
RNG = random.Random(0)
LABEL = "notes (laptop-notes)"


def policy(**kwargs: Any) -> NoticePolicy:
    return NoticePolicy(LABEL, "~/notes", tz=UTC, **kwargs)


# --- a small language for the table -------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One input to the policy (an event, a peer snapshot, the held count), or ``due``: ask
    what to show at ``at`` seconds after T0 and compare titles with ``expect``."""

    at: float
    event: Event | None = None
    peers: dict[str, PeerStatus] | None = None
    held_now: int | None = None
    expect: tuple[str, ...] | None = None


def variant(at: float, path: str) -> Step:
    stem, _, ext = path.rpartition(".")
    name = f"{stem}.variant-{abs(hash(path)) % 16**8:08x}.{ext}"
    data = {"path": path, "variant": name, "reason": "both changed"}
    return Step(at, event=Event(T0 + at, "variant", "", data))


def held(at: float, paths: list[str], count: int | None = None) -> Step:
    data = {"paths": paths, "count": len(paths) if count is None else count}
    return Step(at, event=Event(T0 + at, "held", "", data))


def event(at: float, kind: str, **data: Any) -> Step:
    return Step(at, event=Event(T0 + at, kind, "", data))


def cleared(at: float) -> Step:
    return Step(at, held_now=0)


def still_held(at: float, count: int) -> Step:
    return Step(at, held_now=count)


def offline(remote: str, since: float, error: str = "connection refused") -> PeerStatus:
    status = PeerStatus(remote).on_attempt().on_failure(T0 + since, error, RNG)
    return status.on_attempt().on_failure(T0 + since + 1, error, RNG)


def connected(remote: str) -> PeerStatus:
    return PeerStatus(remote).on_attempt().on_success(T0)


def absent(remote: str, since: float) -> PeerStatus:
    return PeerStatus(remote).on_absent(T0 + since)


def peers(at: float, *statuses: PeerStatus) -> Step:
    return Step(at, peers={s.remote: s for s in statuses})


def due(at: float, *titles: str) -> Step:
    return Step(at, expect=titles)


def play(p: NoticePolicy, steps: list[Step]) -> list[Notice]:
    """Feed the steps; assert each ``due``; return every notice shown."""
    shown: list[Notice] = []
    for step in steps:
        if step.event is not None:
            p.event(step.event)
        if step.peers is not None:
            p.peers(step.peers, T0 + step.at)
        if step.held_now is not None:
            p.held_now(step.held_now)
        if step.expect is not None:
            got = p.due(T0 + step.at)
            assert tuple(n.title for n in got) == step.expect, f"at {step.at}s"
            shown.extend(got)
    return shown


ONE = f"Conflict in {LABEL}: both versions kept"
HELD = f"Deletions held in {LABEL}"
LOST_BETA = f"{LABEL} cannot reach beta"
BACK_BETA = f"{LABEL} reaches beta again"
DOOMED = [f"f{i:02}.txt" for i in range(30)]

TABLE: dict[str, list[Step]] = {
    "one variant is told once the merge's variants have all arrived": [
        variant(0, "todo.md"),
        due(0.1),
        due(0.5, ONE),
        due(100),
    ],
    "variants of one merge make one notice": [
        variant(0, "a.md"),
        variant(0.01, "b.md"),
        variant(0.02, "c.md"),
        due(0.6, f"3 conflicts in {LABEL}: both versions kept"),
        due(100),
    ],
    "the same variant told twice counts once": [
        variant(0, "a.md"),
        variant(0.1, "a.md"),
        due(1, ONE),
    ],
    "variants within the gap wait and are collapsed into one notice": [
        variant(0, "a.md"),
        due(1, ONE),
        variant(2, "b.md"),
        variant(5, "c.md"),
        variant(20, "d.md"),
        due(10),
        due(30.9),
        due(31, f"3 conflicts in {LABEL}: both versions kept"),
        due(200),
    ],
    "other kinds of events notify nobody": [
        event(0, "commit", commit="abc"),
        event(0, "merge", refs=["refs/remotes/beta/main"], how="merge"),
        event(0, "push", remote="beta", refs=["refs/heads/main"]),
        event(0, "peer-lost", remote="beta", error="refused", since=T0),
        due(1000),
    ],
    "a hold is told at once": [
        held(0, DOOMED),
        due(0, HELD),
    ],
    "the same hold is not told again at every commit": [
        held(0, DOOMED),
        due(0, HELD),
        held(1, DOOMED),
        still_held(1, 30),
        held(60, DOOMED),
        due(60),
        due(1000),
    ],
    "a hold that grows is told again, no sooner than the gap": [
        held(0, DOOMED[:25]),
        due(0, HELD),
        held(5, DOOMED),
        due(5),
        due(30, HELD),
    ],
    "part of a told hold is not news": [
        held(0, DOOMED),
        due(0, HELD),
        held(50, DOOMED[:10]),
        due(100),
    ],
    "a hold cleared and made again is told again": [
        held(0, DOOMED),
        due(0, HELD),
        cleared(40),
        held(50, DOOMED),
        due(50, HELD),
    ],
    "a hold cleared before it could be told is not told": [
        held(0, DOOMED[:25]),
        due(0, HELD),
        held(5, DOOMED),
        cleared(10),
        due(100),
    ],
    "a peer unreachable for less than the threshold is not told": [
        peers(0, offline("beta", 0)),
        peers(HOUR - 1, offline("beta", 0)),
        due(HOUR - 1),
    ],
    "a peer unreachable past the threshold is told once per outage": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(2 * HOUR, offline("beta", 0)),
        due(2 * HOUR),
        peers(5 * HOUR, offline("beta", 0)),
        due(5 * HOUR),
    ],
    "a told peer that is back is told back": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(HOUR + 100, connected("beta")),
        due(HOUR + 100, BACK_BETA),
        peers(HOUR + 200, connected("beta")),
        due(HOUR + 300),
    ],
    "a peer back before its outage was told is not told at all": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(HOUR + 5, offline("beta", 0), offline("gamma", 0)),
        due(HOUR + 5),
        peers(HOUR + 10, offline("beta", 0), connected("gamma")),
        due(HOUR + 100),
    ],
    "the back event tells a told peer is back at once": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        event(HOUR + 50, "peer-back", remote="beta", after=HOUR + 50),
        due(HOUR + 50, BACK_BETA),
        peers(HOUR + 60, connected("beta")),
        due(HOUR + 500),
    ],
    "a back event for a peer never told is ignored": [
        event(10, "peer-back", remote="beta", after=10),
        due(100),
    ],
    "a new outage after the peer came back is told again": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(HOUR + 10, connected("beta")),
        due(HOUR + 10, BACK_BETA),
        peers(3 * HOUR, offline("beta", 2 * HOUR - 100)),
        due(3 * HOUR, LOST_BETA),
    ],
    "an outage told while another kind was shown is not delayed by it": [
        held(0, DOOMED),
        due(0, HELD),
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
    ],
    "several peers lost together make one notice": [
        peers(HOUR, offline("beta", 0), offline("gamma", -10), connected("delta")),
        due(HOUR, f"{LABEL} cannot reach 2 peers"),
    ],
    "peers lost within the gap wait for it": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(HOUR + 5, offline("beta", 0), offline("gamma", 5)),
        due(HOUR + 5),
        due(HOUR + GAP, f"{LABEL} cannot reach gamma"),
    ],
    "a drive that is not mounted is no outage": [
        peers(10 * HOUR, absent("stick", 0)),
        due(10 * HOUR),
    ],
    "a peer never tried yet is no outage": [
        peers(10 * HOUR, PeerStatus("beta")),
        due(10 * HOUR),
    ],
    "a disabled peer is no outage": [
        peers(10 * HOUR, offline("beta", 0).on_disable()),
        due(10 * HOUR),
    ],
    "a removed peer is forgotten, and not told back": [
        peers(HOUR, offline("beta", 0)),
        due(HOUR, LOST_BETA),
        peers(HOUR + 10),
        due(HOUR + 100),
        peers(HOUR + 200, connected("beta")),
        due(HOUR + 300),
    ],
    "each kind has its own gap": [
        variant(0, "a.md"),
        held(0, DOOMED),
        peers(HOUR, offline("beta", 0)),
        due(HOUR, ONE, HELD, LOST_BETA),
    ],
}


@pytest.mark.parametrize("steps", TABLE.values(), ids=TABLE.keys())
def test_notice_policy_table(steps: list[Step]) -> None:
    play(policy(), steps)


def test_a_peer_is_never_told_when_the_threshold_is_zero() -> None:
    p = policy(unreachable_after=0)
    play(p, [peers(100 * HOUR, offline("beta", 0)), due(100 * HOUR)])


def test_the_threshold_is_the_configured_one() -> None:
    p = policy(unreachable_after=1.0)
    play(p, [peers(1.5, offline("beta", 1)), due(1.5), peers(2, offline("beta", 1))])
    assert [n.title for n in p.due(T0 + 2)] == [LOST_BETA]


# --- what is due when -----------------------------------------------------------------------


def test_nothing_pending_means_no_wake_up() -> None:
    assert policy().next_due() is None


def test_next_due_is_when_the_variants_have_settled_and_the_gap_is_over() -> None:
    p = policy()
    play(p, [variant(0, "a.md")])
    assert p.next_due() == pytest.approx(T0 + 0.5)
    play(p, [due(0.5, ONE), variant(3, "b.md")])
    assert p.next_due() == pytest.approx(T0 + 0.5 + GAP)


def test_a_held_notice_is_due_at_once() -> None:
    p = policy()
    play(p, [held(7, DOOMED)])
    when = p.next_due()
    assert when is not None and when <= T0 + 7


# --- the words --------------------------------------------------------------------------------


def only(p: NoticePolicy, steps: list[Step], at: float) -> Notice:
    play(p, steps)
    (notice,) = p.due(T0 + at)
    return notice


def test_a_variant_notice_says_which_file_which_variant_and_what_to_do() -> None:
    notice = only(
        policy(),
        [event(0, "variant", path="docs/todo.md", variant="docs/todo.variant-1a2b3c4d.md")],
        1,
    )
    assert notice.title == "Conflict in notes (laptop-notes): both versions kept"
    assert notice.body == (
        "docs/todo.md was changed on two nodes. The other version is "
        "docs/todo.variant-1a2b3c4d.md.\n"
        "Compare the two, keep what you want, delete the other."
    )
    assert notice.urgency == "normal"


def test_many_variants_list_a_few_and_count_the_rest() -> None:
    steps = [
        event(0, "variant", path=f"n{i}.md", variant=f"n{i}.variant-0000000{i}.md")
        for i in range(8)
    ]
    notice = only(policy(), steps, 1)
    assert notice.title == "8 conflicts in notes (laptop-notes): both versions kept"
    lines = notice.body.split("\n")
    assert lines[:5] == [f"n{i}.md → n{i}.variant-0000000{i}.md" for i in range(5)]
    assert lines[5:] == ["and 3 more", "Compare each pair, keep what you want, delete the other."]


def test_a_held_notice_counts_the_deletions_and_names_the_command() -> None:
    paths = [f"photos/{i:03}.jpg" for i in range(100)]
    notice = only(policy(), [held(0, paths, count=250)], 0)
    assert notice.title == "Deletions held in notes (laptop-notes)"
    assert notice.body == (
        "The mass-deletion guard holds back 250 deletions: photos/000.jpg, photos/001.jpg, "
        "photos/002.jpg, photos/003.jpg, photos/004.jpg, and 245 more.\n"
        "If you meant it, run `annexsync sync --allow-deletions` in ~/notes; "
        "if not, put the files back."
    )
    assert (notice.key, notice.urgency) == ("held", "critical")


def test_an_unreachable_notice_says_for_how_long_since_when_and_why() -> None:
    notice = only(policy(), [peers(HOUR + 125, offline("beta", 0, "ssh: no route"))], HOUR + 125)
    assert notice.title == "notes (laptop-notes) cannot reach beta"
    assert notice.body == (
        "beta: unreachable for 1h02m (since 12:00:00): ssh: no route\n"
        "Changes wait and are synced when it is back. `annexsync status` shows more."
    )
    assert notice.key == "peer:beta"


def test_a_back_notice_replaces_the_outage_notice_and_says_how_long_it_was() -> None:
    p = policy()
    lost = only(p, [peers(HOUR, offline("beta", 0))], HOUR)
    back = only(p, [peers(HOUR + 300, connected("beta"))], HOUR + 300)
    assert back.key == lost.key == "peer:beta"
    assert back.body == "beta: back after 1h05m\nSyncing has resumed."
    assert back.urgency == "low"


HOSTILE = [
    "evil\nInjected line.md",
    "tab\there.md",
    "esc\x1b[31mred.md",
    "bidi\u202egnp.exe",
    "zero\u200bwidth.md",
    "bell\x07.md",
    "line\u2028sep.md",
    "c1\x85next.md",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_file_names_cannot_forge_lines_or_hide_behind_control_characters(name: str) -> None:
    notice = only(policy(), [event(0, "variant", path=name, variant=name + "-v")], 1)
    first_line = notice.body.split("\n")[0]
    assert notice.body.count("\n") == 1
    assert "\ufffd" in first_line
    assert all(c == "\ufffd" or c.isprintable() for c in first_line)


def test_a_long_file_name_keeps_its_start_and_end() -> None:
    name = "deep/" + "x" * 300 + "/end-of-name.md"
    shown = printable(name)
    assert len(shown) == 80
    assert shown.startswith("deep/xxx") and shown.endswith("/end-of-name.md")
    assert "…" in shown


@given(st.text())
def test_printable_never_yields_a_control_character_or_a_long_line(text: str) -> None:
    shown = printable(text)
    assert len(shown) <= 80
    assert all(c == " " or c.isprintable() for c in shown)


@pytest.mark.parametrize(
    ("directory", "node", "label"),
    [
        ("notes", "laptop-notes", "notes (laptop-notes)"),
        ("notes", "notes", "notes"),
        ("notes", "", "notes"),
        ("we<ird>\n", "n", "we<ird>\ufffd (n)"),
    ],
)
def test_a_repository_is_named_by_its_directory_and_node(
    directory: str, node: str, label: str
) -> None:
    assert label_for(directory, node) == label


def test_a_peer_status_record_seen_again_unchanged_tells_nothing_new() -> None:
    p = policy()
    status = offline("beta", 0)
    play(p, [peers(HOUR, status), due(HOUR, LOST_BETA)])
    for minute in range(1, 200):
        p.peers({"beta": replace(status, state=PeerState.RETRYING)}, T0 + HOUR + minute * 60)
        assert p.due(T0 + HOUR + minute * 60) == []

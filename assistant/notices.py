"""Which desktop notifications to show, and when: pure policy, no I/O.

Three things are worth interrupting a person for: a conflict kept as a variant, deletions held
by the mass-deletion guard, and a peer unreachable for long. The policy turns the assistant's
activity events and its peers' status records into short notices, and keeps a flood of events
from becoming a flood of notifications:

- variants arriving together (one merge keeps several) make one notice, listing a few paths
  and "and K more";
- held deletions are told when the guard starts holding or the held set grows, not again while
  the same set stays held, and told anew after the hold is cleared;
- a peer is told once per outage, when it has been unreachable for ``unreachable_after``
  seconds, and told to be back only if its outage was told;
- each kind of notice is shown at most once per ``gap`` seconds; what comes meanwhile is
  collapsed into the next one.

Times are passed in (wall-clock seconds, as in :class:`~assistant.activity.Event`), so every
rule is table-testable. Text from peers (file names, error lines) is made printable here: a
name cannot forge extra lines or hide itself behind control characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from assistant.activity import Event
from assistant.peerstate import PeerState, PeerStatus, format_duration, format_time
from assistant.textsafe import printable as _printable

GAP = 30.0  # at most one notice of a kind per this many seconds
COALESCE = 0.5  # variants arriving within this long of the first make one notice
LISTED = 5  # paths or peers named in one notice; the rest are counted
FIELD_MAX = 80  # characters of one file name, peer name or error shown

VARIANT = "variant"
HELD = "held"
LOST = "peer-lost"
BACK = "peer-back"
KINDS = (VARIANT, HELD, LOST, BACK)


@dataclass(frozen=True)
class Notice:
    """One desktop notification. ``key`` names what it is about, so that a newer notice about
    the same thing (the held set grew, the lost peer came back) can replace the older one;
    ``urgency`` is the freedesktop level: low, normal or critical."""

    kind: str
    title: str
    body: str
    key: str | None = None
    urgency: str = "normal"


def printable(text: object, limit: int = FIELD_MAX) -> str:
    """``text`` made safe (``textsafe.printable``) and cut to ``limit`` characters."""
    return _printable(text, limit)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def listing(items: list[str], total: int, listed: int = LISTED) -> list[str]:
    """The first ``listed`` items, and a line counting the rest of ``total``."""
    lines = items[:listed]
    rest = total - len(lines)
    if rest > 0:
        lines.append(f"and {rest} more")
    return lines


@dataclass
class _Lost:
    """A peer's outage waiting to be told: since when, and its last error."""

    since: float
    error: str


@dataclass
class NoticePolicy:
    """The notices of one repository. ``label`` names it in every title (its directory and
    node, e.g. ``notes (laptop-notes)``), ``where`` is its directory as the person knows it
    (``~/notes``), for the commands a notice suggests. ``unreachable_after`` 0 means a peer's
    outage is never told."""

    label: str
    where: str
    unreachable_after: float = 3600.0
    gap: float = GAP
    coalesce: float = COALESCE
    listed: int = LISTED
    tz: tzinfo | None = None
    # what is pending (not shown yet), what was told, and when each kind was last shown
    _variants: dict[str, str] = field(default_factory=dict, init=False)  # variant -> path
    _variants_since: float | None = field(default=None, init=False)
    _held: tuple[int, list[str]] | None = field(default=None, init=False)  # count, some paths
    _held_told: tuple[int, frozenset[str]] = field(default=(0, frozenset()), init=False)
    _lost: dict[str, _Lost] = field(default_factory=dict, init=False)
    _lost_told: dict[str, float] = field(default_factory=dict, init=False)  # -> outage start
    _back: dict[str, float] = field(default_factory=dict, init=False)  # -> outage length
    _shown: dict[str, float] = field(default_factory=dict, init=False)

    # --- what happened -----------------------------------------------------------------
    def event(self, event: Event) -> None:
        """Take in one activity event; kinds that notify nobody are ignored."""
        data = event.data
        if event.kind == VARIANT and data.get("variant"):
            if not self._variants:
                self._variants_since = event.time
            self._variants[str(data["variant"])] = str(data.get("path", ""))
        elif event.kind == HELD:
            self._take_held(data)
        elif event.kind == BACK and data.get("remote") in self._lost_told:
            remote = str(data["remote"])
            since = self._lost_told[remote]
            after = data.get("after")
            self._came_back(remote, float(after) if after is not None else event.time - since)

    def _take_held(self, data: Mapping[str, Any]) -> None:
        paths = [str(p) for p in data.get("paths") or ()]
        count = int(data.get("count") or len(paths))
        told_count, told_paths = self._held_told
        if count == 0 or (count <= told_count and told_paths.issuperset(paths)):
            return
        self._held = (count, sorted(paths))
        self._held_told = (count, told_paths | frozenset(paths))

    def held_now(self, count: int) -> None:
        """How many deletions the guard holds right now. Once the hold is cleared (released by
        ``sync --allow-deletions``, or the files came back) the next hold is told anew; one
        cleared before it was told is not told at all."""
        if count == 0:
            self._held = None
            self._held_told = (0, frozenset())

    def peers(self, statuses: Mapping[str, PeerStatus], now: float) -> None:
        """Look at every peer's status: an outage longer than ``unreachable_after`` is told
        once, and its end too. A drive that is not mounted is not an outage."""
        for remote in list(self._lost_told):
            if remote not in statuses or statuses[remote].state is PeerState.DISABLED:
                self._forget(remote)
        for remote, status in statuses.items():
            if unreachable(status):
                assert status.offline_since is not None
                if remote in self._lost_told:
                    self._lost_told[remote] = status.offline_since
                elif 0 < self.unreachable_after <= now - status.offline_since:
                    self._lost_told[remote] = status.offline_since
                    self._lost[remote] = _Lost(status.offline_since, status.last_error or "")
            elif status.state is PeerState.CONNECTED and remote in self._lost_told:
                self._came_back(remote, now - self._lost_told[remote])

    def _came_back(self, remote: str, after: float) -> None:
        del self._lost_told[remote]
        if self._lost.pop(remote, None) is None:  # told: say it is back
            self._back[remote] = after

    def _forget(self, remote: str) -> None:
        self._lost_told.pop(remote, None)
        self._lost.pop(remote, None)
        self._back.pop(remote, None)

    # --- what to show ------------------------------------------------------------------
    def _ready_at(self, kind: str) -> float | None:
        """When the pending notice of ``kind`` may be shown, or None when none is pending."""
        opens = self._shown.get(kind, float("-inf")) + self.gap
        if kind == VARIANT:
            if not self._variants or self._variants_since is None:
                return None
            return max(opens, self._variants_since + self.coalesce)
        pending = {HELD: self._held is not None, LOST: self._lost, BACK: self._back}[kind]
        return opens if pending else None

    def next_due(self) -> float | None:
        """When the earliest pending notice may be shown (None: nothing is pending)."""
        times = [t for t in (self._ready_at(kind) for kind in KINDS) if t is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[Notice]:
        """The notices to show now; each is then no longer pending."""
        out = []
        for kind in KINDS:
            at = self._ready_at(kind)
            if at is not None and at <= now:
                out.append(self._build(kind, now))
                self._shown[kind] = now
        return out

    def _build(self, kind: str, now: float) -> Notice:
        if kind == VARIANT:
            variants, self._variants, self._variants_since = self._variants, {}, None
            return self._variant_notice(variants)
        if kind == HELD:
            assert self._held is not None
            (count, paths), self._held = self._held, None
            return self._held_notice(count, paths)
        if kind == LOST:
            lost, self._lost = self._lost, {}
            return self._lost_notice(lost, now)
        back, self._back = self._back, {}
        return self._back_notice(back)

    def _variant_notice(self, variants: dict[str, str]) -> Notice:
        pairs = sorted((path, variant) for variant, path in variants.items())
        if len(pairs) == 1:
            path, variant = pairs[0]
            return Notice(
                VARIANT,
                f"Conflict in {self.label}: both versions kept",
                f"{printable(path)} was changed on two nodes. The other version is "
                f"{printable(variant)}.\nCompare the two, keep what you want, delete the other.",
            )
        lines = [f"{printable(path)} → {printable(variant)}" for path, variant in pairs]
        return Notice(
            VARIANT,
            f"{len(pairs)} conflicts in {self.label}: both versions kept",
            "\n".join(listing(lines, len(lines), self.listed))
            + "\nCompare each pair, keep what you want, delete the other.",
        )

    def _held_notice(self, count: int, paths: list[str]) -> Notice:
        shown = listing([printable(p) for p in paths], count, self.listed)
        return Notice(
            HELD,
            f"Deletions held in {self.label}",
            f"The mass-deletion guard holds back {plural(count, 'deletion')}: "
            f"{', '.join(shown)}.\nIf you meant it, run `annexsync sync --allow-deletions` in "
            f"{printable(self.where, 200)}; if not, put the files back.",
            key=HELD,
            urgency="critical",
        )

    def _lost_notice(self, lost: dict[str, _Lost], now: float) -> Notice:
        names = sorted(lost)
        lines = []
        for remote in names:
            item = lost[remote]
            line = (
                f"{printable(remote)}: unreachable for {format_duration(now - item.since)} "
                f"(since {format_time(item.since, now, self.tz)})"
            )
            lines.append(f"{line}: {printable(item.error)}" if item.error else line)
        who = printable(names[0]) if len(names) == 1 else plural(len(names), "peer")
        return Notice(
            LOST,
            f"{self.label} cannot reach {who}",
            "\n".join(listing(lines, len(lines), self.listed))
            + "\nChanges wait and are synced when it is back. `annexsync status` shows more.",
            key=f"peer:{names[0]}" if len(names) == 1 else "peers",
        )

    def _back_notice(self, back: dict[str, float]) -> Notice:
        names = sorted(back)
        lines = [
            f"{printable(remote)}: back after {format_duration(back[remote])}" for remote in names
        ]
        who = printable(names[0]) if len(names) == 1 else plural(len(names), "peer")
        return Notice(
            BACK,
            f"{self.label} reaches {who} again",
            "\n".join(listing(lines, len(lines), self.listed)) + "\nSyncing has resumed.",
            key=f"peer:{names[0]}" if len(names) == 1 else "peers",
            urgency="low",
        )


def unreachable(status: PeerStatus) -> bool:
    """Whether a peer is in an outage: attempts failed and none succeeded since. A drive that
    is not mounted, a peer not tried yet and a disabled one are not."""
    return (
        status.state in (PeerState.OFFLINE, PeerState.RETRYING)
        and status.failures > 0
        and status.offline_since is not None
    )


def label_for(directory: str, node: str) -> str:
    """How notices name a repository: its directory and, when it says more, its node."""
    name = printable(directory, 40)
    return name if node in ("", directory) else f"{name} ({printable(node, 40)})"

"""One full sync with peers: fetch from each, merge what arrived, push the result to each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pygit2

from assistant.autocommit import AutoCommitter
from assistant.integrate import IntegrateResult, integrate
from assistant.node import NodeIdentity
from assistant.peers import Outcome, Peers, fetch_from, push_to
from assistant.remotes import Remote

T = TypeVar("T")
Blocking = Callable[..., Awaitable[Any]]


async def _inline(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


@dataclass
class RemoteReport:
    """A remote's part of a sync: its fetch and its push (either may be skipped)."""

    remote: str
    fetch: Outcome | None = None
    push: Outcome | None = None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in (self.fetch, self.push) if o is not None)

    def line(self) -> str:
        """One line; a summary fetch and push share (a drive not present) is said once."""
        parts = dict.fromkeys(o.summary for o in (self.fetch, self.push) if o is not None)
        return f"{self.remote}: {'; '.join(parts) or 'nothing to do'}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "ok": self.ok,
            "line": self.line(),
            "fetch": self.fetch.__dict__ if self.fetch else None,
            "push": self.push.__dict__ if self.push else None,
        }


@dataclass
class SyncReport:
    merge: IntegrateResult
    remotes: list[RemoteReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        merged = self.merge.paused is None and not self.merge.held_back
        return all(r.ok for r in self.remotes) and merged

    def merge_line(self) -> str:
        m = self.merge
        if m.paused:
            return f"merge paused: {m.paused}"
        if m.kind == "up-to-date":
            line = "merge: up to date"
        else:
            line = f"merge: {m.kind} to {(m.head or '')[:10]} from {', '.join(m.merged)}"
        if m.variants:
            line += "; kept both versions of " + ", ".join(
                f"{v.path} (other: {v.variant})" for v in m.variants
            )
        for ref, why in m.held_back.items():
            line += f"; not merged {ref}: {why}"
        return line

    def as_dict(self) -> dict[str, Any]:
        m = self.merge
        return {
            "ok": self.ok,
            "merge_line": self.merge_line(),
            "merge": {
                "kind": m.kind,
                "head": m.head,
                "merged": m.merged,
                "paused": m.paused,
                "held_back": m.held_back,
                "variants": [
                    {"path": v.path, "variant": v.variant, "reason": v.reason} for v in m.variants
                ],
            },
            "remotes": [r.as_dict() for r in self.remotes],
        }


async def sync_with(
    repo: pygit2.Repository,
    identity: NodeIdentity,
    committer: AutoCommitter,
    remotes: list[Remote],
    resolve: bool = True,
    blocking: Blocking = _inline,
    peers: Peers | None = None,
) -> SyncReport:
    """Fetch from every remote allowing pulls, merge, push to every remote allowing pushes.
    ``blocking`` runs repository writes (the daemon passes its single worker); ``peers`` is
    a connection pool to reuse (the daemon's), else one is opened and closed here."""
    reports = {r.name: RemoteReport(r.name) for r in remotes}
    own_pool = peers is None
    peers = peers or Peers()
    try:
        pulls = [r for r in remotes if r.pull]
        for outcome in await asyncio.gather(*(fetch_from(peers, repo, r) for r in pulls)):
            reports[outcome.remote].fetch = outcome
        merged = await blocking(integrate, committer, resolve, {r.name for r in pulls})
        pushes = [r for r in remotes if r.push]
        for outcome in await asyncio.gather(*(push_to(peers, repo, identity, r) for r in pushes)):
            reports[outcome.remote].push = outcome
    finally:
        if own_pool:
            await peers.close()
    return SyncReport(merge=merged, remotes=list(reports.values()))

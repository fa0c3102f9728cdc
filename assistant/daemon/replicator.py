"""The replicator actor: pushes each new commit to every peer at once, merges what peers push
here the moment it lands in ``.git/refs/remotes``, and pushes the result on, so a change floods
through any connected graph of nodes and stops when everyone has it.

Each peer has its own push loop, so one slow or dead peer never delays the others; a failed
peer is retried with backoff. Merges run on the repository worker, like every other write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pygit2

from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.daemon.committer import CommitActor
from assistant.daemon.worker import RepoWorker
from assistant.integrate import has_incoming, integrate
from assistant.node import NodeIdentity
from assistant.peers import Outcome, Peers, fetch_from, push_to
from assistant.peerstate import PeerStatus
from assistant.remotes import Remote, read_remotes

log = logging.getLogger("annexsync.replicator")

MERGE_COALESCE = 0.005  # several refs arriving together make one merge


class Replicator:
    """Live replication with every sync-enabled remote of one repository."""

    def __init__(
        self,
        repo: pygit2.Repository,
        root: Path,
        identity: NodeIdentity,
        settings: Settings,
        committer: AutoCommitter,
        worker: RepoWorker,
        actor: CommitActor,
        spawn: Callable[[str, Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.committer = committer
        self.worker = worker
        self.actor = actor
        self.spawn = spawn
        # Pushes and fetches read and write through their own handle on the repository:
        # the worker thread owns ``committer.repo``.
        self.repo = pygit2.Repository(repo.path)
        self.remotes: list[Remote] = [r for r in read_remotes(repo, root) if r.sync]
        self.status: dict[str, PeerStatus] = {r.name: PeerStatus(r.name) for r in self.remotes}
        self.peers = Peers()
        self.rng = random.Random()
        self._want_push = {r.name: asyncio.Event() for r in self.remotes if r.push}
        self._want_merge = asyncio.Event()

    # --- triggers (called on the loop thread) -------------------------------------------
    def committed(self) -> None:
        """Our branch has a new commit: every peer should get it."""
        for event in self._want_push.values():
            event.set()

    def refs_arrived(self) -> None:
        """Something landed in refs/remotes (a peer pushed, or a fetch finished)."""
        self._want_merge.set()

    # --- actors --------------------------------------------------------------------------
    async def run(self) -> None:
        """Start the loops, then catch up with every peer once."""
        self.spawn("merger", self._merge_loop)
        for remote in self.remotes:
            if remote.push:
                self.spawn(f"push {remote.name}", lambda r=remote: self._push_loop(r))
        self._want_merge.set()  # whatever arrived while the assistant was down
        await self._fetch_all()
        self.committed()

    async def close(self) -> None:
        await self.peers.close()

    async def _fetch_all(self) -> None:
        pulls = [r for r in self.remotes if r.pull]
        outcomes = await asyncio.gather(*(self._fetch(r) for r in pulls))
        if any(o.ok for o in outcomes):
            self._want_merge.set()

    async def _fetch(self, remote: Remote) -> Outcome:
        outcome = await fetch_from(self.peers, self.repo, remote)
        self._record(remote, outcome)
        return outcome

    async def _merge_loop(self) -> None:
        pulls = {r.name for r in self.remotes if r.pull}
        while True:
            await self._want_merge.wait()
            await asyncio.sleep(MERGE_COALESCE)
            self._want_merge.clear()
            if not await self.worker.run(has_incoming, self.committer.repo, pulls):
                continue
            await self.actor.flush(patience=2.0)  # local edits are committed first
            result = await self.worker.run(
                integrate, self.committer, self.settings.resolvemerge, pulls, False
            )
            if result.paused:
                log.warning("merge paused: %s", result.paused)
            elif result.head is not None:
                log.info("merged %s (%s)", ", ".join(result.merged), result.kind)
                self.committed()

    async def _push_loop(self, remote: Remote) -> None:
        want = self._want_push[remote.name]
        while True:
            await want.wait()
            want.clear()
            self.status[remote.name] = self.status[remote.name].on_attempt()
            outcome = await push_to(self.peers, self.repo, self.identity, remote)
            hub_moved_on = not outcome.ok and _behind(outcome) and remote.pull
            # A hub moved on: take what it has and merge; the merge is pushed at once.
            if hub_moved_on and (await self._fetch(remote)).ok:
                self._want_merge.set()
            self._record(remote, outcome)
            if not outcome.ok:
                delay = max(0.0, self.status[remote.name].next_retry_at - time.time())
                log.info("%s; retrying in %.1fs", outcome.line(), delay)
                asyncio.get_running_loop().call_later(delay, want.set)

    def _record(self, remote: Remote, outcome: Outcome) -> None:
        now = time.time()
        current = self.status[remote.name]
        if outcome.ok:
            self.status[remote.name] = current.on_success(now)
        else:
            self.status[remote.name] = current.on_failure(now, outcome.summary, self.rng)

    def describe(self) -> list[dict[str, Any]]:
        """Each peer's state, for status."""
        now = time.time()
        return [
            {**status.as_dict(), "summary": status.describe(now)} for status in self.status.values()
        ]


def _behind(outcome: Outcome) -> bool:
    """Whether a push was refused only because the peer has commits we lack."""
    refs = outcome.refs.values()
    return bool(refs) and all(
        r["status"] != "rejected" or "non-fast-forward" in r["reason"] for r in refs
    )

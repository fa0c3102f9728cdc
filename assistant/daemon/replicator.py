"""The replicator actor: pushes each new commit to every peer at once, merges what peers push
here the moment it lands in ``.git/refs/remotes``, and pushes the result on, so a change floods
through any connected graph of nodes and stops when everyone has it.

Each peer has its own loop, so one slow or dead peer never delays the others. A failed peer is
retried with backoff; timers (retries, the periodic full sync, polling of peers that cannot tell
us about changes) live in one APScheduler scheduler on the daemon's loop. Merges run on the
repository worker, like every other write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from assistant.activity import reporting_to
from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.daemon.committer import CommitActor
from assistant.daemon.listener import ChangeListener, ListenerState, object_lookup
from assistant.daemon.streaming import StreamSink
from assistant.daemon.worker import RepoWorker
from assistant.integrate import IntegrateResult, has_incoming, integrate
from assistant.node import NodeIdentity
from assistant.notify import streaming_nodes
from assistant.peers import Outcome, Peers, branch_tips, fetch_from, push_to
from assistant.peerstate import DEFAULT_FLOOR, Backoff, PeerState, PeerStatus
from assistant.remotes import Remote, SSHLocation, read_remotes

log = logging.getLogger("annexsync.replicator")

MERGE_COALESCE = 0.001  # several refs arriving together make one merge
MERGE_RETRY = 2.0  # a merge paused by git at work is tried again this much later
FETCH = "fetch"
PUSH = "push"


def work_for(remote: Remote, want: set[str]) -> set[str]:
    """What a peer loop should do now: the wanted directions this remote allows."""
    allowed = {FETCH} if remote.pull else set()
    if remote.push:
        allowed.add(PUSH)
    return want & allowed


def hub_moved_on(outcome: Outcome) -> bool:
    """Whether a push was refused only because the peer has commits we lack: a hub another node
    pushed to first. Fetch, merge and push again; that is not a failure."""
    refs = outcome.refs.values()
    return (
        not outcome.ok
        and bool(refs)
        and all(r["status"] != "rejected" or "non-fast-forward" in r["reason"] for r in refs)
    )


def early_retry_allowed(last_early: float | None, now: float, spacing: float) -> bool:
    """Whether a wake-up may retry a peer now: not within ``spacing`` (its backoff's lower
    bound) of the last early retry, on the monotonic clock."""
    return last_early is None or now - last_early >= spacing


def peer_has(ours: dict[str, str], theirs: dict[str, str]) -> bool:
    """Whether a peer's branches, as we last saw them, are exactly ours: then a push would
    send nothing but a ref update it does not need (a fast-forward to its own commit)."""
    return bool(ours) and all(theirs.get(branch) == oid for branch, oid in ours.items())


def tracking_tips(repo: pygit2.Repository, remote: str) -> dict[str, str]:
    """A remote's branches as we last fetched or were told them, as ``refs/heads/*`` names."""
    prefix = f"refs/remotes/{remote}/"
    out = {}
    for name in repo.references:
        if name.startswith(prefix) and "/synced/" not in name[len(prefix) - 1 :]:
            try:
                oid = repo.references[name].peel(pygit2.Commit).id
            except (pygit2.GitError, KeyError, ValueError):
                continue
            out["refs/heads/" + name[len(prefix) :]] = str(oid)
    return out


def wants_listener(remote: Remote) -> bool:
    """Whether to keep a notify-changes stream open to a peer: one we pull from, over ssh, with
    the command not turned off. A path is polled instead: a listener would hold a drive busy."""
    return remote.pull and isinstance(remote.location, SSHLocation) and remote.notify is not None


def needs_poll(remote: Remote, listening: bool, interval: float) -> bool:
    """Whether a peer must be polled: it is pulled from, nothing tells us when it changes (no
    notify-changes stream), and polling is on."""
    return remote.pull and not listening and interval > 0


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
        self.activity = actor.activity
        self.identity = identity
        self.settings = settings
        self.committer = committer
        self.worker = worker
        self.actor = actor
        self.spawn = spawn
        # Pushes and fetches read and write through their own handle on the repository:
        # the worker thread owns ``committer.repo``.
        self.repo = pygit2.Repository(repo.path)
        self.root = root
        self.remotes: dict[str, Remote] = self._read_remotes()
        self.backoff = Backoff(
            initial=settings.retrydelay,
            cap=settings.retrymax,
            floor=min(DEFAULT_FLOOR, settings.retrydelay),
        )
        self.status: dict[str, PeerStatus] = {
            name: PeerStatus(name, backoff=self.backoff) for name in self.remotes
        }
        self.peers = Peers()
        self.rng = random.Random()
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        self.listeners: dict[str, ChangeListener] = {}
        self.listening: set[str] = set()  # peers with a notify-changes stream (not polled)
        self._want: dict[str, set[str]] = {name: set() for name in self.remotes}
        self._wake = {name: asyncio.Event() for name in self.remotes}
        self._want_merge = asyncio.Event()
        self._owed: dict[str, set[str]] = {}  # work a failed attempt still owes the peer
        self._after_merge: set[str] = set()  # peers whose push waits for the pending merge
        self._early: dict[str, float] = {}  # when each peer was last retried early

    # --- triggers (called on the loop thread) -------------------------------------------
    def committed(self) -> None:
        """Our branch has a new commit: every peer should get it."""
        if self.listeners:
            tips = list(branch_tips(self.repo).values())
            for listener in self.listeners.values():
                listener.tell_have(tips)
        for name, remote in self.remotes.items():
            if remote.push:
                self.status[name] = self.status[name].on_pending()
                self._kick(name, {PUSH})

    def refs_arrived(self) -> None:
        """Something landed in refs/remotes (a peer pushed, or a fetch finished)."""
        self._want_merge.set()

    def peer_changed(self, name: str) -> None:
        """A peer told us (notify-changes) or a poll found that its branches moved: fetch."""
        if name in self.remotes:
            self._kick(name, {FETCH})

    def retry_offline(self, reason: str) -> None:
        """Something that may have brought peers back happened (resume from sleep, a network
        change): every offline peer is retried now, keeping its backoff count, and polled
        peers are asked at once. Early retries of one peer are at least its backoff's lower
        bound apart, so a network that keeps changing cannot defeat the backoff. Interval
        timers are re-armed: they run on the wall clock, which may just have been set back."""
        now = time.time()
        for listener in self.listeners.values():
            listener.retry_now()
        woken = []
        for name, status in self.status.items():
            if status.state is not PeerState.OFFLINE or not early_retry_allowed(
                self._early.get(name), time.monotonic(), status.backoff.lower(status.failures)
            ):
                continue
            self._early[name] = time.monotonic()
            self.status[name] = status.on_retry_now(now)
            woken.append(name)
            self._schedule_retry(name)
        if woken:
            log.info("%s: retrying %s", reason, ", ".join(sorted(woken)))
        if self.scheduler.running:
            for job in self.scheduler.get_jobs():
                if job.id == "full-sync" or job.id.startswith("poll:"):
                    job.reschedule("interval", seconds=job.trigger.interval.total_seconds())
        for name in self.remotes:
            if name not in self.listening and self.status[name].state is PeerState.CONNECTED:
                self.peer_changed(name)

    def drive_present(self, name: str, present: bool) -> None:
        """A local peer's drive was mounted (sync both ways now) or unmounted (quiet)."""
        if name not in self.remotes:
            return
        if present:
            self.status[name] = self.status[name].on_present()
            log.info("%s is present; syncing", name)
            self._kick(name, {FETCH, PUSH})
        else:
            self.status[name] = self.status[name].on_absent(time.time())
            self._cancel_retry(name)
            log.info("%s is gone; it will be synced when it is back", name)

    def full_sync(self) -> None:
        """Fetch from and push to every peer, and merge: the periodic catch-all for anything
        missed (a merge that git held up, a lost notification)."""
        self._want_merge.set()
        for name in self.remotes:
            self._kick(name, {FETCH, PUSH})

    def _kick(self, name: str, what: set[str]) -> None:
        work = work_for(self.remotes[name], what)
        if work:
            self._want[name] |= work
            self._wake[name].set()

    # --- actors --------------------------------------------------------------------------
    async def run(self) -> None:
        """Start the scheduler and the loops, then catch up with every peer once."""
        if self.scheduler.running:  # restarted by the supervisor after a crash
            self.full_sync()
            return
        self.scheduler.start()
        if self.settings.fullsync > 0:
            self.scheduler.add_job(
                self._full_sync_job,
                "interval",
                seconds=self.settings.fullsync,
                id="full-sync",
                replace_existing=True,
            )
        self.spawn("merger", self._merge_loop)
        for name, remote in self.remotes.items():
            self._start_peer(name, remote)
        self._update_polling()
        self._want_merge.set()  # whatever arrived while the assistant was down
        self.full_sync()

    def _read_remotes(self) -> dict[str, Remote]:
        return {
            r.name: r for r in read_remotes(self.repo, self.root) if r.sync and (r.push or r.pull)
        }

    def _start_peer(self, name: str, remote: Remote) -> None:
        """A loop for the peer, and a change listener where it can stream to us."""
        self.spawn(f"peer {name}", lambda: self._peer_loop(name))
        if wants_listener(remote):
            listener = ChangeListener(
                remote,
                self.peers.transport(remote),
                object_lookup(self.repo),
                self.peer_changed,
                self._listener_unsupported,
                stream=StreamSink(self.repo, name, self.identity.name, self.refs_arrived),
            )
            self.listeners[name] = listener
            self.listening.add(name)
            listener.start()

    def reload_remotes(self) -> None:
        """The remotes changed (``git remote add``/``remove``, a URL or switch set): sync with
        new ones at once, stop with removed ones, restart changed ones with their new settings."""
        fresh = self._read_remotes()
        if fresh == self.remotes:
            return
        for name in sorted(self.remotes.keys() | fresh.keys()):
            old, new = self.remotes.get(name), fresh.get(name)
            if old == new:
                continue
            if old is not None:
                self._stop_peer(name)
            if new is not None:
                self.remotes[name] = new
                self.status[name] = PeerStatus(name, backoff=self.backoff)
                self._want[name] = set()
                self._wake[name] = asyncio.Event()
                self._start_peer(name, new)
                self._kick(name, {FETCH, PUSH})
            log.info("remote %s %s", name, "added" if old is None else "removed" if new is None
                     else "changed")  # fmt: skip
        self._update_polling()

    def _stop_peer(self, name: str) -> None:
        self.remotes.pop(name, None)
        self.status.pop(name, None)
        self._want.pop(name, None)
        self._owed.pop(name, None)
        self.listening.discard(name)
        self._cancel_retry(name)
        wake = self._wake.pop(name, None)
        if wake is not None:
            wake.set()  # its loop sees it is no longer wanted and ends
        if self.scheduler.running and self.scheduler.get_job(f"poll:{name}") is not None:
            self.scheduler.remove_job(f"poll:{name}")
        listener = self.listeners.pop(name, None)
        if listener is not None:
            self.spawn(f"stop listener {name}", listener.stop)

    async def close(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.peers.close()

    async def _full_sync_job(self) -> None:
        log.info("periodic full sync")
        self.full_sync()

    async def _merge_loop(self) -> None:
        while True:
            await self._want_merge.wait()
            pulls = {name for name, r in self.remotes.items() if r.pull}
            await asyncio.sleep(MERGE_COALESCE)
            self._want_merge.clear()
            waiting, self._after_merge = self._after_merge, set()
            try:
                if await self.worker.run(has_incoming, self.committer.repo, pulls):
                    await self._merge(pulls)
            finally:
                for name in waiting:  # pushes held back for this merge go now, merged or not
                    self._kick(name, {PUSH})

    async def _merge(self, pulls: set[str]) -> None:
        # Local edits are committed first; a file still being written is not, and the merge
        # leaves it as the user has it (checkout checks each path before writing it).
        await self.actor.flush(patience=2.0, keep_writing=True)
        busy = frozenset(self.actor.batcher.writing())
        with reporting_to(self.activity, "merge"):
            result = await self.worker.run(
                integrate, self.committer, self.settings.resolvemerge, pulls, False, busy
            )
        if result.paused:
            log.warning("merge paused: %s; trying again in %gs", result.paused, MERGE_RETRY)
            asyncio.get_running_loop().call_later(MERGE_RETRY, self._want_merge.set)
        elif result.head is not None:
            log.info("merged %s (%s)", ", ".join(result.merged), result.kind)
            self.tell_merge(result)
            self.committed()

    def tell_merge(self, result: IntegrateResult) -> None:
        """The feed's news of a merge that moved the branch, and of each variant it kept."""
        if result.head is None or result.kind == "up-to-date":
            return
        self.activity.emit(
            "merge",
            f"merged {', '.join(result.merged)} ({result.kind})",
            refs=list(result.merged),
            how=result.kind,
        )
        for variant in result.variants:
            self.activity.emit(
                "variant",
                f"kept both versions of {variant.path}; the other is {variant.variant}",
                path=variant.path,
                variant=variant.variant,
                reason=variant.reason,
            )

    async def _peer_loop(self, name: str) -> None:
        remote = self.remotes[name]
        wake = self._wake[name]
        while True:
            await wake.wait()
            wake.clear()
            if self._wake.get(name) is not wake:
                return  # the remote was removed or changed: a new loop has its place
            work, self._want[name] = self._want[name], set()
            work |= work_for(remote, self._owed.pop(name, set()))
            if work:
                await self._sync_once(remote, work)

    async def _sync_once(self, remote: Remote, work: set[str]) -> None:
        """One attempt with one peer: fetch, then push; record the outcome and schedule a
        retry on failure. When the fetch brought commits, the push waits for their merge:
        to a hub it would be refused, and the merge is pushed anyway."""
        name = remote.name
        self._cancel_retry(name)  # this attempt includes whatever a failed one owed
        was_absent = self.status[name].state is PeerState.ABSENT
        self.status[name] = self.status[name].on_attempt()
        try:
            with reporting_to(self.activity):
                outcome, pushed, deferred = await self._exchange(remote, work)
        except Exception as exc:  # a bug or an odd filesystem: a failure, never a stuck peer
            log.exception("%s: sync failed", name)
            outcome, pushed, deferred = Outcome(name, False, f"error: {exc}"), False, False
        if not outcome.ok and not outcome.absent:
            self._owed[name] = work
        self._record(remote, outcome, work, pushed, deferred, was_absent)

    async def _exchange(self, remote: Remote, work: set[str]) -> tuple[Outcome, bool, bool]:
        """(outcome, whether a push went through, whether the push waits for a merge)."""
        name = remote.name
        outcome: Outcome | None = None
        if FETCH in work:
            outcome = await fetch_from(self.peers, self.repo, remote)
            if not outcome.ok:
                return outcome, False, False
            if outcome.refs:
                self._want_merge.set()
                if PUSH in work:
                    self._after_merge.add(name)
                    return outcome, False, True
        if PUSH not in work:
            assert outcome is not None
            return outcome, False, False
        if peer_has(branch_tips(self.repo), tracking_tips(self.repo, name)):
            return Outcome(name, True, "up to date (it has our commits)"), True, False
        if self._streamed_to(name):
            return Outcome(name, True, "sent with our change notifications"), True, False
        outcome = await push_to(self.peers, self.repo, self.identity, remote)
        if hub_moved_on(outcome) and remote.pull:
            fetched = await fetch_from(self.peers, self.repo, remote)
            if fetched.ok and fetched.refs:
                self._want_merge.set()
                self._after_merge.add(name)
                return Outcome(name, True, "the hub moved on; merging its commits"), False, True
        return outcome, outcome.ok, False

    def _streamed_to(self, name: str) -> bool:
        """Whether the peer behind remote ``name`` listens to our notify-changes with objects:
        every change reaches it that way (or it fetches), so a push would only repeat it."""
        listener = self.listeners.get(name)
        node = listener.peer_node if listener is not None else ""
        return bool(node) and node in streaming_nodes(Path(self.repo.path))

    def _record(
        self,
        remote: Remote,
        outcome: Outcome,
        work: set[str],
        pushed: bool,
        deferred: bool,
        was_absent: bool,
    ) -> None:
        now = time.time()
        name = remote.name
        current = self.status[name]
        self._tell(current, outcome, now)
        if outcome.ok:
            # Still pending: commits made meanwhile, a push held back for a merge, or a push
            # this attempt did not do.
            pending = PUSH in self._want[name] or deferred or (current.pending_push and not pushed)
            self.status[name] = current.on_success(now, pending_push=pending)
            log.debug("%s", outcome.line())
        elif outcome.absent:
            if not was_absent:
                log.info("%s", outcome.line())
            self.status[name] = current.on_absent(now)
        else:
            failed = current.on_pending() if PUSH in work else current
            self.status[name] = failed.on_failure(now, outcome.summary, self.rng)
            self._schedule_retry(name)
            delay = max(0.0, (self.status[name].next_retry_at or now) - now)
            log.info("%s; retrying in %.1fs", outcome.line(), delay)

    def _tell(self, before: PeerStatus, outcome: Outcome, now: float) -> None:
        """The feed's news from one attempt: what moved, and a peer lost or found again."""
        name = outcome.remote
        if outcome.ok:
            if before.offline_since is not None:
                after = now - before.offline_since
                self.activity.emit(
                    "peer-back", f"{name} is reachable again", remote=name, after=after
                )
            moved = [ref for ref, r in outcome.refs.items() if r.get("status", "ok") == "ok"]
            if moved:
                kind = "push" if any("status" in r for r in outcome.refs.values()) else "fetch"
                self.activity.emit(kind, outcome.line(), remote=name, refs=moved)
        elif not outcome.absent and before.failures == 0:
            self.activity.emit(
                "peer-lost", outcome.line(), remote=name, error=outcome.summary, since=now
            )

    # --- timers --------------------------------------------------------------------------
    def _schedule_retry(self, name: str) -> None:
        at = self.status[name].next_retry_at
        if at is None or not self.scheduler.running:
            return
        self.scheduler.add_job(
            self._retry_job,
            "date",
            run_date=datetime.fromtimestamp(at, UTC),
            args=[name],
            id=f"retry:{name}",
            replace_existing=True,
        )

    def _cancel_retry(self, name: str) -> None:
        if self.scheduler.running and self.scheduler.get_job(f"retry:{name}") is not None:
            self.scheduler.remove_job(f"retry:{name}")

    async def _retry_job(self, name: str) -> None:
        self._kick(name, {FETCH, PUSH})

    async def _poll_job(self, name: str) -> None:
        self.peer_changed(name)

    def _listener_unsupported(self, name: str, reason: str) -> None:
        """The peer cannot stream its changes (no annexsync there, git-shell): poll it."""
        log.info("%s: %s; polling it every %gs instead", name, reason, self.settings.poll)
        self.listening.discard(name)
        self._update_polling()

    def _update_polling(self) -> None:
        if not self.scheduler.running:
            return
        for name, remote in self.remotes.items():
            job = f"poll:{name}"
            poll = needs_poll(remote, name in self.listening, self.settings.poll)
            present = self.scheduler.get_job(job) is not None
            if poll and not present:
                self.scheduler.add_job(
                    self._poll_job, "interval", seconds=self.settings.poll, args=[name], id=job
                )
            elif not poll and present:
                self.scheduler.remove_job(job)

    # --- status --------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """Each peer's state, for status."""
        now = time.time()
        out = []
        for name, status in self.status.items():
            poll = self.scheduler.get_job(f"poll:{name}") if self.scheduler.running else None
            listener = self.listeners.get(name)
            stream = listener.status() if listener is not None else None
            out.append(
                {
                    **status.as_dict(),
                    "summary": status.describe(now),
                    "url": self.remotes[name].url,
                    "listening": stream is not None and stream.state is ListenerState.LISTENING,
                    "listener": stream.as_dict() if stream is not None else None,
                    "listener_summary": stream.describe(now) if stream is not None else None,
                    "polling": self.settings.poll if poll is not None else None,
                }
            )
        return out

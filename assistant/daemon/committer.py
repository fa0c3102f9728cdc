"""The committer actor: gathers changed paths into batches and commits each when it is due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from assistant.activity import Activity
from assistant.autocommit import AutoCommitter, CommitResult
from assistant.batching import Batcher
from assistant.config import Settings
from assistant.daemon.worker import RepoWorker
from assistant.timeouts import within

log = logging.getLogger("annexsync.committer")

LOCK_RETRY = 0.05
BLOCKED_RETRY = 1.0
# The index is rewritten whole, at a cost that grows with the tree (tens of ms at 100,000
# files), so it waits until commits have paused for a few times what its last rewrite took:
# saves in quick succession then pay for one index write, not one each.
INDEX_QUIET_FACTOR = 4.0
INDEX_QUIET_MAX = 1.0


class CommitActor:
    """Owns the batcher; the only caller of the AutoCommitter while the daemon runs."""

    def __init__(
        self,
        worker: RepoWorker,
        committer: AutoCommitter,
        settings: Settings,
        activity: Activity | None = None,
    ) -> None:
        self.worker = worker
        self.committer = committer
        self.activity = activity or Activity()
        self._told_held: set[str] = set()  # the held deletions the feed was last told of
        self.batcher = Batcher(settings.delay, settings.maxdelay, settings.maxbatch)
        self.blocked: str | None = None
        self.commits = 0
        self.on_commit: Callable[[], None] | None = None  # the replicator pushes it on
        self._retry_at = 0.0
        self._last_commit = float("-inf")
        self._index_cost = 0.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def note(self, path: str, writing: bool | None = None, gone: bool = False) -> None:
        """An event on ``path``; called on the loop thread."""
        self.batcher.note(path, self._now(), writing, gone)
        self._idle.clear()
        self._wake.set()

    def note_many(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.note(path)

    def git_changed(self) -> None:
        """git started or finished something: re-check a blocked batch now."""
        self._retry_at = 0.0
        self._wake.set()

    async def run(self) -> None:
        """Commit batches as they fall due, and sync the index when nothing is pending."""
        while True:
            # Cleared before looking at the batcher, never after an await: an event noted
            # while a commit or index write was running must still wake the next wait.
            self._wake.clear()
            now = self._now()
            deadline = self.batcher.deadline()
            if deadline is not None:
                deadline = max(deadline, self._retry_at)
            if deadline is not None and deadline <= now:
                paths = self.batcher.take(now)
                if paths:
                    await self._commit(paths)
                    continue
                deadline = self.batcher.deadline()
            if deadline is None and self.committer.index_dirty and not self.blocked:
                quiet = min(INDEX_QUIET_MAX, INDEX_QUIET_FACTOR * self._index_cost)
                started = self._now()
                if started < self._last_commit + quiet:
                    deadline = self._last_commit + quiet
                else:
                    synced = await self.worker.run(self.committer.sync_index)
                    if self.committer.recheck:
                        self.note_many(sorted(self.committer.recheck))
                        self.committer.recheck.clear()
                    if synced:
                        self._index_cost = self._now() - started
                    else:
                        self._retry_at = self._now() + LOCK_RETRY
                        deadline = self._retry_at
            if deadline is None and not self.committer.index_dirty and not len(self.batcher):
                self._idle.set()
            timeout = None if deadline is None else max(0.0, deadline - self._now())
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), timeout)

    async def _commit(self, paths: list[str], allow_deletions: bool = False) -> CommitResult:
        async with self._lock:
            result = await self.worker.run(self.committer.commit_paths, paths, allow_deletions)
        self._after(result, paths)
        return result

    def _after(self, result: CommitResult, paths: list[str]) -> None:
        if result.blocked:
            if result.blocked != self.blocked:
                log.warning("auto-commit paused: %s", result.blocked)
            self.blocked = result.blocked
            self._retry_at = self._now() + (LOCK_RETRY if result.retry_soon else BLOCKED_RETRY)
            self.note_many(paths)
            return
        if self.blocked:
            log.info("auto-commit resumed")
            self.blocked = None
        if result.requeue:
            self.note_many(result.requeue)
        if not self.committer.held:
            self._told_held = set()
        elif result.held and self.committer.held != self._told_held:
            self._told_held = set(self.committer.held)
            held = sorted(self.committer.held)
            self.activity.emit(
                "held",
                f"holding {len(held)} deletion{'s' if len(held) != 1 else ''} "
                "(mass-deletion guard)",
                paths=held[:100],
                count=len(held),
            )
        if result.commit:
            self._last_commit = self._now()
            self.commits += 1
            summary = self.committer.last_summary
            log.info("committed %s %s", result.commit[:10], summary)
            self.activity.emit("commit", f"committed {summary}", commit=result.commit)
            if self.on_commit is not None:
                self.on_commit()

    async def flush(
        self, allow_deletions: bool = False, patience: float = 10.0, keep_writing: bool = False
    ) -> CommitResult:
        """Commit everything pending now, ignoring the quiet window (shutdown, sync); a
        short block (a git lock, git at work) is waited out for up to ``patience`` seconds.
        ``keep_writing`` leaves files still open for writing to their own batch: what they
        hold now may be a moment between an editor's truncate and its write."""
        give_up = self._now() + patience
        while True:
            paths = self.batcher.take(self._now(), force=True, keep_writing=keep_writing)
            result = await self._commit(paths, allow_deletions)
            if not (result.blocked and result.retry_soon) or self._now() >= give_up:
                break
            await asyncio.sleep(LOCK_RETRY)
        if self.committer.index_dirty:
            await self.worker.run(self.committer.sync_index)
        return result

    async def wait_idle(self) -> None:
        """Until nothing is pending and the index is written (used by tests and sync)."""
        await self._idle.wait()

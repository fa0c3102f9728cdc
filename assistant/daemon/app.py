"""The assistant: starts every actor on one asyncio loop and stops them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pygit2

from assistant.activity import Activity
from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.daemon.committer import CommitActor
from assistant.daemon.control import ControlServer, socket_path
from assistant.daemon.drives import DriveWatch
from assistant.daemon.limits import FALLBACK_RESCAN, count_dirs, read_watch_limit, watch_shortage
from assistant.daemon.notifier import Notifier
from assistant.daemon.presence import GitDirHandle
from assistant.daemon.replicator import Replicator
from assistant.daemon.wakeups import Wakeups
from assistant.daemon.watcher import TreeWatcher
from assistant.daemon.worker import RepoWorker
from assistant.errors import AnnexsyncError
from assistant.gitrepo import state_dir, worktree_root
from assistant.integrate import read_held_merges
from assistant.locks import clear_stale_ref_locks
from assistant.maintenance import gc_auto
from assistant.node import NodeIdentity
from assistant.remotes import read_remotes, select_remotes
from assistant.syncing import sync_with

log = logging.getLogger("annexsync.assistant")

HEALTH_INTERVAL = 5.0
CONFIG_SETTLE = 0.1  # `git remote add` writes the config several times in a row
# libgit2 caches only trees under 4 KiB, so in a directory of a few hundred files every path
# lookup re-reads and re-parses the tree (0.1 ms at 1,000 entries, 1.3 ms at 10,000): a burst
# of 1,000 files there spent most of its time doing that. Trees up to 1 MiB are cached.
TREE_CACHE_LIMIT = 1 << 20
WATCH_RETRY = 60.0


class Assistant:
    """One repository's daemon: watcher, committer, rescanner and control socket."""

    def __init__(self, repo: pygit2.Repository, identity: NodeIdentity, settings: Settings) -> None:
        pygit2.settings.cache_object_limit(pygit2.enums.ObjectType.TREE, TREE_CACHE_LIMIT)
        self.repo = repo
        self.identity = identity
        self.settings = settings
        self.root = worktree_root(repo)
        self.state = state_dir(repo)
        self.worker = RepoWorker()
        self.committer = AutoCommitter(repo, identity, settings)
        self.activity = Activity()
        self._status_repo: pygit2.Repository | None = None
        self._status_lock = asyncio.Lock()
        self.actor: CommitActor | None = None
        self.replicator: Replicator | None = None
        self.drives: DriveWatch | None = None
        self.wakeups: Wakeups | None = None
        self.notifier: Notifier | None = None
        self._config_timer: asyncio.TimerHandle | None = None
        self.watcher: TreeWatcher | None = None
        self.watch_mode = "starting"
        self.watch_message: str | None = None
        self.directories = 0
        self.rescan_interval = settings.rescan
        self.stop_event: asyncio.Event | None = None
        self.fatal: str | None = None  # why the assistant stopped by itself (exit non-zero)
        self.gitdir = GitDirHandle(Path(repo.path))
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- start and stop ----------------------------------------------------------------
    async def run(self, on_ready: Callable[[], None] = lambda: None) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop_event.set)
        self.actor = CommitActor(self.worker, self.committer, self.settings, self.activity)
        self.replicator = Replicator(
            self.repo,
            self.root,
            self.identity,
            self.settings,
            self.committer,
            self.worker,
            self.actor,
            self._spawn,
        )
        self.actor.on_commit = self.replicator.committed
        replicator = self.replicator
        self.notifier = Notifier(
            self.repo.path, self.root, self.identity.name, self.settings,
            peers=lambda: replicator.status, held=lambda: len(self.committer.held),
        )  # fmt: skip
        self.activity.subscribe(self.notifier.event)
        self.drives = DriveWatch(  # local-path peers: synced when their drive is mounted
            [r for r in read_remotes(self.repo, self.root) if r.sync],
            on_present=lambda name: replicator.drive_present(name, True),
            on_absent=lambda name: replicator.drive_present(name, False),
        )
        await self._start_watching()
        control = ControlServer(socket_path(self.state), self.handle)
        await control.start()
        try:
            await self.worker.run(self.committer.locks.clear_stale)
            await self.worker.run(self.committer.repair_index)
            self.actor.note_many(await self.worker.run(self.committer.scan_candidates))
            self._spawn("committer", self.actor.run)
            self._spawn("sanity", self._sanity_loop)
            self._spawn("replicator", self.replicator.run)
            self._spawn("drives", self.drives.start)  # a slow drive must not delay readiness
            self._spawn("notifier", self.notifier.run)
            self.wakeups = Wakeups(self._woken)
            self._spawn("wakeups", self.wakeups.run)
            log.info("assistant started on %s (pid %d)", self.root, os.getpid())
            self.started.set()
            on_ready()
            await self.stop_event.wait()
            if self.fatal is None:
                log.info("stopping: committing what is pending")
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            if self.drives is not None:
                await self.drives.stop()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if self.fatal is None:  # a deleted repository has nowhere to commit to
                    await self.actor.flush(patience=2.0)
            finally:
                await self.replicator.close()
                await control.close()
                self.worker.close()
                self.gitdir.close()
            if self.fatal is None:
                log.info("assistant stopped")

    def stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._supervise(name, factory), name=name)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        """A finished actor (a one-off check, a listener that gave up) is let go of."""
        if task in self._tasks:
            self._tasks.remove(task)

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run an actor; if it crashes, log it by name and restart it with a growing delay."""
        delay = 0.1
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in %.1fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _start_watching(self) -> None:
        assert self.actor is not None
        self.directories = await asyncio.to_thread(count_dirs, self.root)
        shortage = watch_shortage(
            self.directories, read_watch_limit(), min(self.settings.rescan, FALLBACK_RESCAN)
        )
        if shortage is None:
            self.watcher = TreeWatcher(
                self.root,
                Path(self.repo.path),
                asyncio.get_running_loop(),
                self.actor.note,
                self.actor.git_changed,
                self._root_gone,
                self.replicator.refs_arrived,
                self._config_changed,
                lambda: [p for p in self.committer.skipped if p.endswith("/")],
            )
            try:
                await asyncio.to_thread(self.watcher.start)
                self.watch_mode = "inotify"
                self.watch_message = None
                self.rescan_interval = self.settings.rescan
                return
            except OSError as exc:
                self.watcher.stop()
                self.watcher = None
                shortage = (
                    f"cannot watch the tree ({exc.strerror or exc}); raise "
                    f"fs.inotify.max_user_watches / max_user_instances with sysctl. Until then "
                    f"changes are found by rescanning every "
                    f"{min(self.settings.rescan, FALLBACK_RESCAN):g}s"
                )
        log.error("%s", shortage)
        self.watch_mode = "rescan"
        self.watch_message = shortage
        self.rescan_interval = min(self.settings.rescan, FALLBACK_RESCAN)

    def _config_changed(self) -> None:
        """git wrote .git/config (a remote added or removed, a switch set): the replicator
        looks at the remotes again once the writes settle."""
        if self._config_timer is None and self.replicator is not None:
            replicator = self.replicator

            def reload() -> None:
                self._config_timer = None
                try:
                    replicator.reload_remotes()
                except AnnexsyncError as exc:
                    log.error("the remotes were not reloaded: %s", exc)
                if self.notifier is not None:
                    self.notifier.reload()

            self._config_timer = asyncio.get_running_loop().call_later(CONFIG_SETTLE, reload)

    def _woken(self, reason: str) -> None:
        """A resume from sleep or a network change: offline peers and drives are looked at
        again now, not at their next scheduled retry."""
        if self.replicator is not None:
            self.replicator.retry_offline(reason)
        if self.drives is not None:
            self._spawn("drive check", self.drives.check)

    def _root_gone(self) -> None:
        if self._deleted():
            return
        log.error(
            "the working tree root %s vanished; nothing will be committed until it returns",
            self.root,
        )

    def _deleted(self) -> bool:
        """When the repository was deleted (not merely out of reach), stop with one line."""
        if self.fatal is None and self.gitdir.deleted():
            self.fatal = f"the repository {self.root} was deleted; the assistant stops"
            log.error("%s", self.fatal)
            self.stop()
        return self.fatal is not None

    async def _sanity_loop(self) -> None:
        """Rescan on schedule; restart a watcher that died; retry watching after a shortage."""
        assert self.actor is not None
        loop = asyncio.get_running_loop()
        next_rescan = loop.time() + self.rescan_interval
        next_watch_try = loop.time() + WATCH_RETRY
        while True:
            await asyncio.sleep(min(HEALTH_INTERVAL, self.rescan_interval))
            if self._deleted():
                return
            await asyncio.to_thread(clear_stale_ref_locks, Path(self.repo.path), time.time())
            if self.watcher is not None and not self.watcher.healthy():
                log.error("the file watcher stopped; rescanning until it is back")
                self.watcher.stop()
                self.watcher = None
                self.watch_mode = "rescan"
                self.watch_message = "the file watcher stopped"
                self.rescan_interval = min(self.settings.rescan, FALLBACK_RESCAN)
                next_watch_try = 0.0
            if self.watcher is None and self.root.is_dir() and loop.time() >= next_watch_try:
                await self._start_watching()
                next_watch_try = loop.time() + WATCH_RETRY
                next_rescan = 0.0
            if loop.time() >= next_rescan:
                await self.rescan()
                if self.rescan_interval >= self.settings.rescan:  # not in fallback mode
                    await asyncio.to_thread(gc_auto, self.repo.path)
                next_rescan = loop.time() + self.rescan_interval

    async def rescan(self) -> int:
        """Queue every path where the tree may differ from HEAD; returns how many."""
        assert self.actor is not None
        if not self.root.is_dir():
            return 0
        candidates = await self.worker.run(self.committer.scan_candidates)
        self.actor.note_many(candidates)
        return len(candidates)

    # --- control requests --------------------------------------------------------------
    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("cmd")
        if command == "status":
            return {"ok": True, **(await self.status())}
        if command == "stop":
            self.stop()
            return {"ok": True}
        if command == "sync":
            return await self.sync(
                bool(request.get("allow_deletions")), list(request.get("remotes") or [])
            )
        if command == "ping":
            return {"ok": True, "pid": os.getpid()}
        if command in ("committed", "reread"):
            return await self.hook_event(command)
        if command == "wake":
            self._woken("asked to retry offline peers")
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}"}

    async def hook_event(self, event: str) -> dict[str, Any]:
        """A git hook's news, answered at once: ``committed`` (a commit made by hand: push
        it) or ``reread`` (a merge, checkout or rewrite: look at the repository again)."""
        assert self.actor is not None
        self.actor.git_changed()
        if event == "committed" and self.replicator is not None:
            self.replicator.committed()
        if event == "reread":
            self._spawn("reread", self._reread)
        return {"ok": True}

    async def _reread(self) -> None:
        await self.rescan()
        if self.replicator is not None:
            self.replicator.refs_arrived()

    async def sync(self, allow_deletions: bool, remote_names: list[str]) -> dict[str, Any]:
        """Commit everything pending now (after a rescan), optionally releasing held
        deletions; then fetch from, merge and push to the named remotes."""
        assert self.actor is not None
        await self.rescan()
        result = await self.actor.flush(allow_deletions)
        reply: dict[str, Any] = {
            "ok": result.blocked is None,
            "error": result.blocked,
            "commit": result.commit,
            "summary": self.committer.last_summary if result.commit else None,
            "held": sorted(self.committer.held),
            "sync": None,
        }
        if result.blocked is None and self.replicator is not None:
            # With no remote this still merges what peers pushed here. The replicator's
            # repository handle and connection pool are reused: the worker owns self.repo,
            # and a cached connection is the point of the pool.
            remotes = select_remotes(read_remotes(self.repo, self.root), remote_names, "sync")
            report = await sync_with(
                self.replicator.repo,
                self.identity,
                self.committer,
                remotes,
                self.settings.resolvemerge,
                blocking=self.worker.run,
                peers=self.replicator.peers,
            )
            self.replicator.tell_merge(report.merge)
            reply["sync"] = report.as_dict()
            reply["ok"] = reply["ok"] and report.ok
        return reply

    async def _head_info(self) -> dict[str, Any]:
        """Branch and last commit, read through a handle of status's own on another thread:
        through the worker, status would wait for a long merge or checkout to end, and a
        live view would freeze just when it has progress to show."""
        async with self._status_lock:
            return await asyncio.to_thread(self._read_head_info)

    def _read_head_info(self) -> dict[str, Any]:
        if self._status_repo is None:
            self._status_repo = pygit2.Repository(self.repo.path)
        return head_info(self._status_repo)

    async def status(self) -> dict[str, Any]:
        assert self.actor is not None
        info = await self._head_info()
        pending = self.actor.batcher.paths()
        return {
            "running": True,
            "pid": os.getpid(),
            "node": self.identity.name,
            "uuid": self.identity.uuid,
            "root": str(self.root),
            **info,
            "pending": sorted(pending)[:200],
            "pending_count": len(pending),
            "writing": sorted(self.actor.batcher.writing()),
            "held": sorted(self.committer.held),
            "large": dict(sorted(self.committer.large.items())),
            "nested": sorted(self.committer.nested),
            "skipped": dict(sorted(self.committer.skipped.items())[:200]),
            "paused": self.actor.blocked,
            "held_merges": read_held_merges(self.state),
            "commits": self.actor.commits,
            "watch": {
                "mode": self.watch_mode,
                "directories": self.directories,
                "limit": read_watch_limit(),
                "message": self.watch_message,
            },
            "peers": self.replicator.describe() if self.replicator else [],
            "activity": self.activity.recent(),
            "progress": self.activity.running(),
            "wakeups": self.wakeups.status().as_dict() if self.wakeups else None,
        }


def head_info(repo: pygit2.Repository) -> dict[str, Any]:
    """Branch, HEAD and last commit summary, for status."""
    try:
        if repo.head_is_unborn:
            branch = repo.references["HEAD"].target
            return {
                "branch": str(branch).removeprefix("refs/heads/"),
                "head": None,
                "detached": False,
                "last_commit": None,
            }
        commit = repo.head.peel(pygit2.Commit)
        detached = repo.head_is_detached
        return {
            "branch": None if detached else repo.head.shorthand,
            "head": str(commit.id),
            "detached": detached,
            "last_commit": {
                "id": str(commit.id),
                "summary": commit.message.split("\n", 1)[0],
                "time": commit.commit_time,
            },
        }
    except (pygit2.GitError, KeyError) as exc:
        return {
            "branch": None,
            "head": None,
            "detached": False,
            "last_commit": None,
            "error": str(exc),
        }

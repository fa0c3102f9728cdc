"""The change listener: instant pull from one peer through its ``annexsync notify-changes``.

For each peer that has annexsync, the assistant keeps the peer's ``notify-changes`` running
over the cached connection (``assistant.notify.watch_remote``) and is told the moment one of
the peer's branches moves to a commit we lack, so a node that cannot be pushed to (behind NAT,
no sshd) still gets changes as fast as one that can. What the listener says is only "fetch
from this remote now" (``on_change``); fetching and merging stay the replicator's job.

- The ref burst that follows ``ready`` is judged like any later change, so after a reconnect
  whatever moved while the stream was down is caught up at once.
- A failed or ended stream is restarted with ``Backoff`` (exponential, jittered). A stream that
  stayed up for ``stable_after`` seconds counts as healthy, so the next failure starts the
  backoff over; one that dies right after ``ready`` keeps growing it.
- A far side without the command (exit status 127, "command not found", an annexsync too old
  to know it, a git-shell) or a command turned off in the config is reported once through
  ``on_unsupported`` and never retried: the replicator polls that remote instead.

The decisions (which ref lines matter, what counts as unsupported, how failures count, how the
command is invoked) are pure functions below; the actor only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import tzinfo
from enum import Enum
from typing import Any, Protocol

import pygit2

from assistant.errors import AnnexsyncError
from assistant.notify import watch_remote
from assistant.peers import remote_path_expr
from assistant.peerstate import Backoff, Rng, format_duration, format_time, one_line
from assistant.remotes import Location, Remote, SSHLocation
from assistant.streamed import Record
from assistant.transport.base import Transport

log = logging.getLogger("annexsync.listener")

DEFAULT_BACKOFF = Backoff(initial=1.0, cap=60.0)
"""Reconnect delays: a peer back from a reboot is listened to again within a minute."""

STABLE_AFTER = 30.0
"""A stream that ran this long after ``ready`` was healthy: its end restarts the backoff."""


# --- pure decisions -------------------------------------------------------------------------


def wants_fetch(ref: str, oid: str | None) -> bool:
    """Whether a change reported by the peer can bring us something to fetch: a branch
    (``refs/heads/*``, what a fetch takes) that now points somewhere. Deletions and the
    peer's ``refs/remotes/*`` (what other nodes pushed there, merged into its branches
    anyway) cannot."""
    return oid is not None and ref.startswith("refs/heads/") and len(ref) > len("refs/heads/")


_NOT_FOUND = (
    re.compile(r"exit status 127\b"),
    re.compile(r"command not found", re.IGNORECASE),
    re.compile(r": not found$"),  # dash and busybox: "sh: 1: annexsync: not found"
    re.compile(r"No such file or directory$"),  # exec of a missing path: "env: 'x': No such..."
    re.compile(r"No module named '?assistant"),  # python -m assistant without the package
)
_REFUSED = (
    re.compile(r"invalid choice: 'notify-changes'"),  # an annexsync from before the command
    re.compile(r"unrecognized command '"),  # git-shell
    re.compile(r"unknown git/gitolite command", re.IGNORECASE),
    re.compile(r"This account is currently not available"),  # nologin
    re.compile(r"annexsync: error: refused: "),  # a key restricted to `annexsync serve`
)


def unsupported_reason(error: str) -> str | None:
    """Why the far side can never run the command, from the one-line error of a stream that
    did not start; None when the failure may pass (network, missing repository, a crash)."""
    if "did not start" not in error and "command not found" not in error:
        return None
    detail = error.partition("did not start: ")[2] or error
    if re.search(r"(?:^|: )cd: ", detail):
        return None  # the repository's directory is missing, not the command
    if any(p.search(detail) for p in _NOT_FOUND):
        return f"the notify command is not installed there ({detail})"
    if any(p.search(detail) for p in _REFUSED):
        return f"the peer refuses the notify command ({detail})"
    return None


def failures_after(previous: int, ready: bool, lived: float, stable_after: float) -> int:
    """The consecutive-failure count once a stream ends: 1 after a stream that stayed up
    ``stable_after`` seconds past ``ready`` (it worked; retry soon), one more otherwise."""
    if ready and lived >= stable_after:
        return 1
    return previous + 1


def invocation(location: Location, command: str) -> tuple[str, str]:
    """The command and path argument that run ``command`` on the peer's repository.

    ``notify-changes`` takes its path literally, while git expands a leading ``~`` in a remote
    path. So an ssh path starting with ``~`` is reached through the far side's shell instead:
    ``cd ~/notes && annexsync notify-changes .``, which the transport completes with the
    quoted path ``'.'``.
    """
    if isinstance(location, SSHLocation) and location.path.startswith("~"):
        return f"cd {remote_path_expr(location.path)} && {command}", "."
    return command, location.path


def object_lookup(repo: pygit2.Repository) -> Callable[[str], bool]:
    """``has_commit`` for a ChangeListener: whether our object database holds ``oid``."""
    odb = repo.odb

    def has(oid: str) -> bool:
        try:
            return bool(odb.exists(oid))
        except (ValueError, pygit2.GitError):
            return False

    return has


class Stream(Protocol):
    """Where objects sent along with changes go (``assistant.streamed``): ``hello`` asks for
    them, ``objects`` checks and stores a frame, ``take`` says whether a changed ref's commit
    came that way (and then moves our tracking ref: no fetch needed)."""

    def hello(self) -> str: ...

    def objects(self, records: list[Record]) -> None: ...

    def take(self, ref: str, oid: str) -> bool: ...


# --- status ---------------------------------------------------------------------------------


class ListenerState(Enum):
    """Where a listener is."""

    CONNECTING = "connecting"
    LISTENING = "listening"
    RECONNECTING = "reconnecting"
    UNSUPPORTED = "unsupported"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ListenerStatus:
    """A listener's state for ``annexsync status``. Times are wall-clock epoch seconds:
    ``since`` is when the state was entered, ``retry_at`` the next attempt while
    RECONNECTING; ``last_error`` is kept after a recovery, like a peer's."""

    remote: str
    state: ListenerState = ListenerState.CONNECTING
    since: float | None = None
    retry_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    reason: str | None = None  # why UNSUPPORTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "state": self.state.value,
            "since": self.since,
            "retry_at": self.retry_at,
            "last_error": self.last_error,
            "failures": self.failures,
            "reason": self.reason,
        }

    def describe(self, now: float, tz: tzinfo | None = None) -> str:
        """One line, e.g. "reconnecting at 12:01:11 (in 8s): connection refused"."""
        state = self.state
        if state is ListenerState.LISTENING and self.since is not None:
            return f"listening since {format_time(self.since, now, tz)}"
        if state is ListenerState.RECONNECTING and self.retry_at is not None:
            when = f"at {format_time(self.retry_at, now, tz)}"
            if self.retry_at > now:
                when += f" (in {format_duration(self.retry_at - now)})"
            return f"reconnecting {when}: {self.last_error}"
        if state is ListenerState.UNSUPPORTED:
            return f"no change notifications, polled instead: {self.reason}"
        if state is ListenerState.CONNECTING and self.failures and self.last_error:
            return f"connecting (after {self.failures} failures): {self.last_error}"
        return state.value


# --- the actor ------------------------------------------------------------------------------


class ChangeListener:
    """Keeps one remote's ``notify-changes`` stream running and says when to fetch.

    ``transport`` reaches the peer (``Peers.transport(remote)``: the shared ssh pool, so the
    stream rides the same connection as pushes and fetches). ``has_commit(oid)`` answers from
    our object database (``object_lookup(repo)``). ``on_change(remote_name)`` means "a branch
    there moved to a commit we lack: fetch and merge"; it is called on the loop, at most once
    per new commit per connection. ``on_unsupported(remote_name, reason)`` is called once if
    the peer cannot run the command; the listener then ends.
    """

    def __init__(
        self,
        remote: Remote,
        transport: Transport,
        has_commit: Callable[[str], bool],
        on_change: Callable[[str], None],
        on_unsupported: Callable[[str, str], None] | None = None,
        *,
        stream: Stream | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        stable_after: float = STABLE_AFTER,
        rng: Rng | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.remote = remote
        self.transport = transport
        self.has_commit = has_commit
        self.on_change = on_change
        self.on_unsupported = on_unsupported
        self.stream = stream
        self.peer_node = ""  # the peer's annexsync.name, as its notify-changes said
        self._outbox: asyncio.Queue[str] | None = None
        self.backoff = backoff
        self.stable_after = stable_after
        self.rng: Rng = rng or random.Random()
        self.clock = clock
        self._status = ListenerStatus(remote.name)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready_at: float | None = None  # loop time of this stream's ``ready``
        self._signalled: set[str] = set()

    # --- control ----------------------------------------------------------------------------

    def status(self) -> ListenerStatus:
        """A snapshot; it never changes under the reader."""
        return self._status

    def start(self) -> None:
        """Run the listener as a task of the running loop (``run`` is the same, awaited)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"listener {self.remote.name}")

    async def stop(self) -> None:
        """End the stream (the far side's command exits with its channel) and the task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._status.state is not ListenerState.UNSUPPORTED:
            self._set(state=ListenerState.STOPPED, retry_at=None)

    def tell_have(self, oids: list[str]) -> None:
        """Tell the peer's notify-changes which commits we now hold (our branch moved), so
        it does not send them back to us when the peer takes them."""
        listening = self._status.state is ListenerState.LISTENING
        if self._outbox is not None and self.stream is not None and listening:
            for oid in oids:
                self._outbox.put_nowait(f"have {oid}\n")

    def retry_now(self) -> None:
        """Cut a reconnect wait short (network back, resume from sleep). Within the backoff's
        floor of the last failure the attempt still waits for the floor, so a flapping
        trigger cannot make a dead peer spin."""
        self._wake.set()

    async def run(self) -> None:
        """Listen until cancelled, or until the peer turns out not to support it."""
        command = self.remote.notify
        if command is None:
            self._give_up(f"remote.{self.remote.name}.annexsync-notify is off")
            return
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            self._set(state=ListenerState.CONNECTING, retry_at=None)
            error = await self._listen(command)
            ready, self._ready_at = self._ready_at, None
            if ready is None:
                reason = unsupported_reason(error)
                if reason is not None:
                    self._give_up(reason)
                    return
            lived = loop.time() - ready if ready is not None else 0.0
            failures = failures_after(failures, ready is not None, lived, self.stable_after)
            delay = self.backoff.next_delay(failures, self.rng)
            self._set(
                state=ListenerState.RECONNECTING,
                retry_at=self.clock() + delay,
                last_error=error,
                failures=failures,
            )
            log.log(
                logging.WARNING if failures == 1 else logging.INFO,
                "change notifications from %s: %s; reconnecting in %s",
                self.remote.name,
                error,
                format_duration(delay),
            )
            await self._pause(delay)

    # --- internals --------------------------------------------------------------------------

    async def _listen(self, command: str) -> str:
        """Run one stream until it fails; the failure as one line."""
        self._signalled.clear()
        self._wake.clear()
        name, path = invocation(self.remote.location, command)
        try:
            self._outbox = asyncio.Queue()
            changes = watch_remote(
                self.transport,
                path,
                name,
                hello=self.stream.hello() if self.stream else "",
                on_objects=self.stream.objects if self.stream else None,
                on_ready=self._ready,
                outbox=self._outbox,
            )
            async with contextlib.aclosing(changes) as stream:
                async for ref, oid in stream:
                    self._changed(ref, oid)
        except (AnnexsyncError, OSError) as exc:
            return one_line(exc)
        except asyncio.CancelledError as exc:
            # An SSH channel aborted and then finished re-raises the cancellation of its own
            # stderr reader (on a lost connection): not ours unless our task is being cancelled.
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            cause = exc.__context__
            if isinstance(cause, AnnexsyncError | OSError):
                return one_line(cause)
        return f"change notification on {self.transport.describe()} ended"

    def _ready(self, node: str) -> None:
        self.peer_node = node
        self._ready_at = asyncio.get_running_loop().time()
        self._set(state=ListenerState.LISTENING, retry_at=None)
        log.info("listening for changes on %s", self.remote.name)

    def _changed(self, ref: str, oid: str | None) -> None:
        if oid is None or not wants_fetch(ref, oid) or oid in self._signalled:
            return
        if self.stream is not None and self.stream.take(ref, oid):
            return
        try:
            if self.has_commit(oid):
                return
        except Exception as exc:  # unanswerable: fetching is the safe side
            log.error("cannot look up %s here: %s", oid, one_line(exc))
        self._signalled.add(oid)
        try:
            self.on_change(self.remote.name)
        except Exception as exc:  # a failing callback must not end the stream
            log.error("on_change for %s failed: %s", self.remote.name, one_line(exc))

    def _give_up(self, reason: str) -> None:
        self._set(state=ListenerState.UNSUPPORTED, retry_at=None, reason=reason)
        log.info("no change notifications from %s (polled instead): %s", self.remote.name, reason)
        if self.on_unsupported is not None:
            try:
                self.on_unsupported(self.remote.name, reason)
            except Exception as exc:
                log.error("on_unsupported for %s failed: %s", self.remote.name, one_line(exc))

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less once ``retry_now`` asks (never below the floor)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + delay
        while (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake.clear()
                deadline = min(deadline, start + self.backoff.floor)

    def _set(self, **changes: Any) -> None:
        if "state" in changes and changes["state"] is not self._status.state:
            changes["since"] = self.clock()
        self._status = replace(self._status, **changes)

"""The notifier actor: feeds the assistant's activity and its peers' status to the notice
policy, and shows what the policy decides on the desktop.

Events arrive in whichever thread emitted them (the event loop or the repository worker);
they are queued and handed to the policy on the loop, which alone touches it. The actor also
looks at the peers and the held deletions every little while: a peer's outage is noticed by
how long it lasts, not by an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

import pygit2

from assistant.activity import Event
from assistant.config import Settings, read_settings
from assistant.desktop import Desktop
from assistant.errors import AnnexsyncError
from assistant.notices import NoticePolicy, label_for
from assistant.peerstate import PeerStatus
from assistant.timeouts import within

log = logging.getLogger("annexsync.notifier")

CHECK_MAX = 30.0  # the longest wait between looks at the peers and the held deletions
CHECK_MIN = 0.1


def check_interval(unreachable_after: float) -> float:
    """How often to look at the peers: a quarter of the outage threshold, within bounds, so
    an outage is told at most a quarter late."""
    if unreachable_after <= 0:
        return CHECK_MAX
    return min(CHECK_MAX, max(CHECK_MIN, unreachable_after / 4))


def home_relative(path: Path, home: Path) -> str:
    """``~/notes`` for a directory under the home directory, the full path otherwise."""
    with contextlib.suppress(ValueError):
        return "~/" + path.relative_to(home).as_posix() if path != home else "~"
    return str(path)


class Notifier:
    """Desktop notifications for one repository's assistant."""

    def __init__(
        self,
        repo_path: str,
        root: Path,
        node: str,
        settings: Settings,
        peers: Callable[[], Mapping[str, PeerStatus]],
        held: Callable[[], int],
        desktop: Desktop | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo_path = repo_path
        self.label = label_for(root.name, node)
        self.where = home_relative(root, Path.home())
        self.peer_status = peers
        self.held_count = held
        self.clock = clock
        self.settings = settings
        self.desktop = desktop or Desktop(settings.notifycommand)
        self.policy = self._new_policy()
        self._inbox: deque[Event] = deque(maxlen=1000)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    def _new_policy(self) -> NoticePolicy:
        return NoticePolicy(self.label, self.where, self.settings.notifyunreachable)

    def event(self, event: Event) -> None:
        """An activity subscriber, callable from any thread."""
        if not self.settings.notifications:
            return
        self._inbox.append(event)
        with contextlib.suppress(RuntimeError):  # the loop has closed: the daemon is stopping
            self._loop.call_soon_threadsafe(self._wake.set)

    def reload(self) -> None:
        """The repository's config was written: take up changed notification settings (on,
        off, threshold, command) without a restart. A bad value keeps the old settings."""
        try:
            fresh = read_settings(pygit2.Repository(self.repo_path).config)
        except (AnnexsyncError, pygit2.GitError) as exc:
            log.error("notification settings not reloaded: %s", exc)
            return
        old = self.settings
        if (fresh.notifications, fresh.notifyunreachable, fresh.notifycommand) == (
            old.notifications,
            old.notifyunreachable,
            old.notifycommand,
        ):
            return
        self.settings = fresh
        self.policy = self._new_policy()
        self._inbox.clear()
        if fresh.notifycommand != old.notifycommand:
            self.desktop = Desktop(fresh.notifycommand)
        log.info("desktop notifications %s", "on" if fresh.notifications else "off")
        self._wake.set()

    async def run(self) -> None:
        while True:
            if self.settings.notifications:
                await self.step()
            timeout = check_interval(self.settings.notifyunreachable)
            due = self.policy.next_due()
            if due is not None:
                timeout = min(timeout, max(0.0, due - self.clock()) + 0.01)
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), timeout)
            self._wake.clear()

    async def step(self) -> None:
        """Hand what happened to the policy and show what it decides."""
        while self._inbox:
            self.policy.event(self._inbox.popleft())
        now = self.clock()
        self.policy.held_now(self.held_count())
        self.policy.peers(self.peer_status(), now)
        for notice in self.policy.due(now):
            log.info("notification: %s", notice.title)
            await self.desktop.show(notice)

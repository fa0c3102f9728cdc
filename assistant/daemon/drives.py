"""The drive watch: tells the replicator when a local-path peer's drive comes and goes.

A remote whose path lies on removable media is synced the moment the drive is mounted, and
stays a quiet offline peer while it is not. ``MountWatcher`` reports mount table changes;
``affected`` (pure) says which remotes a change may concern: those whose path lies at or
below an added or removed mount point. Only those are looked at on disk
(``driveid.is_present``), and ``reports`` (pure) turns what was and what is into calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping

from assistant.driveid import is_present
from assistant.mounts import DEFAULT_INTERVAL, Mount, MountWatcher
from assistant.remotes import LocalLocation, Remote

log = logging.getLogger("annexsync.drives")


def lies_under(path: str, mount_point: str) -> bool:
    """Component-wise: /mnt/usb/notes lies under /mnt/usb and /mnt, not under /mnt/us."""
    path, point = posixpath.normpath(path), posixpath.normpath(mount_point)
    if point == "/":
        return path.startswith("/")
    return path == point or path.startswith(point + "/")


def affected(
    paths: Mapping[str, str], added: Iterable[Mount], removed: Iterable[Mount]
) -> set[str]:
    """The remotes (name -> resolved path) whose path lies at or below a mount point that was
    added or removed: only their presence can have changed."""
    points = {m.mount_point for m in added} | {m.mount_point for m in removed}
    return {name for name, path in paths.items() if any(lies_under(path, p) for p in points)}


def reports(
    names: Iterable[str], was: Mapping[str, bool], now: Mapping[str, bool]
) -> list[tuple[str, bool]]:
    """What to tell about the remotes a mount change concerned, in name order: present for
    each one there now (a drive mounted, or swapped for another: sync again), absent for each
    one that was there and is gone. A remote that stays absent is not mentioned again."""
    out: list[tuple[str, bool]] = []
    for name in sorted(set(names)):
        if now.get(name, False):
            out.append((name, True))
        elif was.get(name, False):
            out.append((name, False))
    return out


def _resolve(paths: Mapping[str, str]) -> dict[str, str]:
    """Resolved paths (symlinks followed as far as they exist), as mountinfo spells them."""
    return {name: os.path.realpath(path) for name, path in paths.items()}


def _presence(paths: Mapping[str, str]) -> dict[str, bool]:
    return {name: is_present(path) for name, path in paths.items()}


class DriveWatch:
    """Calls ``on_present(name)`` when a local remote's path appears with a mount and
    ``on_absent(name)`` when it goes; at ``start()`` it reports every local remote once (present
    or absent). Remotes on other transports are ignored. Callbacks run on the loop; one that
    raises is logged and the watching goes on. Disk checks run in a thread."""

    def __init__(
        self,
        remotes: Iterable[Remote],
        on_present: Callable[[str], None],
        on_absent: Callable[[str], None],
        *,
        polling: bool = False,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.paths = {
            r.name: r.location.path for r in remotes if isinstance(r.location, LocalLocation)
        }
        self.on_present = on_present
        self.on_absent = on_absent
        self.present: dict[str, bool] = {}
        self._watcher = MountWatcher(self._changed, polling=polling, interval=interval)
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> str | None:
        """How mount changes are noticed ("events" or "polling"); None when not watching."""
        return self._watcher.mode

    async def start(self) -> None:
        """Begin watching, then report which local remotes are there now. Watching starts
        first, so a drive mounted meanwhile is reported (perhaps twice), never missed. Without
        local remotes nothing is watched."""
        if not self.paths:
            return
        watching = True
        try:
            await self._watcher.start()
        except OSError as exc:
            watching = False
            log.warning("cannot watch mounts (%s); local peers are retried on their schedule", exc)
        async with self._lock:
            now = await asyncio.to_thread(_presence, self.paths)
            self.present = now
            for name in sorted(now):
                # unwatched, an absent peer is left to its retries: no mount would wake it
                if now[name] or watching:
                    self._tell(name, now[name])

    async def stop(self) -> None:
        await self._watcher.stop()

    async def check(self) -> None:
        """Re-read the mount table now and report what changed (after a resume from sleep,
        say); returns once that is done."""
        if self._watcher.running:
            await self._watcher.check()

    async def _changed(self, added: list[Mount], removed: list[Mount]) -> None:
        async with self._lock:
            resolved = await asyncio.to_thread(_resolve, self.paths)
            names = affected(resolved, added, removed)
            if not names:
                return
            now = await asyncio.to_thread(_presence, {n: self.paths[n] for n in names})
            was = dict(self.present)
            self.present.update(now)
            for name, present in reports(names, was, now):
                self._tell(name, present)

    def _tell(self, name: str, present: bool) -> None:
        log.debug("%s: %s", name, "present" if present else "absent")
        try:
            (self.on_present if present else self.on_absent)(name)
        except Exception:
            log.exception(
                "drive %s callback failed for %s", "present" if present else "absent", name
            )

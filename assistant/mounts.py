"""The mount table, and a watcher that reports drives as they are mounted and unmounted.

A remote whose path lies on removable media is synced the moment its drive appears, and an
absent drive is a quiet offline peer. This module supplies the two pieces that needs:

- Pure functions over the mount table, table-testable without a disk: ``parse_mountinfo``
  reads Linux ``/proc/self/mountinfo`` text into ``Mount`` records, ``mount_of`` finds the
  mount holding a path, ``changes`` diffs two tables, ``is_removable_candidate`` guesses
  whether a mount is a removable drive.
- ``MountWatcher``, the I/O edge for asyncio. On Linux the kernel flags
  ``/proc/self/mountinfo`` with POLLPRI|POLLERR whenever the mount namespace's table
  changes; the watcher registers that file in a private epoll set and hands the epoll fd
  to the event loop, so a mount is noticed within milliseconds without polling. Where
  that is unavailable (no procfs, another OS, an event loop without ``add_reader``) it
  re-reads the table every ``interval`` seconds instead (macOS: the mounts under
  ``/Volumes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import posixpath
import re
import select
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from assistant.timeouts import within

log = logging.getLogger("annexsync.mounts")

MOUNTINFO = "/proc/self/mountinfo"
VOLUMES = "/Volumes"
DEFAULT_INTERVAL = 10.0

#: File systems that are, in practice, only found on removable media: FAT/exFAT/NTFS
#: formatted sticks and disks (ntfs3 is the in-kernel driver, fuseblk is ntfs-3g and
#: exfat-fuse), HFS+ disks from Macs, and optical or UDF media.
REMOVABLE_FS_TYPES = frozenset(
    {"vfat", "exfat", "ntfs", "ntfs3", "fuseblk", "hfsplus", "udf", "iso9660"}
)

#: Where desktops (udisks: /media/USER/LABEL, /run/media/USER/LABEL), administrators (/mnt)
#: and macOS (/Volumes/LABEL) mount drives.
REMOVABLE_ROOTS = ("/media", "/run/media", "/mnt", "/Volumes")

#: Kernel pseudo file systems and placeholders: never a drive, even under a removable root
#: (an autofs trigger at /media/x, a tmpfs at /mnt/wsl, a private /mnt bind in a container
#: would otherwise look like one).
PSEUDO_FS_TYPES = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "sysfs",
        "tmpfs",
        "tracefs",
    }
)

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of the mount table (see proc(5), /proc/PID/mountinfo).

    ``mount_id`` is unique among the mounts alive at one time, so a drive unplugged and
    plugged back at the same mount point shows up as a new mount with a new id.
    """

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    fs_type: str = ""
    source: str = ""
    super_options: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        """The device number as ``major:minor``, as in mountinfo and ``stat``."""
        return f"{self.major}:{self.minor}"

    @property
    def key(self) -> tuple[str, int]:
        """Identity used by ``changes``: where it is mounted, and which mount it is."""
        return (self.mount_point, self.mount_id)

    @property
    def read_only(self) -> bool:
        """True when this mount (not merely its super block) is mounted read-only."""
        return "ro" in self.options


def unescape(field: str) -> str:
    """Decode the kernel's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012`` newline,
    ``\\134`` backslash) in a mountinfo path or source field."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _split_options(field: str) -> tuple[str, ...]:
    return tuple(unescape(o) for o in field.split(",") if o)


def parse_line(line: str) -> Mount:
    """Parse one mountinfo line; raises ``ValueError`` when it is not one.

    Layout: ``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER``.
    Fields are separated by single spaces (spaces inside them are escaped), so splitting on
    one space keeps an empty source field in its place.
    """
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise ValueError(f"no '-' separator in mountinfo line: {line!r}") from None
    head, tail = fields[:sep], fields[sep + 1 :]
    if len(tail) < 2:
        raise ValueError(f"truncated mountinfo line: {line!r}")
    major, _, minor = head[2].partition(":")
    return Mount(
        mount_id=int(head[0]),
        parent_id=int(head[1]),
        major=int(major),
        minor=int(minor),
        root=unescape(head[3]),
        mount_point=unescape(head[4]),
        options=_split_options(head[5]),
        optional=tuple(head[6:]),
        fs_type=unescape(tail[0]),
        source=unescape(tail[1]),
        super_options=_split_options(tail[2]) if len(tail) > 2 else (),
    )


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse the text of ``/proc/self/mountinfo`` into mounts, in the kernel's order.

    Blank and malformed lines are skipped (and logged): a watcher must not stop over one
    odd line from a future kernel.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            mounts.append(parse_line(line))
        except (ValueError, IndexError) as exc:
            log.warning("skipping unparsable mountinfo line: %s", exc)
    return mounts


def _is_under(path: str, root: str) -> bool:
    """Component-wise prefix test: /mnt/a is under /mnt and /mnt/a, not under /mnt/ab."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding ``path``: the one with the longest mount point that is a prefix.

    Pure: ``path`` must already be absolute and resolved (``os.path.realpath``), symlinks
    included; it is only normalised lexically here. Where several mounts are stacked on one
    mount point, the topmost (the one no other mount there is stacked on) wins, as that is
    the one a lookup of the path sees. None when nothing matches (an empty table).
    """
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    best: list[Mount] = []
    best_len = -1
    for m in mounts:
        point = posixpath.normpath(m.mount_point)
        if not _is_under(path, point):
            continue
        if len(point) > best_len:
            best, best_len = [m], len(point)
        elif len(point) == best_len:
            best.append(m)
    if not best:
        return None
    under = {m.parent_id for m in best}
    on_top = [m for m in best if m.mount_id not in under]
    return (on_top or best)[-1]


def changes(old: Iterable[Mount], new: Iterable[Mount]) -> tuple[list[Mount], list[Mount]]:
    """What changed between two tables: ``(added, removed)``, each in its table's order.

    Mounts are matched by mount point and mount id, so a remount (new options, same mount)
    is no change, while a drive replaced at the same mount point is one removal and one
    addition.
    """
    old, new = list(old), list(new)
    old_keys = {m.key for m in old}
    new_keys = {m.key for m in new}
    added = [m for m in new if m.key not in old_keys]
    removed = [m for m in old if m.key not in new_keys]
    return added, removed


def is_removable_candidate(mount: Mount) -> bool:
    """Guess whether ``mount`` is a removable drive; a hint, not a guarantee.

    True for a file system that is practically only used on removable media
    (``REMOVABLE_FS_TYPES``), or for any real (non-pseudo) file system mounted below one of
    the places drives get mounted (``REMOVABLE_ROOTS``; ``/mnt`` itself counts too, as
    administrators mount a drive there directly). A USB disk formatted ext4 and mounted
    elsewhere is not recognised; callers that know a remote's path should rather ask
    ``mount_of`` whether that path's mount came or went.
    """
    if mount.fs_type in REMOVABLE_FS_TYPES:
        return True
    if mount.fs_type in PSEUDO_FS_TYPES:
        return False
    point = posixpath.normpath(mount.mount_point)
    if point == "/mnt":
        return True
    return any(point != root and _is_under(point, root) for root in REMOVABLE_ROOTS)


def read_mountinfo(path: str = MOUNTINFO) -> list[Mount]:
    """Read and parse a mountinfo file (undecodable bytes kept as surrogate escapes)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def read_volumes(root: str = VOLUMES) -> list[Mount]:
    """The mounts under ``root`` (macOS: /Volumes), where there is no mountinfo.

    Each directory there that is a mount point becomes a ``Mount`` with its device number
    and a mount id derived from it (a re-plugged drive usually gets a new device number);
    the file system type is unknown (empty). An absent ``root`` is an empty table.
    """
    mounts: list[Mount] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return mounts
    for name in names:
        point = os.path.join(root, name)
        try:
            if not os.path.ismount(point):
                continue
            st = os.stat(point)
        except OSError:
            continue
        mounts.append(
            Mount(
                mount_id=st.st_dev,
                parent_id=0,
                major=os.major(st.st_dev),
                minor=os.minor(st.st_dev),
                root="/",
                mount_point=point,
                fs_type="",
                source="",
            )
        )
    return mounts


def read_mounts() -> list[Mount]:
    """This process's mount table: mountinfo on Linux, else the mounts under /Volumes."""
    if os.path.exists(MOUNTINFO):
        return read_mountinfo(MOUNTINFO)
    return read_volumes(VOLUMES)


Callback = Callable[[list[Mount], list[Mount]], Awaitable[None] | None]


class MountWatcher:
    """Calls ``callback(added, removed)`` whenever the mount table changes.

    ``start()`` reads the initial table (available as ``mounts``; no callback for it) and
    starts one worker task; ``stop()`` cancels that task, waits for it, and releases the
    file descriptors. Nothing runs detached: an async callback is awaited by the worker
    before the table is read again, so calls never overlap and come in order. A callback
    that raises is logged and the watching goes on.

    ``mode`` is ``"events"`` when the kernel's mountinfo notifications are used (Linux),
    ``"polling"`` when the table is re-read every ``interval`` seconds; ``polling=True``
    forces the latter. Several changes in quick succession may be reported as one call.
    The table is that of the mount namespace the process was in at ``start()``.
    """

    def __init__(
        self,
        callback: Callback,
        *,
        interval: float = DEFAULT_INTERVAL,
        polling: bool = False,
        mountinfo: str = MOUNTINFO,
        read_table: Callable[[], list[Mount]] | None = None,
    ) -> None:
        """``read_table`` replaces the table source in polling mode (default: mountinfo on
        Linux, /Volumes elsewhere); giving one implies polling."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.callback = callback
        self.interval = interval
        self._force_polling = polling or read_table is not None
        self._mountinfo = mountinfo
        self._read_table = read_table
        self._mounts: list[Mount] = []
        self._mode: Literal["events", "polling"] | None = None
        self._fd: int | None = None
        self._epoll: select.epoll | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def mounts(self) -> list[Mount]:
        """The table as of the last read."""
        return list(self._mounts)

    @property
    def mode(self) -> Literal["events", "polling"] | None:
        """How changes are detected; None while stopped."""
        return self._mode

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Read the current table and begin watching; a no-op when already started."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        if not self._force_polling and self._setup_events():
            self._mode = "events"
        else:
            self._mode = "polling"
        try:
            self._mounts = self._read()
        except BaseException:
            self._teardown_events()
            self._mode = None
            raise
        self._task = asyncio.create_task(self._run(), name="mount-watcher")

    async def stop(self) -> None:
        """Stop watching and wait for the worker (and any callback it is running) to end."""
        task, self._task = self._task, None
        self._teardown_events()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._mode = None

    async def __aenter__(self) -> MountWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _setup_events(self) -> bool:
        """Register mountinfo for POLLPRI|POLLERR in a private epoll set watched by the loop.

        The file itself cannot go to ``add_reader``: a procfs file is always readable, so
        the loop would spin. Its change flag is an exceptional condition, which a nested
        epoll set turns into plain readability of the epoll fd. The kernel clears the flag
        whenever it reports it, so level-triggered waiting does not spin either.
        """
        if not sys.platform.startswith("linux") or not hasattr(select, "epoll"):
            return False
        fd: int | None = None
        ep: select.epoll | None = None
        try:
            fd = os.open(self._mountinfo, os.O_RDONLY | os.O_CLOEXEC)
            ep = select.epoll()
            ep.register(fd, select.EPOLLPRI | select.EPOLLERR)
            assert self._loop is not None
            self._loop.add_reader(ep.fileno(), self._on_ready)
        except (OSError, NotImplementedError, RuntimeError, ValueError) as exc:
            log.info("mount events unavailable (%s); polling every %ss", exc, self.interval)
            if ep is not None:
                ep.close()
            if fd is not None:
                os.close(fd)
            return False
        self._fd, self._epoll = fd, ep
        return True

    def _teardown_events(self) -> None:
        if self._epoll is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _on_ready(self) -> None:
        """Loop reader for the epoll fd: drain it and wake the worker."""
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.poll(0)
        self._wakeup.set()

    def _read(self) -> list[Mount]:
        if self._fd is not None:
            # Read through the watched descriptor: it stays bound to the namespace it was
            # opened in, so the table and its notifications always agree.
            chunks: list[bytes] = []
            os.lseek(self._fd, 0, os.SEEK_SET)
            while chunk := os.read(self._fd, 1 << 16):
                chunks.append(chunk)
            return parse_mountinfo(b"".join(chunks).decode("utf-8", "surrogateescape"))
        if self._read_table is not None:
            return self._read_table()
        if os.path.exists(self._mountinfo):
            return read_mountinfo(self._mountinfo)
        return read_volumes(VOLUMES)

    async def _run(self) -> None:
        while True:
            if self._mode == "events":
                await self._wakeup.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await within(self._wakeup.wait(), self.interval)
            self._wakeup.clear()
            await self.check()

    async def check(self) -> tuple[list[Mount], list[Mount]]:
        """Re-read the table now and report a change; returns ``(added, removed)``.

        The worker calls this on every notification or poll tick; callers may also call it
        (say, after a resume from sleep) to catch up at once; a lock keeps the two from
        interleaving, so callbacks never overlap.
        """
        async with self._lock:
            try:
                table = self._read()
            except OSError as exc:
                log.warning("cannot read the mount table: %s", exc)
                return [], []
            added, removed = changes(self._mounts, table)
            self._mounts = table
            if added or removed:
                try:
                    result = self.callback(added, removed)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("mount change callback failed")
            return added, removed

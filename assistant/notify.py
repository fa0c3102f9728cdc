"""``annexsync notify-changes PATH``: stream a repository's ref changes as they happen.

The far side of instant pull. A peer runs this command over ssh and reads one line per change,
so it can fetch the moment a branch moves, even from a node it cannot push to. The protocol is
line based and flushed per batch:

``ready``
    the watch is in place; every later change will be reported. Followed by the current refs.
``ref <oid> <name>``
    ``name`` (under refs/heads or refs/remotes) now points at ``oid``.
``deleted <name>``
    ``name`` no longer exists.

Changes are never derived from single inotify events: after each burst of events the whole ref
map (loose refs and packed-refs) is read again and compared with the last one reported, so
duplicate events, ``git pack-refs``/``git gc`` moving refs between files, or a ref rewritten to
its old value produce no line. The process sleeps in ``select`` while nothing happens and exits
with status 0 when its input reaches EOF, on SIGTERM/SIGHUP, or when its output is closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import shlex
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from assistant.config import get_string
from assistant.errors import NotARepositoryError
from assistant.names import name_problem
from assistant.streamed import Record, decode_body, frame_for, objects_for
from assistant.transport.base import Transport

if TYPE_CHECKING:
    import asyncio

    from assistant.transport.base import Channel

WATCHED = ("refs/heads", "refs/remotes")
"""Ref namespaces reported: the branches a peer fetches and those pushed to this node."""

SETTLE = 0.001
LISTENERS = "listeners"
KNOWN_LIMIT = 32
"""A burst is over once no event has arrived for this long (seconds)."""

MAX_DELAY = 0.025
"""A steady stream of events still yields a report this long after its first event."""

RefMap = dict[str, str]

# inotify(7) constants.
IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")


class _Stop(BaseException):
    """Raised from a signal handler: the peer went away, end quietly."""


# --- reading refs ---------------------------------------------------------------------------


def common_dir(path: Path) -> Path:
    """The directory holding the refs of the repository at ``path`` (bare or not, or a linked
    worktree, whose refs live in the main repository). Raises NotARepositoryError."""
    if not path.is_dir():
        raise NotARepositoryError(f"{path}: not a git repository (no such directory)")
    try:
        repo = pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError):
        raise NotARepositoryError(f"{path}: not a git repository") from None
    gitdir = Path(repo.path)
    commondir = gitdir / "commondir"
    if commondir.is_file():
        gitdir = (gitdir / commondir.read_text().strip()).resolve()
    if (gitdir / "reftable").is_dir():
        raise NotARepositoryError(f"{path}: reftable ref storage is not supported")
    return gitdir


def _valid_oid(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _packed_stamp(gitdir: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(gitdir / "packed-refs")
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_packed(gitdir: Path) -> RefMap:
    refs: RefMap = {}
    try:
        text = (gitdir / "packed-refs").read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return refs
    for line in text.splitlines():
        if not line or line[0] in "#^":
            continue
        oid, _, name = line.partition(" ")
        if _valid_oid(oid) and name.startswith(tuple(p + "/" for p in WATCHED)):
            refs[name] = oid
    return refs


def _read_loose(gitdir: Path) -> RefMap:
    refs: RefMap = {}
    for prefix in WATCHED:
        top = gitdir / prefix
        for dirpath, _dirs, files in os.walk(top):
            rel = Path(dirpath).relative_to(gitdir).as_posix()
            for name in files:
                if name.endswith(".lock"):
                    continue
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        content = f.read(200).decode("ascii", "replace").strip()
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    continue
                if _valid_oid(content):  # symbolic refs carry no content of their own
                    refs[f"{rel}/{os.fsdecode(name)}"] = content
    return refs


def read_refs(gitdir: Path) -> RefMap:
    """Every ref under refs/heads and refs/remotes with its oid, loose ones overriding packed.

    Loose refs are read before packed-refs, the order git itself relies on: ``pack-refs``
    writes packed-refs before removing loose files, so a ref never seems to vanish midway.
    A packed-refs file replaced during the read makes the read start over.
    """
    for _attempt in range(5):
        before = _packed_stamp(gitdir)
        loose = _read_loose(gitdir)
        packed = _read_packed(gitdir)
        if _packed_stamp(gitdir) == before:
            break
    packed.update(loose)
    return packed


def diff_lines(old: RefMap, new: RefMap) -> list[str]:
    """The protocol lines that take a peer from ``old`` to ``new``."""
    lines = [f"ref {oid} {name}" for name, oid in sorted(new.items()) if old.get(name) != oid]
    lines += [f"deleted {name}" for name in sorted(old.keys() - new.keys())]
    return lines


# --- watching -------------------------------------------------------------------------------


class InotifyWatch:
    """Raw inotify on the git directory (for packed-refs), refs/, and every directory below
    refs/heads and refs/remotes, new ones included. ``fd`` becomes readable on a change."""

    def __init__(self, gitdir: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.gitdir = gitdir
        self.dirs: dict[int, Path] = {}
        self._add(gitdir)
        self._add(gitdir / "refs")
        for prefix in WATCHED:
            self._add_tree(gitdir / prefix)

    def _add(self, path: Path) -> bool:
        wd = self._add_watch(self.fd, os.fsencode(path), _MASK | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (2, 20):  # ENOENT, ENOTDIR: gone again, or not created yet
                return False
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self.dirs[wd] = path
        return True

    def _add_tree(self, top: Path) -> None:
        if not self._add(top):
            return
        for dirpath, dirs, _files in os.walk(top):
            for name in dirs:
                self._add(Path(dirpath) / name)

    def _in_scope(self, path: Path) -> bool:
        return any(path == self.gitdir / p or (self.gitdir / p) in path.parents for p in WATCHED)

    def drain(self) -> bool:
        """Read pending events, watching new directories; True if any may concern a ref."""
        relevant = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return relevant
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                relevant |= self._event(wd, mask, os.fsdecode(raw))

    def _event(self, wd: int, mask: int, name: str) -> bool:
        if mask & IN_Q_OVERFLOW:  # events were lost: re-watch everything and reread
            for prefix in WATCHED:
                self._add_tree(self.gitdir / prefix)
            return True
        if mask & IN_IGNORED:
            self.dirs.pop(wd, None)
            return False
        parent = self.dirs.get(wd)
        if parent is None:
            return False
        path = parent / name if name else parent
        if parent == self.gitdir:
            return name == "packed-refs"
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO) and self._in_scope(path):
                self._add_tree(path)
            return True
        return not name.endswith(".lock")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class WatchdogWatch:
    """The same, through watchdog, where inotify is missing (macOS, BSD)."""

    def __init__(self, gitdir: Path) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        wake = self._wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                with contextlib.suppress(OSError):
                    os.write(wake, b"x")

        self.observer = Observer()
        self.observer.schedule(Handler(), str(gitdir / "refs"), recursive=True)
        self.observer.schedule(Handler(), str(gitdir), recursive=False)
        self.observer.start()

    def drain(self) -> bool:
        got = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                got = True
        return got

    def close(self) -> None:
        self.observer.stop()
        for fd in (self.fd, self._wake):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_watch(gitdir: Path) -> InotifyWatch | WatchdogWatch:
    """Raw inotify on Linux (no threads, no delay); watchdog elsewhere."""
    try:
        return InotifyWatch(gitdir)
    except (OSError, AttributeError):
        return WatchdogWatch(gitdir)


# --- the command ----------------------------------------------------------------------------


def _writer(fd: int) -> Callable[[list[str], bytes], None]:
    def write(lines: list[str], before: bytes = b"") -> None:
        data = before + "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(fd, data) :]

    return write


def _stop(_signum: int, _frame: object) -> None:
    raise _Stop


class _Listener:
    """What the peer on the other end asked for on our input: object streaming (``stream``)
    and the commits it holds (``have <oid>``)."""

    def __init__(self) -> None:
        self.stream = False
        self.node: str | None = None
        # Newest last; bounded, since each one is hidden in every walk that follows.
        self.known: dict[pygit2.Oid, None] = {}
        self._partial = b""

    def feed(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            word, _, rest = raw.decode("ascii", "replace").partition(" ")
            if word == "stream":
                self.stream = True
            elif word == "have" and _valid_oid(rest):
                self.hold(pygit2.Oid(hex=rest))
            elif word == "node" and name_problem(rest) is None:
                self.node = rest

    def hold(self, oid: pygit2.Oid) -> None:
        """The peer holds ``oid`` (it said so, or it was sent). Only the newest
        ``KNOWN_LIMIT`` are kept: older ones are ancestors of newer ones in all but odd cases,
        and then the walk is just longer (``objects_for`` bounds it)."""
        self.known.pop(oid, None)
        self.known[oid] = None
        while len(self.known) > KNOWN_LIMIT:
            del self.known[next(iter(self.known))]


def presence_path(gitdir: Path, node: str, pid: int) -> Path:
    """Where a notify-changes process serving node ``node`` with objects says so: this node's
    assistant need not push to a node that is sent every change as it happens."""
    return gitdir / "annexsync" / LISTENERS / f"{node}.{pid}"


def streaming_nodes(gitdir: Path) -> set[str]:
    """The nodes a live notify-changes process of this repository streams changes to."""
    out = set()
    try:
        entries = os.listdir(gitdir / "annexsync" / LISTENERS)
    except OSError:
        return out
    for entry in entries:
        node, _, pid = entry.rpartition(".")
        if node and pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            out.add(node)
    return out


def _announce(gitdir: Path, peer: _Listener) -> Path | None:
    """Record that ``peer`` is streamed to (once it said who it is), if this repository has
    an assistant's state directory; the path to remove at the end."""
    if not (peer.stream and peer.node) or not (gitdir / "annexsync").is_dir():
        return None
    path = presence_path(gitdir, peer.node, os.getpid())
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.touch()
    except OSError:
        return None
    return path


def _objects_before(
    repo: pygit2.Repository, peer: _Listener, old: RefMap, new: RefMap
) -> bytes:
    """The ``objects`` frames for the branches that moved, for a peer that streams."""
    if not peer.stream:
        return b""
    frames = []
    for name, oid in sorted(new.items()):
        if not name.startswith("refs/heads/") or old.get(name) == oid:
            continue
        tip = pygit2.Oid(hex=oid)
        if tip in peer.known:
            continue
        try:
            oids = objects_for(repo, tip, peer.known)
            if oids:
                frames.append(frame_for(repo, oids))
        except (KeyError, ValueError, pygit2.GitError):
            continue  # the peer fetches instead
        peer.hold(tip)
    return b"".join(frames)


def notify_changes(path: Path, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Run the command until the peer goes away; the exit status (0 for a clean end).

    Reading from ``stdin_fd`` is how the end of an ssh channel is noticed: its EOF ends the
    watch, so no watcher outlives the connection that asked for it. The peer may also ask
    for the objects of each change to be sent with it (``assistant.streamed``).
    """
    gitdir = common_dir(path)
    write = _writer(stdout_fd)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    watch = open_watch(gitdir)
    repo = pygit2.Repository(str(gitdir))
    peer = _Listener()
    presence: Path | None = None
    try:
        current = read_refs(gitdir)
        name = get_string(repo.config, "annexsync.name") or ""
        write([f"ready {name}".rstrip(), *diff_lines({}, current)])
        poller = select.poll()
        poller.register(watch.fd, select.POLLIN)
        poller.register(stdin_fd, select.POLLIN | select.POLLHUP)
        while True:
            ready = dict(poller.poll())
            if stdin_fd in ready:
                try:
                    data = os.read(stdin_fd, 65536)
                except OSError:
                    return 0
                if not data:
                    return 0
                peer.feed(data)
                if presence is None:
                    presence = _announce(gitdir, peer)
            if watch.fd not in ready or not watch.drain():
                continue
            first = time.monotonic()
            while time.monotonic() - first < MAX_DELAY:
                if not select.select([watch.fd], [], [], SETTLE)[0]:
                    break
                watch.drain()
            new = read_refs(gitdir)
            lines = diff_lines(current, new)
            if lines:
                write(lines, _objects_before(repo, peer, current, new))
            current = new
    except (_Stop, BrokenPipeError):
        return 0
    finally:
        if presence is not None:
            with contextlib.suppress(OSError):
                presence.unlink()
        watch.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- the near side --------------------------------------------------------------------------

DEFAULT_COMMAND = "annexsync notify-changes"


async def watch_remote(
    transport: Transport,
    path: str,
    command: str = DEFAULT_COMMAND,
    hello: str = "",
    on_objects: Callable[[list[Record]], None] | None = None,
    on_ready: Callable[[str], None] | None = None,
    outbox: asyncio.Queue[str] | None = None,
) -> AsyncIterator[tuple[str, str | None]]:
    """Run ``command PATH`` on the peer behind ``transport`` and yield ``(ref, oid)`` for each
    change, ``(ref, None)`` for a deletion, starting with the refs present once the watch is in
    place. Raises TransportError if the far side fails or ends; closing the iterator ends the
    remote command. A LocalTransport runs this package's own command in a subprocess.

    ``hello`` is written to the command's input first (``stream`` and ``have`` lines, see
    ``assistant.streamed``); each ``objects`` frame is handed to ``on_objects`` before the ref
    lines that follow it are yielded. ``on_ready`` hears the far node's ``annexsync.name``
    ("" when it has none) once the watch is in place. Lines put in ``outbox`` (``have <oid>``
    as our branch moves) are written to the command's input as they come.
    """
    import asyncio

    from assistant.transport.base import TransportError
    from assistant.transport.local import LocalTransport, ProcessChannel

    channel: Channel
    if isinstance(transport, LocalTransport):
        argv = shlex.split(command)
        if command == DEFAULT_COMMAND:
            argv = [sys.executable, "-m", "assistant", "notify-changes"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        channel = ProcessChannel(proc)
    else:
        channel = await transport.open(command, path)
    buffer = b""
    seen_ready = False
    frame: tuple[int, int] | None = None  # (records, bytes) of an objects frame being read
    sender: asyncio.Task[None] | None = None
    try:
        if hello:
            await channel.write(hello.encode("ascii"))
        if outbox is not None:
            sender = asyncio.ensure_future(_send_lines(channel, outbox))
        while True:
            data = await channel.read()
            if not data:
                break
            buffer += data
            lines: list[bytes] = []
            while True:
                if frame is not None:
                    if len(buffer) < frame[1]:
                        break
                    body, buffer = buffer[: frame[1]], buffer[frame[1] :]
                    if on_objects is not None:
                        on_objects(decode_body(frame[0], body))
                    frame = None
                    continue
                raw, newline, rest = buffer.partition(b"\n")
                if not newline:
                    break
                buffer = rest
                if raw.startswith(b"objects "):
                    _word, count, size = raw.split()
                    frame = (int(count), int(size))
                    continue
                lines.append(raw)
            for raw in lines:
                line = raw.decode("utf-8", "surrogateescape")
                kind, _, rest = line.partition(" ")
                if kind == "ready":
                    seen_ready = True
                    if on_ready is not None:
                        on_ready(rest)
                elif kind == "ref":
                    oid, _, name = rest.partition(" ")
                    yield name, oid
                elif kind == "deleted":
                    yield rest, None
        result = await channel.finish()
        stderr = result.stderr.strip().splitlines()
        why = stderr[-1] if stderr else f"exit status {result.status}"
        what = "ended" if seen_ready else "did not start"
        raise TransportError(f"change notification on {transport.describe()} {what}: {why}")
    finally:
        if sender is not None:
            sender.cancel()
        channel.abort()
        with contextlib.suppress(Exception):
            await channel.finish()


async def _send_lines(channel: Channel, outbox: asyncio.Queue[str]) -> None:
    """Write queued lines to the far command's input; a failure ends this quietly (the read
    side reports the broken stream)."""
    with contextlib.suppress(Exception):
        while True:
            await channel.write((await outbox.get()).encode("ascii"))

"""watchdog on the working tree: turns file events into relative paths for the committer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from assistant.ignore import is_builtin_temp_name

log = logging.getLogger("annexsync.watcher")

# watchdog warns (on stderr, with every watched path in one line, megabytes in a deep tree)
# when a directory's path is too long to watch; the committer reports those paths itself.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"watchdog\.")

# watchdog holds an unmatched IN_MOVED_FROM for 0.5 s (blocking every later event) while it
# waits for its IN_MOVED_TO; the kernel queues the pair back to back, so 20 ms is ample.
InotifyMoveEventGrouper.delay = 0.02

EVENTS = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    DirAttribEvent,  # a directory made readable again: what is below it is looked at anew
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
]
# Files in .git whose appearance or removal means git started or finished something.
GIT_SIGNALS = frozenset(
    {
        "index.lock",
        "HEAD",
        "MERGE_HEAD",
        "REBASE_HEAD",
        "CHERRY_PICK_HEAD",
        "REVERT_HEAD",
        "BISECT_LOG",
        "rebase-merge",
        "rebase-apply",
        "index",
    }
)

PathCallback = Callable[[str, bool | None, bool], None]


class TreeWatcher:
    """A recursive watchdog observer whose callbacks land on the asyncio loop."""

    def __init__(
        self,
        root: Path,
        gitdir: Path,
        loop: asyncio.AbstractEventLoop,
        on_path: PathCallback,
        on_git: Callable[[], None],
        on_root_gone: Callable[[], None],
        on_refs: Callable[[], None] | None = None,
        on_config: Callable[[], None] | None = None,
        unlisted: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.root = str(root)
        self.unlisted = unlisted  # directories that could not be listed, each ending in "/"
        self.gitdir = str(gitdir).rstrip("/")
        self._prefix = self.root.rstrip("/") + "/"
        self._git_prefix = self.gitdir + "/"
        self.loop = loop
        self.on_path = on_path
        self.on_git = on_git
        self.on_root_gone = on_root_gone
        self.on_refs = on_refs
        self.on_config = on_config
        self.observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        """Start watching; raises OSError when the kernel refuses (watch limits)."""
        observer = Observer()
        handler = _Handler(self)
        observer.schedule(handler, self.root, recursive=True, event_filter=EVENTS)
        observer.daemon = True
        observer.start()
        self.observer = observer

    def healthy(self) -> bool:
        """False once watchdog's reader thread has died (for instance out of watches)."""
        if self.observer is None or not self.observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in self.observer.emitters)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def _relative(self, path: str) -> str | None:
        if path.startswith(self._git_prefix) or path == self.gitdir:
            return None
        if path.startswith(self._prefix):
            return path[len(self._prefix) :]
        return None

    def dispatch(self, event: FileSystemEvent) -> None:
        """Runs on watchdog's thread: map the event and hand it to the loop."""
        paths = [os.fsdecode(event.src_path)]
        if isinstance(event, FileMovedEvent | DirMovedEvent) and event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if isinstance(event, FileModifiedEvent):
            writing: bool | None = True
        elif isinstance(event, FileClosedEvent):
            writing = False
        elif isinstance(event, FileCreatedEvent):
            writing = _just_created(paths[0])
        else:
            writing = None
        removed = isinstance(event, FileDeletedEvent | DirDeletedEvent)
        # A file renamed onto a backup name (vim: x -> x~) is about to be written anew: its
        # removal must settle first. A temp file renamed onto the real name (an atomic save)
        # is not: that save is committed at once.
        backup_rename = len(paths) == 2 and is_builtin_temp_name(os.path.basename(paths[1]))
        for index, path in enumerate(paths):
            gone = removed or (index == 0 and backup_rename)
            if path.rstrip("/") == self.root.rstrip("/"):
                if isinstance(event, DirDeletedEvent | DirMovedEvent):
                    self.loop.call_soon_threadsafe(self.on_root_gone)
                continue
            rel = self._relative(path)
            if rel is None:
                if path == self.gitdir and removed:  # the repository deleted under us
                    self.loop.call_soon_threadsafe(self.on_root_gone)
                elif path.startswith(self._git_prefix):
                    name = path[len(self._git_prefix) :]
                    if name == "HEAD" and removed:  # git replaces HEAD, only rm takes it
                        self.loop.call_soon_threadsafe(self.on_root_gone)
                    elif name in GIT_SIGNALS:
                        self.loop.call_soon_threadsafe(self.on_git)
                    elif name == "config" and self.on_config is not None:
                        self.loop.call_soon_threadsafe(self.on_config)
                    elif self.on_refs is not None and (
                        name.startswith("refs/remotes/") or name == "packed-refs"
                    ):
                        self.loop.call_soon_threadsafe(self.on_refs)
                continue
            if isinstance(event, DirAttribEvent) and not attrib_matters(rel, self._unlisted()):
                continue  # chmod -R, tar, rsync -a: the files below have not changed
            if rel.startswith(".git/") or "/.git/" in rel or rel.endswith("/.git"):
                if not rel.startswith(".git/"):
                    nested = rel.split("/.git", 1)[0]
                    self.loop.call_soon_threadsafe(self.on_path, nested, None, False)
                continue
            self.loop.call_soon_threadsafe(self.on_path, rel, writing if index == 0 else None, gone)


    def _unlisted(self) -> list[str]:
        try:
            return list(self.unlisted())
        except RuntimeError:  # changed while copied (it is the repository thread's): look
            return ["/"]


def attrib_matters(reldir: str, unlisted: Iterable[str]) -> bool:
    """Whether a change of ``reldir``'s mode may have made a directory that could not be
    listed (``unlisted``, each ending in "/") readable: it or one of its parents changed.
    Only then is what lies below looked at anew; any other chmod changes no file."""
    return any(d == "/" or d == reldir + "/" or d.startswith(reldir + "/") for d in unlisted)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: TreeWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.watcher.dispatch(event)


def _just_created(path: str) -> bool | None:
    """A new, still empty regular file is about to be written: hold it until it is closed.
    (A file renamed into the tree also arrives as a creation, but with its content.)"""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return True if stat.S_ISREG(st.st_mode) and st.st_size == 0 else None

"""Random edits on one node's working tree, as a user and their editors make them, each
recorded as an ``Edit`` (what the touched paths held before and after, and the node's head).

Every write puts content no other write does (a unique token in text, random bytes in
binary), so a blob id names one version. What an edit replaced is captured atomically where
the edit allows it: a save renames the old file aside first (as vim does), a delete renames it
away before unlinking, and in-place writes read and write through one open file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from soak.cluster import read_ref
from soak.invariants import has_conflict_marker
from soak.records import Blob, Edit
from soak.repostate import scratch

WORDS = ("notes", "todo", "plan", "draft", "log", "report", "list", "data", "img", "song")
DIRS = ("docs", "notes", "src", "img", "data", "docs/old", "src/lib", "archive", "inbox")
EXTS = ("txt", "md", "bin", "dat", "csv", "")
# Relative weights of the edits a node makes on its own.
WEIGHTS = {
    "create": 18,
    "modify": 20,
    "rewrite": 8,
    "append": 16,
    "rename": 6,
    "delete": 8,
    "move-dir": 2,
    "binary": 5,
    "large": 0.4,
    "burst": 0.6,
}
LARGE = (2 << 20, 4 << 20)  # a few MB: more than the change stream carries (8 MiB per frame
# holds only a couple), so these travel by fetch


def blob_id(data: bytes) -> Blob:
    return str(pygit2.hash(data))


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename, failing with FileExistsError rather than replacing what is at ``dst``: a file a
    merge put there a moment ago is never overwritten unseen."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(dst))


class Recorder:
    """Every edit of the run, from every node's thread, numbered in one sequence."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.edits: list[Edit] = []
        self.kinds: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(
        self, node: str, kind: str, head: str, before: dict[str, Blob | None],
        after: dict[str, Blob | None],
    ) -> Edit:  # fmt: skip
        with self._lock:
            edit = Edit(
                len(self.edits), node, kind, head, before, after, time.monotonic() - self.t0
            )
            self.edits.append(edit)
            self.kinds[kind] += 1
            return edit

    def fail(self, kind: str) -> None:
        with self._lock:
            self.failed[kind] += 1


@dataclass
class Request:
    """Work asked of a node's editor from outside: a burst, or its part of a collision."""

    kind: str
    path: str = ""
    at: float = 0.0  # monotonic time to write at (collisions start together)
    done: threading.Event = field(default_factory=threading.Event)


class Editor:
    """One node's user: a thread making random edits until told to stop."""

    def __init__(
        self, node: str, root: Path, gitdir: Path, recorder: Recorder, rng: random.Random,
        pause: tuple[float, float] = (0.02, 0.4),
    ) -> None:  # fmt: skip
        self.node = node
        self.root = root
        self.gitdir = gitdir
        self.recorder = recorder
        self.rng = rng
        self.pause = pause
        self.requests: queue.Queue[Request] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"editor-{node}", daemon=True)
        self.counter = 0
        self.errors: list[str] = []

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def ask(self, request: Request) -> Request:
        self.requests.put(request)
        return request

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                request = self.requests.get(timeout=self.rng.uniform(*self.pause))
            except queue.Empty:
                self._safely(self.random_edit)
                continue
            if request.kind == "collide":
                delay = request.at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._safely(lambda r=request: self.write(r.path, "collide"))
            elif request.kind == "burst":
                self._safely(self.burst)
            request.done.set()

    def _safely(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # an edit's bug must show, but not end the run
            self.errors.append(f"{type(exc).__name__}: {exc}")

    # --- what is there --------------------------------------------------------------------

    def listing(self) -> tuple[list[str], list[str]]:
        """Files and directories of the working tree (relative), scratch files left out."""
        files: list[str] = []
        dirs: list[str] = []
        for directory, subdirs, names in os.walk(self.root):
            rel = os.path.relpath(directory, self.root)
            if rel == ".":
                subdirs[:] = [d for d in subdirs if d != ".git"]
            else:
                dirs.append(rel)
            files.extend(os.path.normpath(os.path.join(rel, n)) for n in names if not scratch(n))
        return sorted(files), sorted(dirs)

    def head(self) -> str:
        return read_ref(self.gitdir)

    def content(self, kind: str = "text") -> bytes:
        """Content no other edit writes."""
        self.counter += 1
        token = f"{self.node}-{self.counter}-{self.rng.getrandbits(48):012x}"
        if kind == "large":
            size = self.rng.randint(*LARGE)
            if self.rng.random() < 0.5:
                data = token.encode() + b"\n" + self.rng.randbytes(size)
            else:
                line = f"{token} a long and very compressible line of text\n".encode()
                data = line * (size // len(line))
        elif kind == "binary":
            data = token.encode() + b"\0" + self.rng.randbytes(self.rng.randint(16, 64 << 10))
        else:
            lines = [
                f"{token} line {i} {self.rng.random():.6f}\n"
                for i in range(self.rng.randint(1, 40))
            ]
            data = "".join(lines).encode()
        return self.content(kind) if has_conflict_marker(data) else data

    def new_path(self, files: list[str]) -> str:
        directory = self.rng.choice(("", *DIRS))
        ext = self.rng.choice(EXTS)
        name = f"{self.rng.choice(WORDS)}-{self.rng.randint(0, 40)}" + (f".{ext}" if ext else "")
        path = f"{directory}/{name}" if directory else name
        return path if path not in files else self.new_path(files)

    # --- the edits ------------------------------------------------------------------------

    def random_edit(self) -> None:
        files, dirs = self.listing()
        weights = dict(WEIGHTS)
        # Between about 40 and 150 files: deletions stay far below the mass-deletion guard's
        # threshold (over half the files within 30 s), which a user's would not cross either.
        if len(files) < 40:
            weights["create"] *= 4
        elif len(files) > 150:
            weights["delete"] *= 2
        if not files:
            weights = {"create": 1.0}
        kind = self.rng.choices(list(weights), list(weights.values()))[0]
        if kind == "create":
            self.write(self.new_path(files), "create")
        elif kind in ("modify", "binary", "large"):
            path = (
                self.rng.choice(files)
                if files and self.rng.random() < 0.7
                else self.new_path(files)
            )
            self.write(path, kind)
        elif kind == "rewrite":
            self.in_place(self.rng.choice(files), append=False)
        elif kind == "append":
            self.in_place(self.rng.choice(files), append=True)
        elif kind == "rename":
            self.rename(self.rng.choice(files), self.new_path(files))
        elif kind == "delete":
            self.delete(self.rng.choice(files))
        elif kind == "move-dir":
            self.move_dir(dirs, files)
        elif kind == "burst":
            self.burst()

    def write(self, path: str, kind: str) -> Edit | None:
        """Save as editors do: the new content to a temporary file, the old file renamed aside,
        the new one renamed into place. Creates the file when there is none."""
        data = self.content(
            "large" if kind == "large" else "binary" if kind == "binary" else "text"
        )
        target = self.root / path
        temp = target.with_name(f".{target.name}.new~")
        aside = target.with_name(f".{target.name}.old~")
        head = self.head()
        if target.is_dir():
            return None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            os.rename(target, aside)
            replaced: bytes | None = aside.read_bytes()
        except FileNotFoundError:
            replaced = None
        except OSError:
            self.recorder.fail(kind)
            with contextlib.suppress(OSError):
                temp.unlink()
            return None
        try:
            rename_noreplace(temp, target)
        except OSError:  # a full disk, or a merge put a file there meanwhile
            self.recorder.fail(kind)
            with contextlib.suppress(OSError):
                temp.unlink()
            if replaced is None:
                return None
            aside.unlink()
            return self.recorder.add(
                self.node, "delete", head, {path: blob_id(replaced)}, {path: None}
            )
        if replaced is not None:
            aside.unlink()
        before = {path: blob_id(replaced) if replaced is not None else None}
        return self.recorder.add(self.node, kind, head, before, {path: blob_id(data)})

    def in_place(self, path: str, append: bool) -> Edit | None:
        """Write into the file itself, as ``>>`` or a program holding it open does: what it
        held is read through the same open file, so it is exactly what was overwritten."""
        kind = "append" if append else "rewrite"
        head = self.head()
        try:
            fd = os.open(self.root / path, os.O_RDWR)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "r+b") as f:
                old = f.read()
                if append:
                    added = self.content().splitlines(keepends=True)[0]
                    new = old + added
                    f.write(added)
                else:
                    new = self.content()
                    f.seek(0)
                    f.truncate()
                    f.write(new)
                f.flush()
        except OSError:
            self.recorder.fail(kind)
            # Whatever did reach the disk (a full one) is this edit's version.
            with contextlib.suppress(OSError):
                new = (self.root / path).read_bytes()
                return self.recorder.add(
                    self.node, kind, head, {path: blob_id(old)}, {path: blob_id(new)}
                )
            return None
        return self.recorder.add(self.node, kind, head, {path: blob_id(old)}, {path: blob_id(new)})

    def rename(self, src: str, dst: str) -> Edit | None:
        head = self.head()
        target = self.root / dst
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            rename_noreplace(self.root / src, target)
            blob = blob_id(target.read_bytes())
        except OSError:
            return None
        return self.recorder.add(
            self.node, "rename", head, {src: blob, dst: None}, {src: None, dst: blob}
        )

    def delete(self, path: str) -> Edit | None:
        """Rename the file away first: what was deleted is exactly what the rename took."""
        head = self.head()
        target = self.root / path
        away = target.with_name(f".{target.name}.deleted~")
        try:
            os.rename(target, away)
            blob = blob_id(away.read_bytes())
            away.unlink()
        except OSError:
            return None
        return self.recorder.add(self.node, "delete", head, {path: blob}, {path: None})

    def move_dir(self, dirs: list[str], files: list[str]) -> Edit | None:
        """Move a whole directory; what moved is read at its new place."""
        if not dirs:
            return None
        src = self.rng.choice(dirs)
        dst = f"{self.rng.choice(DIRS)}-{self.rng.randint(0, 9)}"
        if self.rng.random() < 0.3:
            dst = f"{self.rng.choice(DIRS)}/{dst.replace('/', '-')}"
        if dst == src or dst.startswith(src + "/"):
            return None
        head = self.head()
        try:
            (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
            rename_noreplace(self.root / src, self.root / dst)
        except OSError:
            return None
        before: dict[str, Blob | None] = {}
        after: dict[str, Blob | None] = {}
        for directory, _subdirs, names in os.walk(self.root / dst):
            for name in names:
                if scratch(name):
                    continue
                full = Path(directory) / name
                rel = full.relative_to(self.root / dst).as_posix()
                with contextlib.suppress(OSError):
                    blob = blob_id(full.read_bytes())
                    before[f"{src}/{rel}"] = blob
                    after[f"{src}/{rel}"] = None
                    after[f"{dst}/{rel}"] = blob
        if not before:
            return None
        return self.recorder.add(self.node, "move-dir", head, before, after)

    def burst(self) -> None:
        """Many new files at once (an unpack, a copy), into one directory."""
        files, _dirs = self.listing()
        directory = self.rng.choice(DIRS)
        for i in range(self.rng.randint(10, 40)):
            path = f"{directory}/burst-{self.node}-{self.counter}-{i}.txt"
            if path not in files:
                self.write(path, "burst")

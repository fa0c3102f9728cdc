"""Reading the assistant's rotated log: the last lines, and following it like ``tail -F``."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from assistant.daemon.lifecycle import LOG_BACKUPS, LOG_NAME

POLL = 0.1  # seconds between looks at a followed log that had nothing new


def log_files(state: Path) -> list[Path]:
    """The log and its rotated copies that exist, oldest first (daemon.log.3 ... daemon.log)."""
    names = [f"{LOG_NAME}.{i}" for i in range(LOG_BACKUPS, 0, -1)] + [LOG_NAME]
    return [state / name for name in names if (state / name).is_file()]


def last_lines(chunks: list[bytes], count: int) -> list[bytes]:
    """The last ``count`` lines of the concatenated ``chunks`` (oldest first), each ending
    in a newline."""
    if count <= 0:
        return []
    lines: list[bytes] = []
    for chunk in reversed(chunks):
        if not chunk:
            continue
        here = chunk.splitlines(keepends=True)
        if here and not here[-1].endswith(b"\n"):
            here[-1] += b"\n"
        lines[:0] = here[-(count - len(lines)) :]
        if len(lines) >= count:
            break
    return lines


def tail(state: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of the log, reaching into rotated files when needed."""
    chunks = []
    for path in reversed(log_files(state)):
        with contextlib.suppress(FileNotFoundError):
            chunks.insert(0, path.read_bytes())
        if sum(c.count(b"\n") for c in chunks) >= count:
            break
    return last_lines(chunks, count)


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def follow(state: Path, count: int, write: Callable[[bytes], None], stop: threading.Event) -> None:
    """Write the last ``count`` lines, then everything appended to the log until ``stop`` is
    set. A rotation (the file renamed and a new one created) or a truncation is noticed and
    the new file is read from its start, as ``tail -F`` does."""
    path = state / LOG_NAME
    current = _open(path)
    earlier = [p.read_bytes() for p in log_files(state)[:-1]] if current else []
    start = current.read() if current else b""
    for line in last_lines([*earlier, start], count):
        write(line)
    try:
        while not stop.is_set():
            data = current.read() if current else b""
            if data:
                write(data)
                continue
            if _replaced(path, current):
                if current:
                    write(current.read())  # what was written just before the rotation
                    current.close()
                current = _open(path)
                continue
            stop.wait(POLL)
    finally:
        if current:
            current.close()


def _replaced(path: Path, current: BinaryIO | None) -> bool:
    """Whether ``path`` now names another file than ``current``, or was truncated."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if current is None:
        return True
    mine = os.fstat(current.fileno())
    return (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev) or st.st_size < current.tell()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so following ends cleanly; handlers restored after."""
    stop = threading.Event()
    saved = {
        sig: signal.signal(sig, lambda _signum, _frame: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

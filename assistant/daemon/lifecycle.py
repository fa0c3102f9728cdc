"""Daemon lifecycle: the single-instance lock, the pidfile, logging, and detaching."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import logging.handlers
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from assistant.errors import AlreadyRunningError, AnnexsyncError, NotRunningError

LOCK_NAME = "assistant.lock"
PID_NAME = "assistant.pid"
LOG_NAME = "daemon.log"
LOG_BYTES = 1 << 20
LOG_BACKUPS = 3


class InstanceLock:
    """An flock on ``.git/annexsync/assistant.lock``: held for the daemon's whole life, so a
    crashed daemon never leaves a stale lock behind."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_pid(self.state)
            raise AlreadyRunningError(
                f"an assistant is already running for this repository (pid {pid or 'unknown'}); "
                "stop it with 'annexsync assistant --stop'"
            ) from None
        self.fd = fd
        tmp = self.state / f"{PID_NAME}.tmp"
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.state / PID_NAME)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.state / PID_NAME).unlink()
            os.close(self.fd)
            self.fd = None


def read_pid(state: Path) -> int | None:
    try:
        return int((state / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(state: Path) -> int | None:
    """The pid of the assistant holding the lock, or None when no assistant runs."""
    try:
        fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(state) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_running(state: Path, timeout: float = 30.0) -> int:
    """SIGTERM the running assistant and wait until it has let go of its lock."""
    pid = running_pid(state)
    if pid is None:
        raise NotRunningError("no assistant is running for this repository")
    if pid < 0:
        raise AnnexsyncError("an assistant holds the lock but its pidfile is missing")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(state) is None:
            return pid
        time.sleep(0.02)
    raise AnnexsyncError(f"the assistant (pid {pid}) did not stop within {timeout:g}s")


class _NodeFilter(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        # "annexsync.replicator" reads as "replicator"; the bare package logger keeps its name
        record.actor = record.name.removeprefix("annexsync.")
        return True


def setup_logging(state: Path, node: str, to_stderr: bool, verbose: bool = False) -> None:
    """Human-readable lines naming the node and the actor, in a rotated daemon.log."""
    root = logging.getLogger("annexsync")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter(
        "%(asctime)s.%(msecs)03d %(node)s %(actor)s: %(message)s", "%Y-%m-%d %H:%M:%S"
    )
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(  # a name that is not UTF-8 cannot break it
            state / LOG_NAME, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, errors="backslashreplace"
        )
    ]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    # APScheduler runs the retry and poll timers: its warnings (a job that raised or was
    # skipped) belong in the same log.
    scheduler = logging.getLogger("apscheduler")
    scheduler.setLevel(logging.WARNING)
    scheduler.propagate = False
    for handler in list(scheduler.handlers):
        scheduler.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(_NodeFilter(node))
        root.addHandler(handler)
        scheduler.addHandler(handler)


def spawn_detached(root: Path, extra: list[str], timeout: float = 60.0) -> int:
    """Start ``annexsync assistant --foreground`` in its own session and wait until it says
    it is ready (or why it failed) over a pipe."""
    read_fd, write_fd = os.pipe()
    cmd = [
        sys.executable,
        "-m",
        "assistant",
        "-C",
        str(root),
        "assistant",
        "--foreground",
        "--ready-fd",
        str(write_fd),
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        pass_fds=(write_fd,),
        close_fds=True,
    )
    os.close(write_fd)
    message = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.1)
            if ready:
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                message += chunk
                if message.endswith(b"\n"):
                    break
    finally:
        os.close(read_fd)
    text = message.decode(errors="replace").strip()
    if text == "ready":
        return proc.pid
    if text.startswith("error: "):
        raise AnnexsyncError(text[len("error: ") :])
    if proc.poll() is None and not text:
        raise AnnexsyncError(f"the assistant (pid {proc.pid}) did not report ready in {timeout:g}s")
    raise AnnexsyncError("the assistant exited during start-up; see .git/annexsync/daemon.log")


def report_ready(fd: int | None, error: str | None = None) -> None:
    """Tell a waiting parent that start-up finished (or failed) and close the pipe."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (f"error: {error}\n" if error else "ready\n").encode())
    with contextlib.suppress(OSError):
        os.close(fd)

"""The control socket: a private unix socket speaking one JSON object per line each way."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from assistant.errors import AnnexsyncError

log = logging.getLogger("annexsync.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_SOCKET_PATH = 100


def socket_path(state: Path) -> Path:
    """``.git/annexsync/control.sock``, or a private runtime directory when that path is too
    long for a unix socket (the same answer for daemon and client)."""
    preferred = state / "control.sock"
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(os.fsencode(state.resolve())).hexdigest()[:16]
    return Path(base) / f"annexsync-{os.getuid()}" / f"{digest}.sock"


def private_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` is not private to this user, or None. Another user who owns it (or
    may write to it) could replace the socket and answer in the assistant's place, as in a
    shared /tmp where someone created ``annexsync-<uid>`` first."""
    try:
        st = os.lstat(directory)
    except OSError as exc:
        return f"{directory}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{directory}: not a directory (a symlink or a file is in its place)"
    if st.st_uid != os.getuid():
        return f"{directory}: it belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o077:
        return f"{directory}: others may use it (mode {stat.S_IMODE(st.st_mode):04o}, not 0700)"
    return None


class ControlServer:
    """Serves requests from the CLI and hooks; mode 0600 so only this user can drive it."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = private_dir_problem(self.path.parent)
        if problem is not None:
            raise AnnexsyncError(f"refusing to open the control socket in {problem}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                reply = await self.handler(request)
            except ValueError as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("control request failed")
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
    """Send one request to a running assistant; None when none is listening."""
    if private_dir_problem(path.parent) is not None:
        return None  # whatever listens there is not our assistant
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, OSError):
        sock.close()
        return None
    try:
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None

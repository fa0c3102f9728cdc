"""The local transport: git's service programs as subprocesses, for paths and file:// URLs."""

from __future__ import annotations

import asyncio
import contextlib
import os

from assistant.timeouts import within
from assistant.transport.base import Channel, ServiceExit, Transport, TransportError


class ProcessChannel(Channel):
    """A channel over a subprocess's stdin and stdout (stderr is collected)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._stderr = asyncio.ensure_future(self._collect_stderr())
        self._finished: ServiceExit | None = None

    async def _collect_stderr(self) -> bytes:
        assert self.proc.stderr is not None
        return await self.proc.stderr.read()

    async def read(self, n: int = 65536) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(n)

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise TransportError("the peer's git process closed its input early") from None

    def write_eof(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, RuntimeError):
            self.proc.stdin.close()

    async def finish(self) -> ServiceExit:
        if self._finished is None:
            self.write_eof()
            # Output nobody read must be drained: until its pipe reaches EOF, asyncio's
            # wait() does not return, even for a process that was killed.
            assert self.proc.stdout is not None
            while await self.proc.stdout.read(65536):
                pass
            status = await self.proc.wait()
            stderr = (await self._stderr).decode(errors="replace")
            self._finished = ServiceExit(status, stderr)
        return self._finished

    def abort(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class LocalTransport(Transport):
    """Runs ``git upload-pack`` / ``git receive-pack`` on a local path."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def describe(self) -> str:
        return "this machine"

    async def open(self, service: str, path: str) -> Channel:
        if not os.path.exists(path):
            raise TransportError(f"{path}: no such directory")
        command = service.removeprefix("git-")
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                command,
                path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise TransportError("git is not installed on this machine") from None
        return ProcessChannel(proc)

    async def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int | None, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await within(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            raise TransportError(f"{argv[0]} did not finish within {timeout:g}s") from None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

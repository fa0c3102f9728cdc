"""The SSH transport: git's service programs over cached asyncssh connections.

One connection per (host, port, user) as written in the remote's URL, opened on first use and
shared by every later operation (each gets a channel of its own), dropped when it is lost and
closed after an idle time. Settings come from ~/.ssh/config as OpenSSH reads them (Host
aliases, HostName, Port, User, IdentityFile, ProxyJump, UserKnownHostsFile); ssh-agent
(SSH_AUTH_SOCK) and key files authenticate. Host keys are checked strictly against
known_hosts (hashed entries included): an unknown or changed key is refused, never trusted on
first use, and the message says which key it is and how to accept it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
from dataclasses import dataclass, field

import asyncssh

from assistant.remotes import SSHLocation, shell_quote
from assistant.timeouts import within
from assistant.transport.base import Channel, ServiceExit, Transport, TransportError

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 5.0
KEEPALIVE_COUNT_MAX = 3
# OpenSSH's default MaxSessions: more channels at once on one connection are refused.
MAX_CHANNELS = 10
DEFAULT_PORT = 22
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"

Key = tuple[str, int | None, str | None]


@dataclass(eq=False)
class _Connection:
    """A pooled connection and how it is being used."""

    key: Key
    conn: asyncssh.SSHClientConnection
    where: str
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CHANNELS))
    users: int = 0
    reused: bool = False
    lost: bool = False
    lost_reason: str = ""
    idle_timer: asyncio.TimerHandle | None = None

    def alive(self) -> bool:
        return not self.lost and not self.conn.is_closed()


class _Watch(asyncssh.SSHClient):
    """Tells the pool when a connection goes away."""

    def __init__(self, pool: SSHPool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.entry: _Connection | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.entry is not None:
            self.pool._lost(self.entry, exc)


class SSHPool:
    """asyncssh connections shared by every SSHTransport of one process."""

    def __init__(
        self,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_count_max: int = KEEPALIVE_COUNT_MAX,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connects = 0  # connections opened so far
        self._connections: dict[Key, _Connection] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._failures: dict[Key, tuple[float, TransportError]] = {}
        self._closed = False

    def open_connections(self) -> int:
        """How many connections are open now."""
        return sum(1 for c in self._connections.values() if c.alive())

    async def acquire(self, location: SSHLocation) -> _Connection:
        """A live connection for ``location``, counted as in use until ``release``."""
        if self._closed:
            raise TransportError(f"the connection pool is closed (for {location.describe()})")
        key: Key = (location.host, location.port, location.user)
        lock = self._locks.setdefault(key, asyncio.Lock())
        asked = asyncio.get_running_loop().time()
        async with lock:
            entry = self._connections.get(key)
            if entry is not None and not entry.alive():
                self._drop(entry)
                entry = None
            if entry is None:
                failed = self._failures.get(key)
                if failed is not None and failed[0] >= asked:
                    raise failed[1]  # the attempt this caller waited for just failed
                try:
                    entry = await self._connect(location, key)
                except TransportError as exc:
                    self._failures[key] = (asyncio.get_running_loop().time(), exc)
                    raise
                self._failures.pop(key, None)
                self._connections[key] = entry
            else:
                entry.reused = True
            entry.users += 1
            if entry.idle_timer is not None:
                entry.idle_timer.cancel()
                entry.idle_timer = None
            return entry

    def release(self, entry: _Connection) -> None:
        entry.users -= 1
        if entry.users > 0 or not entry.alive() or self._connections.get(entry.key) is not entry:
            return
        loop = asyncio.get_running_loop()
        entry.idle_timer = loop.call_later(self.idle_timeout, self._idle, entry)

    def _idle(self, entry: _Connection) -> None:
        entry.idle_timer = None
        if entry.users == 0:
            self._drop(entry)

    def _drop(self, entry: _Connection) -> None:
        if self._connections.get(entry.key) is entry:
            del self._connections[entry.key]
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        entry.conn.close()

    def _lost(self, entry: _Connection, exc: Exception | None) -> None:
        entry.lost = True
        if exc is not None and not entry.lost_reason:
            entry.lost_reason = self._lost_reason(exc)
        if self._connections.get(entry.key) is entry:
            del self._connections[entry.key]
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None

    def _lost_reason(self, exc: Exception) -> str:
        reason = getattr(exc, "reason", "") or str(exc)
        if "keepalive" in reason.lower():
            silence = self.keepalive_interval * self.keepalive_count_max
            return f"no answer to keepalives for {silence:g} s"
        return reason

    async def close(self) -> None:
        """Close every connection."""
        self._closed = True
        entries = list(self._connections.values())
        for entry in entries:
            self._drop(entry)
        for entry in entries:
            with contextlib.suppress(Exception):
                await within(entry.conn.wait_closed(), 5)

    async def _connect(self, location: SSHLocation, key: Key, depth: int = 0) -> _Connection:
        where = location.describe()
        try:
            # First the settings alone (no key loaded), then the keys and known_hosts files
            # that exist: OpenSSH skips a missing IdentityFile, asyncssh would fail on it.
            options = await asyncssh.SSHClientConnectionOptions.construct(
                config=ssh_config_files(),
                host=location.host,
                port=location.port or (),
                username=location.user or (),
                connect_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count_max,
                client_keys=None,
            )
            known, known_file = _known_hosts_files(options)
            options = await asyncssh.SSHClientConnectionOptions.construct(
                options,
                known_hosts=known or ([], [], []),  # b"" would mean ~/.ssh/known_hosts
                client_keys=_identity_files(options),
                ignore_encrypted=True,
            )
        except (OSError, ValueError, asyncssh.Error) as exc:
            raise TransportError(f"cannot use the ssh settings for {where}: {exc}") from None
        target = _Target(
            location,
            where,
            options.host,
            int(options.port or DEFAULT_PORT),
            options,
            known,
            known_file,
        )
        watch = _Watch(self, key)
        try:
            conn = await within(
                asyncssh.connect(
                    location.host,
                    location.port or (),
                    options=options,
                    client_factory=lambda: watch,
                ),
                self.connect_timeout + 1,
            )
        except Exception as exc:  # every way connecting can fail, explained
            jump = _jump_location(options.tunnel)
            if jump is not None and depth < 3:
                # Was it the jump host? Then say so, in that host's own words.
                try:
                    probe = await self._connect(jump, (jump.host, jump.port, jump.user), depth + 1)
                except TransportError as jump_error:
                    raise TransportError(
                        f"{jump_error} (the ProxyJump host on the way to {where})"
                    ) from None
                self.connects -= 1
                probe.conn.close()
            raise await _explain_connect_failure(exc, target, self.connect_timeout) from None
        self.connects += 1
        entry = _Connection(key, conn, where)
        watch.entry = entry
        if conn.is_closed():
            self._lost(entry, None)
        return entry


def _jump_location(tunnel: object) -> SSHLocation | None:
    """The first ProxyJump hop, ``[user@]host[:port]`` or ``ssh://[user@]host[:port]``."""
    if not isinstance(tunnel, str) or not tunnel or tunnel.lower() == "none":
        return None
    hop = tunnel.split(",")[0].strip().removeprefix("ssh://")
    user, _, hostport = hop.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", hostport)
    if not match:
        return None
    host = match[1] or match[3]
    port = match[2] or match[4]
    return SSHLocation(host, "", user or None, int(port) if port else None)


def ssh_config_files() -> list[str]:
    """The client config files OpenSSH reads, in its order (the first value set wins):
    ~/.ssh/config (following $HOME), then the system-wide one. asyncssh reads none of them
    when given options, so they are always passed explicitly."""
    paths = [os.path.expanduser("~/.ssh/config"), SYSTEM_SSH_CONFIG]
    return [p for p in paths if os.path.isfile(p) and os.access(p, os.R_OK)]


@dataclass
class _Target:
    """Where a connection goes, once ~/.ssh/config has been applied."""

    location: SSHLocation
    where: str  # as the URL wrote it
    host: str
    port: int
    options: asyncssh.SSHClientConnectionOptions
    known_hosts: list[str]  # the files read
    known_hosts_file: str  # where to add a key

    @property
    def name(self) -> str:
        """The URL's host, and the real host and port when an alias or default hides them."""
        if self.host == self.location.host and self.port == (self.location.port or DEFAULT_PORT):
            return self.where
        real = self.host if self.port == DEFAULT_PORT else f"{self.host} port {self.port}"
        return f"{self.where} ({real})"

    @property
    def lookup_name(self) -> str:
        """The name looked up in known_hosts (HostKeyAlias, if set, stands for the host)."""
        return str(self.options.host_key_alias or self.host)

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts and ssh-keygen -R spell it."""
        name = self.lookup_name
        return name if self.port == DEFAULT_PORT else f"[{name}]:{self.port}"

    @property
    def user(self) -> str:
        return str(self.options.username)


def _known_hosts_files(options: asyncssh.SSHClientConnectionOptions) -> tuple[list[str], str]:
    """The known_hosts files to trust, as OpenSSH reads them: UserKnownHostsFile (default
    ~/.ssh/known_hosts) and GlobalKnownHostsFile, the missing ones left out; and the file
    to add keys to. 'none' trusts nothing (asyncssh would turn host key checking off)."""
    configured = options.known_hosts
    if configured is None:
        return [], "~/.ssh/known_hosts"
    paths = [os.path.expanduser(str(p)) for p in configured] or [
        os.path.expanduser("~/.ssh/known_hosts")
    ]
    existing = [p for p in paths if os.path.isfile(p) and os.access(p, os.R_OK)]
    return existing, _display_path(paths[0])


def _identity_files(options: asyncssh.SSHClientConnectionOptions) -> list[str] | tuple[()]:
    """The IdentityFile keys that exist; () for asyncssh's defaults (~/.ssh/id_*)."""
    configured = options.config.get("IdentityFile", ())
    if not configured:
        return ()
    return [p for p in (os.path.expanduser(str(f)) for f in configured) if os.path.isfile(p)]


def _display_path(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if path.startswith(home + "/") else path


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``; when asyncio tried several addresses and joined their
    errors into one message, the first address's error number."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError):
            if exc.errno is None:
                match = re.search(r"\[Errno (\d+)\] ([^,'\]]*)", str(exc))
                if match:
                    return OSError(int(match[1]), match[2].strip())
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


async def _explain_connect_failure(
    exc: BaseException, target: _Target, timeout: float
) -> TransportError:
    name = target.name
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return TransportError(await _host_key_message(target, str(exc.reason)))
    dropped = (
        asyncssh.KeyExchangeFailed,
        asyncssh.ConnectionLost,
        asyncssh.ProtocolError,
        ConnectionResetError,
        ConnectionAbortedError,
        BrokenPipeError,
    )
    if isinstance(exc, dropped):
        # asyncssh offers only the key types known_hosts holds for the host: a server
        # without any of them ends the key exchange
        known = _known_keys(target)
        if known:
            key = await _server_key(target)
            if key is not None and key not in known:
                return TransportError(await _host_key_message(target, "", key))
    if isinstance(exc, asyncssh.PermissionDenied):
        who = name if target.location.user else f"{target.user}@{name}"
        return TransportError(
            f"authentication to {who} failed: no key was accepted "
            "(set IdentityFile for this host in ~/.ssh/config, or add the key to ssh-agent "
            "with ssh-add, and check the server's authorized_keys)"
        )
    if isinstance(exc, TimeoutError):
        return TransportError(
            f"connecting to {name} timed out after {timeout:g} s "
            "(the host or its sshd does not answer)"
        )
    if isinstance(exc, socket.gaierror):
        detail = exc.strerror or str(exc)
        if exc.errno == socket.EAI_AGAIN:
            detail += " (is the DNS server reachable?)"
        alias = "" if target.host == target.location.host else f" (for {target.where})"
        return TransportError(f"cannot resolve host name {target.host!r}{alias}: {detail}")
    if isinstance(exc, asyncssh.ChannelOpenError):  # from the ProxyJump host
        return TransportError(f"the ProxyJump host could not reach {name}: {exc.reason}")
    if isinstance(exc, asyncssh.ConnectionLost):
        return TransportError(f"connection to {name} lost while logging in: {exc.reason}")
    if isinstance(exc, asyncssh.DisconnectError):
        return TransportError(f"ssh connection to {name} failed: {exc.reason}")
    os_error = _os_error(exc)
    if os_error is not None:
        code = os_error.errno
        if code == errno.ECONNREFUSED:
            return TransportError(
                f"connection to {name} refused: is sshd running there, "
                f"and listening on port {target.port}?"
            )
        if code == errno.EHOSTUNREACH:
            return TransportError(f"{name} is unreachable (no route to host)")
        if code == errno.ENETUNREACH:
            return TransportError(
                f"cannot reach {name}: the network is unreachable (is this machine online?)"
            )
        if code == errno.ETIMEDOUT:
            return TransportError(f"connecting to {name} timed out (no answer from the host)")
        if isinstance(os_error, FileNotFoundError) and os_error.filename:
            return TransportError(
                f"cannot connect to {name}: {os_error.filename} is missing "
                "(check IdentityFile and UserKnownHostsFile in ~/.ssh/config)"
            )
        return TransportError(f"cannot connect to {name}: {os_error.strerror or os_error}")
    if isinstance(exc, (ValueError, asyncssh.Error)):
        return TransportError(f"cannot connect to {name}: {exc}")
    return TransportError(f"cannot connect to {name}: {type(exc).__name__}: {exc}")


def _known_keys(target: _Target) -> list[asyncssh.SSHKey]:
    """Keys known_hosts holds for the target (hashed entries included)."""
    if not target.known_hosts:
        return []
    port = None if target.port == DEFAULT_PORT else target.port
    try:
        trusted = asyncssh.match_known_hosts(target.known_hosts, target.lookup_name, "", port)
    except (OSError, ValueError):
        return []
    return list(trusted[0]) + list(trusted[1])


_KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
}


async def _server_key(target: _Target) -> asyncssh.SSHKey | None:
    """The key the server shows by default; only read, never trusted."""
    with contextlib.suppress(Exception):
        return await within(
            asyncssh.get_server_host_key(
                target.host, target.port, tunnel=target.options.tunnel or ()
            ),
            DEFAULT_CONNECT_TIMEOUT,
        )
    return None


async def _host_key_message(
    target: _Target, reason: str, key: asyncssh.SSHKey | None = None
) -> str:
    """Why the host key was refused: unknown or changed, with its fingerprint and the way to
    accept it."""
    reported = reason.rpartition(" for host ")[2].split(" with alias ")[0]
    if reported and reported != target.lookup_name:
        # a ProxyJump host on the way: verify it as written in the config
        jumps = target.options.tunnel if isinstance(target.options.tunnel, str) else ""
        jump = jumps if jumps and "," not in jumps else reported
        return (
            f"the host key of {reported} (the jump host on the way to {target.name}) is not "
            f"trusted; verify it by connecting once with: ssh {jump}"
        )
    if key is None:
        key = await _server_key(target)
    if key is not None:
        algorithm = key.get_algorithm()
        kind = _KEYSCAN_TYPES.get(algorithm, algorithm)
        about = f"{kind.upper()} key {key.get_fingerprint('sha256')}"
    else:
        kind, about = "", "its key could not be read"
    file = target.known_hosts_file
    known = _known_keys(target)
    hostname = target.known_hosts_name
    if known:
        return (
            f"WARNING: the host key of {target.name} has CHANGED ({about}), which may mean "
            f"someone is intercepting the connection; refusing to connect. If the change is "
            f"expected: ssh-keygen -R '{hostname}' -f {file}, then accept the new key"
        )
    port = "" if target.port == DEFAULT_PORT else f"-p {target.port} "
    types = f"-t {kind} " if kind else ""
    return (
        f"the host key of {target.name} is unknown ({about}); refusing to connect. Verify the "
        f"fingerprint, then run: ssh-keyscan {port}{types}{target.host} >> {file} "
        "(or connect once with ssh)"
    )


class SSHChannel(Channel):
    """A channel over one remote process's stdin and stdout (stderr is collected)."""

    def __init__(
        self, pool: SSHPool, entry: _Connection, process: asyncssh.SSHClientProcess
    ) -> None:
        self._pool = pool
        self._entry = entry
        self._proc = process
        self._stderr = asyncio.ensure_future(self._collect_stderr())
        self._finished: ServiceExit | None = None
        self._error: TransportError | None = None
        self._released = False

    def _lost(self) -> TransportError:
        reason = f" ({self._entry.lost_reason})" if self._entry.lost_reason else ""
        return TransportError(f"connection to {self._entry.where} lost{reason}")

    def _fail(self, error: TransportError) -> TransportError:
        if self._error is None:
            self._error = error
        self._proc.close()
        return self._error

    def _connection_gone(self) -> bool:
        return self._entry.lost or self._entry.conn.is_closed()

    async def _collect_stderr(self) -> bytes:
        chunks = []
        with contextlib.suppress(Exception):
            while chunk := await self._proc.stderr.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    async def _discard_output(self) -> None:
        with contextlib.suppress(Exception):
            while await self._proc.stdout.read(65536):
                pass

    async def read(self, n: int = 65536) -> bytes:
        if self._error is not None:
            raise self._error
        try:
            data = await self._proc.stdout.read(n)
        except (asyncssh.Error, OSError):
            raise self._fail(self._lost()) from None
        if not data and self._connection_gone() and self._proc.exit_status is None:
            raise self._fail(self._lost())
        return data

    async def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (asyncssh.Error, OSError):
            if self._connection_gone():
                raise self._fail(self._lost()) from None
            raise self._fail(
                TransportError(f"the git process on {self._entry.where} closed its input early")
            ) from None

    def write_eof(self) -> None:
        with contextlib.suppress(Exception):
            self._proc.stdin.write_eof()

    async def finish(self) -> ServiceExit:
        if self._finished is not None:
            return self._finished
        try:
            self.write_eof()
            # Output nobody will read (after an error above us) must not keep the peer's
            # process blocked on a full window, or it would never exit.
            discard = asyncio.ensure_future(self._discard_output())
            try:
                await self._proc.wait_closed()
            finally:
                discard.cancel()
            stderr = (await self._stderr_text()).decode(errors="replace")
            status = self._proc.exit_status
            if status is None and self._connection_gone():
                raise self._fail(self._lost())
            signal = self._proc.exit_signal
            if signal:
                status = None
                stderr += f"\n(the process was killed by signal {signal[0]})"
            self._finished = ServiceExit(status, stderr)
            return self._finished
        finally:
            self._release()

    async def _stderr_text(self) -> bytes:
        """What the process wrote to stderr; nothing after ``abort`` cancelled the reader
        (whose cancellation is not ours to pass on to the caller)."""
        try:
            return await self._stderr
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return b""

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._proc.close()
        if not self._stderr.done():
            self._stderr.cancel()
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._entry.slots.release()
            self._pool.release(self._entry)


class SSHTransport(Transport):
    """Runs git's service programs on an ssh peer through a shared SSHPool."""

    def __init__(self, pool: SSHPool, location: SSHLocation) -> None:
        self.pool = pool
        self.location = location

    def describe(self) -> str:
        return self.location.describe()

    async def _process(self, command: str) -> tuple[_Connection, asyncssh.SSHClientProcess]:
        """A new process on a pooled connection; a reused connection found dead before
        anything was sent is replaced once. Opening waits long enough for the keepalives to
        tell a silent peer from a slow one."""
        pool = self.pool
        timeout = max(
            pool.connect_timeout, pool.keepalive_interval * (pool.keepalive_count_max + 1)
        )
        for attempt in (1, 2):
            entry = await self.pool.acquire(self.location)
            try:
                await within(entry.slots.acquire(), self.pool.connect_timeout)
            except TimeoutError:
                self.pool.release(entry)
                raise TransportError(
                    f"too many operations at once on the connection to {entry.where}"
                ) from None
            try:
                process = await within(
                    entry.conn.create_process(command, encoding=None), timeout
                )
            except BaseException as exc:
                entry.slots.release()
                self.pool.release(entry)
                if not isinstance(exc, Exception):
                    raise
                gone = entry.lost or entry.conn.is_closed()
                if gone and entry.reused and attempt == 1:
                    self.pool._drop(entry)
                    continue
                raise _open_failure(exc, entry, gone, timeout) from None
            return entry, process
        raise AssertionError("unreachable")

    async def open(self, service: str, path: str) -> Channel:
        entry, process = await self._process(f"{service} {shell_quote(path)}")
        return SSHChannel(self.pool, entry, process)

    async def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int | None, str, str]:
        command = " ".join(shell_quote(arg) for arg in argv)
        entry, process = await self._process(command)
        channel = SSHChannel(self.pool, entry, process)
        try:
            channel.write_eof()
            out = bytearray()

            async def drain() -> ServiceExit:
                while data := await channel.read():
                    out.extend(data)
                return await channel.finish()

            try:
                exit = await within(drain(), timeout)
            except TimeoutError:
                raise TransportError(
                    f"{argv[0]} on {entry.where} did not finish within {timeout:g} s"
                ) from None
        finally:
            channel.abort()
        return exit.status, out.decode(errors="replace"), exit.stderr


def _open_failure(
    exc: BaseException, entry: _Connection, gone: bool, timeout: float
) -> TransportError:
    if gone:
        reason = f" ({entry.lost_reason})" if entry.lost_reason else ""
        return TransportError(f"connection to {entry.where} lost{reason}")
    if isinstance(exc, TimeoutError):
        return TransportError(f"{entry.where} did not start a session within {timeout:g} s")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return TransportError(f"{entry.where} refused to start a session: {exc.reason}")
    return TransportError(f"cannot start a session on {entry.where}: {exc}")

"""The SSH transport against a real OpenSSH sshd on 127.0.0.1: push and fetch between real
repositories, one cached connection per peer, odd paths and URL forms, and every failure
sshd can produce, each a one-line message that leaves our refs (and the peer's) alone.

A note on ``~``: git-upload-pack and git-receive-pack expand a leading ``~/`` in their path
argument from ``$HOME`` (and ``~user/`` from the password database), as ``git push`` over
OpenSSH does. The test server sets ``HOME`` for its sessions (``SetEnv``), so ``~/x`` lands
in that directory there, while a relative path like ``peer:x`` is relative to the login's
working directory, which sshd takes from the password database (``/root``); the tests use
``~/`` paths and absolute paths only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pygit2
import pytest
from conftest import git, mounted_tmpfs

from assistant.protocol.fetch import FetchResult, fetch
from assistant.protocol.push import PushResult, RefUpdate, push
from assistant.remotes import SSHLocation, fetch_target, parse_url, push_target
from assistant.transport.base import Channel, ServiceExit, TransportError
from assistant.transport.ssh import SSHPool, SSHTransport

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

NODE = "laptop"
T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def init(path: Path, bare: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", *(["--bare"] if bare else []), str(path)],
        check=True,
        capture_output=True,
    )
    return path


def commit(repo: Path, name: str, data: bytes, message: str = "change") -> str:
    (repo / name).write_bytes(data)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def refs(repo: Path) -> dict[str, str]:
    """Every ref and where it points."""
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in out.splitlines())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "refs/heads/main").strip()


async def push_to(
    transport: SSHTransport, ours: Path, path: str, dst: str, fast_forward: bool
) -> PushResult:
    repo = pygit2.Repository(str(ours))
    channel = await transport.open("git-receive-pack", path)
    try:
        return await push(
            channel, repo, [RefUpdate(dst, head(ours), fast_forward)], transport.describe(), path
        )
    except BaseException:
        channel.abort()
        raise


async def fetch_from(
    transport: SSHTransport,
    ours: Path,
    path: str,
    remote: str = "peer",
    wrap: Callable[[Channel], Channel] | None = None,
) -> FetchResult:
    repo = pygit2.Repository(str(ours))
    channel: Channel = await transport.open("git-upload-pack", path)
    if wrap is not None:
        channel = wrap(channel)
    try:
        return await fetch(
            channel, repo, lambda ref: fetch_target(ref, remote), transport.describe(), path
        )
    except BaseException:
        channel.abort()
        raise


async def with_pool(action: Callable[[SSHPool], Awaitable[T]], **options: float) -> T:
    pool = SSHPool(**options)  # type: ignore[arg-type]
    try:
        return await action(pool)
    finally:
        await pool.close()


def transport_error(action: Callable[[SSHPool], Awaitable[object]], **options: float) -> str:
    """The one-line message of the TransportError ``action`` raises."""
    with pytest.raises(TransportError) as info:
        run(with_pool(action, **options))
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message
    return message


def fingerprint(public_key_file: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", public_key_file],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    """Our non-bare repository with one commit on main."""
    repo = init(tmp_path / "ours")
    commit(repo, "notes.txt", b"first\n", "first")
    return repo


def peer_dir(server: SSHServer) -> Path:
    """A fresh directory on the server, inside its sessions' HOME."""
    path = server.home / unique("t")
    path.mkdir()
    return path


class Wrapped(Channel):
    """Passes through to a real channel; ``hook`` runs once ``limit`` bytes went by in the
    chosen direction."""

    def __init__(
        self, inner: Channel, limit: int, hook: Callable[[], object], on_read: bool
    ) -> None:
        self.inner = inner
        self.limit = limit
        self.hook: Callable[[], object] | None = hook
        self.on_read = on_read
        self.count = 0

    def _tick(self, n: int) -> None:
        self.count += n
        if self.hook is not None and self.count > self.limit:
            hook, self.hook = self.hook, None
            hook()

    async def read(self, n: int = 65536) -> bytes:
        data = await self.inner.read(n)
        if self.on_read:
            self._tick(len(data))
        return data

    async def write(self, data: bytes) -> None:
        if not self.on_read:
            self._tick(len(data))
        await self.inner.write(data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    async def finish(self) -> ServiceExit:
        return await self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


# --- push and fetch --------------------------------------------------------------------------


def test_push_and_fetch_with_a_non_bare_peer(ssh_home: ClientHome, ours: Path) -> None:
    peer = init(peer_dir(ssh_home.server) / "peer")
    peer_commit = commit(peer, "theirs.txt", b"from the peer\n", "theirs")
    loc = parse_url(f"peer:{peer}", Path("/"))
    assert loc == SSHLocation("peer", str(peer))
    target = push_target("refs/heads/main", NODE, peer_is_bare=False)

    async def go(pool: SSHPool) -> tuple[PushResult, FetchResult]:
        transport = SSHTransport(pool, loc)  # type: ignore[arg-type]
        pushed = await push_to(transport, ours, str(peer), target, fast_forward=False)
        fetched = await fetch_from(transport, ours, str(peer))
        return pushed, fetched

    pushed, fetched = run(with_pool(go))
    assert [(r.dst, r.status) for r in pushed.refs] == [(f"refs/remotes/{NODE}/synced/main", "ok")]
    assert refs(peer)[f"refs/remotes/{NODE}/synced/main"] == head(ours)
    assert refs(peer)["refs/heads/main"] == peer_commit  # its checkout is left alone
    assert fetched.updated == {"refs/remotes/peer/main": (None, peer_commit)}
    assert refs(ours)["refs/remotes/peer/main"] == peer_commit
    git(ours, "cat-file", "-e", f"{peer_commit}^{{tree}}")


def test_push_to_a_bare_peer_then_a_fast_forward(ssh_home: ClientHome, ours: Path) -> None:
    peer = init(peer_dir(ssh_home.server) / "peer.git", bare=True)
    loc = SSHLocation("127.0.0.1", str(peer), "root", ssh_home.server.port)

    async def go(pool: SSHPool) -> list[PushResult]:
        transport = SSHTransport(pool, loc)
        first = await push_to(transport, ours, str(peer), "refs/heads/main", True)
        commit(ours, "notes.txt", b"second\n", "second")
        second = await push_to(transport, ours, str(peer), "refs/heads/main", True)
        third = await push_to(transport, ours, str(peer), "refs/heads/main", True)
        return [first, second, third]

    first, second, third = run(with_pool(go))
    assert [r.status for r in first.refs] == ["ok"]
    assert [r.status for r in second.refs] == ["ok"]
    assert second.objects == 3  # commit, tree, blob: only what the peer lacked
    assert [r.status for r in third.refs] == ["up-to-date"] and third.bytes_sent == 0
    assert refs(peer) == {"refs/heads/main": head(ours)}


def test_one_connection_serves_every_operation(ssh_home: ClientHome, ours: Path) -> None:
    server = ssh_home.server
    peer = init(peer_dir(server) / "peer.git", bare=True)
    loc = SSHLocation("peer", str(peer))
    logins_before = server.accepted()

    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, loc)
        await push_to(transport, ours, str(peer), "refs/heads/main", True)
        await fetch_from(transport, ours, str(peer))
        status, out, _ = await transport.run(["git", "-C", str(peer), "rev-parse", "main"])
        assert (status, out.strip()) == (0, head(ours))
        commit(ours, "notes.txt", b"again\n")
        await push_to(transport, ours, str(peer), "refs/heads/main", True)
        await fetch_from(transport, ours, str(peer))
        # five more at once still share the one connection (and its one login)
        results = await asyncio.gather(*(transport.run(["true"]) for _ in range(5)))
        assert [r[0] for r in results] == [0] * 5
        assert pool.connects == 1 and pool.open_connections() == 1

    run(with_pool(go))
    assert server.accepted() - logins_before == 1
    assert refs(ours)["refs/remotes/peer/main"] == head(ours)


def test_concurrent_first_use_opens_one_connection(ssh_home: ClientHome) -> None:
    async def go(pool: SSHPool) -> int:
        transport = SSHTransport(pool, SSHLocation("peer", "~"))
        results = await asyncio.gather(*(transport.run(["echo", "hi"]) for _ in range(6)))
        assert all(r == (0, "hi\n", "") for r in results), results
        return pool.connects

    assert run(with_pool(go)) == 1


async def closes_within(pool: SSHPool, limit: float) -> float:
    """Seconds until the pool has no open connection (fails after ``limit``)."""
    started = time.monotonic()
    while pool.open_connections():
        assert time.monotonic() - started < limit, "the idle connection was not closed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_idle_connection_is_closed_and_reopened(ssh_home: ClientHome) -> None:
    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, SSHLocation("peer", "~"))
        assert (await transport.run(["true"]))[0] == 0
        assert pool.open_connections() == 1
        assert await closes_within(pool, 5) >= 0.4  # idle_timeout, not sooner
        assert (await transport.run(["true"]))[0] == 0
        assert pool.connects == 2

    run(with_pool(go, idle_timeout=0.5))


def test_a_channel_in_use_keeps_the_connection_open(ssh_home: ClientHome) -> None:
    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, SSHLocation("peer", "~"))
        channel = await transport.open("git-upload-pack", "~/nowhere")
        await asyncio.sleep(0.5)
        assert pool.open_connections() == 1  # well past idle_timeout, but in use
        exit = await channel.finish()
        assert exit.status == 128 and "does not appear to be a git repository" in exit.stderr
        assert await channel.finish() == exit  # idempotent
        await closes_within(pool, 5)

    run(with_pool(go, idle_timeout=0.2))


def test_finish_after_abort_returns_instead_of_raising_a_cancellation(
    ssh_home: ClientHome,
) -> None:
    """A caller that aborts a channel (on its own error) and then finishes it, as every
    ``finally`` does, gets the exit back; the cancelled stderr reader is not its problem."""

    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, SSHLocation("peer", "~"))
        channel = await transport.open("git-upload-pack", "~/nowhere")
        channel.abort()
        exit = await channel.finish()
        assert isinstance(exit, ServiceExit)
        still = await transport.run(["true"])  # the connection is still good for others
        assert still[0] == 0

    run(with_pool(go))


def test_paths_with_spaces_quotes_and_dollars(
    ssh_home: ClientHome, ours: Path, tmp_path: Path
) -> None:
    odd = tmp_path / 'it\'s a $HOME `dir` "x" !bang' / "peer repo.git"
    peer = init(odd, bare=True)
    loc = parse_url(ssh_home.url(odd), Path("/"))
    assert loc == SSHLocation("127.0.0.1", str(odd), "root", ssh_home.server.port)

    async def go(pool: SSHPool) -> tuple[int | None, str, str]:
        transport = SSHTransport(pool, loc)  # type: ignore[arg-type]
        result = await push_to(transport, ours, str(odd), "refs/heads/main", True)
        assert [r.status for r in result.refs] == ["ok"]
        await fetch_from(transport, ours, str(odd))
        return await transport.run(["printf", "%s|", str(odd), "$HOME", "a'b", "!x", "~"])

    status, out, _ = run(with_pool(go))
    assert refs(peer) == {"refs/heads/main": head(ours)}
    assert refs(ours)["refs/remotes/peer/main"] == head(ours)
    assert (status, out) == (0, f"{odd}|$HOME|a'b|!x|~|")


def test_home_relative_paths(ssh_home: ClientHome, ours: Path) -> None:
    name = unique("home") + ".git"
    peer = init(ssh_home.server.home / name, bare=True)
    urls = [f"peer:~/{name}", f"ssh://peer/~/{name}", f"ssh://root@peer/~/{name}"]
    locations = [parse_url(url, Path("/")) for url in urls]
    assert {loc.path for loc in locations} == {f"~/{name}"}  # type: ignore[union-attr]

    async def go(pool: SSHPool) -> None:
        for n, loc in enumerate(locations):
            transport = SSHTransport(pool, loc)  # type: ignore[arg-type]
            commit(ours, "notes.txt", f"{n}\n".encode())
            result = await push_to(transport, ours, f"~/{name}", "refs/heads/main", True)
            assert [r.status for r in result.refs] == ["ok"]
            assert refs(peer) == {"refs/heads/main": head(ours)}
        # "peer" and "root@peer" are written differently: two pool keys
        assert pool.connects == 2

    run(with_pool(go))


def test_url_forms_and_host_alias(ssh_home: ClientHome, ours: Path) -> None:
    server = ssh_home.server
    peer = init(peer_dir(server) / "peer.git", bare=True)
    urls = {
        f"peer:{peer}": "peer",
        f"root@peer:{peer}": "root@peer",
        f"ssh://peer{peer}": "peer",
        f"ssh://root@127.0.0.1:{server.port}{peer}": f"root@127.0.0.1:{server.port}",
        f"ssh://127.0.0.1:{server.port}{peer}": f"127.0.0.1:{server.port}",
    }

    async def go(pool: SSHPool) -> None:
        for url, described in urls.items():
            transport = SSHTransport(pool, parse_url(url, Path("/")))  # type: ignore[arg-type]
            assert transport.describe() == described
            commit(ours, "notes.txt", url.encode())
            result = await push_to(transport, ours, str(peer), "refs/heads/main", True)
            assert [r.status for r in result.refs] == ["ok"], url
            assert refs(peer) == {"refs/heads/main": head(ours)}
        assert pool.connects == 4  # peer, root@peer, and the two spellings of 127.0.0.1

    run(with_pool(go))


def test_hashed_known_hosts(ssh_home: ClientHome) -> None:
    subprocess.run(
        ["ssh-keygen", "-H", "-f", str(ssh_home.known_hosts)], capture_output=True, check=True
    )
    assert ssh_home.known_hosts.read_text().startswith("|1|")
    status = run(with_pool(lambda pool: SSHTransport(pool, SSHLocation("peer", "~")).run(["true"])))
    assert status == (0, "", "")


def test_proxy_jump_from_ssh_config(ssh_home: ClientHome) -> None:
    server = ssh_home.server
    ssh_home.write_config(
        f"Host hop\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  ProxyJump peer\n\n"
    )
    before = server.accepted()

    async def go(pool: SSHPool) -> tuple[int | None, str, str]:
        return await SSHTransport(pool, SSHLocation("hop", "~")).run(["echo", "via the jump"])

    assert run(with_pool(go)) == (0, "via the jump\n", "")
    assert server.accepted() - before == 2  # the jump and the target, over the jump


def test_proxy_jump_failures_name_the_right_host(
    ssh_home: ClientHome, sshd_factory: Callable[..., SSHServer]
) -> None:
    target, jump = ssh_home.server, sshd_factory()
    ssh_home.write_config(
        f"Host hop\n  HostName 127.0.0.1\n  Port {target.port}\n  User root\n"
        "  ProxyJump jumpy\n\n"
        f"Host jumpy\n  HostName 127.0.0.1\n  Port {jump.port}\n  User root\n\n"
    )
    fp = fingerprint(f"{target.keys.host_key}.pub")

    def attempt() -> str:
        return transport_error(
            lambda pool: SSHTransport(pool, SSHLocation("hop", "~")).run(["true"])
        )

    # the jump host's key is unknown
    message = attempt()
    assert message.startswith(
        f"the host key of jumpy (127.0.0.1 port {jump.port}) is unknown (ED25519 key {fp}); "
    ), message
    assert message.endswith(" (the ProxyJump host on the way to hop)"), message
    assert f"ssh-keyscan -p {jump.port} -t ed25519 127.0.0.1" in message
    # the jump host is known, the target is not
    ssh_home.known_hosts.write_text(jump.known_hosts_line())
    message = attempt()
    assert message.startswith(
        f"the host key of hop (127.0.0.1 port {target.port}) is unknown (ED25519 key {fp}); "
    ), message
    # both known
    with ssh_home.known_hosts.open("a") as f:
        f.write(target.known_hosts_line())
    result = run(with_pool(lambda pool: SSHTransport(pool, SSHLocation("hop", "~")).run(["true"])))
    assert result == (0, "", "")


def test_ssh_agent_authenticates(ssh_home: ClientHome, tmp_path: Path) -> None:
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(ssh_home.key)], env=env, check=True)
        # the only way in is now the agent: no key file is named or at a default place
        ssh_home.key.unlink()
        ssh_home.write_config(identity=ssh_home.path / "no-such-key")
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        try:
            result = run(
                with_pool(lambda pool: SSHTransport(pool, SSHLocation("peer", "~")).run(["true"]))
            )
        finally:
            del os.environ["SSH_AUTH_SOCK"]
        assert result == (0, "", "")
    finally:
        agent.terminate()
        agent.wait(timeout=5)


# --- failures: connecting --------------------------------------------------------------------


def test_connection_refused(private_ssh_home: ClientHome, ours: Path) -> None:
    """The server is down, then comes back: the failure is not remembered."""
    server = private_ssh_home.server
    peer = init(peer_dir(server) / "peer.git", bare=True)
    before = refs(ours)
    server.stop()

    def attempt(pool: SSHPool) -> Awaitable[PushResult]:
        transport = SSHTransport(pool, SSHLocation("peer", str(peer)))
        return push_to(transport, ours, str(peer), "refs/heads/main", True)

    message = transport_error(attempt)
    assert message == (
        f"connection to peer (127.0.0.1 port {server.port}) refused: is sshd running there, "
        f"and listening on port {server.port}?"
    )
    assert refs(ours) == before and refs(peer) == {}
    server.restart()
    result = run(with_pool(attempt))
    assert [r.status for r in result.refs] == ["ok"]


def test_callers_waiting_on_a_failed_connect_share_its_error(
    private_ssh_home: ClientHome,
) -> None:
    """Six operations at once on a silent server: one connect attempt, one timeout for all,
    not six in a row."""
    private_ssh_home.server.pause()

    async def go(pool: SSHPool) -> list[BaseException | tuple[int | None, str, str]]:
        transport = SSHTransport(pool, SSHLocation("peer", "~"))
        return await asyncio.gather(
            *(transport.run(["true"]) for _ in range(6)), return_exceptions=True
        )

    started = time.monotonic()
    results = run(with_pool(go, connect_timeout=1.0))
    assert time.monotonic() - started < 4
    assert all(isinstance(r, TransportError) and "timed out" in str(r) for r in results)


def test_connect_timeout(private_ssh_home: ClientHome, ours: Path) -> None:
    server = private_ssh_home.server
    before = refs(ours)
    server.pause()
    started = time.monotonic()
    message = transport_error(
        lambda pool: fetch_from(
            SSHTransport(pool, SSHLocation("peer", "~/x.git")), ours, "~/x.git"
        ),
        connect_timeout=1.0,
    )
    assert time.monotonic() - started < 4
    assert message == (
        f"connecting to peer (127.0.0.1 port {server.port}) timed out after 1 s "
        "(the host or its sshd does not answer)"
    )
    assert refs(ours) == before


def test_authentication_failure(ssh_home: ClientHome, ours: Path) -> None:
    ssh_home.key.unlink()
    ssh_home.write_config(identity=ssh_home.server.keys.stranger_key)
    before = refs(ours)
    message = transport_error(
        lambda pool: fetch_from(SSHTransport(pool, SSHLocation("peer", "~/x.git")), ours, "~/x.git")
    )
    port = ssh_home.server.port
    assert message.startswith(
        f"authentication to root@peer (127.0.0.1 port {port}) failed: no key was accepted"
    ), message
    assert "IdentityFile" in message and "ssh-agent" in message
    assert refs(ours) == before


@pytest.mark.parametrize("known_hosts", ["empty", "missing", "none"])
def test_unknown_host_key(ssh_home: ClientHome, ours: Path, known_hosts: str) -> None:
    """Never trusted on first use, also with ``UserKnownHostsFile none`` (which would turn
    checking off in asyncssh)."""
    server = ssh_home.server
    if known_hosts == "empty":
        ssh_home.known_hosts.write_text("")
    elif known_hosts == "missing":
        ssh_home.known_hosts.unlink()
    else:
        ssh_home.config.write_text(
            ssh_home.config.read_text().replace(str(ssh_home.known_hosts), "none")
        )
    before = refs(ours)
    message = transport_error(
        lambda pool: fetch_from(SSHTransport(pool, SSHLocation("peer", "~/x.git")), ours, "~/x.git")
    )
    fp = fingerprint(f"{server.keys.host_key}.pub")
    assert message.startswith(
        f"the host key of peer (127.0.0.1 port {server.port}) is unknown (ED25519 key {fp}); "
        "refusing to connect. Verify the fingerprint, then run: "
    ), message
    assert refs(ours) == before
    if known_hosts == "none":
        return
    # The advice works: run it, and the next connection is trusted.
    command = re.search(r"run: (ssh-keyscan .*?) \(or connect once", message)
    assert command, message
    assert command.group(1) == (
        f"ssh-keyscan -p {server.port} -t ed25519 127.0.0.1 >> ~/.ssh/known_hosts"
    )
    subprocess.run(["sh", "-c", command.group(1)], capture_output=True, check=True)
    assert server.public_key(server.keys.host_key) in ssh_home.known_hosts.read_text()
    result = run(with_pool(lambda pool: SSHTransport(pool, SSHLocation("peer", "~")).run(["true"])))
    assert result[0] == 0


@pytest.mark.parametrize("known", ["another ed25519 key", "an rsa key"])
def test_changed_host_key(ssh_home: ClientHome, ours: Path, known: str, tmp_path: Path) -> None:
    """known_hosts (hashed) holds another key for the host: of the server's type, or only of
    a type the server does not offer."""
    server = ssh_home.server
    if known == "an rsa key":
        rsa = tmp_path / "rsa_host_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(rsa)],
            capture_output=True,
            check=True,
        )
        other = server.public_key(rsa)
    else:
        other = server.public_key(server.keys.other_host_key)
    ssh_home.known_hosts.write_text(server.known_hosts_line(other))
    subprocess.run(
        ["ssh-keygen", "-H", "-f", str(ssh_home.known_hosts)], capture_output=True, check=True
    )
    before = refs(ours)
    message = transport_error(
        lambda pool: push_to(
            SSHTransport(pool, SSHLocation("peer", "~/x.git")),
            ours,
            "~/x.git",
            "refs/heads/main",
            True,
        )
    )
    fp = fingerprint(f"{server.keys.host_key}.pub")
    assert message.startswith(
        f"WARNING: the host key of peer (127.0.0.1 port {server.port}) has CHANGED "
        f"(ED25519 key {fp})"
    ), message
    assert f"If the change is expected: ssh-keygen -R '[127.0.0.1]:{server.port}'" in message
    assert refs(ours) == before
    assert server.known_hosts_line(server.public_key(server.keys.host_key)).strip() not in (
        ssh_home.known_hosts.read_text()
    )  # never trusted behind our back


def test_unreachable_hosts_and_dns_failure(ssh_home: ClientHome, tmp_path: Path) -> None:
    """In a network namespace of our own: a route that says "unreachable", no route at all,
    and no way to reach a DNS server."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip (iproute2) is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.strip()}")
    script = tmp_path / "probe.py"
    script.write_text(
        "import asyncio, json, sys\n"
        "from assistant.remotes import SSHLocation\n"
        "from assistant.transport.base import TransportError\n"
        "from assistant.transport.ssh import SSHPool, SSHTransport\n"
        "async def attempt(host):\n"
        "    pool = SSHPool(connect_timeout=5)\n"
        "    try:\n"
        "        await SSHTransport(pool, SSHLocation(host, '~')).run(['true'])\n"
        "        return 'connected?'\n"
        "    except TransportError as exc:\n"
        "        return str(exc)\n"
        "    finally:\n"
        "        await pool.close()\n"
        "async def main(hosts):\n"
        "    return await asyncio.gather(*(attempt(h) for h in hosts))\n"
        "print(json.dumps(asyncio.run(main(sys.argv[1:]))))\n"
    )
    shell = (
        "ip link set lo up && ip route add unreachable 192.0.2.0/24 && "
        f"exec {sys.executable} {script} 192.0.2.7 198.51.100.7 peer-nowhere.example"
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    unreachable, no_network, dns = json.loads(proc.stdout)
    assert unreachable == "192.0.2.7 is unreachable (no route to host)"
    assert no_network == (
        "cannot reach 198.51.100.7: the network is unreachable (is this machine online?)"
    )
    assert dns.startswith("cannot resolve host name 'peer-nowhere.example': "), dns


# --- failures: on the peer -------------------------------------------------------------------


@pytest.mark.parametrize("service", ["push", "fetch"])
@pytest.mark.parametrize("kind", ["missing", "not a repository"])
def test_remote_path_missing_or_not_a_repository(
    ssh_home: ClientHome, ours: Path, service: str, kind: str
) -> None:
    path = peer_dir(ssh_home.server) / "here"
    if kind == "not a repository":
        path.mkdir()
        (path / "file.txt").write_text("not git\n")
    before = refs(ours)

    async def go(pool: SSHPool) -> object:
        transport = SSHTransport(pool, SSHLocation("peer", str(path)))
        if service == "push":
            return await push_to(transport, ours, str(path), "refs/heads/main", True)
        return await fetch_from(transport, ours, str(path))

    message = transport_error(go)
    assert message == f"{path} on peer is not a git repository (or does not exist)"
    assert refs(ours) == before


@pytest.fixture
def nogit_sshd(ssh_home: ClientHome, sshd_factory: Callable[..., SSHServer]) -> SSHServer:
    """A second server whose sessions have no git in their PATH."""
    server = sshd_factory(env={"PATH": "/nonexistent"})
    with ssh_home.known_hosts.open("a") as f:
        f.write(server.known_hosts_line())
    return server


def test_git_missing_on_the_peer(nogit_sshd: SSHServer, ours: Path) -> None:
    before = refs(ours)
    loc = SSHLocation("127.0.0.1", "/srv/x.git", "root", nogit_sshd.port)
    message = transport_error(
        lambda pool: push_to(SSHTransport(pool, loc), ours, "/srv/x.git", "refs/heads/main", True)
    )
    assert message == (
        f"git is not installed on root@127.0.0.1:{nogit_sshd.port}, or git-receive-pack is not "
        "in the PATH of a non-interactive login there"
    )
    assert refs(ours) == before


def test_permission_denied_on_the_peer(ssh_home: ClientHome, ours: Path, peer_user: str) -> None:
    user = peer_user
    server = ssh_home.server
    peer = init(server.root / unique("readonly") / "peer.git", bare=True)  # root's, 0755
    before_ours, before_peer = refs(ours), refs(peer)
    loc = SSHLocation("127.0.0.1", str(peer), user, server.port)
    message = transport_error(
        lambda pool: push_to(SSHTransport(pool, loc), ours, str(peer), "refs/heads/main", True)
    )
    assert message == (
        f"permission denied on {user}@127.0.0.1:{server.port}: {peer} is not writable for this "
        "user (git could not create a temporary object directory in it)"
    )
    assert refs(ours) == before_ours and refs(peer) == before_peer
    # reading is allowed: the same login fetches
    run(with_pool(lambda pool: fetch_from(SSHTransport(pool, loc), ours, str(peer))))


def test_pre_receive_hook_rejection(ssh_home: ClientHome, ours: Path) -> None:
    peer = init(peer_dir(ssh_home.server) / "peer.git", bare=True)
    hook = peer / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: pushes are closed today' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = refs(ours)
    result = run(
        with_pool(
            lambda pool: push_to(
                SSHTransport(pool, SSHLocation("peer", str(peer))),
                ours,
                str(peer),
                "refs/heads/main",
                True,
            )
        )
    )
    (ref,) = result.refs
    assert ref.status == "rejected"
    assert ref.reason == "pre-receive hook declined: policy: pushes are closed today"
    assert refs(peer) == {} and refs(ours) == before


def test_non_fast_forward_to_a_bare_peer(ssh_home: ClientHome, ours: Path) -> None:
    peer = init(peer_dir(ssh_home.server) / "peer.git", bare=True)
    loc = SSHLocation("peer", str(peer))
    run(
        with_pool(
            lambda pool: push_to(SSHTransport(pool, loc), ours, str(peer), "refs/heads/main", True)
        )
    )
    on_peer = refs(peer)
    git(ours, "commit", "-q", "--amend", "-m", "rewritten")
    before = refs(ours)
    result = run(
        with_pool(
            lambda pool: push_to(SSHTransport(pool, loc), ours, str(peer), "refs/heads/main", True)
        )
    )
    (ref,) = result.refs
    assert ref.status == "rejected"
    assert ref.reason.startswith("non-fast-forward"), ref.reason
    assert refs(peer) == on_peer and refs(ours) == before


@pytest.fixture
def peer_small_disk(ssh_home: ClientHome) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own on the server side, unmounted afterwards."""
    with mounted_tmpfs(peer_dir(ssh_home.server) / "small-disk", "1m") as mountpoint:
        yield mountpoint


def test_disk_full_on_the_peer(ssh_home: ClientHome, ours: Path, peer_small_disk: Path) -> None:
    peer = init(peer_small_disk / "peer.git", bare=True)
    commit(ours, "photo.bin", os.urandom(2_000_000), "photo")
    before_ours, before_peer = refs(ours), refs(peer)
    message = transport_error(
        lambda pool: push_to(
            SSHTransport(pool, SSHLocation("peer", str(peer))),
            ours,
            str(peer),
            "refs/heads/main",
            True,
        )
    )
    assert message == f"the disk is full on peer (while writing to {peer})"
    assert refs(ours) == before_ours and refs(peer) == before_peer


# --- failures: the connection goes away ------------------------------------------------------


def test_connection_dropped_mid_pack(
    private_ssh_home: ClientHome, ours: Path, tmp_path: Path
) -> None:
    """The server's connection processes are killed while a large pack is on its way, in
    each direction: no ref moves on either side, and the next attempt succeeds over a new
    connection."""
    server = private_ssh_home.server
    peer = init(peer_dir(server) / "peer.git", bare=True)
    commit(ours, "video.bin", os.urandom(12_000_000), "large")
    loc = SSHLocation("peer", str(peer))
    before_ours = refs(ours)
    killed: list[int] = []

    def kill() -> None:
        killed.append(server.kill_connections())

    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, loc)
        repo = pygit2.Repository(str(ours))
        update = [RefUpdate("refs/heads/main", head(ours), True)]
        channel = await transport.open("git-receive-pack", str(peer))
        dropping = Wrapped(channel, 1_000_000, kill, on_read=False)
        with pytest.raises(TransportError) as info:
            await push(dropping, repo, update, transport.describe(), str(peer))
        assert str(info.value).startswith("connection to peer lost"), info.value
        with pytest.raises(TransportError, match="lost"):
            await channel.read()  # the channel stays failed
        channel.abort()
        assert refs(peer) == {} and refs(ours) == before_ours
        result = await push(
            await transport.open("git-receive-pack", str(peer)),
            repo,
            update,
            transport.describe(),
            str(peer),
        )
        assert [r.status for r in result.refs] == ["ok"]
        assert refs(peer) == {"refs/heads/main": head(ours)}

        theirs = init(tmp_path / "theirs")
        before_theirs = refs(theirs)
        with pytest.raises(TransportError) as info:
            await fetch_from(
                transport,
                theirs,
                str(peer),
                wrap=lambda ch: Wrapped(ch, 1_000_000, kill, on_read=True),
            )
        assert str(info.value).startswith("the fetch from peer broke off: connection to peer lost")
        assert refs(theirs) == before_theirs
        fetched = await fetch_from(transport, theirs, str(peer))
        assert fetched.updated == {"refs/remotes/peer/main": (None, head(ours))}
        assert pool.connects == 3

        # A failure on our side mid-pack, then finish() instead of abort(): the unread
        # rest of the pack must not leave the peer's upload-pack (and us) waiting forever.
        def fail_here() -> None:
            raise TransportError("storing the pack failed here")

        third = init(tmp_path / "third")
        channel = await transport.open("git-upload-pack", str(peer))
        with pytest.raises(TransportError, match="failed here"):
            await fetch(
                Wrapped(channel, 100_000, fail_here, on_read=True),
                pygit2.Repository(str(third)),
                lambda ref: fetch_target(ref, "peer"),
                "peer",
                str(peer),
            )
        exit = await asyncio.wait_for(channel.finish(), 20)
        assert exit.status == 0, exit
        assert refs(third) == {}

    run(with_pool(go))
    assert all(killed) and len(killed) == 2


def test_dead_peer_is_noticed_by_keepalives(private_ssh_home: ClientHome, ours: Path) -> None:
    """The server stops answering (its connection processes are frozen): an operation in
    progress fails once the keepalives go unanswered, and later operations get a new
    connection, also when the silent one was idle in the pool."""
    server = private_ssh_home.server
    peer = init(peer_dir(server) / "peer.git", bare=True)
    run(
        with_pool(
            lambda p: push_to(
                SSHTransport(p, SSHLocation("peer", str(peer))),
                ours,
                str(peer),
                "refs/heads/main",
                True,
            )
        )
    )
    theirs = init(ours.parent / "theirs")
    before = refs(theirs)

    async def go(pool: SSHPool) -> None:
        transport = SSHTransport(pool, SSHLocation("peer", str(peer)))
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await fetch_from(
                transport,
                theirs,
                str(peer),
                wrap=lambda ch: Wrapped(ch, 0, server.freeze_connections, on_read=True),
            )
        assert time.monotonic() - started < 5
        # while negotiating or while the pack streams in, depending on timing
        assert str(info.value).endswith(
            "connection to peer lost (no answer to keepalives for 0.6 s)"
        ), info.value
        assert refs(theirs) == before
        assert (await transport.run(["true"]))[0] == 0  # a new connection
        assert pool.connects == 2
        server.freeze_connections()  # now the pooled connection goes silent while idle
        started = time.monotonic()
        assert (await transport.run(["true"]))[0] == 0
        assert time.monotonic() - started < 5
        assert pool.connects == 3

    try:
        run(with_pool(go, keepalive_interval=0.2, keepalive_count_max=3))
    finally:
        server.kill_connections()

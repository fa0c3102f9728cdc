"""Push to and fetch from peers: choose the transport, map the refs, run every remote in
parallel, and report one outcome per remote."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from assistant.activity import labelled
from assistant.driveid import ABSENT_SUMMARY, PeerRepository, check_local_peer
from assistant.errors import AnnexsyncError
from assistant.lineage import record_pushed
from assistant.node import NodeIdentity
from assistant.protocol.fetch import fetch
from assistant.protocol.pktline import ProtocolError
from assistant.protocol.push import PushResult, RefUpdate, push
from assistant.remotes import (
    LocalLocation,
    Remote,
    fetch_target,
    push_target,
    refused_branch,
    shell_quote,
)
from assistant.timeouts import within
from assistant.transport.base import Transport, TransportError
from assistant.transport.local import LocalTransport

log = logging.getLogger("annexsync.peers")
OPERATION_TIMEOUT = 600.0
# (remote, ref) pairs already warned about in this process: a poll every minute must not
# repeat the same warning every minute
_warned_refs: set[tuple[str, str]] = set()


@dataclass
class Outcome:
    """What happened with one remote: ``ok`` and a one-line ``summary``; ``absent`` when it
    is a local path whose drive is not there (a quiet offline peer, not an error)."""

    remote: str
    ok: bool
    summary: str
    refs: dict[str, Any] = field(default_factory=dict)
    absent: bool = False  # a local peer's path is not there (a drive not mounted)

    def __post_init__(self) -> None:
        self.summary = printable(self.summary)

    def line(self) -> str:
        return f"{self.remote}: {self.summary}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text a peer had a hand in (its errors, a hook's output) as one line that is safe for a
    terminal: line breaks become spaces, NULs go, other control characters (escape
    sequences) are shown as ``\\xNN``."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", text.replace("\x00", "").replace("\t", " ")).strip()
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Peers:
    """Hands out transports: one shared SSH connection pool, local paths as subprocesses."""

    def __init__(self) -> None:
        self._pool: Any = None
        self._local = LocalTransport()
        self._bare: dict[tuple[str, str], bool] = {}

    def transport(self, remote: Remote) -> Transport:
        if isinstance(remote.location, LocalLocation):
            return self._local
        # imported here: asyncssh costs a tenth of a second to load, and local peers need none
        from assistant.transport.ssh import SSHPool, SSHTransport

        if self._pool is None:
            self._pool = SSHPool()
        return SSHTransport(self._pool, remote.location)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def is_bare(self, remote: Remote, transport: Transport) -> bool:
        """Whether the peer's repository is bare (cached for this process)."""
        if remote.bare is not None:
            return remote.bare
        key = (transport.describe(), remote.location.path)
        if key not in self._bare:
            self._bare[key] = await _probe_bare(remote, transport)
        return self._bare[key]


def remote_path_expr(path: str) -> str:
    """A remote path for the far side's shell: quoted, with a leading ~ or ~user expanded
    by that shell as git itself would."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shell_quote(path[2:])
    if path.startswith("~"):
        user, _, rest = path[1:].partition("/")
        if user.replace("-", "").replace("_", "").replace(".", "").isalnum():
            return f"~{user}/" + shell_quote(rest) if rest else f"~{user}"
    return shell_quote(path)


async def _probe_bare(remote: Remote, transport: Transport) -> bool:
    """Ask the peer whether its repository is bare. A peer that will not run the question
    (git-shell, gitolite, a hosting service) is an error naming the setting that answers
    it; a missing path or missing git falls through to receive-pack, which says so best."""
    location = remote.location
    if isinstance(location, LocalLocation):
        try:
            return bool(
                pygit2.Repository(location.path, pygit2.enums.RepositoryOpenFlag.NO_SEARCH).is_bare
            )
        except pygit2.GitError:
            return False
    script = f"git -C {remote_path_expr(location.path)} rev-parse --is-bare-repository"
    status, out, err = await transport.run(["sh", "-c", script])
    if status == 0 and out.strip() in ("true", "false"):
        return out.strip() == "true"
    if status in (127, 128):
        return False
    detail = (err.strip().splitlines() or ["no answer"])[-1]
    raise TransportError(
        f"cannot tell whether {remote.name} is a bare repository ({transport.describe()} "
        f"refused a shell command: {detail}); set it with "
        f"'git config remote.{remote.name}.annexsync-bare true' (or false)"
    )


def branch_tips(repo: pygit2.Repository) -> dict[str, str]:
    """Our branches and the commits they point at."""
    tips = {}
    for name in repo.references:
        if name.startswith("refs/heads/"):
            try:
                tips[name] = str(repo.references[name].peel(pygit2.Commit).id)
            except (pygit2.GitError, ValueError):
                continue
    return tips


def _size(n: float) -> str:
    """Bytes in a human unit: 512 B, 1.5 KiB, 3.2 MiB."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


async def _check_local(
    repo: pygit2.Repository, remote: Remote
) -> tuple[PeerRepository | None, Outcome | None]:
    """For a local-path remote, identify its repository first (``assistant.driveid``): an
    absent drive or a different repository ends the operation with the Outcome returned.
    Runs in a thread: a drive spinning up must not stall the event loop."""
    if not isinstance(remote.location, LocalLocation):
        return None, None
    try:
        peer = await within(
            asyncio.to_thread(check_local_peer, repo.path, remote.name, remote.location.path),
            OPERATION_TIMEOUT,
        )
    except (AnnexsyncError, TimeoutError, OSError) as exc:
        return None, Outcome(remote.name, False, _message(exc))
    if peer is None:
        return None, Outcome(remote.name, False, ABSENT_SUMMARY, absent=True)
    return peer, None


def describe_push(result: PushResult) -> tuple[bool, str]:
    """(ok, one line) for a push's per-ref results."""
    pushed = [r for r in result.refs if r.status == "ok"]
    rejected = [r for r in result.refs if r.status == "rejected"]
    parts = []
    if pushed:
        names = ", ".join(r.dst for r in pushed)
        parts.append(f"pushed {names} ({result.objects} objects, {_size(result.bytes_sent)})")
    for r in rejected:
        parts.append(f"rejected {r.dst}: {r.reason}")
    if not parts:
        parts.append("up to date")
    return not rejected, "; ".join(parts)


async def push_to(
    peers: Peers, repo: pygit2.Repository, identity: NodeIdentity, remote: Remote
) -> Outcome:
    """Push every branch to one remote, as the ref mapping says."""
    local, refused = await _check_local(repo, remote)
    if refused is not None:
        return refused
    tips = branch_tips(repo)
    if not tips:
        return Outcome(remote.name, True, "nothing to push (no commits yet)")
    try:
        transport = peers.transport(remote)
        if local is not None and remote.bare is None:
            bare = local.bare  # just read from the repository now at the path
        else:
            bare = await peers.is_bare(remote, transport)
        updates = [
            RefUpdate(push_target(branch, identity.name, bare), oid, fast_forward=bare)
            for branch, oid in sorted(tips.items())
        ]
        where = transport.describe()
        channel = await transport.open("git-receive-pack", remote.location.path)
        try:
            with labelled(remote.name):
                result = await within(
                    push(channel, repo, updates, where, remote.location.path), OPERATION_TIMEOUT
                )
        except BaseException:
            channel.abort()
            raise
    except (AnnexsyncError, ProtocolError, TimeoutError, OSError) as exc:
        return Outcome(remote.name, False, f"error: {_message(exc)}")
    ok, summary = describe_push(result)
    if ok and bare:
        # The hub's branches are ours now: a later unrelated one is refused (lineage.py). A
        # non-bare peer's own branch is not: our push only reached our synced ref there.
        await asyncio.to_thread(record_pushed, Path(repo.path) / "annexsync", remote.name, tips)
    return Outcome(
        remote.name,
        ok,
        summary,
        {
            r.dst: {"status": r.status, "old": r.old, "new": r.new, "reason": r.reason}
            for r in result.refs
        },
    )


async def fetch_from(peers: Peers, repo: pygit2.Repository, remote: Remote) -> Outcome:
    """Fetch a remote's branches into refs/remotes/<remote>/."""
    _, refused = await _check_local(repo, remote)
    if refused is not None:
        return refused
    try:
        transport = peers.transport(remote)
        channel = await transport.open("git-upload-pack", remote.location.path)
        try:
            with labelled(remote.name):
                result = await within(
                    fetch(
                        channel,
                        repo,
                        lambda ref: fetch_target(ref, remote.name),
                        transport.describe(),
                        remote.location.path,
                    ),
                    OPERATION_TIMEOUT,
                )
        except BaseException:
            channel.abort()
            raise
    except (AnnexsyncError, ProtocolError, TimeoutError, OSError) as exc:
        return Outcome(remote.name, False, f"error: {_message(exc)}")
    _warn_refused(remote.name, result.remote_refs)
    if not result.updated:
        return Outcome(remote.name, True, "up to date")
    moved = ", ".join(
        f"{name.removeprefix(f'refs/remotes/{remote.name}/')} {(old or '0000000')[:7]}..{new[:7]}"
        for name, (old, new) in sorted(result.updated.items())
    )
    size = f" ({_size(result.bytes_received)})" if result.bytes_received else ""
    return Outcome(
        remote.name,
        True,
        f"fetched {moved}{size}",
        {name: {"old": old, "new": new} for name, (old, new) in result.updated.items()},
    )


def _warn_refused(remote: str, advertised: dict[str, str]) -> None:
    """Say once per process which of a peer's branches were not fetched for their names."""
    for ref in sorted(advertised):
        why = refused_branch(ref)
        if why is not None and (remote, ref) not in _warned_refs:
            _warned_refs.add((remote, ref))
            log.warning("%s: not fetching the branch %r: %s", remote, ref, why)


def _message(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"the operation did not finish within {OPERATION_TIMEOUT:g}s"
    if isinstance(exc, ProtocolError):
        return f"the peer broke the git protocol: {exc}"
    if isinstance(exc, OSError) and not isinstance(exc, TransportError):
        return exc.strerror or str(exc)
    return str(exc)


async def run_all(
    action: str, repo: pygit2.Repository, identity: NodeIdentity, remotes: list[Remote]
) -> list[Outcome]:
    """Push to or fetch from every remote at once; one slow peer does not delay the others'
    results, and every connection is closed at the end."""
    peers = Peers()
    try:
        if action == "push":
            jobs = [push_to(peers, repo, identity, r) for r in remotes]
        else:
            jobs = [fetch_from(peers, repo, r) for r in remotes]
        return list(await asyncio.gather(*jobs))
    finally:
        await peers.close()

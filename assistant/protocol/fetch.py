"""Fetch through ``git-upload-pack``: want/have negotiation, the pack stored and indexed by
``git index-pack``, and refs moved only once their objects are safely in."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pygit2

from assistant.activity import Progress, progress
from assistant.protocol.pktline import ProtocolError, encode, encode_lines, strip_newline
from assistant.protocol.progress import follow
from assistant.protocol.push import AGENT
from assistant.protocol.stream import PacketReader, SideBandError, demux, read_advertisement
from assistant.transport.base import Channel, TransportError

SERVICE = "git-upload-pack"
WANTED_CAPS = ("side-band-64k", "thin-pack", "ofs-delta", "no-progress")
MAX_HAVES = 256
STAGES = ("Receiving objects", "Resolving deltas")


@dataclass
class FetchResult:
    """Local refs moved (name -> (old, new)), the peer's refs as advertised, bytes received."""

    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    remote_refs: dict[str, str] = field(default_factory=dict)
    bytes_received: int = 0


def recent_commits(repo: pygit2.Repository, limit: int = MAX_HAVES) -> list[str]:
    """Our newest commits across all branches and remote-tracking refs, tips first."""
    tips = []
    for name in repo.references:
        if name.startswith(("refs/heads/", "refs/remotes/")):
            try:
                tips.append(repo.references[name].peel(pygit2.Commit).id)
            except (pygit2.GitError, KeyError, ValueError):
                continue
    if not tips:
        return []
    walker = repo.walk(tips[0], pygit2.enums.SortMode.TIME)
    for tip in tips[1:]:
        walker.push(tip)
    out = []
    for commit in walker:
        out.append(str(commit.id))
        if len(out) >= limit:
            break
    return out


async def fetch(
    channel: Channel,
    repo: pygit2.Repository,
    refmap: Callable[[str], str | None],
    where: str,
    path: str,
) -> FetchResult:
    """Fetch the refs ``refmap`` maps (peer ref -> local ref, or None to skip)."""
    reader, adv = await read_advertisement(channel, SERVICE, where, path)
    result = FetchResult(remote_refs=dict(adv.refs))
    targets = {local: oid for ref, oid in adv.refs.items() if (local := refmap(ref))}
    wants = sorted({oid for oid in targets.values() if pygit2.Oid(hex=oid) not in repo})
    if not wants:
        await channel.write(b"0000")
        await channel.finish()
    else:
        caps = [c for c in WANTED_CAPS if adv.has(c)] + [AGENT]
        # Without multi_ack the peer sends one bare "ACK <id>" per have it already knew, so
        # where the pack starts is only clear with multi_ack (its last ACK is the one without
        # a status word) or with no haves at all (a single NAK).
        ack = next((c for c in ("multi_ack_detailed", "multi_ack") if adv.has(c)), None)
        if ack:
            caps.insert(0, ack)
        lines = [f"want {wants[0]} {' '.join(caps)}\n"] + [f"want {w}\n" for w in wants[1:]]
        haves = await asyncio.to_thread(recent_commits, repo) if ack else []
        await channel.write(
            encode_lines(lines) + b"".join(encode(f"have {h}\n") for h in haves) + encode("done\n")
        )
        result.bytes_received = await _receive_pack(
            reader, repo, "side-band-64k" in caps, where, path
        )
        await channel.finish()
    result.updated = move_refs(repo, targets)
    return result


async def _receive_pack(
    reader: PacketReader, repo: pygit2.Repository, sideband: bool, where: str, path: str
) -> int:
    """Skip the ACK/NAK replies, then stream the pack into ``git index-pack``."""
    while True:
        reply = strip_newline((await reader.packet()) or b"")
        # the last reply is a NAK, or an ACK without "continue", "common" or "ready"
        if reply == b"NAK" or (reply.startswith(b"ACK ") and len(reply.split()) == 2):
            break
        if reply.startswith(b"ACK "):
            continue
        if reply.startswith(b"ERR "):
            raise TransportError(f"{where} refused the fetch: {reply[4:].decode(errors='replace')}")
        if not reply.startswith(b"shallow"):
            raise TransportError(f"unexpected reply from {where}: {reply[:80]!r}")
    proc = await asyncio.create_subprocess_exec(
        "git",
        "index-pack",
        "--stdin",
        "--fix-thin",
        "--strict",
        "-v",
        env={**os.environ, "GIT_DIR": repo.path},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stderr
    with progress("fetching", "objects") as item:
        received, err = await _index(reader, proc, sideband, where, item)
    if await proc.wait() != 0:
        if "no space left on device" in err.lower():
            raise TransportError("the disk is full on this machine; nothing was fetched")
        raise TransportError(f"storing the pack from {where} failed: {indexer_error(err)}")
    return received


async def _index(
    reader: PacketReader,
    proc: asyncio.subprocess.Process,
    sideband: bool,
    where: str,
    item: Progress,
) -> tuple[int, str]:
    """Feed the pack to index-pack while following its progress; (bytes, what it said)."""
    assert proc.stdin and proc.stderr
    said = asyncio.create_task(follow(proc.stderr, item, STAGES))
    received = 0

    async def to_indexer(data: bytes) -> None:
        nonlocal received
        received += len(data)
        try:
            proc.stdin.write(data)  # type: ignore[union-attr]
            await proc.stdin.drain()  # type: ignore[union-attr]
        except (BrokenPipeError, ConnectionResetError):
            raise _IndexerStopped from None

    messages: list[str] = []
    try:
        if sideband:
            await demux(reader, to_indexer, messages)
        else:
            rest = reader.decoder.rest()
            if rest:
                await to_indexer(rest)
            while chunk := await reader.channel.read():
                await to_indexer(chunk)
    except _IndexerStopped:
        pass  # index-pack gave up (a full disk, a bad object): its status and message say why
    except (ProtocolError, SideBandError, TransportError, OSError) as exc:
        proc.kill()
        await proc.wait()
        said.cancel()
        raise TransportError(f"the fetch from {where} broke off: {exc}") from None
    except BaseException:  # cancelled: the indexer must not outlive the fetch
        said.cancel()
        proc.kill()
        raise
    finally:
        if proc.stdin.can_write_eof():
            proc.stdin.close()
    return received, await said


def indexer_error(stderr: str) -> str:
    """git index-pack's reason in one line: its first ``error:`` (the object it refused and
    why, such as ``hasDotgit: contains '.git'``), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1].removeprefix("fatal: ") if lines else "git index-pack failed"


class _IndexerStopped(Exception):
    """git index-pack exited before it had read the whole pack."""


def move_refs(
    repo: pygit2.Repository, targets: dict[str, str]
) -> dict[str, tuple[str | None, str]]:
    """Point each local ref at its fetched commit (objects are already stored)."""
    moved: dict[str, tuple[str | None, str]] = {}
    for name, oid in sorted(targets.items()):
        new = pygit2.Oid(hex=oid)
        if new not in repo:
            continue
        try:
            ref = repo.references.get(name)
            old = str(ref.target) if ref is not None else None
            if old == oid:
                continue
            repo.references.create(name, new, force=True)
        except (pygit2.GitError, ValueError) as exc:
            raise TransportError(f"cannot update {name}: {exc}") from None
        moved[name] = (old, oid)
    return moved

"""Push through ``git-receive-pack``: compare-and-swap ref updates plus a pack of what the
peer lacks; every per-ref outcome comes back as a value."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Literal

import pygit2

from assistant import __version__
from assistant.activity import progress
from assistant.protocol.advertisement import ZERO_ID, Advertisement
from assistant.protocol.errors import explain_service_failure
from assistant.protocol.pack import missing_objects, pack_is_small, write_pack
from assistant.protocol.pktline import Decoder, ProtocolError, encode_lines, strip_newline
from assistant.protocol.progress import follow
from assistant.protocol.stream import PacketReader, SideBandError, demux, read_advertisement
from assistant.transport.base import Channel, ServiceExit, TransportError

AGENT = f"agent=annexsync/{__version__}"
SERVICE = "git-receive-pack"
WANTED_CAPS = ("report-status", "side-band-64k", "quiet", "ofs-delta")
STAGES = ("Counting objects", "Compressing objects", "Writing objects")


@dataclass(frozen=True)
class RefUpdate:
    """Set the peer's ``dst`` to ``new``; ``fast_forward`` refuses to rewrite its history."""

    dst: str
    new: str
    fast_forward: bool = False


RefStatus = Literal["ok", "up-to-date", "rejected"]


@dataclass(frozen=True)
class RefResult:
    dst: str
    status: RefStatus
    old: str | None
    new: str
    reason: str = ""


@dataclass
class PushResult:
    """Per-ref outcomes, and what was sent."""

    refs: list[RefResult] = field(default_factory=list)
    objects: int = 0
    bytes_sent: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "rejected" for r in self.refs)


def plan_commands(
    repo: pygit2.Repository, adv: Advertisement, updates: list[RefUpdate]
) -> tuple[list[tuple[str, str, str]], list[RefResult]]:
    """Which (old, new, ref) commands to send, and the outcomes decided without sending."""
    commands: list[tuple[str, str, str]] = []
    decided: list[RefResult] = []
    for update in updates:
        old = adv.refs.get(update.dst)
        if old == update.new:
            decided.append(RefResult(update.dst, "up-to-date", old, update.new))
            continue
        if update.fast_forward and old is not None:
            old_id = pygit2.Oid(hex=old)
            if old_id not in repo:
                decided.append(
                    RefResult(
                        update.dst,
                        "rejected",
                        old,
                        update.new,
                        "non-fast-forward: the peer has commits we do not (fetch and merge first)",
                    )
                )
                continue
            if not repo.descendant_of(pygit2.Oid(hex=update.new), old_id):
                decided.append(
                    RefResult(
                        update.dst,
                        "rejected",
                        old,
                        update.new,
                        "non-fast-forward (fetch and merge first)",
                    )
                )
                continue
        commands.append((old or ZERO_ID, update.new, update.dst))
    return commands, decided


async def push(
    channel: Channel, repo: pygit2.Repository, updates: list[RefUpdate], where: str, path: str
) -> PushResult:
    """Run one push over an open receive-pack channel and return its per-ref outcomes."""
    reader, adv = await read_advertisement(channel, SERVICE, where, path)
    commands, decided = plan_commands(repo, adv, updates)
    result = PushResult(refs=list(decided))
    if not commands:
        await channel.write(b"0000")
        await channel.finish()
        return result
    caps = [c for c in WANTED_CAPS if adv.has(c)] + [AGENT]
    lines = [f"{old} {new} {ref}" for old, new, ref in commands]
    lines[0] += "\0" + " ".join(caps)
    await channel.write(encode_lines([line + "\n" for line in lines]))
    sent = await _send_pack(channel, repo, [new for _, new, _ in commands], list(adv.refs.values()))
    result.objects, result.bytes_sent = sent
    channel.write_eof()
    try:
        report = await _read_report(reader, "side-band-64k" in caps, result.messages)
    except (ProtocolError, SideBandError, TransportError) as exc:
        exit = await channel.finish()
        if exit.stderr.strip() or exit.status:
            raise TransportError(explain_service_failure(SERVICE, path, where, exit)) from None
        raise TransportError(f"push to {where} failed: {exc}") from None
    exit = await channel.finish()
    result.messages.extend(line for line in exit.stderr.splitlines() if line.strip())
    if report and report[0].startswith("unpack ") and report[0] != "unpack ok":
        # The peer could not store the pack (full disk, no permission): no ref can move.
        text = "\n".join([*result.messages, f"could not store the objects ({report[0][7:]})"])
        raise TransportError(
            explain_service_failure(SERVICE, path, where, ServiceExit(exit.status, text))
        )
    result.refs.extend(_outcomes(commands, report, result.messages))
    return result


async def _send_pack(
    channel: Channel, repo: pygit2.Repository, wants: list[str], haves: list[str]
) -> tuple[int, int]:
    want_ids = [pygit2.Oid(hex=w) for w in wants]
    have_ids = [pygit2.Oid(hex=h) for h in haves if h != ZERO_ID]
    oids = missing_objects(repo, want_ids, have_ids)
    if pack_is_small(repo, oids):
        data = write_pack(repo, oids)
        await channel.write(data)
        return len(oids), len(data)
    return await _stream_pack_objects(channel, repo, wants, [str(h) for h in have_ids], len(oids))


async def _stream_pack_objects(
    channel: Channel, repo: pygit2.Repository, wants: list[str], haves: list[str], count: int
) -> tuple[int, int]:
    """Large pushes: let git pack-objects build a delta-compressed thin pack."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "pack-objects",
        "--stdout",
        "--revs",
        "--thin",
        "--delta-base-offset",
        "--progress",
        env={**os.environ, "GIT_DIR": repo.path},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    revs = "".join(f"{w}\n" for w in wants) + "".join(
        f"^{h}\n" for h in haves if pygit2.Oid(hex=h) in repo
    )
    proc.stdin.write(revs.encode())
    proc.stdin.close()
    total = 0
    with progress("pushing", "objects", count) as item:
        said = asyncio.create_task(follow(proc.stderr, item, STAGES))
        try:
            while chunk := await proc.stdout.read(1 << 16):
                total += len(chunk)
                await channel.write(chunk)
        except BaseException:
            proc.kill()
            said.cancel()
            raise
        err = await said
    if await proc.wait() != 0:
        raise TransportError(f"git pack-objects failed on this machine: {err.strip()}")
    return count, total


async def _read_report(reader: PacketReader, sideband: bool, messages: list[str]) -> list[str]:
    """The report-status lines (without the flush), demultiplexed when side-band is on."""
    if not sideband:
        return [strip_newline(p).decode(errors="replace") for p in await reader.until_flush()]
    inner = Decoder()
    await demux(reader, inner.feed, messages)
    lines: list[str] = []
    for packet in inner.packets():
        if packet is None:
            break
        lines.append(strip_newline(packet).decode(errors="replace"))
    return lines


def _outcomes(
    commands: list[tuple[str, str, str]], report: list[str], messages: list[str]
) -> list[RefResult]:
    if not report or not report[0].startswith("unpack "):
        raise TransportError("the peer sent no push report")
    unpack = report[0][len("unpack ") :]
    statuses: dict[str, tuple[RefStatus, str]] = {}
    for line in report[1:]:
        if line.startswith("ok "):
            statuses[line[3:]] = ("ok", "")
        elif line.startswith("ng "):
            ref, _, reason = line[3:].partition(" ")
            statuses[ref] = ("rejected", _reason(reason, messages))
    out = []
    for old, new, ref in commands:
        status, reason = statuses.get(ref, ("rejected", "the peer did not report on this ref"))
        if unpack != "ok" and status == "ok":
            status, reason = "rejected", f"the peer could not store the objects: {unpack}"
        out.append(RefResult(ref, status, None if old == ZERO_ID else old, new, reason))
    return out


def _reason(reason: str, messages: list[str]) -> str:
    """A rejection's reason, with what a hook printed (its last lines) when there is any."""
    hook_lines = [m.removeprefix("remote: ").strip() for m in messages if m.strip()]
    if "hook declined" in reason and hook_lines:
        return f"{reason}: {'; '.join(hook_lines[-3:])}"
    return reason

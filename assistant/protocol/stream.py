"""Read pkt-lines and side-band data from a Channel."""

from __future__ import annotations

from collections.abc import Callable

from assistant.protocol.advertisement import Advertisement, parse_advertisement
from assistant.protocol.errors import explain_service_failure
from assistant.protocol.pktline import Decoder, ProtocolError
from assistant.transport.base import Channel, TransportError


class EndOfStream(ProtocolError):
    """The peer closed the stream in the middle of a message."""


class PacketReader:
    """Pulls pkt-lines out of a channel, keeping whatever raw bytes follow."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.decoder = Decoder()
        self._pending: list[bytes | None] = []

    async def packet(self) -> bytes | None:
        """The next packet's payload; None for a flush."""
        while not self._pending:
            for packet in self.decoder.packets():
                self._pending.append(packet)
            if self._pending:
                break
            data = await self.channel.read()
            if not data:
                raise EndOfStream("the peer closed the connection in the middle of a reply")
            self.decoder.feed(data)
        return self._pending.pop(0)

    async def until_flush(self) -> list[bytes]:
        """Packets up to (not including) the next flush."""
        out: list[bytes] = []
        while (packet := await self.packet()) is not None:
            out.append(packet)
        return out


SIDEBAND_DATA, SIDEBAND_PROGRESS, SIDEBAND_ERROR = 1, 2, 3


class SideBandError(ProtocolError):
    """The peer reported a fatal error on side-band channel 3."""


async def demux(
    reader: PacketReader, on_data: Callable[[bytes], object], messages: list[str]
) -> None:
    """Read side-band packets until a flush: channel 1 to ``on_data``, progress and errors
    into ``messages``. A channel-3 message ends the stream with SideBandError."""
    while (packet := await reader.packet()) is not None:
        if not packet:
            continue
        band, payload = packet[0], packet[1:]
        if band == SIDEBAND_DATA:
            result = on_data(payload)
            if hasattr(result, "__await__"):
                await result  # type: ignore[misc]
        elif band == SIDEBAND_PROGRESS:
            messages.extend(
                line
                for line in payload.decode(errors="replace").replace("\r", "\n").split("\n")
                if line.strip()
            )
        elif band == SIDEBAND_ERROR:
            raise SideBandError(payload.decode(errors="replace").strip())
        else:
            raise ProtocolError(f"unknown side-band channel {band}")


async def read_advertisement(
    channel: Channel, service: str, where: str, path: str
) -> tuple[PacketReader, Advertisement]:
    """The peer's ref advertisement, and the reader to go on with; a service that failed
    to start (no repository there, no git) is explained in one sentence."""
    reader = PacketReader(channel)
    try:
        return reader, parse_advertisement(await reader.until_flush())
    except ProtocolError:
        exit = await channel.finish()
        raise TransportError(explain_service_failure(service, path, where, exit)) from None

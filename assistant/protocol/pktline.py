"""pkt-line framing (gitprotocol-common): pure encoders and an incremental decoder.

Nothing here reads or writes a stream; callers feed bytes in and take packets out, so the
same code serves SSH channels, pipes and tests.
"""

from __future__ import annotations

from collections.abc import Iterator

FLUSH = b"0000"
DELIM = b"0001"
MAX_PKT = 65520
MAX_PAYLOAD = MAX_PKT - 4
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class ProtocolError(Exception):
    """The other side sent something that is not valid git protocol."""


def encode(payload: bytes | str) -> bytes:
    """One pkt-line holding ``payload``."""
    data = payload.encode() if isinstance(payload, str) else payload
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"pkt-line payload too long ({len(data)} bytes)")
    return b"%04x" % (len(data) + 4) + data


def encode_lines(lines: list[bytes | str], flush: bool = True) -> bytes:
    """Several pkt-lines, optionally closed by a flush packet."""
    return b"".join(encode(line) for line in lines) + (FLUSH if flush else b"")


def parse_length(header: bytes) -> int:
    """The length field of a packet header; 0 for flush, 1 for delim, 2 for response-end."""
    # int() alone would also take "0x1f", " 01f", "+01f" and "0_1f"
    if len(header) != 4 or header.translate(None, _HEX_DIGITS):
        raise ProtocolError(f"bad pkt-line header {header!r}")
    length = int(header, 16)
    if length in (0, 1, 2):
        return length
    if length < 4 or length > MAX_PKT:
        raise ProtocolError(f"bad pkt-line length {length}")
    return length


class Decoder:
    """Incremental pkt-line decoder: ``feed`` bytes, iterate ``packets`` (None is a flush)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def packets(self) -> Iterator[bytes | None]:
        while len(self._buffer) >= 4:
            length = parse_length(bytes(self._buffer[:4]))
            if length < 4:
                del self._buffer[:4]
                yield None
                continue
            if len(self._buffer) < length:
                return
            payload = bytes(self._buffer[4:length])
            del self._buffer[:length]
            yield payload

    def rest(self) -> bytes:
        """Bytes after the last complete packet (for example the start of a raw pack)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def strip_newline(payload: bytes) -> bytes:
    return payload[:-1] if payload.endswith(b"\n") else payload

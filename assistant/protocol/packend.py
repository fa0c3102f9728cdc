"""Find where a pack stream ends without storing it: the pack format says how many objects
follow, and each object's zlib stream says where it stops.

``annexsync serve`` needs this to read a push's pack completely (to check it, or to discard
it after a refusal) without relying on the client to close its side of the connection.
"""

from __future__ import annotations

import struct
import zlib

from assistant.protocol.pktline import ProtocolError

OFS_DELTA = 6
REF_DELTA = 7
_VALID_TYPES = (1, 2, 3, 4, OFS_DELTA, REF_DELTA)
_CHUNK = 1 << 16  # inflate at most this much at a time: the output is thrown away


class PackEnd:
    """Feed a pack stream in pieces; ``feed`` says how much of the last piece completed it.

    ``hash_size`` is 20 for SHA-1 repositories, 32 for SHA-256 (REF_DELTA bases and the
    trailer are that long). Raises ProtocolError on anything that is not a pack.
    """

    def __init__(self, hash_size: int = 20) -> None:
        self.hash_size = hash_size
        self.done = False
        self.objects = 0  # how many objects the header announced
        self._state = "header"
        self._small = bytearray()  # the bytes of the fixed-size part being collected
        self._need = 12
        self._left = 0  # objects still to read
        self._inflate: zlib._Decompress | None = None

    def feed(self, data: bytes) -> int | None:
        """Consume ``data``; once the pack is complete, how many of these bytes belonged to it
        (any further bytes follow the pack), and None while more is needed."""
        if self.done:
            return 0
        view = memoryview(data)
        pos = 0
        while not self.done:
            if self._state == "data":
                pos = self._data(view, pos)
                if self._state == "data":
                    return None  # the object goes on in the next piece
                continue
            if pos >= len(view):
                return None
            if self._state in ("header", "skip"):
                take = min(self._need - len(self._small), len(view) - pos)
                self._small += view[pos : pos + take]
                pos += take
                if len(self._small) == self._need:
                    self._fixed_part_complete()
            else:  # "object" or "offset": variable-length integers, one byte at a time
                byte = view[pos]
                pos += 1
                self._varint_byte(byte)
        return pos

    def _fixed_part_complete(self) -> None:
        if self._state == "header":
            magic, version, count = struct.unpack(">4sII", bytes(self._small))
            if magic != b"PACK" or version not in (2, 3):
                raise ProtocolError("the data after the ref updates is not a git pack")
            self.objects = self._left = count
            self._next_object()
        elif self._left == 0:  # the trailer
            self.done = True
        else:  # a REF_DELTA base id
            self._start_data()
        self._small.clear()

    def _varint_byte(self, byte: int) -> None:
        if self._state == "object":
            if not self._small:  # the first byte holds the type
                kind = (byte >> 4) & 7
                if kind not in _VALID_TYPES:
                    raise ProtocolError(f"bad object type {kind} in pack")
            self._small.append(byte)
            if byte & 0x80:
                return
            kind = (self._small[0] >> 4) & 7
            self._small.clear()
            if kind == OFS_DELTA:
                self._state = "offset"
            elif kind == REF_DELTA:
                self._state, self._need = "skip", self.hash_size
            else:
                self._start_data()
        elif not byte & 0x80:  # the last byte of an OFS_DELTA offset
            self._start_data()

    def _start_data(self) -> None:
        self._state = "data"
        self._inflate = zlib.decompressobj()

    def _data(self, view: memoryview, pos: int) -> int:
        """Inflate from ``pos``; where the object's compressed data ends, or len(view)."""
        inflate = self._inflate
        assert inflate is not None
        try:
            inflate.decompress(view[pos:], _CHUNK)
            while inflate.unconsumed_tail and not inflate.eof:
                inflate.decompress(inflate.unconsumed_tail, _CHUNK)
        except zlib.error as exc:
            raise ProtocolError(f"corrupt object data in pack: {exc}") from None
        if not inflate.eof:
            return len(view)
        end = len(view) - len(inflate.unused_data)
        self._inflate = None
        self._left -= 1
        self._next_object()
        return end

    def _next_object(self) -> None:
        if self._left:
            self._state, self._need = "object", 0
        else:
            self._state, self._need = "skip", self.hash_size

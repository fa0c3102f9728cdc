"""pkt-line framing, side-band demultiplexing, and ref advertisements captured from real git."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from pathlib import Path

import pytest
from conftest import git
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.protocol.advertisement import ZERO_ID, parse_advertisement
from assistant.protocol.pktline import (
    DELIM,
    FLUSH,
    MAX_PAYLOAD,
    MAX_PKT,
    Decoder,
    ProtocolError,
    encode,
    encode_lines,
    parse_length,
    strip_newline,
)
from assistant.protocol.stream import EndOfStream, PacketReader, SideBandError, demux
from assistant.transport.base import Channel, ServiceExit

# --- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", b"0004"),
        (b"a", b"0005a"),
        ("a", b"0005a"),
        (b"hello\n", b"000ahello\n"),
        ("want " + "a" * 40 + "\n", b"0032want " + b"a" * 40 + b"\n"),
        (b"\0\xff", b"0006\0\xff"),
        ("é", b"0006\xc3\xa9"),  # str is sent as UTF-8: the length counts bytes
        (b"x" * 12, b"0010" + b"x" * 12),  # lower-case hex, as git writes it
        (b"x" * 252, b"0100" + b"x" * 252),
    ],
)
def test_encode_table(payload: bytes | str, expected: bytes) -> None:
    assert encode(payload) == expected


def test_special_packets() -> None:
    assert FLUSH == b"0000"
    assert DELIM == b"0001"
    assert MAX_PKT == 65520
    assert MAX_PAYLOAD == 65516


def test_encode_maximum_length() -> None:
    packet = encode(b"y" * MAX_PAYLOAD)
    assert packet[:4] == b"fff0"
    assert len(packet) == MAX_PKT
    with pytest.raises(ValueError, match="too long"):
        encode(b"y" * (MAX_PAYLOAD + 1))


def test_encode_lines() -> None:
    assert encode_lines([]) == b"0000"
    assert encode_lines([], flush=False) == b""
    assert encode_lines(["a\n", b"bc"]) == b"0006a\n0006bc0000"
    assert encode_lines(["a\n", b"bc"], flush=False) == b"0006a\n0006bc"


def test_strip_newline() -> None:
    assert strip_newline(b"abc\n") == b"abc"
    assert strip_newline(b"abc") == b"abc"
    assert strip_newline(b"abc\n\n") == b"abc\n"
    assert strip_newline(b"") == b""


# --- decoding ------------------------------------------------------------------------------


def decode_all(chunks: list[bytes]) -> tuple[list[bytes | None], bytes]:
    decoder = Decoder()
    out: list[bytes | None] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder.packets())
    return out, decoder.rest()


SAMPLE = encode("one\n") + encode(b"") + FLUSH + encode(b"x" * 300) + DELIM + encode("end")
SAMPLE_PACKETS: list[bytes | None] = [b"one\n", b"", None, b"x" * 300, None, b"end"]


def test_decode_whole() -> None:
    assert decode_all([SAMPLE]) == (SAMPLE_PACKETS, b"")


def test_decode_byte_by_byte() -> None:
    assert decode_all([bytes([b]) for b in SAMPLE]) == (SAMPLE_PACKETS, b"")


@pytest.mark.parametrize("size", [2, 3, 5, 7, 13, 301])
def test_decode_odd_chunks(size: int) -> None:
    chunks = [SAMPLE[i : i + size] for i in range(0, len(SAMPLE), size)]
    assert decode_all(chunks) == (SAMPLE_PACKETS, b"")


def test_decode_maximum_length_and_upper_case_header() -> None:
    big = encode(b"z" * MAX_PAYLOAD)
    assert decode_all([big[:1000], big[1000:]]) == ([b"z" * MAX_PAYLOAD], b"")
    assert decode_all([b"000Aabcdef"]) == ([b"abcdef"], b"")


def test_incomplete_packet_waits_for_more() -> None:
    decoder = Decoder()
    decoder.feed(b"000ahel")
    assert list(decoder.packets()) == []
    decoder.feed(b"lo\n0")
    assert list(decoder.packets()) == [b"hello\n"]
    decoder.feed(b"000")
    assert list(decoder.packets()) == [None]
    assert decoder.rest() == b""


def test_rest_keeps_raw_bytes_after_the_packets() -> None:
    decoder = Decoder()
    decoder.feed(encode("NAK\n") + b"PACK\0\0\0\2")
    assert next(decoder.packets()) == b"NAK\n"
    assert decoder.rest() == b"PACK\0\0\0\2"
    assert decoder.rest() == b""


packets_strategy = st.lists(
    st.one_of(st.none(), st.binary(max_size=80), st.binary(min_size=200, max_size=700)),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(packets=packets_strategy, data=st.data())
def test_any_split_decodes_to_the_same_packets(
    packets: list[bytes | None], data: st.DataObject
) -> None:
    stream = b"".join(FLUSH if p is None else encode(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_all(chunks) == (packets, b"")


@pytest.mark.parametrize(
    "header",
    [
        b"zzzz",
        b"00g1",
        b"0003",  # lengths 3 and below 4 (other than 0, 1, 2) are invalid
        b"fff1",  # above the maximum packet size
        b"ffff",
        b"0x10",  # forms int(..., 16) alone would accept
        b" 00a",
        b"00a ",
        b"+00a",
        b"-00a",
        b"0_1a",
        b"\x00\x00\x00\x00",
        b"\xff\xff\xff\xff",
    ],
)
def test_bad_headers_raise(header: bytes) -> None:
    decoder = Decoder()
    decoder.feed(header + b"payloadpayloadpayload")
    with pytest.raises(ProtocolError):
        list(decoder.packets())
    with pytest.raises(ProtocolError):
        parse_length(header)


def test_bad_header_after_good_packets() -> None:
    decoder = Decoder()
    decoder.feed(encode("ok\n") + b"0x12")
    packets = decoder.packets()
    assert next(packets) == b"ok\n"
    with pytest.raises(ProtocolError):
        next(packets)


@pytest.mark.parametrize(
    ("header", "length"),
    [(b"0000", 0), (b"0001", 1), (b"0002", 2), (b"0004", 4), (b"fff0", 65520), (b"FFF0", 65520)],
)
def test_parse_length(header: bytes, length: int) -> None:
    assert parse_length(header) == length


# --- PacketReader and side-band over a channel -----------------------------------------------


class ScriptedChannel(Channel):
    """Hands out prepared chunks, then end of stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = b""

    async def read(self, n: int = 65536) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        pass

    async def finish(self) -> ServiceExit:
        return ServiceExit(0, "")

    def abort(self) -> None:
        pass


def test_packet_reader_across_chunks() -> None:
    stream = encode_lines(["a\n", "bb\n"]) + encode("c\n")

    async def scenario() -> tuple[list[bytes], bytes | None]:
        reader = PacketReader(ScriptedChannel([stream[i : i + 3] for i in range(0, 99, 3)]))
        return await reader.until_flush(), await reader.packet()

    assert asyncio.run(scenario()) == ([b"a\n", b"bb\n"], b"c\n")


def test_packet_reader_end_of_stream_mid_packet() -> None:
    async def scenario() -> None:
        reader = PacketReader(ScriptedChannel([encode("a\n"), b"0010half"]))
        await reader.until_flush()

    with pytest.raises(EndOfStream):
        asyncio.run(scenario())


def band(number: int, payload: bytes) -> bytes:
    return encode(bytes([number]) + payload)


def test_demux_routes_bands() -> None:
    stream = (
        band(2, b"Counting objects: 1\rCounting objects: 2, done.\n")
        + band(1, b"PACK")
        + encode(b"")
        + band(1, b"data")
        + band(2, b"remote says hi\n")
        + FLUSH
        + b"trailing"
    )

    async def scenario() -> tuple[bytes, list[str]]:
        received = bytearray()
        messages: list[str] = []

        async def on_data(data: bytes) -> None:
            received.extend(data)

        reader = PacketReader(ScriptedChannel([stream[i : i + 4] for i in range(0, 999, 4)]))
        await demux(reader, on_data, messages)
        return bytes(received), messages

    data, messages = asyncio.run(scenario())
    assert data == b"PACKdata"
    assert messages == ["Counting objects: 1", "Counting objects: 2, done.", "remote says hi"]


@pytest.mark.parametrize(
    ("stream", "error", "match"),
    [
        (band(1, b"PA") + band(3, b"fatal: out of memory\n"), SideBandError, "out of memory"),
        (band(4, b"what"), ProtocolError, "side-band channel 4"),
        (band(1, b"PACK"), EndOfStream, "closed"),
    ],
)
def test_demux_errors(stream: bytes, error: type[Exception], match: str) -> None:
    async def scenario() -> None:
        await demux(PacketReader(ScriptedChannel([stream])), lambda _: None, [])

    with pytest.raises(error, match=match):
        asyncio.run(scenario())


# --- ref advertisements captured from real git ------------------------------------------------


def capture(service: str, path: Path, protocol: str | None = None) -> list[bytes]:
    """What ``git <service>`` advertises on ``path``, up to the first flush."""
    env = dict(os.environ)
    if protocol:
        env["GIT_PROTOCOL"] = protocol
    proc = subprocess.run(
        ["git", service, str(path)], input=FLUSH, capture_output=True, env=env, check=True
    )
    decoder = Decoder()
    decoder.feed(proc.stdout)
    packets: list[bytes] = []
    for packet in decoder.packets():
        if packet is None:
            return packets
        packets.append(packet)
    raise AssertionError(f"no flush in {proc.stdout!r}")


def rev(path: Path, spec: str) -> str:
    return git(path, "rev-parse", spec).strip()


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A repository with two branches, an annotated tag, a lightweight tag, and a tag of a
    tree."""
    path = tmp_path / "populated"
    git(tmp_path, "init", "-q", str(path))
    (path / "a.txt").write_text("a\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-q", "-m", "first")
    git(path, "branch", "dev")
    (path / "a.txt").write_text("b\n")
    git(path, "commit", "-q", "-am", "second")
    git(path, "tag", "-a", "-m", "release", "v1", "HEAD~1")
    git(path, "tag", "light")
    git(path, "tag", "-a", "-m", "a tree", "treetag", "HEAD^{tree}")
    return path


@pytest.mark.parametrize("service", ["receive-pack", "upload-pack"])
def test_advertisement_of_a_populated_repository(populated: Path, service: str) -> None:
    packets = capture(service, populated)
    adv = parse_advertisement(packets)
    expected = {
        "refs/heads/main": rev(populated, "main"),
        "refs/heads/dev": rev(populated, "dev"),
        "refs/tags/v1": rev(populated, "v1"),
        "refs/tags/light": rev(populated, "light"),
        "refs/tags/treetag": rev(populated, "treetag"),
    }
    if service == "upload-pack":
        expected["HEAD"] = rev(populated, "HEAD")
        assert any(p.startswith(rev(populated, "v1^{}").encode()) for p in packets)
        assert adv.symrefs == {"HEAD": "refs/heads/main"}
        assert {"multi_ack", "side-band-64k", "thin-pack", "ofs-delta"} <= adv.capabilities
    else:
        assert adv.symrefs == {}
        assert {"report-status", "side-band-64k", "ofs-delta", "delete-refs"} <= adv.capabilities
    assert adv.refs == expected  # peeled ^{} lines are not refs
    assert adv.refs["refs/tags/v1"] != rev(populated, "v1^{}")
    assert adv.has("side-band-64k")
    assert not adv.has("no-such-capability")


def test_advertisement_protocol_version_1(populated: Path) -> None:
    packets = capture("upload-pack", populated, protocol="version=1")
    assert packets[0] == b"version 1\n"
    adv = parse_advertisement(packets)
    assert adv.refs["refs/heads/main"] == rev(populated, "main")
    assert adv.symrefs == {"HEAD": "refs/heads/main"}
    assert "side-band-64k" in adv.capabilities


@pytest.mark.parametrize("bare", [True, False])
def test_advertisement_of_an_empty_repository(tmp_path: Path, bare: bool) -> None:
    path = tmp_path / "empty"
    git(tmp_path, "init", "-q", *(["--bare"] if bare else []), str(path))
    packets = capture("receive-pack", path)
    assert packets[0].startswith(ZERO_ID.encode() + b" capabilities^{}\0")
    adv = parse_advertisement(packets)
    assert adv.refs == {}
    assert {"report-status", "side-band-64k"} <= adv.capabilities
    # upload-pack on an empty repository advertises nothing at all
    assert parse_advertisement(capture("upload-pack", path)).refs == {}


def test_advertisement_without_capabilities() -> None:
    adv = parse_advertisement([b"a" * 40 + b" refs/heads/main\n"])
    assert adv.refs == {"refs/heads/main": "a" * 40}
    assert adv.capabilities == set()
    assert parse_advertisement([]).refs == {}


def test_advertisement_skips_shallow_lines() -> None:
    adv = parse_advertisement(
        [b"a" * 40 + b" refs/heads/main\0side-band-64k\n", b"shallow " + b"b" * 40 + b"\n"]
    )
    assert adv.refs == {"refs/heads/main": "a" * 40}


@pytest.mark.parametrize(
    "packets",
    [
        [b"garbage\n"],
        [b"ERR access denied\n"],
        [b"a" * 39 + b" refs/heads/main\n"],
        [b"a" * 41 + b" refs/heads/main\n"],
        [b"g" * 40 + b" refs/heads/main\n"],
        [b"A" * 40 + b" refs/heads/main\n"],
        [b"a" * 40 + b"\n"],
        [b"a" * 40 + b" refs/heads/main\n", b"\xff" * 40 + b" refs/heads/dev\n"],
        [b"a" * 40 + b" refs/heads/main\0caps\n", b"b" * 40],
        [b""],
    ],
)
def test_malformed_advertisements(packets: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        parse_advertisement(packets)

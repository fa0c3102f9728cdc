"""Parse a v0 ref advertisement (the first thing receive-pack and upload-pack send)."""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.protocol.pktline import ProtocolError, strip_newline

ZERO_ID = "0" * 40


@dataclass
class Advertisement:
    """The refs a peer has, its capabilities, and its symbolic refs (HEAD -> branch)."""

    refs: dict[str, str] = field(default_factory=dict)
    capabilities: set[str] = field(default_factory=set)
    symrefs: dict[str, str] = field(default_factory=dict)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


def parse_advertisement(packets: list[bytes]) -> Advertisement:
    """Build an Advertisement from the packets before the first flush."""
    adv = Advertisement()
    for index, raw in enumerate(packets):
        line = strip_newline(raw)
        if index == 0 and line.startswith(b"version "):
            continue
        if index <= 1 and b"\0" in line:
            line, caps = line.split(b"\0", 1)
            adv.capabilities = set(caps.decode(errors="replace").split())
            for cap in adv.capabilities:
                if cap.startswith("symref="):
                    source, _, target = cap[len("symref=") :].partition(":")
                    adv.symrefs[source] = target
        if line.startswith(b"shallow "):
            continue
        try:
            oid, name = line.decode().split(" ", 1)
        except ValueError:
            raise ProtocolError(f"bad ref advertisement line {raw[:80]!r}") from None
        if len(oid) != 40 or any(c not in "0123456789abcdef" for c in oid):
            raise ProtocolError(f"bad object id in ref advertisement: {oid[:80]!r}")
        if name == "capabilities^{}" and oid == ZERO_ID:
            continue  # an empty repository
        if name.endswith("^{}"):
            continue  # peeled tags
        adv.refs[name] = oid
    return adv

"""git's progress meter, read from ``index-pack -v`` and ``pack-objects --progress``: lines
like ``Receiving objects:  45% (136/302), 1.20 MiB | 2.40 MiB/s``, each redrawn after a
carriage return. The counts feed the feed's progress bars; every other line is kept, since
it is what git says when it fails."""

from __future__ import annotations

import asyncio
import codecs
import re
from dataclasses import dataclass

from assistant.activity import Progress

_METER = re.compile(r"^([A-Z][a-z]+ (?:objects|deltas)):\s+(?:\d+% )?\(?(\d+)(?:/(\d+))?\)?")


@dataclass(frozen=True)
class Meter:
    """One reading: the stage (``Receiving objects``), how many done, out of how many."""

    stage: str
    done: int
    total: int | None


def read_meter(line: str) -> Meter | None:
    """The reading in one line of git's progress output, or None for any other line."""
    match = _METER.match(line.strip())
    if match is None:
        return None
    stage, done, total = match.groups()
    return Meter(stage, int(done), int(total) if total else None)


def split_output(buffer: str) -> tuple[list[str], str]:
    """Complete lines (ended by a newline or a carriage return) and the unfinished rest."""
    parts = re.split(r"[\r\n]", buffer)
    return [p for p in parts[:-1] if p.strip()], parts[-1]


async def follow(stream: asyncio.StreamReader, item: Progress, stages: tuple[str, ...]) -> str:
    """Read git's stderr to its end, moving ``item`` on with each reading of one of
    ``stages``; returns everything else git wrote, one line each."""
    other: list[str] = []
    rest = ""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a split character
    while chunk := await stream.read(1 << 14):
        lines, rest = split_output(rest + decoder.decode(chunk))
        for line in lines:
            meter = read_meter(line)
            if meter is None:
                other.append(line)
            elif meter.stage in stages:
                item.update(meter.done, meter.total, meter.stage)
    if rest.strip() and read_meter(rest) is None:
        other.append(rest)
    return "\n".join(other)

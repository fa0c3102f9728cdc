"""Text from peers and from file names made safe to show to a person: on a terminal, in a
desktop notification. A name can hold anything but NUL and "/": escape sequences that move the
cursor or recolour the screen, bidirectional overrides that make ``txt.exe`` read as
``exe.txt``, zero-width characters, line separators."""

from __future__ import annotations

import unicodedata


def printable(text: object, limit: int | None = None) -> str:
    """``text`` as one printable line of at most ``limit`` characters: control, format
    (bidirectional overrides, zero-width) and line or paragraph separator characters become
    U+FFFD, other spaces a plain space, and a long text keeps its start and end around an
    ellipsis."""
    out = []
    for char in str(text):
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            out.append("\ufffd")
        elif category == "Zs":
            out.append(" ")
        else:
            out.append(char)
    line = "".join(out)
    if limit is not None and len(line) > limit:
        head = (limit - 1) // 2
        line = line[:head] + "…" + line[len(line) - (limit - 1 - head) :]
    return line

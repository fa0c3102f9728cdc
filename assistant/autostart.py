"""The autostart list: the repositories whose assistants start at login, one path a line in
``$XDG_CONFIG_HOME/annexsync/autostart`` (by default ``~/.config/annexsync/autostart``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HEADER = "# annexsync: repositories whose assistant starts at login, one path a line\n"


def autostart_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the list lives; an unset or relative ``XDG_CONFIG_HOME`` is ignored, as the XDG
    base directory specification asks."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME", "")
    if not config or not os.path.isabs(config):
        config = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(config) / "annexsync" / "autostart"


def parse_autostart(text: str, home: Path | None = None) -> list[Path]:
    """The listed paths in order, without duplicates: blank lines and lines starting with
    ``#`` are skipped, ``~`` is expanded and a relative path is taken from ``home``."""
    base = home if home is not None else Path.home()
    paths: list[Path] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "~" or line.startswith("~/"):
            line = str(base) + line[1:]
        path = Path(os.path.normpath(base / line))
        if path not in paths:
            paths.append(path)
    return paths


def with_added(text: str, path: Path, home: Path | None = None) -> str | None:
    """``text`` with the absolute ``path`` appended, or None when it is already listed."""
    path = Path(os.path.normpath(path.absolute()))
    if path in parse_autostart(text, home):
        return None
    if not text:
        text = HEADER
    elif not text.endswith("\n"):
        text += "\n"
    return f"{text}{path}\n"


def add_to_autostart(path: Path, file: Path) -> bool:
    """Add ``path`` to the list in ``file`` (created with its parents), replacing the file
    atomically; False when it was already there."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        text = ""
    new = with_added(text, path)
    if new is None:
        return False
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, file)
    return True


def read_autostart(file: Path) -> list[Path]:
    """The repositories listed in ``file``; none when it does not exist."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return []
    return parse_autostart(text)

"""A typed view of the ``annexsync.*`` git config keys, with pure parsers for their values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pygit2

from assistant.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(key: str, text: str) -> float:
    """Seconds from '10ms', '1s', '10m', '1h' or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(
            f"bad value for {key}: {text!r} (expected a duration such as 10ms, 1s, 10m)"
        )
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]


def parse_size(key: str, text: str) -> int:
    """Bytes from '100MiB', '10M', '1g' or a bare number of bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"bad value for {key}: {text!r} (expected a size such as 100MiB or 2G)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_positive_int(key: str, text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"bad value for {key}: {text!r} (expected a whole number of at least 1)")
    return value


def parse_text(key: str, text: str) -> str:
    """A free-form value (a command line), surrounding blanks dropped."""
    return text.strip()


def parse_bool(key: str, text: str) -> bool:
    """git's boolean spellings."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0", ""):
        return False
    raise ConfigError(f"bad value for {key}: {text!r} (expected true or false)")


@dataclass(frozen=True)
class MassDeletePolicy:
    """Hold deletions of more than ``fraction`` of tracked files when also more than ``minimum``."""

    fraction: float | None = 0.5
    minimum: int = 20

    @property
    def enabled(self) -> bool:
        return self.fraction is not None


def parse_massdelete(key: str, text: str) -> MassDeletePolicy:
    """'50%,20' (over half and over 20 files), '30%' (minimum stays 20), or 'off'."""
    lowered = text.strip().lower()
    if lowered in ("off", "false", "no", "none"):
        return MassDeletePolicy(fraction=None)
    parts = [p.strip() for p in lowered.split(",")]
    try:
        if len(parts) > 2 or not parts[0].endswith("%"):
            raise ValueError
        fraction = float(parts[0][:-1]) / 100
        minimum = int(parts[1]) if len(parts) == 2 else MassDeletePolicy.minimum
        if not 0 <= fraction <= 1 or minimum < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"bad value for {key}: {text!r} (expected PERCENT%[,MINFILES] such as 50%,20, or off)"
        ) from None
    return MassDeletePolicy(fraction=fraction, minimum=minimum)


@dataclass(frozen=True)
class Settings:
    """Every tunable of the auto-commit engine, with its default."""

    delay: float = 0.005
    maxdelay: float = 1.0
    maxbatch: int = 5000
    largefiles: int = 100 << 20
    massdelete: MassDeletePolicy = field(default_factory=MassDeletePolicy)
    rescan: float = 600.0
    ignore: tuple[str, ...] = ()
    resolvemerge: bool = True
    retrydelay: float = 1.0
    retrymax: float = 300.0
    fullsync: float = 3600.0
    poll: float = 60.0
    notifications: bool = True
    notifyunreachable: float = 3600.0
    notifycommand: str = ""


_PARSERS = {
    "delay": parse_duration,
    "maxdelay": parse_duration,
    "maxbatch": parse_positive_int,
    "largefiles": parse_size,
    "massdelete": parse_massdelete,
    "rescan": parse_duration,
    "resolvemerge": parse_bool,
    "retrydelay": parse_duration,
    "retrymax": parse_duration,
    "fullsync": parse_duration,
    "poll": parse_duration,
    "notifications": parse_bool,
    "notifyunreachable": parse_duration,
    "notifycommand": parse_text,
}


def settings_from_values(values: dict[str, str], ignore: list[str]) -> Settings:
    """Build Settings from raw config strings keyed by the name after 'annexsync.'."""
    parsed: dict[str, object] = {}
    for name, parser in _PARSERS.items():
        if name in values:
            parsed[name] = parser(f"annexsync.{name}", values[name])
    settings = Settings(**parsed, ignore=tuple(ignore))  # type: ignore[arg-type]
    if settings.maxdelay < settings.delay:
        raise ConfigError(
            f"bad value for annexsync.maxdelay: it ({settings.maxdelay:g}s) is shorter than "
            f"annexsync.delay ({settings.delay:g}s)"
        )
    if settings.rescan < 1:
        raise ConfigError("bad value for annexsync.rescan: it must be at least 1s")
    if settings.retrydelay < 0.1:
        raise ConfigError("bad value for annexsync.retrydelay: it must be at least 100ms")
    if settings.retrymax < settings.retrydelay:
        raise ConfigError(
            f"bad value for annexsync.retrymax: it ({settings.retrymax:g}s) is shorter than "
            f"annexsync.retrydelay ({settings.retrydelay:g}s)"
        )
    for name in ("fullsync", "poll", "notifyunreachable"):
        value = getattr(settings, name)
        if 0 < value < 1:
            raise ConfigError(f"bad value for annexsync.{name}: it must be 0 (off) or at least 1s")
    return settings


def read_settings(config: pygit2.Config) -> Settings:
    """Read and validate every annexsync.* tunable from a repository's config."""
    values: dict[str, str] = {}
    for name in _PARSERS:
        value = get_string(config, f"annexsync.{name}")
        if value is not None:
            values[name] = value
    try:
        ignore = list(config.get_multivar("annexsync.ignore"))
    except (pygit2.GitError, ValueError) as exc:
        raise ConfigError(f"cannot read annexsync.ignore: {exc}") from None
    return settings_from_values(values, ignore)


def get_string(config: pygit2.Config, key: str) -> str | None:
    """A config value as text, or None when it is unset."""
    try:
        return config[key]
    except KeyError:
        return None
    except (pygit2.GitError, ValueError) as exc:
        raise ConfigError(f"cannot read {key}: {exc}") from None

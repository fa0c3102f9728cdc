"""Peers are the repository's git remotes: parse their URLs and per-remote switches, and map
refs between the two sides (all pure functions of config values)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pygit2

from assistant.config import get_string, parse_bool
from assistant.errors import ConfigError
from assistant.names import branch_name_problem, remote_name_problem
from assistant.notify import DEFAULT_COMMAND as DEFAULT_NOTIFY_COMMAND


@dataclass(frozen=True)
class SSHLocation:
    """A repository reached over ssh. ``host`` may be an alias from ~/.ssh/config."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    def describe(self) -> str:
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{who}{self.host}{port}"


@dataclass(frozen=True)
class LocalLocation:
    """A repository on a path of this machine (a drive, another directory)."""

    path: str

    def describe(self) -> str:
        return "this machine"


Location = SSHLocation | LocalLocation

_SSH_URL = re.compile(
    r"^(?:ssh|git\+ssh|ssh\+git)://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)"
    r"(?::(?P<port>\d*))?(?P<path>/.*)$"
)
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/]+):(?P<path>.*)$")


def parse_url(url: str, base: Path) -> Location:
    """A remote URL as git understands it; relative local paths resolve against ``base``."""
    if not url or any(ord(c) < 32 for c in url):
        raise ConfigError(f"bad remote url {url!r}")
    if url.startswith("file://"):
        # always absolute: a path starting with '-' must not pass for an option of git's
        path = url[len("file://") :] or "/"
        return LocalLocation(path if path.startswith("/") else str((base / path).resolve()))
    match = _SSH_URL.match(url)
    if match:
        path = match["path"]
        if path.startswith("/~"):
            path = path[1:]  # ssh://host/~/repo means ~/repo, as in git
        port = int(match["port"]) if match["port"] else None
        return _ssh(url, match["host"], path, match["user"], port)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            raise ConfigError(f"bad remote url {url!r} (expected ssh://[user@]host[:port]/path)")
        raise ConfigError(f"unsupported remote url {url!r} (scheme {scheme}://)")
    match = _SCP_LIKE.match(url)
    # git's rule: a colon before any slash makes it scp-like, even if a local file of that
    # name exists (write ./foo:bar for the local path)
    if match and "/" not in url.split(":", 1)[0]:
        if not match["path"]:
            raise ConfigError(f"bad remote url {url!r}: no path after ':'")
        return _ssh(url, match["host"], match["path"], match["user"], None)
    path = Path(url)
    return LocalLocation(str(path if path.is_absolute() else (base / path).resolve()))


def _ssh(url: str, host: str, path: str, user: str | None, port: int | None) -> SSHLocation:
    host = _unbracket(host)
    # as git does: a host or path starting with '-' could pass for an option
    if host.startswith("-") or path.startswith("-") or (user or "").startswith("-"):
        raise ConfigError(f"bad remote url {url!r}: a host, user or path may not start with '-'")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"bad remote url {url!r}: port {port} is out of range")
    return SSHLocation(host, path, user, port)


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def shell_quote(path: str) -> str:
    """Quote a path for the remote shell the way git does (sq_quote): single quotes, with
    ' and ! escaped, so spaces, quotes and $ reach git-upload-pack untouched; git expands a
    leading ~ or ~user itself."""
    return "'" + path.replace("'", "'\\''").replace("!", "'\\!'") + "'"


@dataclass(frozen=True)
class Remote:
    """One peer: its name, where it is, and what annexsync may do with it."""

    name: str
    url: str
    location: Location
    sync: bool = True
    push: bool = True
    pull: bool = True
    bare: bool | None = None  # remote.<name>.annexsync-bare; None: ask the peer
    # remote.<name>.annexsync-notify: the far side's notify-changes command; None: turned off
    notify: str | None = DEFAULT_NOTIFY_COMMAND


def _switch(config: pygit2.Config, name: str, key: str) -> bool:
    value = get_string(config, f"remote.{name}.annexsync-{key}")
    return True if value is None else parse_bool(f"remote.{name}.annexsync-{key}", value)


def _optional_bool(config: pygit2.Config, name: str, key: str) -> bool | None:
    value = get_string(config, f"remote.{name}.annexsync-{key}")
    return None if value is None else parse_bool(f"remote.{name}.annexsync-{key}", value)


def parse_notify(key: str, text: str | None) -> str | None:
    """The command that streams a peer's ref changes (``remote.<name>.annexsync-notify``):
    unset or a true value gives the default, a false value or empty turns it off (the peer
    is polled instead), anything else is the command itself, run by the far side's shell."""
    if text is None:
        return DEFAULT_NOTIFY_COMMAND
    lowered = text.strip().lower()
    if lowered in ("false", "no", "off", "0", ""):
        return None
    if lowered in ("true", "yes", "on", "1"):
        return DEFAULT_NOTIFY_COMMAND
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(f"bad value for {key}: {text!r} (a command on one line)")
    try:
        shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"bad value for {key}: {text!r} ({exc})") from None
    return text.strip()


def read_remotes(repo: pygit2.Repository, base: Path) -> list[Remote]:
    """Every remote with a url, in name order, with its switches."""
    config = repo.config
    # remote names may contain dots: remote.usb.drive.url is the remote "usb.drive"
    names = sorted(
        {
            entry.name[len("remote.") : -len(".url")]
            for entry in config
            if entry.name.startswith("remote.")
            and entry.name.endswith(".url")
            and entry.name.count(".") >= 2
        }
    )
    remotes = []
    for name in names:
        url = get_string(config, f"remote.{name}.url")
        if url is None:
            continue
        problem = remote_name_problem(name)
        if problem is not None:
            if not _switch(config, name, "sync"):
                continue  # left out of annexsync entirely, as its owner asked
            raise ConfigError(
                f"refusing remote {name!r}: as an annexsync peer name {problem}; rename it "
                "(git remote rename) or leave it out (remote.<name>.annexsync-sync false)"
            )
        remotes.append(
            Remote(
                name=name,
                url=url,
                location=parse_url(url, base),
                sync=_switch(config, name, "sync"),
                push=_switch(config, name, "push"),
                pull=_switch(config, name, "pull"),
                bare=_optional_bool(config, name, "bare"),
                notify=parse_notify(
                    f"remote.{name}.annexsync-notify",
                    get_string(config, f"remote.{name}.annexsync-notify"),
                ),
            )
        )
    return remotes


def select_remotes(remotes: list[Remote], wanted: list[str], action: str) -> list[Remote]:
    """The remotes named (all of them must exist), or every sync-enabled one allowing
    ``action`` ('push', 'pull', or 'sync' for both directions)."""
    by_name = {r.name: r for r in remotes}
    if wanted:
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ConfigError(f"no such remote: {', '.join(unknown)} (see 'git remote -v')")
        return [by_name[n] for n in wanted]
    return [r for r in remotes if r.sync and getattr(r, action)]


# --- ref mapping (docs/protocol.md) --------------------------------------------------------


def push_target(branch_ref: str, node_name: str, peer_is_bare: bool) -> str:
    """Where our ``refs/heads/<branch>`` lands on a peer: the same branch on a bare peer
    (fast-forward only), ``refs/remotes/<our name>/synced/<branch>`` on a non-bare one."""
    branch = branch_ref.removeprefix("refs/heads/")
    if peer_is_bare:
        return f"refs/heads/{branch}"
    return f"refs/remotes/{node_name}/synced/{branch}"


def fetch_target(peer_ref: str, remote_name: str) -> str | None:
    """Where a peer's ref lands here: its branches under ``refs/remotes/<remote>/``. A branch
    whose name is refused (``..``, control characters, shell syntax, ``HEAD``: see
    ``refused_branch``) lands nowhere."""
    if refused_branch(peer_ref) is None and peer_ref.startswith("refs/heads/"):
        return f"refs/remotes/{remote_name}/{peer_ref.removeprefix('refs/heads/')}"
    return None


def refused_branch(peer_ref: str) -> str | None:
    """Why a peer's advertised branch is never fetched, or None (also for refs that are not
    branches, which are simply not fetched)."""
    if not peer_ref.startswith("refs/heads/"):
        return None
    return branch_name_problem(peer_ref.removeprefix("refs/heads/"))

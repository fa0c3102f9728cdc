"""Which repository a local-path peer (a removable drive, usually) holds, and whether it is
the one we synced with before.

A drive's mount point can hold a different repository from one day to the next (another
stick mounted at the same place, a drive reformatted and cloned anew), and an unplugged
drive leaves an empty directory behind. So before each push or fetch to a local path:

- ``is_present`` classifies the path: absent when missing or not a git repository (an
  empty mount point); nothing is ever created there.
- The peer repository's ``annexsync.uuid`` identifies it. A repository without one is
  given a fresh uuid4 in its own config. The first sync records it in ours as
  ``remote.<name>.annexsync-uuid``; later a different uuid at that path is refused.
- ``decide`` is the whole rule on plain data; ``check_local_peer`` does the I/O around it.
"""

from __future__ import annotations

import logging
import os
import shlex
import uuid
from dataclasses import dataclass
from typing import Literal

import pygit2

from assistant.config import get_string
from assistant.errors import AnnexsyncError

log = logging.getLogger("annexsync.drives")

PEER_UUID_KEY = "annexsync.uuid"
ABSENT_SUMMARY = "not present (drive not mounted?)"

#: Refusals already warned about in this process: (remote, recorded, found). A refused drive
#: is retried with backoff; one warning per distinct refusal is enough.
_warned: set[tuple[str, str, str]] = set()


class DriveIdentityError(AnnexsyncError):
    """A local peer path holds a different repository from the one recorded, or its
    repository cannot be read or given an identity."""


def recorded_key(remote: str) -> str:
    """Our config key holding the uuid of the repository remote ``remote`` was synced with."""
    return f"remote.{remote}.annexsync-uuid"


@dataclass(frozen=True)
class Decision:
    """What to do about a peer's identity.

    ``assign``: the peer has no uuid; give it a fresh one, then decide again.
    ``record``: first sync; record ``uuid`` in our config and go on.
    ``fine``: the peer is the repository recorded.
    ``refuse``: a different repository; ``message`` says so in one line.
    """

    action: Literal["assign", "record", "fine", "refuse"]
    uuid: str | None = None
    message: str = ""


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def refusal_message(remote: str, path: str, recorded: str, found: str) -> str:
    """One line naming the remote, its path, both uuids and the command that accepts the
    repository now at the path."""
    command = f"git config {shlex.quote(recorded_key(remote))} {shlex.quote(found)}"
    return (
        f"refused: remote {remote} at {path} holds a different repository "
        f"(annexsync.uuid {found}, recorded {recorded}); not syncing with it. "
        f"If it is meant to replace the old one, run: {command}"
    )


def decide(remote: str, path: str, recorded: str | None, found: str | None) -> Decision:
    """The identity rule on plain data: ``recorded`` is ``remote.<name>.annexsync-uuid`` from
    our config (None before the first sync), ``found`` the peer's ``annexsync.uuid`` (None
    when it has none). uuids compare case-insensitively, surrounding blanks ignored."""
    recorded, found = _clean(recorded), _clean(found)
    if found is None:
        return Decision("assign")
    if recorded is None:
        return Decision("record", found)
    if recorded.lower() == found.lower():
        return Decision("fine", found)
    return Decision("refuse", found, refusal_message(remote, path, recorded, found))


# --- I/O at the edge ---------------------------------------------------------------------------


def is_present(path: str) -> bool:
    """Whether ``path`` holds a git repository (non-bare: a ``.git``; bare: ``HEAD`` and
    ``objects``). Only looks: an empty mount point of an unplugged drive, a missing path or a
    path that cannot be read (a drive failing) is absent."""
    try:
        if os.path.lexists(os.path.join(path, ".git")):
            return True
        return os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(
            os.path.join(path, "objects")
        )
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class PeerRepository:
    """A local peer that is present: where, whether bare, and its ``annexsync.uuid``."""

    path: str
    bare: bool
    uuid: str


def _open(path: str) -> pygit2.Repository:
    """Open exactly ``path`` (never a repository above it, as a plain open would)."""
    try:
        return pygit2.Repository(path, pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, OSError, KeyError) as exc:
        raise DriveIdentityError(f"cannot open the repository at {path}: {exc}") from None


def _peer_uuid(path: str) -> str | None:
    """The peer's ``annexsync.uuid``, read afresh from disk."""
    try:
        return _clean(get_string(_open(path).config, PEER_UUID_KEY))
    except AnnexsyncError as exc:
        raise DriveIdentityError(f"cannot read {PEER_UUID_KEY} of {path}: {exc}") from None


def _assign(path: str) -> str:
    """Give the peer a fresh ``annexsync.uuid`` and return the one it then has. Read back from
    disk, so that when the peer (or another node) set one at the same moment, theirs is what
    gets recorded."""
    try:
        _open(path).config[PEER_UUID_KEY] = str(uuid.uuid4())
    except (pygit2.GitError, OSError) as exc:
        raise DriveIdentityError(
            f"cannot give the repository at {path} an {PEER_UUID_KEY} "
            f"(is the drive read-only?): {exc}"
        ) from None
    found = _peer_uuid(path)
    if found is None:
        raise DriveIdentityError(f"{PEER_UUID_KEY} written to {path} does not read back")
    return found


def check_local_peer(gitdir: str, remote: str, path: str) -> PeerRepository | None:
    """Identify the repository at a local remote's ``path`` before a push or fetch.

    None when it is absent. Otherwise the peer, after giving it a uuid if it had none and, at
    the first sync, recording that uuid in our config (at ``gitdir``). Raises
    ``DriveIdentityError`` when it is a different repository from the one recorded.
    Opens its own handles, so it may run in a thread while the caller's are busy.
    """
    if not is_present(path):
        return None
    peer = _open(path)
    bare = bool(peer.is_bare)
    ours = pygit2.Repository(gitdir, pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    key = recorded_key(remote)
    recorded = get_string(ours.config, key)
    decision = decide(remote, path, recorded, _peer_uuid(path))
    if decision.action == "assign":
        decision = decide(remote, path, recorded, _assign(path))
    assert decision.uuid is not None
    if decision.action == "refuse":
        warning = (remote, (recorded or "").strip(), decision.uuid)
        if warning not in _warned:
            _warned.add(warning)
            log.warning("%s", decision.message)
        raise DriveIdentityError(decision.message)
    if decision.action == "record":
        try:
            ours.config[key] = decision.uuid
            log.info("remote %s at %s is repository %s (recorded)", remote, path, decision.uuid)
        except (pygit2.GitError, OSError) as exc:
            # our config is locked by another writer this instant; recorded at the next sync
            log.warning("cannot record %s now (%s); will retry at the next sync", key, exc)
    return PeerRepository(path=path, bare=bare, uuid=decision.uuid)

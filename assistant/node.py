"""The node's identity (``annexsync.uuid``, ``annexsync.name``) and ``annexsync init``."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import pygit2

from assistant.config import get_string
from assistant.errors import AnnexsyncError, InvalidNameError
from assistant.gitrepo import state_dir, worktree_root
from assistant.names import default_name, name_problem


@dataclass(frozen=True)
class NodeIdentity:
    """Who this repository is to its peers."""

    uuid: str
    name: str


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid node name, else raise a clear error."""
    problem = name_problem(name)
    if problem:
        raise InvalidNameError(f"invalid node name {name!r}: {problem}")
    return name


def ensure_initialised(repo: pygit2.Repository, name: str | None = None) -> NodeIdentity:
    """Record uuid and name once (idempotent) and create the state directory.

    An explicit ``name`` replaces a recorded one; without it the recorded name is kept."""
    config = repo.config
    recorded_name = get_string(config, "annexsync.name")
    if name is not None:
        check_name(name)
    elif recorded_name is not None:
        check_name(recorded_name)
    recorded_uuid = get_string(config, "annexsync.uuid")
    try:
        state_dir(repo).mkdir(mode=0o700, exist_ok=True)
        os.chmod(state_dir(repo), 0o700)
        if recorded_uuid is None:
            recorded_uuid = str(uuid.uuid4())
            config["annexsync.uuid"] = recorded_uuid
        wanted = (
            name or recorded_name or default_name(socket.gethostname(), worktree_root(repo).name)
        )
        if wanted != recorded_name:
            config["annexsync.name"] = wanted
    except (OSError, pygit2.GitError) as exc:
        raise AnnexsyncError(f"cannot initialise {repo.path.rstrip('/')}: {exc}") from None
    return NodeIdentity(uuid=recorded_uuid, name=wanted)

"""Open the working tree annexsync runs on, turning every unusable case into a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pygit2

from assistant.errors import NotARepositoryError


def open_repository(path: str | os.PathLike[str]) -> pygit2.Repository:
    """The repository at or above ``path``, bare or not; errors name the path and the problem."""
    start = Path(path)
    if not start.exists():
        raise NotARepositoryError(f"{start}: no such directory")
    try:
        found = pygit2.discover_repository(str(start))
    except pygit2.GitError as exc:
        raise NotARepositoryError(f"{start}: cannot look for a git repository: {exc}") from None
    if found is None:
        raise NotARepositoryError(f"{start.resolve()}: not a git repository (run 'git init' first)")
    try:
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        raise NotARepositoryError(f"{found}: cannot open the repository: {exc}") from None


def open_worktree(path: str | os.PathLike[str]) -> pygit2.Repository:
    """The non-bare repository containing ``path``; errors name the path and the problem."""
    repo = open_repository(path)
    if repo.is_bare or repo.workdir is None:
        raise NotARepositoryError(
            f"{repo.path.rstrip('/')}: is a bare repository; annexsync needs a working tree"
        )
    if not os.access(repo.path, os.W_OK | os.X_OK):
        gitdir = repo.path.rstrip("/")
        if os.statvfs(gitdir).f_flag & os.ST_RDONLY:
            raise NotARepositoryError(f"{gitdir}: is on a read-only filesystem")
        raise NotARepositoryError(f"{gitdir}: is not writable by this user")
    return repo


def worktree_root(repo: pygit2.Repository) -> Path:
    """The working tree's root directory, without a trailing slash."""
    assert repo.workdir is not None
    return Path(repo.workdir.rstrip("/") or "/")


def state_dir(repo: pygit2.Repository) -> Path:
    """``.git/annexsync``: where the daemon keeps its pidfile, lock, log and socket."""
    return Path(repo.path) / "annexsync"

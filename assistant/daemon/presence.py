"""Whether the repository under a running assistant has been deleted.

A directory removed with ``rm -rf`` keeps existing for whoever holds it open, with no links
left (and loses its ``HEAD`` on the way); a drive that went away (lazily unmounted) keeps
its links and its files. So a handle on ``.git``
taken at start tells a deleted repository, which the assistant must leave, from one that is
only out of reach for now, which it waits for.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class GitDirHandle:
    """An open handle on the repository's ``.git`` directory, taken at start."""

    def __init__(self, gitdir: Path) -> None:
        self.gitdir = gitdir
        self._fd: int | None = os.open(gitdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def deleted(self) -> bool:
        """True once the directory was removed (no links left to it), or is being removed:
        git never takes ``HEAD`` away (it replaces it by a rename), ``rm -rf`` does."""
        if self._fd is None:
            return False
        try:
            if os.fstat(self._fd).st_nlink == 0:
                return True
            os.stat("HEAD", dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

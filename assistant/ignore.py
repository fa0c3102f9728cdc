"""Which untracked paths are never committed: git's ignore rules plus editor and OS temp files."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

import pygit2

# Basenames of files that editors and operating systems create and remove on their own.
BUILTIN_PATTERNS: tuple[str, ...] = (
    ".*.sw[a-p]",  # vim swap files (.name.swp, .swo, ...)
    "*~",  # backups of vim, emacs, gedit, nano
    "#*#",  # emacs auto-save
    ".#*",  # emacs lock links
    ".*.kate-swp",
    ".goutputstream-*",  # GTK atomic save
    ".~lock.*#",  # LibreOffice
    "~$*",  # Microsoft Office owner files
    "*___jb_tmp___",  # JetBrains safe write
    "*___jb_old___",
    ".DS_Store",
    "._*",  # macOS AppleDouble
    ".fuse_hidden*",
    ".nfs*",
    "Thumbs.db",
    "desktop.ini",
    ".syncthing.*.tmp",
    "~syncthing~*.tmp",
    "*.crdownload",
    ".annexsync-tmp-*",  # our own checkout's files on their way into place
)
_VIM_PROBE = re.compile(r"^\d{4,6}$")


def is_vim_probe(name: str) -> bool:
    """vim's write test file: 4913, then 4913 + 123*k while that name is taken."""
    if not _VIM_PROBE.match(name):
        return False
    value = int(name)
    return value >= 4913 and (value - 4913) % 123 == 0 and value < 4913 + 123 * 100


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for a list of glob patterns matched against a basename."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")


_BUILTIN = compile_patterns(BUILTIN_PATTERNS)


def is_builtin_temp_name(name: str) -> bool:
    """True for a basename that editors and operating systems use for scratch files."""
    return bool(_BUILTIN.match(name)) or is_vim_probe(name)


class IgnoreRules:
    """Decides whether an untracked path may be committed. Tracked paths are always followed,
    as git does: ignore rules only keep new files out."""

    def __init__(self, repo: pygit2.Repository, extra: Iterable[str] = ()) -> None:
        self.repo = repo
        extra = tuple(extra)
        self._builtin = compile_patterns(BUILTIN_PATTERNS + extra)
        self._extra_paths = compile_patterns(p for p in extra if "/" in p)

    def is_temp_name(self, name: str) -> bool:
        """True for a basename that an editor or the OS uses for scratch files."""
        return bool(self._builtin.match(name)) or is_vim_probe(name)

    def is_ignored(self, relpath: str, is_dir: bool = False) -> bool:
        """True when ``relpath`` (posix, relative to the root) must not be added."""
        name = relpath.rsplit("/", 1)[-1]
        if name == ".git" or self.is_temp_name(name) or self._extra_paths.match(relpath):
            return True
        try:
            return bool(self.repo.path_is_ignored(relpath + "/" if is_dir else relpath))
        except (pygit2.GitError, UnicodeError, ValueError):
            return False

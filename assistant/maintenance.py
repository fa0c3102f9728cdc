"""Keep the object database in shape while the daemon runs for months."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger("annexsync.maintenance")


def gc_auto(gitdir: str | Path) -> None:
    """``git gc --auto``: repacks only once loose objects or packs pass git's own limits
    (gc.auto, gc.autoPackLimit), so bursts stored as packs do not pile up into slow lookups.
    It prunes only what gc.pruneExpire (two weeks) allows, never a fresh object."""
    try:
        proc = subprocess.run(
            ["git", f"--git-dir={gitdir}", "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
            capture_output=True,
            check=False,
            timeout=3600,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("git gc --auto could not run: %s", exc)
        return
    if proc.returncode != 0:
        log.warning("git gc --auto failed: %s", proc.stderr.decode(errors="replace").strip())

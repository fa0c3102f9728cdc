"""Which peers' refs this node has already taken history from, so that a ref whose history
turns unrelated (its remote's URL now leads to another repository) is refused, not merged.

A drive is recognised by the ``annexsync.uuid`` in its own config (``driveid``); a peer over
ssh or a hub may not even run annexsync, so its history is what identifies it. The first
contact with a ref may join two unrelated histories (two machines that each started the
notes on their own); once a ref has been merged, or was already ours, a commit on it that
shares no history with our branch means a different repository, as ``git pull`` judges it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

JOINED = "joined-refs.json"
_writing = threading.Lock()


def unrelated_problem(ref: str, branch: str, joined: bool, related: bool) -> str | None:
    """Why ``ref`` must not be merged into ``branch``, or None: it was joined before and its
    commit now shares no history with ours. The line says how to accept it."""
    if related or not joined:
        return None
    return (
        f"refused: {ref} shares no history with {branch} any more (does its remote lead to a "
        f"different repository now?); nothing merged. To merge it anyway: "
        f"git merge --allow-unrelated-histories {ref}"
    )


def read_joined(state: Path) -> set[str]:
    """The refs recorded by ``record_joined``."""
    try:
        data = json.loads((state / JOINED).read_text())
    except (OSError, ValueError):
        return set()
    return {str(ref) for ref in data} if isinstance(data, list) else set()


def record_joined(state: Path, known: set[str], refs: Iterable[str]) -> set[str]:
    """Add ``refs`` to the record (written only when something is new); returns the set.
    The record is read again just before writing, under a lock: a push and a merge (on two
    threads) may both add to it at once, and neither may drop what the other added."""
    wanted = known | set(refs)
    if wanted != known:
        with _writing, contextlib.suppress(OSError):
            wanted |= read_joined(state)
            tmp = state / f"{JOINED}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(sorted(wanted), indent=1))
            os.replace(tmp, state / JOINED)
    return wanted


def record_pushed(state: Path, remote: str, branches: Iterable[str]) -> None:
    """Our branches went to ``remote``: from now on its branches (fetched to
    ``refs/remotes/<remote>/<branch>``) are expected to share our history."""
    refs = {f"refs/remotes/{remote}/{b.removeprefix('refs/heads/')}" for b in branches}
    record_joined(state, read_joined(state), refs)

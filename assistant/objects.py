"""Store new blobs in the object database at the cost of the change, not of the file count."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import pygit2

from assistant.protocol.pack import encode_pack

OBJ_BLOB = 3
# From this many new blobs on, one pack beats loose objects: each loose object is a file
# created, written and renamed (about 0.4 ms here), a pack is one file for all of them.
PACK_FROM = 64


def store_blobs(repo: pygit2.Repository, blobs: Sequence[bytes]) -> None:
    """Write ``blobs`` into ``repo``: loose objects for a few, one pack (indexed by
    ``git index-pack``) for many; loose objects again if that fails."""
    if len(blobs) >= PACK_FROM:
        proc = subprocess.run(
            ["git", "index-pack", "--stdin"],
            input=encode_pack([(OBJ_BLOB, data) for data in blobs]),
            env={**os.environ, "GIT_DIR": repo.path},
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0:
            return
    for data in blobs:
        repo.create_blob(data)

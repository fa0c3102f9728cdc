"""Store new blobs in the object database at the cost of the change, not of the file count."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import pygit2

from assistant.changes import Entry
from assistant.protocol.pack import encode_pack

OBJ_BLOB = 3
BLOB_MODES = (0o100644, 0o100755, 0o120000)  # file, executable, symlink
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


def blob_size(repo: pygit2.Repository, entry: Entry | None) -> int:
    """The size of ``entry``'s blob (0 for none): a file on disk of any other size differs
    from it, and is never read whole just to find that out."""
    if entry is None or entry.mode not in BLOB_MODES:
        return 0  # a gitlink names a commit that is not here
    # the header alone: the size of a 2 GiB blob without inflating it
    return int(repo.odb.read_header(pygit2.Oid(hex=entry.oid))[1])

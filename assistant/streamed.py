"""Objects sent along with a change notification, so a listening peer needs no fetch.

A listener that asks for it (``stream`` on notify-changes' input, followed by ``have <oid>``
lines naming commits it holds) receives, just before each ``ref`` line of a branch, the objects
that commit brings, in one frame::

    objects <count> <bytes>\\n
    <type> <length>\\n<content>      (count records, <bytes> in all)

Only small changes are sent this way (a bounded walk, at most ``MAX_OBJECTS`` objects and
``MAX_BYTES``); anything larger, or anything that fails the checks here, is left to an ordinary
fetch, whose ``index-pack --strict`` is the authority. The checks refuse what git's fsck would
refuse on the way in: tree entries that are empty, ``.``, ``..``, contain ``/`` or NUL, or spell
``.git`` in any case or in the forms NTFS and HFS+ treat as ``.git``; unknown modes; and
objects that point at objects we do not have.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable

import pygit2

from assistant.protocol.pack import missing_objects

MAX_COMMITS = 64
MAX_OBJECTS = 2000
MAX_BYTES = 8 << 20
VALID_MODES = frozenset({0o100644, 0o100755, 0o120000, 0o040000, 0o160000})
# Code points HFS+ ignores when comparing names (so ".g\u200cit" is ".git" there).
_HFS_IGNORED = frozenset(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0xFEFF]
) | frozenset(range(0x206A, 0x2070))

Record = tuple[int, bytes]


# --- the sending side -------------------------------------------------------------------------


def objects_for(
    repo: pygit2.Repository, tip: pygit2.Oid, known: Iterable[pygit2.Oid]
) -> list[pygit2.Oid] | None:
    """The objects a peer holding ``known`` needs for ``tip``; None when that is not small
    (too many commits, objects or bytes: a fetch does it better)."""
    walker = repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL)
    for oid in known:
        try:
            walker.hide(oid)
        except (KeyError, ValueError, pygit2.GitError):
            continue
    for count, _commit in enumerate(walker, 1):
        if count > MAX_COMMITS:
            return None
    oids = missing_objects(repo, [tip], known)
    if len(oids) > MAX_OBJECTS:
        return None
    total = 0
    for oid in oids:
        total += repo.odb.read_header(oid)[1]
        if total > MAX_BYTES:
            return None
    return oids


def encode_frame(records: list[Record]) -> bytes:
    """One ``objects`` frame."""
    body = b"".join(b"%d %d\n" % (kind, len(data)) + data for kind, data in records)
    return b"objects %d %d\n" % (len(records), len(body)) + body


def frame_for(repo: pygit2.Repository, oids: list[pygit2.Oid]) -> bytes:
    records = []
    for oid in oids:
        kind, data = repo.odb.read(oid)
        records.append((int(kind), bytes(data)))
    return encode_frame(records)


# --- the receiving side -----------------------------------------------------------------------


def decode_body(count: int, body: bytes) -> list[Record]:
    """The records of a frame's body; ValueError when it is malformed."""
    records: list[Record] = []
    at = 0
    while at < len(body):
        end = body.index(b"\n", at)
        kind_text, _, size_text = body[at:end].partition(b" ")
        kind, size = int(kind_text), int(size_text)
        if kind not in (1, 2, 3) or size < 0 or end + 1 + size > len(body):
            raise ValueError("bad object record")
        records.append((kind, body[end + 1 : end + 1 + size]))
        at = end + 1 + size
    if len(records) != count:
        raise ValueError("object count does not match")
    return records


def unsafe_name(name: str) -> bool:
    """Whether a tree entry name is one git refuses to check out (fsck's hasDot, hasDotdot,
    hasDotgit, fullPathname, and the NTFS and HFS+ spellings of ``.git``)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name or "\\" in name:
        return True
    folded = "".join(c for c in name if ord(c) not in _HFS_IGNORED)
    folded = unicodedata.normalize("NFC", folded).lower()
    return folded.rstrip(". ") in (".git", "git~1")


_TYPE_NAMES = {1: b"commit", 2: b"tree", 3: b"blob"}


def object_id(kind: int, data: bytes) -> str:
    """The id git gives an object of this type and content (SHA-1 repositories)."""
    return hashlib.sha1(b"%s %d\0" % (_TYPE_NAMES[kind], len(data)) + data).hexdigest()


def tree_entries(data: bytes) -> list[tuple[int, str, str]]:
    """(mode, name, id) of a raw tree object; ValueError when it is malformed."""
    out = []
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        if nul + 21 > len(data):
            raise ValueError("truncated tree")
        mode = int(data[at:space], 8)
        name = data[space + 1 : nul].decode("utf-8", "surrogateescape")
        out.append((mode, name, data[nul + 1 : nul + 21].hex()))
        at = nul + 21
    return out


def commit_links(data: bytes) -> list[str]:
    """The tree and parent ids a raw commit names; ValueError when it names no tree."""
    links = []
    for line in data.split(b"\n"):
        if not line:
            break
        key, _, value = line.partition(b" ")
        if key in (b"tree", b"parent"):
            links.append(value.decode("ascii"))
    if not links or len(links[0]) != 40:
        raise ValueError("commit without a tree")
    return links


def problem_with(records: list[Record], present: Callable[[str], bool]) -> str | None:
    """Why a frame's objects must not be taken, or None; ``present(id)`` says whether our
    object database already holds an object. Decided before anything is written."""
    ids = {object_id(kind, data) for kind, data in records}
    here = lambda oid: oid in ids or present(oid)  # noqa: E731
    try:
        for kind, data in records:
            if kind == 2:
                for mode, name, oid in tree_entries(data):
                    if unsafe_name(name):
                        return f"a tree has an entry named {name!r}"
                    if mode not in VALID_MODES:
                        return f"a tree has an entry with mode {mode:o}"
                    if mode != 0o160000 and not here(oid):
                        return f"a tree names {oid}, which was not sent"
            elif kind == 1:
                for oid in commit_links(data):
                    if not here(oid):
                        return f"a commit names {oid}, which was not sent"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"a malformed object ({exc})"
    return None


def store(repo: pygit2.Repository, records: list[Record]) -> list[str]:
    """Write checked objects into our object database; the ids of the commits among them."""
    odb = repo.odb
    commits = []
    for kind, data in records:
        oid = odb.write(kind, data)
        if kind == 1:
            commits.append(str(oid))
    return commits

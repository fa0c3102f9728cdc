"""Push and fetch end to end between real repositories over the local transport: ref mapping,
compare-and-swap, rejections, large packs, broken connections and full disks."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pygit2
import pytest
from conftest import git, mounted_tmpfs

from assistant.protocol import pack as pack_module
from assistant.protocol import push as push_module
from assistant.protocol.fetch import FetchResult, fetch
from assistant.protocol.pktline import Decoder, encode_lines
from assistant.protocol.push import PushResult, RefUpdate, push
from assistant.remotes import fetch_target, push_target
from assistant.transport.base import Channel, ServiceExit, TransportError
from assistant.transport.local import LocalTransport

NODE = "laptop"
WHERE = "this machine"
TIMEOUT = 60  # a hang fails the test instead of stalling the suite

# --- channels that misbehave on purpose ------------------------------------------------------


class Wrapped(Channel):
    """Passes everything through to a real channel and records what was written."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.written = bytearray()
        self.read_bytes = 0

    async def read(self, n: int = 65536) -> bytes:
        data = await self.inner.read(n)
        self.read_bytes += len(data)
        return data

    async def write(self, data: bytes) -> None:
        self.written += data
        await self.inner.write(data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    async def finish(self) -> ServiceExit:
        return await self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


class BeforeFirstWrite(Wrapped):
    """Runs ``action`` after the advertisement was read, before our first byte reaches the
    peer: the peer's refs can change in between, as with another pusher."""

    def __init__(self, inner: Channel, action: Callable[[], Awaitable[None]]) -> None:
        super().__init__(inner)
        self.action: Callable[[], Awaitable[None]] | None = action

    async def write(self, data: bytes) -> None:
        if self.action is not None:
            action, self.action = self.action, None
            await action()
        await super().write(data)


class DropsMidPack(Wrapped):
    """The connection dies after ``limit`` bytes of the pack went out."""

    def __init__(self, inner: Channel, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit
        self.pack_sent: int | None = None

    async def write(self, data: bytes) -> None:
        if self.pack_sent is None and data.startswith(b"PACK"):
            self.pack_sent = 0
        if self.pack_sent is None:
            await super().write(data)
            return
        room = self.limit - self.pack_sent
        if len(data) <= room:
            self.pack_sent += len(data)
            await super().write(data)
            return
        await super().write(data[:room])
        self.pack_sent = self.limit
        self.inner.write_eof()
        self.inner.abort()
        raise TransportError("the connection was lost")

    async def read(self, n: int = 65536) -> bytes:
        if self.pack_sent is not None and self.pack_sent >= self.limit:
            return b""
        return await super().read(n)


class DropsWhileReading(Wrapped):
    """The connection dies after ``limit`` bytes came in."""

    def __init__(self, inner: Channel, limit: int) -> None:
        super().__init__(inner)
        self.limit = limit

    async def read(self, n: int = 65536) -> bytes:
        room = self.limit - self.read_bytes
        if room <= 0:
            self.inner.abort()
            return b""
        return await super().read(min(n, room))


# --- running push and fetch ------------------------------------------------------------------

Wrapper = Callable[[Channel], Channel]


async def _run(
    service: str, path: str, body: Callable[[Channel], Awaitable[object]], wrap: Wrapper | None
) -> object:
    channel = await LocalTransport().open(service, path)
    if wrap is not None:
        channel = wrap(channel)
    try:
        return await asyncio.wait_for(body(channel), TIMEOUT)
    finally:
        # whatever happened, the service process is gone before the loop closes
        channel.abort()
        await asyncio.wait_for(channel.finish(), TIMEOUT)


def do_push(
    ours: Path, peer: Path | str, updates: list[RefUpdate], wrap: Wrapper | None = None
) -> PushResult:
    repo = pygit2.Repository(str(ours))
    path = str(peer)
    result = asyncio.run(
        _run("git-receive-pack", path, lambda ch: push(ch, repo, updates, WHERE, path), wrap)
    )
    assert isinstance(result, PushResult)
    return result


def do_fetch(
    ours: Path, peer: Path | str, remote: str = "origin", wrap: Wrapper | None = None
) -> FetchResult:
    repo = pygit2.Repository(str(ours))
    path = str(peer)
    result = asyncio.run(
        _run(
            "git-upload-pack",
            path,
            lambda ch: fetch(ch, repo, lambda ref: fetch_target(ref, remote), WHERE, path),
            wrap,
        )
    )
    assert isinstance(result, FetchResult)
    return result


# --- repositories ----------------------------------------------------------------------------


def commit(repo: Path, name: str, content: str | bytes, message: str | None = None) -> str:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message or f"change {name}")
    return rev(repo, "HEAD")


def rev(repo: Path, spec: str) -> str:
    return git(repo, "rev-parse", "--verify", "-q", spec).strip()


def all_refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return {name: oid for name, oid in (line.split(" ", 1) for line in out.splitlines())}


def fsck(repo: Path) -> None:
    proc = subprocess.run(
        ["git", "-C", str(repo), "fsck", "--strict", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def object_count(repo: Path) -> int:
    return len(git(repo, "cat-file", "--batch-all-objects", "--batch-check").splitlines())


def init(path: Path, bare: bool = False) -> Path:
    subprocess.run(
        ["git", "init", "-q", *(["--bare"] if bare else []), str(path)],
        check=True,
        capture_output=True,
    )
    return path


def clone(source: Path, path: Path, bare: bool = False) -> Path:
    subprocess.run(
        ["git", "clone", "-q", *(["--bare"] if bare else []), str(source), str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture
def ours(repo: Path) -> Path:
    """Our repository with two commits on main."""
    commit(repo, "notes/a.txt", "first\n")
    commit(repo, "b.txt", "second\n")
    return repo


def main_update(ours: Path, bare: bool) -> RefUpdate:
    return RefUpdate(push_target("refs/heads/main", NODE, bare), rev(ours, "HEAD"), bare)


# --- push --------------------------------------------------------------------------------------


def test_push_into_an_empty_bare_repository(ours: Path, tmp_path: Path) -> None:
    peer = init(tmp_path / "peer.git", bare=True)
    head = rev(ours, "HEAD")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert result.ok
    (ref,) = result.refs
    assert (ref.dst, ref.status, ref.old, ref.new) == ("refs/heads/main", "ok", None, head)
    assert rev(peer, "refs/heads/main") == head
    assert result.objects == object_count(ours) == object_count(peer)
    assert result.bytes_sent > 0
    fsck(peer)


def test_push_into_a_non_bare_peer_leaves_its_checkout_alone(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer")
    peer_head = commit(peer, "theirs.txt", "their work\n")
    (peer / "dirty.txt").write_text("not committed\n")
    status_before = git(peer, "status", "--porcelain")
    new = commit(ours, "notes/a.txt", "ours, later\n")

    update = main_update(ours, bare=False)
    assert update.dst == f"refs/remotes/{NODE}/synced/main"
    result = do_push(ours, peer, [update])
    assert result.ok, result
    assert rev(peer, f"refs/remotes/{NODE}/synced/main") == new
    assert rev(peer, "refs/heads/main") == peer_head
    assert git(peer, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(peer, "status", "--porcelain") == status_before
    assert (peer / "notes" / "a.txt").read_text() == "first\n"
    fsck(peer)

    # our history rewritten: the synced ref follows (it is ours to move), still as a CAS
    git(ours, "commit", "-q", "--amend", "-m", "reworded")
    rewritten = rev(ours, "HEAD")
    again = do_push(ours, peer, [main_update(ours, bare=False)])
    assert [(r.status, r.old, r.new) for r in again.refs] == [("ok", new, rewritten)]
    assert rev(peer, f"refs/remotes/{NODE}/synced/main") == rewritten
    assert rev(peer, "refs/heads/main") == peer_head


def test_fast_forward_to_a_bare_peer_sends_only_the_new_objects(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    old = rev(ours, "HEAD")
    new = commit(ours, "notes/a.txt", "changed\n")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert [(r.status, r.old, r.new) for r in result.refs] == [("ok", old, new)]
    assert rev(peer, "refs/heads/main") == new
    assert result.objects == 4  # commit, root tree, notes/, the changed blob
    fsck(peer)


def test_push_of_a_file_added_then_removed(ours: Path, tmp_path: Path) -> None:
    """The newest tree equals an older new commit's tree: the peer still gets every blob."""
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    commit(ours, "kept.txt", "kept\n")
    commit(ours, "scratch.tmp", "scratch\n")
    git(ours, "rm", "-q", "scratch.tmp")
    git(ours, "commit", "-q", "-m", "remove scratch")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert result.ok, result
    assert rev(peer, "refs/heads/main") == rev(ours, "HEAD")
    fsck(peer)


def test_non_fast_forward_is_rejected_and_nothing_changes(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    # someone else pushed a commit we do not have
    other = clone(peer, tmp_path / "other")
    theirs = commit(other, "theirs.txt", "theirs\n")
    git(other, "push", "-q", "origin", "main")
    commit(ours, "ours.txt", "ours\n")
    objects_before = object_count(peer)
    wrap: list[Wrapped] = []

    def recording(ch: Channel) -> Channel:
        wrap.append(Wrapped(ch))
        return wrap[0]

    result = do_push(ours, peer, [main_update(ours, bare=True)], recording)
    assert not result.ok
    (ref,) = result.refs
    assert ref.status == "rejected"
    assert "non-fast-forward" in ref.reason
    assert "fetch" in ref.reason
    assert rev(peer, "refs/heads/main") == theirs
    assert object_count(peer) == objects_before
    assert (result.objects, result.bytes_sent) == (0, 0)
    assert bytes(wrap[0].written) == b"0000"

    # we know their commit but diverged from it: still not a fast-forward
    git(ours, "fetch", "-q", str(peer), "main")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert [r.status for r in result.refs] == ["rejected"]
    assert "non-fast-forward" in result.refs[0].reason
    assert rev(peer, "refs/heads/main") == theirs


def test_nothing_is_sent_when_nothing_changed(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    recorded: list[Wrapped] = []

    def recording(ch: Channel) -> Channel:
        recorded.append(Wrapped(ch))
        return recorded[-1]

    result = do_push(ours, peer, [main_update(ours, bare=True)], recording)
    assert result.ok
    assert [(r.status, r.old, r.new) for r in result.refs] == [
        ("up-to-date", rev(ours, "HEAD"), rev(ours, "HEAD"))
    ]
    assert (result.objects, result.bytes_sent) == (0, 0)
    assert bytes(recorded[0].written) == b"0000"  # no command, no pack


def test_several_refs_in_one_push(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    git(ours, "branch", "side")
    new = commit(ours, "c.txt", "c\n")
    updates = [
        RefUpdate("refs/heads/main", new, True),
        RefUpdate("refs/heads/side", rev(ours, "side"), True),
        RefUpdate("refs/heads/new-branch", rev(ours, "side"), True),
    ]
    result = do_push(ours, peer, updates)
    assert {r.dst: r.status for r in result.refs} == {
        "refs/heads/main": "ok",
        "refs/heads/side": "ok",
        "refs/heads/new-branch": "ok",
    }
    assert rev(peer, "refs/heads/side") == rev(ours, "side")
    fsck(peer)


def test_stale_old_value_is_refused_by_the_peer(ours: Path, tmp_path: Path) -> None:
    """Each update carries the value we saw: if the peer's ref moved since, it must not be
    overwritten."""
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    other = clone(peer, tmp_path / "other")
    theirs = commit(other, "theirs.txt", "theirs\n")
    git(other, "push", "-q", "origin", "main:refs/heads/elsewhere")
    seen = rev(peer, "refs/heads/main")
    new = commit(ours, "ours.txt", "ours\n")

    async def someone_else_pushes() -> None:
        git(peer, "update-ref", "refs/heads/main", theirs, seen)

    result = do_push(
        ours,
        peer,
        [RefUpdate("refs/heads/main", new, fast_forward=False)],
        lambda ch: BeforeFirstWrite(ch, someone_else_pushes),
    )
    (ref,) = result.refs
    assert ref.status == "rejected", ref
    assert ref.old == seen
    assert ref.reason
    assert rev(peer, "refs/heads/main") == theirs
    fsck(peer)


def test_two_concurrent_pushes_one_wins(tmp_path: Path) -> None:
    origin = init(tmp_path / "origin")
    base = commit(origin, "a.txt", "a\n")
    peer = clone(origin, tmp_path / "peer.git", bare=True)
    one = clone(origin, tmp_path / "one")
    two = clone(origin, tmp_path / "two")
    new_one = commit(one, "one.txt", "one\n")
    new_two = commit(two, "two.txt", "two\n")

    async def both() -> list[PushResult]:
        barrier = asyncio.Barrier(2)  # both have read the advertisement before either writes

        async def run(src: Path, new: str) -> PushResult:
            repo = pygit2.Repository(str(src))

            async def body(ch: Channel) -> PushResult:
                return await push(ch, repo, [RefUpdate("refs/heads/main", new)], WHERE, str(peer))

            async def wait() -> None:
                await barrier.wait()

            result = await _run(
                "git-receive-pack", str(peer), body, lambda ch: BeforeFirstWrite(ch, wait)
            )
            assert isinstance(result, PushResult)
            return result

        return list(await asyncio.gather(run(one, new_one), run(two, new_two)))

    results = asyncio.run(both())
    statuses = sorted(r.refs[0].status for r in results)
    assert statuses == ["ok", "rejected"]
    assert all(r.refs[0].old == base for r in results)
    winner = next(r for r in results if r.refs[0].status == "ok").refs[0].new
    assert rev(peer, "refs/heads/main") == winner
    fsck(peer)


def test_pre_receive_hook_rejection_carries_its_message(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    hook = peer / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\necho 'checking...'\necho 'policy: the archive is read-only' >&2\nexit 1\n"
    )
    hook.chmod(0o755)
    before = rev(peer, "refs/heads/main")
    commit(ours, "c.txt", "c\n")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    (ref,) = result.refs
    assert ref.status == "rejected"
    assert "pre-receive hook declined" in ref.reason
    assert "policy: the archive is read-only" in ref.reason
    assert rev(peer, "refs/heads/main") == before


def test_large_push_goes_through_pack_objects(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(pack_module.INPROCESS_MAX_OBJECTS + 100):
        d = repo / f"d{i % 40:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file number {i}\n" * 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many files")
    peer = init(tmp_path / "peer.git", bare=True)
    streamed: list[int] = []
    original = push_module._stream_pack_objects

    async def spy(*args: object) -> tuple[int, int]:
        sent = await original(*args)  # type: ignore[arg-type]
        streamed.append(sent[0])
        return sent

    monkeypatch.setattr(push_module, "_stream_pack_objects", spy)
    result = do_push(repo, peer, [main_update(repo, bare=True)])
    assert result.ok, result
    assert streamed == [object_count(repo)]
    assert result.objects == object_count(repo)
    assert rev(peer, "refs/heads/main") == rev(repo, "HEAD")
    fsck(peer)


def test_thin_pack_from_pack_objects_onto_a_peer_with_tags(
    ours: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental push through git pack-objects (deltas against what the peer has), to a
    peer advertising tags of a commit, a tree and a blob."""
    text = "".join(f"line {i}\n" for i in range(2000))
    commit(ours, "big.txt", text)
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    git(peer, "tag", "-a", "-m", "release", "v1", "main")
    git(peer, "tag", "-a", "-m", "a tree", "tree-tag", "main^{tree}")
    git(peer, "tag", "blob-tag", "main:b.txt")
    new = commit(ours, "big.txt", text + "one more line\n")
    monkeypatch.setattr(pack_module, "INPROCESS_MAX_OBJECTS", 0)
    monkeypatch.setattr(push_module, "pack_is_small", pack_module.pack_is_small)
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert result.ok, result
    assert rev(peer, "refs/heads/main") == new
    assert result.bytes_sent < len(text) // 4  # a delta, not the whole file again
    fsck(peer)


def test_in_process_push_onto_a_peer_with_tags_of_trees_and_blobs(
    ours: Path, tmp_path: Path
) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    git(peer, "tag", "-a", "-m", "a tree", "tree-tag", "main^{tree}")
    git(peer, "tag", "blob-tag", "main:b.txt")
    new = commit(ours, "c.txt", "c\n")
    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert result.ok, result
    assert result.objects == 3
    assert rev(peer, "refs/heads/main") == new


# --- fetch -------------------------------------------------------------------------------------


@pytest.fixture
def peer_repo(tmp_path: Path) -> Path:
    """A non-bare peer with main, a dev branch and a tag."""
    peer = init(tmp_path / "peer")
    commit(peer, "a.txt", "a\n")
    commit(peer, "dir/b.txt", "b\n")
    git(peer, "tag", "-a", "-m", "v1", "v1")
    git(peer, "branch", "dev")
    return peer


def test_fetch_new_commits(peer_repo: Path, tmp_path: Path) -> None:
    ours = clone(peer_repo, tmp_path / "ours")
    our_head = rev(ours, "HEAD")
    old = rev(ours, "refs/remotes/origin/main")
    new = commit(peer_repo, "dir/b.txt", "changed\n")
    dev = commit(peer_repo, "c.txt", "c\n")  # main moves again
    git(peer_repo, "branch", "-f", "dev", new)
    recorded: list[Wrapped] = []

    def recording(ch: Channel) -> Channel:
        recorded.append(Wrapped(ch))
        return recorded[-1]

    result = do_fetch(ours, peer_repo, wrap=recording)
    assert result.updated == {
        "refs/remotes/origin/main": (old, dev),
        "refs/remotes/origin/dev": (old, new),
    }
    assert result.bytes_received > 0
    # we told the peer what we have (several commits it knows: several ACKs come back)
    request = bytes(recorded[0].written)
    assert b"multi_ack" in request
    assert request.count(b"have ") >= 2
    assert result.remote_refs["refs/heads/main"] == dev
    assert "refs/tags/v1" in result.remote_refs
    assert rev(ours, "refs/remotes/origin/main") == dev
    assert rev(ours, "refs/remotes/origin/dev") == new
    assert rev(ours, "HEAD") == our_head
    assert git(ours, "status", "--porcelain") == ""
    assert git(ours, "tag") == "v1\n"  # cloned; nothing new under refs/tags
    fsck(ours)


def test_fetch_gets_a_thin_pack_of_deltas(peer_repo: Path, tmp_path: Path) -> None:
    text = "".join(f"line {i} of a long file\n" for i in range(5000))
    commit(peer_repo, "long.txt", text)
    ours = clone(peer_repo, tmp_path / "ours")
    new = commit(peer_repo, "long.txt", text.replace("line 2500 ", "LINE 2500 "))
    result = do_fetch(ours, peer_repo)
    assert rev(ours, "refs/remotes/origin/main") == new
    assert result.bytes_received < len(text) // 20  # a delta against what we already had
    fsck(ours)


class HidesMultiAck(Wrapped):
    """Shows us an advertisement without multi_ack (as from a minimal server)."""

    def __init__(self, inner: Channel) -> None:
        super().__init__(inner)
        self.rewritten = False

    async def read(self, n: int = 65536) -> bytes:
        if self.rewritten:
            return await super().read(n)
        decoder = Decoder()
        packets: list[bytes] = []
        while True:
            data = await super().read(n)
            if not data:
                raise AssertionError("no advertisement")
            decoder.feed(data)
            for packet in decoder.packets():
                if packet is None:
                    self.rewritten = True
                    first, *rest = packets
                    ref, caps = first.rstrip(b"\n").split(b"\0")
                    kept = [c for c in caps.split() if not c.startswith(b"multi_ack")]
                    first = ref + b"\0" + b" ".join(kept) + b"\n"
                    return encode_lines([first, *rest]) + decoder.rest()
                packets.append(packet)


def test_fetch_from_a_peer_without_multi_ack(peer_repo: Path, tmp_path: Path) -> None:
    """Without multi_ack the peer's ACKs do not show where the pack begins: we send no haves
    and take the whole pack."""
    ours = clone(peer_repo, tmp_path / "ours")
    new = commit(peer_repo, "c.txt", "c\n")
    wrapped: list[HidesMultiAck] = []

    def hiding(ch: Channel) -> Channel:
        wrapped.append(HidesMultiAck(ch))
        return wrapped[-1]

    result = do_fetch(ours, peer_repo, wrap=hiding)
    assert result.updated["refs/remotes/origin/main"][1] == new
    request = bytes(wrapped[0].written)
    assert b"multi_ack" not in request
    assert b"have " not in request
    fsck(ours)


def test_fetch_when_nothing_is_new(peer_repo: Path, tmp_path: Path) -> None:
    ours = clone(peer_repo, tmp_path / "ours")
    do_fetch(ours, peer_repo)
    refs = all_refs(ours)
    recorded: list[Wrapped] = []

    def recording(ch: Channel) -> Channel:
        recorded.append(Wrapped(ch))
        return recorded[-1]

    result = do_fetch(ours, peer_repo, wrap=recording)
    assert result.updated == {}
    assert result.bytes_received == 0
    assert bytes(recorded[0].written) == b"0000"  # no wants: upload-pack sends no pack
    assert all_refs(ours) == refs


def test_fetch_into_an_empty_repository(peer_repo: Path, repo: Path) -> None:
    result = do_fetch(repo, peer_repo, remote="peer")
    main, dev = rev(peer_repo, "main"), rev(peer_repo, "dev")
    assert result.updated == {
        "refs/remotes/peer/main": (None, main),
        "refs/remotes/peer/dev": (None, dev),
    }
    assert rev(repo, "refs/remotes/peer/main") == main
    assert pygit2.Repository(str(repo)).head_is_unborn
    assert git(repo, "log", "--format=%s", "refs/remotes/peer/main").splitlines() == [
        "change dir/b.txt",
        "change a.txt",
    ]
    fsck(repo)


def test_fetch_from_an_empty_repository(repo: Path, tmp_path: Path) -> None:
    peer = init(tmp_path / "empty.git", bare=True)
    result = do_fetch(repo, peer)
    assert (result.updated, result.remote_refs, result.bytes_received) == ({}, {}, 0)


def test_fetch_after_the_peer_rewrote_history(peer_repo: Path, tmp_path: Path) -> None:
    ours = clone(peer_repo, tmp_path / "ours")
    old = rev(ours, "refs/remotes/origin/main")
    git(peer_repo, "reset", "-q", "--hard", "HEAD~1")
    rewritten = commit(peer_repo, "a.txt", "another past\n")
    result = do_fetch(ours, peer_repo)
    assert result.updated["refs/remotes/origin/main"] == (old, rewritten)
    assert rev(ours, "refs/remotes/origin/main") == rewritten
    fsck(ours)


def test_fetch_of_a_commit_we_already_have_moves_the_ref_without_a_pack(
    peer_repo: Path, tmp_path: Path
) -> None:
    ours = clone(peer_repo, tmp_path / "ours")
    git(peer_repo, "branch", "copy", "main")
    recorded: list[Wrapped] = []

    def recording(ch: Channel) -> Channel:
        recorded.append(Wrapped(ch))
        return recorded[-1]

    result = do_fetch(ours, peer_repo, wrap=recording)
    assert result.updated == {"refs/remotes/origin/copy": (None, rev(peer_repo, "main"))}
    assert bytes(recorded[0].written) == b"0000"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["push", "fetch"])
def test_remote_path_missing(ours: Path, tmp_path: Path, service: str) -> None:
    missing = tmp_path / "no" / "such.git"
    with pytest.raises(TransportError) as info:
        if service == "push":
            do_push(ours, missing, [main_update(ours, bare=True)])
        else:
            do_fetch(ours, missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("service", ["push", "fetch"])
def test_remote_path_not_a_repository(ours: Path, tmp_path: Path, service: str) -> None:
    plain = tmp_path / "just a directory"
    plain.mkdir()
    (plain / "file.txt").write_text("x\n")
    with pytest.raises(TransportError) as info:
        if service == "push":
            do_push(ours, plain, [main_update(ours, bare=True)])
        else:
            do_fetch(ours, plain)
    message = str(info.value)
    assert str(plain) in message
    assert "not a git repository" in message


def random_blob(size: int) -> bytes:
    return os.urandom(size)  # incompressible: the pack is as large as the data


def test_connection_dropped_mid_pack_on_push(ours: Path, tmp_path: Path) -> None:
    peer = clone(ours, tmp_path / "peer.git", bare=True)
    before = all_refs(peer)
    new = commit(ours, "photo.bin", random_blob(400_000))
    drops: list[DropsMidPack] = []

    def dropping(ch: Channel) -> Channel:
        drops.append(DropsMidPack(ch, limit=100_000))
        return drops[-1]

    with pytest.raises(TransportError):
        do_push(ours, peer, [main_update(ours, bare=True)], dropping)
    assert drops[0].pack_sent == 100_000
    assert all_refs(peer) == before
    fsck(peer)

    result = do_push(ours, peer, [main_update(ours, bare=True)])
    assert result.ok, result
    assert rev(peer, "refs/heads/main") == new
    fsck(peer)


def test_connection_dropped_mid_pack_on_fetch(peer_repo: Path, tmp_path: Path) -> None:
    ours = clone(peer_repo, tmp_path / "ours")
    before = all_refs(ours)
    new = commit(peer_repo, "photo.bin", random_blob(400_000))

    with pytest.raises(TransportError, match="broke off"):
        do_fetch(ours, peer_repo, wrap=lambda ch: DropsWhileReading(ch, limit=100_000))
    assert all_refs(ours) == before
    assert rev(ours, "refs/remotes/origin/main") != new
    fsck(ours)

    result = do_fetch(ours, peer_repo)
    assert rev(ours, "refs/remotes/origin/main") == new
    assert "refs/remotes/origin/main" in result.updated
    fsck(ours)


# --- full disks ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small-disk", "2m") as mountpoint:
        yield mountpoint


def test_disk_full_here_during_fetch(peer_repo: Path, small_disk: Path) -> None:
    ours = init(small_disk / "ours")
    small = do_fetch(ours, peer_repo)  # the small history fits
    assert "refs/remotes/origin/main" in small.updated
    before = all_refs(ours)
    commit(peer_repo, "photo.bin", random_blob(3_000_000))
    with pytest.raises(TransportError) as info:
        do_fetch(ours, peer_repo)
    assert "disk is full" in str(info.value)
    assert all_refs(ours) == before


def test_disk_full_on_the_peer_during_push(ours: Path, small_disk: Path) -> None:
    peer = clone(ours, small_disk / "peer.git", bare=True)
    before = all_refs(peer)
    commit(ours, "photo.bin", random_blob(3_000_000))
    try:
        result = do_push(ours, peer, [main_update(ours, bare=True)])
    except TransportError as exc:
        assert "disk is full" in str(exc)
    else:
        (ref,) = result.refs
        assert ref.status == "rejected"
        assert "disk is full" in ref.reason or "No space left" in ref.reason, ref.reason
    assert all_refs(peer) == before


# --- the local channel itself ----------------------------------------------------------------


@pytest.mark.parametrize("abort", [True, False])
def test_finish_with_unread_output(tmp_path: Path, abort: bool) -> None:
    """A service whose output nobody read still finishes, killed or not (a large ref
    advertisement fills the pipe)."""
    peer = init(tmp_path / "many-refs.git", bare=True)
    origin = init(tmp_path / "origin")
    head = commit(origin, "a.txt", "a\n")
    git(peer, "fetch", "-q", str(origin), "main:main")
    (peer / "packed-refs").write_text(
        "".join(f"{head} refs/heads/branch-with-a-long-name-{i:05d}\n" for i in range(4000))
    )

    async def scenario() -> ServiceExit:
        channel = await LocalTransport().open("git-upload-pack", str(peer))
        await asyncio.sleep(0.2)  # let the advertisement fill the pipe
        if abort:
            channel.abort()
        return await asyncio.wait_for(channel.finish(), TIMEOUT)

    exit = asyncio.run(scenario())
    assert exit.status is not None
    if abort:
        assert exit.status == -9

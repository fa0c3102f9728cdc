"""Objects sent along with change notifications: the checks made before anything is written,
the frame format, and a real listener taking a peer's commit without a fetch (and refusing a
crafted one, which is then left to the fetch and its ``index-pack --strict``)."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pygit2
import pytest
from conftest import git
from test_listener import Calls, clone, commit, eventually, in_thread, make_peer, our_remote

from assistant.daemon.listener import ChangeListener, object_lookup
from assistant.daemon.streaming import StreamSink
from assistant.notify import DEFAULT_COMMAND
from assistant.peers import Peers
from assistant.peerstate import Backoff
from assistant.streamed import (
    decode_body,
    encode_frame,
    object_id,
    objects_for,
    problem_with,
    unsafe_name,
)


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("notes.md", False),
        (".gitignore", False),
        (".github", False),
        ("git", False),
        (".git", True),
        (".GIT", True),
        (".Git.", True),
        (".git ", True),
        ("git~1", True),
        (".g\u200cit", True),
        (".\ufeffgit", True),
        ("..", True),
        (".", True),
        ("", True),
        ("a/b", True),
        ("a\\b", True),
        ("a\0b", True),
    ],
)
def test_names_git_would_refuse_are_unsafe(name: str, unsafe: bool) -> None:
    assert unsafe_name(name) is unsafe


def raw_tree(*entries: tuple[str, str, str]) -> bytes:
    return b"".join(
        f"{mode} {name}".encode() + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries
    )


BLOB = (3, b"hello\n")
BLOB_ID = object_id(*BLOB)


def test_object_ids_are_gits(tmp_path: Path) -> None:
    out = subprocess.run(
        ["git", "hash-object", "--stdin"], input=b"hello\n", capture_output=True, check=True
    )
    assert out.stdout.decode().strip() == BLOB_ID


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([BLOB, (2, raw_tree(("100644", "a.txt", BLOB_ID)))], None),
        ([BLOB, (2, raw_tree(("100644", ".git", BLOB_ID)))], "entry named '.git'"),
        ([BLOB, (2, raw_tree(("100644", "..", BLOB_ID)))], "entry named '..'"),
        ([BLOB, (2, raw_tree(("100666", "a", BLOB_ID)))], "mode 100666"),
        ([(2, raw_tree(("100644", "a", "1" * 40)))], "was not sent"),
        ([(1, b"tree " + b"2" * 40 + b"\n\nmsg\n")], "was not sent"),
        ([(1, b"author x\n\nno tree\n")], "malformed"),
        ([(2, b"100644 a\0short")], "malformed"),
    ],
)
def test_a_frame_is_checked_before_anything_is_written(
    records: list[tuple[int, bytes]], problem: str | None
) -> None:
    found = problem_with(records, lambda oid: False)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_frames_round_trip() -> None:
    records = [BLOB, (2, raw_tree(("100644", "a", BLOB_ID))), (3, b"")]
    frame = encode_frame(records)
    header, _, body = frame.partition(b"\n")
    _word, count, size = header.split()
    assert int(size) == len(body)
    assert decode_body(int(count), body) == records
    with pytest.raises(ValueError):
        decode_body(2, body)


def test_only_small_changes_are_streamed(tmp_path: Path) -> None:
    repo_path = make_peer(tmp_path / "peer")
    repo = pygit2.Repository(str(repo_path))
    base = repo.head.target
    (repo_path / "one.txt").write_text("one\n")
    git(repo_path, "add", "one.txt")
    tip = pygit2.Oid(hex=commit(repo_path, "one"))
    oids = objects_for(repo, tip, [base])
    assert oids is not None and {repo[o].type for o in oids} == {1, 2, 3}
    for i in range(70):
        commit(repo_path, f"c{i}")
    assert (
        objects_for(repo, pygit2.Oid(hex=git(repo_path, "rev-parse", "HEAD").strip()), [base])
        is None
    )


def listen(
    local: Path, peer: Path, calls: Calls, arrived: list[int]
) -> tuple[ChangeListener, Peers]:
    remote = our_remote(local, str(peer), notify=DEFAULT_COMMAND)
    peers = Peers()
    repo = pygit2.Repository(str(local))
    listener = ChangeListener(
        remote,
        peers.transport(remote),
        object_lookup(repo),
        calls.on_change,
        calls.on_unsupported,
        stream=StreamSink(repo, remote.name, "here", lambda: arrived.append(1)),
        backoff=Backoff(0.05, 0.4, 0.05),
    )
    listener.start()
    return listener, peers


def test_a_streamed_commit_moves_the_tracking_ref_without_a_fetch(tmp_path: Path) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    calls, arrived = Calls(), []

    async def scenario() -> str:
        listener, peers = listen(local, peer, calls, arrived)
        try:
            await eventually(lambda: listener.status().state.value == "listening", "listening")
            await asyncio.sleep(0.1)  # our hello has reached the far side
            (peer / "new.txt").write_text("sent with the notification\n")
            await in_thread(git, peer, "add", "new.txt")
            tip = await in_thread(commit, peer, "new file")
            await eventually(lambda: arrived, "the streamed commit taken")
            return tip
        finally:
            await listener.stop()
            await peers.close()

    tip = asyncio.run(scenario())
    assert calls.changes == []  # no fetch was asked for
    ours = pygit2.Repository(str(local))
    assert str(ours.references["refs/remotes/desk/main"].target) == tip
    assert (
        ours[ours[tip].peel(pygit2.Commit).tree["new.txt"].id].data
        == b"sent with the notification\n"
    )
    assert (
        subprocess.run(
            ["git", "-C", str(local), "fsck", "--strict"], capture_output=True
        ).returncode
        == 0
    )


def test_a_crafted_tree_is_not_stored_and_is_left_to_the_fetch(tmp_path: Path) -> None:
    peer = make_peer(tmp_path / "peer")
    local = clone(peer, tmp_path / "local")
    calls, arrived = Calls(), []
    repo = pygit2.Repository(str(peer))
    blob = repo.odb.write(3, b"[core]\n\thooksPath = /tmp\n")
    inner = repo.odb.write(2, raw_tree(("100644", "config", str(blob))))
    top = repo.odb.write(2, raw_tree(("40000", ".GIT", str(inner))))
    head = repo.head.target
    bad = repo.odb.write(
        1,
        f"tree {top}\nparent {head}\nauthor a <a@a> 1 +0000\n"
        "committer a <a@a> 1 +0000\n\nx\n".encode(),
    )

    async def scenario() -> None:
        listener, peers = listen(local, peer, calls, arrived)
        try:
            await eventually(lambda: listener.status().state.value == "listening", "listening")
            await asyncio.sleep(0.1)
            await in_thread(git, peer, "update-ref", "refs/heads/main", str(bad))
            await eventually(lambda: calls.changes, "a fetch asked for instead")
        finally:
            await listener.stop()
            await peers.close()

    asyncio.run(scenario())
    assert arrived == []
    ours = pygit2.Repository(str(local))
    assert not ours.odb.exists(bad) and not ours.odb.exists(top)
    assert "refs/remotes/desk/main" not in ours.references


def read_until(proc: subprocess.Popen[bytes], marker: bytes, limit: float = 10.0) -> bytes:
    """Everything ``proc`` prints up to and including the first full line holding ``marker``."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + limit
    while not (out.endswith(b"\n") and marker in out):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} within {limit}s: {out[-500:]!r}")
        if select.select([proc.stdout], [], [], 0.1)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"notify-changes ended: {out[-500:]!r}")
            out += chunk
    return out


def test_a_commit_the_listener_says_it_holds_is_not_sent_back(tmp_path: Path) -> None:
    peer = make_peer(tmp_path / "peer")
    theirs = commit(peer, "made there")
    ours = git(peer, "commit-tree", "-p", theirs, "-m", "made here",
               git(peer, "rev-parse", "HEAD^{tree}").strip()).strip()  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "notify-changes", str(peer)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        read_until(proc, b"refs/heads/main")
        proc.stdin.write(f"stream\nhave {theirs}\n".encode())
        proc.stdin.flush()
        time.sleep(0.2)  # not for correctness: lets the command read its input first
        fresh = commit(peer, "fresh there")
        sent = read_until(proc, fresh.encode())
        assert sent.startswith(b"objects ")  # what we lack comes with the change
        proc.stdin.write(f"have {ours}\n".encode())  # our branch moved (the merge we made)
        proc.stdin.flush()
        time.sleep(0.2)
        git(peer, "update-ref", "refs/heads/main", ours)
        echoed = read_until(proc, ours.encode())
        assert b"objects " not in echoed  # we hold it: only the ref line comes
    finally:
        proc.terminate()
        proc.wait(timeout=10)

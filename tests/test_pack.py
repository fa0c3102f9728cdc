"""Which objects a peer lacks, and the in-process pack of them, checked against real git."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pygit2
import pytest
from conftest import git
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.protocol import pack as pack_module
from assistant.protocol.pack import missing_objects, new_commits, pack_is_small, write_pack

BLOB = pygit2.enums.FileMode.BLOB
SIGNATURE = pygit2.Signature("Test User", "test@example.com", 1_700_000_000, 0)


class History:
    """Commits built straight from path -> content maps (no working tree)."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True)
        self.count = 0

    def tree(self, files: dict[str, bytes], gitlinks: dict[str, str] | None = None) -> pygit2.Oid:
        index = pygit2.Index()
        for name, data in sorted(files.items()):
            index.add(pygit2.IndexEntry(name, self.repo.create_blob(data), BLOB))
        for name, oid in (gitlinks or {}).items():
            index.add(pygit2.IndexEntry(name, pygit2.Oid(hex=oid), pygit2.enums.FileMode.COMMIT))
        return index.write_tree(self.repo)

    def commit(
        self,
        files: dict[str, bytes],
        parents: list[pygit2.Oid] = (),  # type: ignore[assignment]
        gitlinks: dict[str, str] | None = None,
    ) -> pygit2.Oid:
        self.count += 1
        return self.repo.create_commit(
            None,
            SIGNATURE,
            SIGNATURE,
            f"commit {self.count}",
            self.tree(files, gitlinks),
            list(parents),
        )


def required(repo_path: Path | str, wants: list[pygit2.Oid], haves: list[pygit2.Oid]) -> set[str]:
    """What git itself would send: rev-list --objects wants --not haves."""
    args = [str(w) for w in wants] + [f"^{h}" for h in haves]
    out = git(Path(repo_path), "rev-list", "--objects", *args)
    return {line.split()[0] for line in out.splitlines() if line}


def ids(oids: list[pygit2.Oid]) -> set[str]:
    return {str(o) for o in oids}


def index_pack(repo_dir: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "index-pack", "--stdin", "--strict"],
        input=data,
        capture_output=True,
        env={**os.environ, "GIT_DIR": str(repo_dir)},
        check=False,
    )


def fresh_bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "history.git")


# --- write_pack ------------------------------------------------------------------------------


def test_write_pack_is_accepted_by_index_pack_and_verify_pack(
    history: History, tmp_path: Path
) -> None:
    repo = history.repo
    first = history.commit(
        {
            "empty": b"",
            "small.txt": b"hello\n",
            "size15": b"x" * 15,  # the largest size that fits the first header byte
            "size16": b"y" * 16,
            "big.bin": os.urandom(300_000),  # a size needing a three-byte header
            "dir/sub/deep.txt": b"deep\n",
        }
    )
    second = history.commit({"small.txt": b"changed\n"}, [first])
    tag = repo.create_tag("v1", second, pygit2.enums.ObjectType.COMMIT, SIGNATURE, "release\n")
    oids = [*missing_objects(repo, [second], []), tag]
    data = write_pack(repo, oids)
    assert data[:4] == b"PACK"
    assert int.from_bytes(data[8:12], "big") == len(oids)

    peer = fresh_bare(tmp_path / "peer.git")
    proc = index_pack(peer, data)
    assert proc.returncode == 0, proc.stderr.decode()
    (idx,) = (peer / "objects" / "pack").glob("*.idx")
    verify = subprocess.run(
        ["git", "verify-pack", "-v", str(idx)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    listed = {line.split()[0] for line in verify.stdout.splitlines() if len(line.split()) >= 5}
    assert listed == ids(oids)
    copy = pygit2.Repository(str(peer))
    for oid in oids:
        assert copy.odb.read(oid) == repo.odb.read(oid)
    assert copy[tag].peel(pygit2.Commit).id == second


def test_write_pack_of_nothing_is_a_valid_empty_pack(history: History, tmp_path: Path) -> None:
    data = write_pack(history.repo, [])
    assert len(data) == 12 + 20
    assert index_pack(fresh_bare(tmp_path / "peer.git"), data).returncode == 0


def test_a_corrupted_pack_is_refused(history: History, tmp_path: Path) -> None:
    """The trailer really is the pack's checksum: git notices a flipped byte."""
    tip = history.commit({"a": b"a" * 100})
    data = bytearray(write_pack(history.repo, missing_objects(history.repo, [tip], [])))
    data[20] ^= 0xFF
    assert index_pack(fresh_bare(tmp_path / "peer.git"), bytes(data)).returncode != 0


# --- missing_objects ---------------------------------------------------------------------------


def test_first_push_sends_everything(history: History) -> None:
    c1 = history.commit({"a.txt": b"a\n", "d/b.txt": b"b\n", "d/e/c.txt": b"c\n"})
    c2 = history.commit({"a.txt": b"a2\n", "d/b.txt": b"b\n", "d/e/c.txt": b"c\n"}, [c1])
    c3 = history.commit({"a.txt": b"a\n", "d/b.txt": b"b\n"}, [c2])  # back to an old blob
    missing = missing_objects(history.repo, [c3], [])
    assert len(missing) == len(set(missing)), "no object twice"
    assert ids(missing) == required(history.repo.path, [c3], [])
    assert [c.id for c in new_commits(history.repo, [c3], [])] == [c3, c2, c1]


def test_one_new_commit_sends_only_the_changed_path(history: History) -> None:
    files = {
        "top.txt": b"top\n",
        "a/sibling.txt": b"sibling\n",
        "a/b/c.txt": b"old\n",
        "a/b/other.txt": b"other\n",
        "z/unrelated.txt": b"unrelated\n",
    }
    tip = history.commit(files)
    new = history.commit({**files, "a/b/c.txt": b"new\n"}, [tip])
    repo = history.repo
    missing = missing_objects(repo, [new], [tip])
    tree = repo[new].tree
    expected = {
        str(new),
        str(tree.id),
        str(tree["a"].id),
        str(repo[tree["a"].id]["b"].id),
        str(repo.create_blob(b"new\n")),
    }
    assert ids(missing) == expected
    assert ids(missing) == required(repo.path, [new], [tip])
    assert missing[0] == new


@pytest.mark.parametrize("peer_has_base", [False, True])
def test_reverted_tree_keeps_its_blobs(history: History, peer_has_base: bool) -> None:
    """A commit whose tree equals an older new commit's tree (a file added, then deleted):
    every blob still reaches the peer."""
    start = history.commit({"old.txt": b"old\n"})
    base = history.commit({"b.txt": b"one\n"}, [start])
    added = history.commit({"b.txt": b"one\n", "tmp": b"scratch\n"}, [base])
    removed = history.commit({"b.txt": b"one\n"}, [added])
    repo = history.repo
    assert repo[removed].tree.id == repo[base].tree.id
    haves = [start] if peer_has_base else []
    missing = ids(missing_objects(repo, [removed], haves))
    assert str(repo.create_blob(b"one\n")) in missing
    assert required(repo.path, [removed], haves) <= missing


def test_unchanged_blob_moving_back_is_not_resent(history: History) -> None:
    """A file reverted to its parent's content needs only the commit and trees."""
    base = history.commit({"d/f.txt": b"one\n"})
    changed = history.commit({"d/f.txt": b"two\n"}, [base])
    missing = missing_objects(history.repo, [changed], [base])
    assert str(history.repo.create_blob(b"one\n")) not in ids(missing)


def test_merge_commit(history: History) -> None:
    base_files = {"shared.txt": b"shared\n", "left/l.txt": b"l0\n", "right/r.txt": b"r0\n"}
    base = history.commit(base_files)
    left = history.commit({**base_files, "left/l.txt": b"l1\n"}, [base])
    right = history.commit({**base_files, "right/r.txt": b"r1\n"}, [base])
    merged_files = {**base_files, "left/l.txt": b"l1\n", "right/r.txt": b"r1\n"}
    merge = history.commit(merged_files, [left, right])
    repo = history.repo

    # the peer has both sides: only the merge commit and its root tree are new
    both = missing_objects(repo, [merge], [left, right])
    assert ids(both) == {str(merge), str(repo[merge].tree.id)}
    assert ids(both) == required(repo.path, [merge], [left, right])

    # the peer has only the left side: the right branch's commit and changes come too
    one = missing_objects(repo, [merge], [left])
    assert ids(one) == required(repo.path, [merge], [left])
    assert {str(right), str(repo.create_blob(b"r1\n"))} <= ids(one)

    # a merge that resolves to new content sends the new blob
    evil = history.commit({**merged_files, "shared.txt": b"resolved\n"}, [left, right])
    assert ids(missing_objects(repo, [evil], [left, right])) == required(
        repo.path, [evil], [left, right]
    )


def test_rename_sends_a_complete_set(history: History) -> None:
    files = {"docs/readme.txt": b"read me\n", "keep.txt": b"keep\n"}
    tip = history.commit(files)
    renamed = history.commit({"keep.txt": b"keep\n", "docs/README.md": b"read me\n"}, [tip])
    repo = history.repo
    missing = ids(missing_objects(repo, [renamed], [tip]))
    need = required(repo.path, [renamed], [tip])
    assert need <= missing
    # the only extra is the renamed content itself, sent again under its new name
    assert missing - need <= {str(repo.create_blob(b"read me\n"))}
    assert str(repo.create_blob(b"keep\n")) not in missing


def test_subtree_moved(history: History) -> None:
    sub = {"lib/x.py": b"x\n", "lib/y/z.py": b"z\n"}
    tip = history.commit({**sub, "main.py": b"main\n"})
    moved = history.commit(
        {"src/lib/x.py": b"x\n", "src/lib/y/z.py": b"z\n", "main.py": b"main\n"}, [tip]
    )
    repo = history.repo
    missing = ids(missing_objects(repo, [moved], [tip]))
    need = required(repo.path, [moved], [tip])
    assert need <= missing
    lib_tree = repo[tip].tree["lib"].id
    assert repo[moved].tree["src"].id != lib_tree
    assert str(repo.create_blob(b"main\n")) not in missing
    # whatever is extra lies inside the moved subtree
    inside = required(repo.path, [lib_tree], [])
    assert missing - need <= inside


def test_haves_the_repository_lacks_are_ignored(history: History) -> None:
    tip = history.commit({"a": b"a\n"})
    new = history.commit({"a": b"b\n"}, [tip])
    unknown = pygit2.Oid(hex="1234567890" * 4)
    repo = history.repo
    assert missing_objects(repo, [new], [unknown, tip]) == missing_objects(repo, [new], [tip])
    assert missing_objects(repo, [new], [unknown]) == missing_objects(repo, [new], [])
    assert missing_objects(repo, [], [tip]) == []


def test_haves_that_are_tags_of_commits_trees_and_blobs(history: History) -> None:
    """A peer may advertise tags of anything; commits behind tags count, the rest is
    ignored."""
    repo = history.repo
    tip = history.commit({"a": b"a\n", "d/b": b"b\n"})
    new = history.commit({"a": b"a2\n", "d/b": b"b\n"}, [tip])
    commit_tag = repo.create_tag("c", tip, pygit2.enums.ObjectType.COMMIT, SIGNATURE, "c\n")
    tree_tag = repo.create_tag(
        "t", repo[tip].tree.id, pygit2.enums.ObjectType.TREE, SIGNATURE, "t\n"
    )
    blob = repo.create_blob(b"b\n")
    blob_tag = repo.create_tag("b", blob, pygit2.enums.ObjectType.BLOB, SIGNATURE, "b\n")
    haves = [tree_tag, blob_tag, blob, repo[tip].tree.id, commit_tag]
    assert missing_objects(repo, [new], haves) == missing_objects(repo, [new], [tip])
    assert missing_objects(repo, [new], haves[:4]) == missing_objects(repo, [new], [])


def test_gitlinks_are_not_sent(history: History) -> None:
    submodule_commit = "ab" * 20  # lives in another repository
    c = history.commit({"a": b"a\n"}, gitlinks={"vendor/lib": submodule_commit})
    missing = ids(missing_objects(history.repo, [c], []))
    assert submodule_commit not in missing
    assert missing == required(history.repo.path, [c], [])


def test_several_wants(history: History) -> None:
    base = history.commit({"a": b"a\n"})
    one = history.commit({"a": b"a\n", "one": b"1\n"}, [base])
    two = history.commit({"a": b"a\n", "two": b"2\n"}, [base])
    missing = missing_objects(history.repo, [one, two], [base])
    assert ids(missing) == required(history.repo.path, [one, two], [base])
    assert len(missing) == len(set(missing))


# --- pack_is_small ---------------------------------------------------------------------------


def test_pack_is_small_limits(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = history.repo
    blobs = [repo.create_blob(b"%d" % i) for i in range(pack_module.INPROCESS_MAX_OBJECTS + 1)]
    assert pack_is_small(repo, blobs[:-1])
    assert not pack_is_small(repo, blobs)
    assert pack_is_small(repo, [])
    monkeypatch.setattr(pack_module, "INPROCESS_MAX_BYTES", 1000)
    assert pack_is_small(repo, [repo.create_blob(b"x" * 1000)])
    assert not pack_is_small(repo, [repo.create_blob(b"x" * 1001)])
    assert not pack_is_small(repo, [repo.create_blob(b"y" * 600), repo.create_blob(b"z" * 600)])


def test_pack_is_small_default_byte_limit(history: History) -> None:
    big = history.repo.create_blob(b"\0" * (pack_module.INPROCESS_MAX_BYTES + 1))
    assert not pack_is_small(history.repo, [big])


# --- property: the pack completes any peer that has the haves -------------------------------

NAMES = ["a", "b", "d/c", "d/e/f", "g/h", "d/e/i"]
CONTENTS = [b"", b"one\n", b"two\n", b"three\n"]

operation = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.sampled_from(CONTENTS)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just(b"")),
    st.tuples(st.just("move"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("movedir"), st.sampled_from(["d", "d/e", "g"]), st.sampled_from(["x", "y"])),
)

step = st.tuples(
    st.integers(min_value=0, max_value=50),  # parent, modulo the commits so far
    st.one_of(st.none(), st.integers(min_value=0, max_value=50)),  # second parent of a merge
    st.lists(operation, max_size=4),
)


def apply(files: dict[str, bytes], op: tuple[str, str, object]) -> dict[str, bytes]:
    kind, name, arg = op
    out = dict(files)
    if kind == "write":
        out[name] = arg  # type: ignore[assignment]
        # a path cannot be both a file and a directory
        for other in list(out):
            if other != name and (other.startswith(name + "/") or name.startswith(other + "/")):
                del out[other]
    elif kind == "delete":
        out.pop(name, None)
    elif kind == "move" and name in out:
        out = apply({k: v for k, v in out.items() if k != name}, ("write", str(arg), out[name]))
    elif kind == "movedir":
        for path in [p for p in out if p.startswith(name + "/")]:
            out = apply(out, ("write", f"{arg}/{path}", out.pop(path)))
    return out


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    steps=st.lists(step, min_size=1, max_size=7),
    picks=st.data(),
)
def test_pack_of_missing_objects_completes_the_peer(
    steps: list[tuple[int, int | None, list[tuple[str, str, object]]]], picks: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "ours.git")
        commits: list[pygit2.Oid] = []
        contents: list[dict[str, bytes]] = []
        for parent, other, ops in steps:
            parents: list[int] = []
            files: dict[str, bytes] = {}
            if commits:
                parents.append(parent % len(commits))
                files = dict(contents[parents[0]])
                if other is not None and other % len(commits) != parents[0]:
                    parents.append(other % len(commits))
                    for path, data in contents[parents[1]].items():
                        files = apply(files, ("write", path, data))
            for op in ops:
                files = apply(files, op)
            commits.append(history.commit(files, [commits[i] for i in parents]))
            contents.append(files)

        wants = picks.draw(st.lists(st.sampled_from(commits), min_size=1, max_size=2))
        haves = picks.draw(st.lists(st.sampled_from(commits), max_size=3))
        bogus = pygit2.Oid(hex="f" * 40)
        repo = history.repo

        # a peer holding exactly the haves' history
        peer = fresh_bare(Path(tmp) / "peer.git")
        if haves:
            base = subprocess.run(
                ["git", "pack-objects", "--revs", "--stdout", "-q"],
                input="".join(f"{h}\n" for h in haves).encode(),
                capture_output=True,
                env={**os.environ, "GIT_DIR": repo.path},
                check=True,
            ).stdout
            assert index_pack(peer, base).returncode == 0

        missing = missing_objects(repo, wants, [*haves, bogus])
        assert len(missing) == len(set(missing))
        assert required(repo.path, wants, haves) <= ids(missing)
        proc = index_pack(peer, write_pack(repo, missing))
        assert proc.returncode == 0, proc.stderr.decode()
        for i, want in enumerate(wants):
            git(peer, "update-ref", f"refs/heads/w{i}", str(want))
        fsck = subprocess.run(
            ["git", "-C", str(peer), "fsck", "--strict", "--connectivity-only", "--no-dangling"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert not fsck.stdout.strip(), fsck.stdout

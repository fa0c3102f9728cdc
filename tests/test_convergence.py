"""Convergence, property-based: two and three repositories start from a common seed, make
random concurrent histories (create, modify, delete, rename, chmod; the same and different
files; text, binary and symlinks), then fetch each other's heads and merge in random orders.

Every repository must end on the same commit; merge(a, b) and merge(b, a) must be the same
commit; a further round must create nothing; and no version may be lost, either by one merge
(relative to its merge base) or overall (relative to the seed, for every tip that was merged).
"""

from __future__ import annotations

from pathlib import Path

import pygit2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.changes import Entry
from assistant.merge import merge_base, merge_commits, variant_path

FILE, EXEC, LINK, TREE = 0o100644, 0o100755, 0o120000, 0o040000
T0 = 1_700_000_000
BRANCH = "refs/heads/main"

Snapshot = dict[str, tuple[bytes, int]]

SEED: Snapshot = {
    "notes.md": (b"seed notes\n", FILE),
    "docs/readme.md": (b"read me\n", FILE),
    "img.bin": (bytes(range(256)), FILE),
    "run.sh": (b"#!/bin/sh\necho hi\n", EXEC),
    "todo.txt": (b"one\ntwo\nthree\n", FILE),
}
PATHS = [
    "notes.md",
    "docs/readme.md",
    "docs",
    "img.bin",
    "run.sh",
    "todo.txt",
    "new.txt",
    "x/y.txt",
    "x",
]
CONTENTS = [
    b"alpha\n",
    b"beta\n",
    b"one\ntwo\nTHREE\n",
    b"\x00\x01\x02 binary \xff\xfe",
    b"\x89PNG\r\n\x1a\n\x00\x00",
    b"notes.md",  # also a fine symlink target
]

# --- random histories ------------------------------------------------------------------------

ops = st.one_of(
    st.tuples(
        st.just("write"),
        st.sampled_from(PATHS),
        st.sampled_from(CONTENTS),
        st.sampled_from([FILE, FILE, FILE, EXEC, LINK]),
    ),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(st.just("rename"), st.sampled_from(PATHS), st.sampled_from(PATHS)),
    st.tuples(st.just("chmod"), st.sampled_from(PATHS)),
)
# a history: commits, each a few operations and a commit time (close together, ties too)
histories = st.lists(
    st.tuples(st.lists(ops, min_size=1, max_size=3), st.integers(0, 4)), max_size=3
)


def _put(files: Snapshot, path: str, value: tuple[bytes, int]) -> None:
    """Write a file, replacing a file that stands where a directory is needed or a
    directory that stands where the file goes."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        files.pop("/".join(parts[:i]), None)
    for other in [p for p in files if p.startswith(path + "/")]:
        del files[other]
    files[path] = value


def apply_op(files: Snapshot, op: tuple) -> None:
    kind, path = op[0], op[1]
    if kind == "write":
        _put(files, path, (op[2], op[3]))
    elif kind == "delete":
        for other in [p for p in files if p == path or p.startswith(path + "/")]:
            del files[other]
    elif kind == "rename":
        if path in files and op[2] != path:
            _put(files, op[2], files.pop(path))
    elif kind == "chmod" and path in files and files[path][1] != LINK:
        data, mode = files[path]
        files[path] = (data, EXEC if mode == FILE else FILE)


# --- repositories --------------------------------------------------------------------------------


def write_commit(
    repo: pygit2.Repository, files: Snapshot, parents: list[pygit2.Oid], when: int, node: str
) -> pygit2.Oid:
    index = pygit2.Index()
    for path, (data, mode) in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
    sig = pygit2.Signature(node, f"{node}@example.com", when, 0)
    message = f"edit\n\nAnnexsync-Node: {node}\n"
    return repo.create_commit(None, sig, sig, message, index.write_tree(repo), parents)


def entries(repo: pygit2.Repository, oid: pygit2.Oid | None) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    if oid is None:
        return out
    stack = [("", repo[oid].peel(pygit2.Tree))]
    while stack:
        prefix, tree = stack.pop()
        for item in tree:
            if item.filemode == TREE:
                stack.append((f"{prefix}{item.name}/", repo[item.id]))
            else:
                out[prefix + item.name] = Entry(str(item.id), item.filemode)
    return out


def kind(entry: Entry) -> str:
    return "link" if entry.mode == LINK else "file"


def lost_versions(final: dict[str, Entry], before: dict[str, Entry], tip: dict[str, Entry]) -> list:
    """Versions ``tip`` changed relative to ``before`` that ``final`` no longer has: content
    (and kind) at the path or at a variant name from its blob id; a mode-only change as the
    mode at its path (possibly combined with the other side's content) or as a variant."""
    lost = []
    for path, entry in tip.items():
        old = before.get(path)
        if entry == old:
            continue
        names = [path] + [variant_path(path, entry.oid, d) for d in range(8, 41)]
        found = [final[n] for n in names if n in final]
        if old is not None and old.oid == entry.oid:
            ok = entry in found or (path in final and final[path].mode == entry.mode)
        else:
            ok = any(e.oid == entry.oid and kind(e) == kind(entry) for e in found)
        if not ok:
            lost.append((path, entry))
    return lost


class Network:
    """Bare repositories that know each other, each with its head on main."""

    def __init__(self, root: Path, count: int) -> None:
        self.repos: list[pygit2.Repository] = []
        seeds = set()
        for i in range(count):
            repo = pygit2.init_repository(str(root / f"r{i}.git"), bare=True)
            seed = write_commit(repo, SEED, [], T0, "seed")
            repo.references.create(BRANCH, seed)
            self.repos.append(repo)
            seeds.add(seed)
        assert len(seeds) == 1, "the same seed commit everywhere"
        self.seed = seeds.pop()
        self.merged_tips: set[pygit2.Oid] = set()
        self.merges = 0

    def head(self, i: int) -> pygit2.Oid:
        return self.repos[i].references[BRANCH].target

    def commit_history(self, i: int, history: list, when: int = T0 + 10) -> None:
        repo = self.repos[i]
        files = {p: (repo[e.oid].data, e.mode) for p, e in entries(repo, self.head(i)).items()}
        for commit_ops, offset in history:
            for op in commit_ops:
                apply_op(files, op)
            oid = write_commit(repo, files, [self.head(i)], when + offset, f"node{i}")
            repo.references[BRANCH].set_target(oid)

    def step(self, i: int, j: int) -> str:
        """Repository ``i`` fetches ``j``'s head and merges it; returns how."""
        if i == j:
            return "up-to-date"
        repo = self.repos[i]
        remote = repo.remotes.create_anonymous(self.repos[j].path)
        remote.fetch([f"+{BRANCH}:refs/remotes/r{j}/main"])
        ours, theirs = self.head(i), repo.references[f"refs/remotes/r{j}/main"].target
        assert theirs == self.head(j)
        outcome = merge_commits(repo, ours, theirs)
        again = merge_commits(repo, theirs, ours)
        assert again.commit == outcome.commit, "merge(a, b) and merge(b, a) differ"
        assert again.kind == outcome.kind or {again.kind, outcome.kind} == {
            "up-to-date",
            "fast-forward",
        }
        if outcome.kind == "merge":
            self.merges += 1
            base = merge_base(repo, ours, theirs)
            final = entries(repo, outcome.commit)
            before = entries(repo, base)
            for tip in (ours, theirs):
                lost = lost_versions(final, before, entries(repo, tip))
                assert not lost, f"merge lost {lost}"
            for data in (repo[e.oid].data for e in final.values()):
                assert b"<<<<<<<" not in data
        self.merged_tips.update((ours, theirs, outcome.commit))
        repo.references[BRANCH].set_target(outcome.commit)
        return outcome.kind

    def settle(self, rounds: int = 6) -> int:
        """Every repository merges every other until a whole round changes nothing."""
        n = len(self.repos)
        for done in range(rounds):
            moved = False
            for i in range(n):
                for j in range(n):
                    if i != j and self.step(i, j) != "up-to-date":
                        moved = True
            if not moved:
                return done
        raise AssertionError(f"no convergence after {rounds} rounds")


def assert_converged(net: Network) -> None:
    heads = {net.head(i) for i in range(len(net.repos))}
    assert len(heads) == 1, "every repository ends on the same commit"
    trees = {net.repos[i][net.head(i)].peel(pygit2.Tree).id for i in range(len(net.repos))}
    assert len(trees) == 1
    # a further round creates nothing
    objects = [len(set(r.odb)) for r in net.repos]
    assert net.settle(rounds=1) == 0
    assert {net.head(i) for i in range(len(net.repos))} == heads
    assert [len(set(r.odb)) for r in net.repos] == objects


def check_nothing_lost(net: Network, leaf_tips: list[pygit2.Oid]) -> None:
    repo = net.repos[0]
    final = entries(repo, net.head(0))
    seed = entries(repo, net.seed)
    for tip in {*leaf_tips, *net.merged_tips}:
        lost = lost_versions(final, seed, entries(repo, tip))
        assert not lost, f"versions of {str(tip)[:8]} lost: {lost}"


SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _run(tmp_path: Path, name: str, count: int, hists: list, schedule: list) -> Network:
    root = tmp_path / name
    root.mkdir()
    net = Network(root, count)
    for i, history in enumerate(hists):
        net.commit_history(i, history)
    leaves = [net.head(i) for i in range(count)]
    for i, j in schedule:
        net.step(i % count, j % count)
    net.settle()
    assert_converged(net)
    check_nothing_lost(net, leaves)
    return net


_counter = iter(range(10**9))


@SETTINGS
@given(
    hists=st.lists(histories, min_size=2, max_size=2),
    schedule=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), max_size=4),
)
def test_two_repositories_converge(tmp_path: Path, hists: list, schedule: list) -> None:
    _run(tmp_path, f"two-{next(_counter)}", 2, hists, schedule)


@SETTINGS
@given(
    hists=st.lists(histories, min_size=3, max_size=3),
    schedule=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=8),
)
def test_three_repositories_converge(tmp_path: Path, hists: list, schedule: list) -> None:
    _run(tmp_path, f"three-{next(_counter)}", 3, hists, schedule)


@SETTINGS
@given(
    first=st.lists(histories, min_size=3, max_size=3),
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), histories),
        min_size=1,
        max_size=5,
    ),
)
def test_edits_between_merges_still_converge(tmp_path: Path, first: list, plan: list) -> None:
    """Nodes keep editing between merges (criss-cross histories arise): each merge still
    keeps every version relative to its merge base, and all nodes still converge."""
    root = tmp_path / f"interleaved-{next(_counter)}"
    root.mkdir()
    net = Network(root, 3)
    for i, history in enumerate(first):
        net.commit_history(i, history)
    for step, (i, j, history) in enumerate(plan):
        net.step(i, j)
        net.commit_history(j, history, when=T0 + 100 * (step + 1))
    net.settle()
    assert_converged(net)


def test_a_typical_three_way_conflict_converges_with_every_version(tmp_path: Path) -> None:
    """The same file edited on three nodes: one keeps the path, two variants, everywhere."""
    net = Network(tmp_path, 3)
    for i in range(3):
        net.commit_history(i, [([("write", "notes.md", CONTENTS[i], FILE)], i)])
    leaves = [net.head(i) for i in range(3)]
    net.step(1, 0)
    net.step(2, 1)
    net.settle()
    assert_converged(net)
    check_nothing_lost(net, leaves)
    final = entries(net.repos[0], net.head(0))
    notes = {p: e for p, e in final.items() if p.startswith("notes.")}
    assert len(notes) == 3
    assert net.repos[0][final["notes.md"].oid].data == CONTENTS[2]  # the newest edit

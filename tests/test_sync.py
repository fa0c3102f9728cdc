"""`annexsync sync` end to end between real repositories on local paths (non-bare peers and a
bare hub), and the working-tree update in-process: edits made while it runs, and which files
it touches."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from conftest import Daemon, annexsync, commit_count, git, head_files, wait_until

import assistant.integrate as integrate_module
from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.integrate import integrate
from assistant.node import ensure_initialised

T0 = 1_700_000_000


# --- nodes, a hub, and running sync ------------------------------------------------------------


def put(root: Path, rel: str, data: bytes | str) -> None:
    full = root / rel
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_bytes(data.encode() if isinstance(data, str) else data)


def make_node(tmp_path: Path, name: str, files: dict[str, str] | None = None) -> Path:
    path = tmp_path / name
    path.mkdir()
    git(path, "init", "-q")
    pygit2.Repository(str(path)).config["annexsync.name"] = name
    for rel, data in (files or {}).items():
        put(path, rel, data)
    return path


def make_hub(tmp_path: Path) -> Path:
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    return hub


def add_remote(node: Path, name: str, url: Path | str, **switches: str) -> None:
    git(node, "remote", "add", name, str(url))
    for key, value in switches.items():
        git(node, "config", f"remote.{name}.annexsync-{key}", value)


def sync(node: Path, *args: str, expect: int | None = 0) -> tuple[int, str, str]:
    proc = annexsync("-C", str(node), "sync", *args)
    out = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    if expect is not None:
        assert proc.returncode == expect, out
    assert "Traceback" not in proc.stderr, out
    return proc.returncode, proc.stdout, proc.stderr


def sync_json(node: Path, *args: str, expect: int | None = 0) -> dict:
    _, out, _ = sync(node, "--json", *args, expect=expect)
    return json.loads(out)


def disk_files(root: Path) -> dict[str, bytes]:
    """Every file and symlink of the working tree (outside .git), path -> bytes."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames + [d for d in dirnames if os.path.islink(Path(dirpath, d))]:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            out[rel] = os.fsencode(os.readlink(full)) if full.is_symlink() else full.read_bytes()
    return out


def head_id(path: Path, ref: str = "HEAD") -> str:
    return git(path, "rev-parse", "--verify", "-q", ref, check=False).strip()


def assert_settled(node: Path) -> None:
    """The working tree is HEAD's tree, the index agrees, and nothing is left over."""
    assert disk_files(node) == head_files(node)
    assert git(node, "status", "--porcelain", "--untracked-files=all") == ""


def assert_no_markers(node: Path) -> None:
    for path, data in head_files(node).items():
        assert b"<<<<<<<" not in data and b">>>>>>>" not in data, path


def variants_of(files: dict[str, bytes], stem: str) -> dict[str, bytes]:
    return {p: d for p, d in files.items() if p.startswith(f"{stem}.variant-")}


def seeded_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """alpha and beta share a first commit through a bare hub."""
    hub = make_hub(tmp_path)
    alpha = make_node(tmp_path, "alpha", {"notes.md": "shared notes\n", "other.txt": "other\n"})
    beta = make_node(tmp_path, "beta")
    add_remote(alpha, "hub", hub)
    add_remote(beta, "hub", hub)
    sync(alpha)
    sync(beta)
    assert head_id(alpha) == head_id(beta) == head_id(hub, "refs/heads/main")
    return hub, alpha, beta


# --- two nodes, one hub --------------------------------------------------------------------------


def test_concurrent_edits_through_a_hub_converge_keeping_both_versions(tmp_path: Path) -> None:
    hub, alpha, beta = seeded_pair(tmp_path)
    assert_settled(beta)
    put(alpha, "notes.md", "alpha's version\n")
    put(beta, "notes.md", "beta's version\n")
    put(beta, "beta-only.txt", "b\n")
    sync(alpha)
    _, out, err = sync(beta)
    assert "merge: merge" in out
    assert "kept both versions of notes.md" in out + err
    sync(alpha)

    assert head_id(alpha) == head_id(beta) == head_id(hub, "refs/heads/main")
    files = head_files(alpha)
    assert files == head_files(beta)
    assert files["beta-only.txt"] == b"b\n"
    notes = {p: d for p, d in files.items() if p.startswith("notes.")}
    assert sorted(notes.values()) == [b"alpha's version\n", b"beta's version\n"]
    assert len(variants_of(files, "notes")) == 1
    for node in (alpha, beta):
        assert_settled(node)
        assert_no_markers(node)

    counts = (commit_count(alpha), commit_count(beta))
    heads = (head_id(alpha), head_id(beta))
    for _ in range(2):
        sync(beta)
        sync(alpha)
    assert (commit_count(alpha), commit_count(beta)) == counts
    assert (head_id(alpha), head_id(beta)) == heads


def test_merge_commit_is_the_same_whichever_node_merges(tmp_path: Path) -> None:
    """Both nodes fetch the other's commit before either merges: each merges on its own and
    they create the identical commit, so nothing is left to merge or push afterwards."""
    _hub, alpha, beta = seeded_pair(tmp_path)
    pairs = ((alpha, "beta"), (beta, "alpha"))
    for node, other in pairs:
        add_remote(node, other, tmp_path / other, push="false", sync="false")
        git(node, "config", "remote.hub.annexsync-sync", "false")
    put(alpha, "notes.md", "from alpha\n")
    put(beta, "notes.md", "from beta\n")
    for node in (alpha, beta):
        sync(node)  # commits; reaches no remote
    mine = sorted((head_id(alpha), head_id(beta)))
    for node, other in pairs:
        assert annexsync("-C", str(node), "fetch", other).returncode == 0
        # from now on the other node is out of reach: each merges what it has, on its own
        git(node, "remote", "set-url", other, str(tmp_path / "out-of-reach"))
    for node, other in pairs:
        sync(node, other, expect=None)  # the fetch fails; the merge of what came happens
    assert head_id(alpha) == head_id(beta)
    merge = pygit2.Repository(str(alpha)).head.peel(pygit2.Commit)
    assert sorted(str(p) for p in merge.parent_ids) == mine
    assert merge.author.email == "annexsync@merge"
    for node in (alpha, beta):
        assert_settled(node)
    counts = (commit_count(alpha), commit_count(beta))
    for node, other in pairs:
        git(node, "config", "--unset-all", "remote.hub.annexsync-sync")
        git(node, "config", "--unset-all", f"remote.{other}.annexsync-sync")
        git(node, "config", "--unset-all", f"remote.{other}.annexsync-push")
        git(node, "remote", "set-url", other, str(tmp_path / other))
    sync(alpha)
    sync(beta)
    sync(alpha)
    assert head_id(alpha) == head_id(beta) == str(merge.id)
    assert (commit_count(alpha), commit_count(beta)) == counts


def test_pending_local_changes_are_committed_before_merging(tmp_path: Path) -> None:
    _hub, alpha, beta = seeded_pair(tmp_path)
    put(alpha, "notes.md", "alpha edit\n")
    sync(alpha)
    put(beta, "notes.md", "beta edit, not committed yet\n")
    (beta / "other.txt").unlink()
    _, out, _ = sync(beta)
    assert out.startswith("committed ")
    repo = pygit2.Repository(str(beta))
    merge = repo.head.peel(pygit2.Commit)
    assert len(merge.parents) == 2
    mine = next(p for p in merge.parents if "Annexsync-Node: beta" in p.message)
    assert mine.tree["notes.md"].data == b"beta edit, not committed yet\n"
    assert "other.txt" not in mine.tree
    files = head_files(beta)
    assert "other.txt" not in files
    assert sorted(d for p, d in files.items() if p.startswith("notes.")) == [
        b"alpha edit\n",
        b"beta edit, not committed yet\n",
    ]
    assert_settled(beta)


def test_sync_through_a_running_assistant(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    _hub, alpha, beta = seeded_pair(tmp_path)
    assistant = daemon_factory(beta).start()
    put(alpha, "notes.md", "alpha's version\n")
    sync(alpha)
    put(beta, "notes.md", "beta's version\n")
    sync(beta)  # answered by the running assistant
    sync(alpha)
    assert head_id(alpha) == head_id(beta)
    files = head_files(beta)
    assert sorted(d for p, d in files.items() if p.startswith("notes.")) == [
        b"alpha's version\n",
        b"beta's version\n",
    ]
    wait_until(assistant.idle)
    assert_settled(beta)
    count = commit_count(beta)
    sync(beta)
    wait_until(assistant.idle)
    assert commit_count(beta) == count
    assert assistant.stop() == 0


# --- non-bare peers -----------------------------------------------------------------------------


def test_pushing_to_a_non_bare_peer_lands_in_synced_ref_and_the_peer_merges_it(
    tmp_path: Path,
) -> None:
    alpha = make_node(tmp_path, "alpha", {"a.txt": "from alpha\n", "dir/x": "x\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "from beta\n"})
    add_remote(alpha, "beta", beta)
    sync(beta)  # beta commits its own file; it has no remotes
    beta_before = head_id(beta)
    sync(alpha)
    # alpha fetched and merged beta's branch, then pushed to beta's synced ref, not its branch
    assert head_files(alpha) == {"a.txt": b"from alpha\n", "dir/x": b"x\n", "b.txt": b"from beta\n"}
    assert head_id(beta, "refs/remotes/alpha/synced/main") == head_id(alpha)
    assert head_id(beta) == beta_before
    assert "a.txt" not in disk_files(beta)
    # beta syncs with alpha without fetching: what alpha pushed is merged all the same
    add_remote(beta, "alpha", alpha, pull="false")
    sync(beta)
    assert head_id(beta) == head_id(alpha)
    assert_settled(beta)
    assert not git(beta, "for-each-ref", "refs/remotes/alpha/main")


def test_a_node_without_remotes_merges_what_peers_pushed_to_it(tmp_path: Path) -> None:
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "b\n"})
    add_remote(alpha, "beta", beta)
    sync(beta)
    sync(alpha)
    sync(beta)
    assert head_id(beta) == head_id(alpha)
    assert disk_files(beta) == {"a.txt": b"a\n", "b.txt": b"b\n"}


def test_push_switch_off_fetches_and_merges_but_never_pushes(tmp_path: Path) -> None:
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "b\n"})
    sync(beta)
    add_remote(alpha, "beta", beta, push="false")
    report = sync_json(alpha)
    (remote,) = report["sync"]["remotes"]
    assert remote["remote"] == "beta"
    assert remote["fetch"]["ok"] and remote["push"] is None
    assert head_files(alpha) == {"a.txt": b"a\n", "b.txt": b"b\n"}
    assert git(beta, "for-each-ref", "refs/remotes/") == ""
    assert head_files(beta) == {"b.txt": b"b\n"}


def test_pull_switch_off_pushes_but_never_fetches(tmp_path: Path) -> None:
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "b\n"})
    sync(beta)
    add_remote(alpha, "beta", beta, pull="false")
    report = sync_json(alpha)
    (remote,) = report["sync"]["remotes"]
    assert remote["fetch"] is None and remote["push"]["ok"]
    assert head_files(alpha) == {"a.txt": b"a\n"}
    assert git(alpha, "for-each-ref", "refs/remotes/") == ""
    assert head_id(beta, "refs/remotes/alpha/synced/main") == head_id(alpha)


def test_sync_switch_off_leaves_the_remote_out_unless_named(tmp_path: Path) -> None:
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "b\n"})
    sync(beta)
    add_remote(alpha, "beta", beta, sync="false")
    report = sync_json(alpha)
    assert report["sync"] is None or report["sync"]["remotes"] == []
    assert head_files(alpha) == {"a.txt": b"a\n"}
    report = sync_json(alpha, "beta")
    assert [r["remote"] for r in report["sync"]["remotes"]] == ["beta"]
    assert head_files(alpha) == {"a.txt": b"a\n", "b.txt": b"b\n"}


# --- output and exit codes ----------------------------------------------------------------------


def test_json_output_has_one_entry_per_remote(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    beta = make_node(tmp_path, "beta", {"b.txt": "b\n"})
    sync(beta)
    add_remote(alpha, "hub", hub)
    add_remote(alpha, "beta", beta)
    report = sync_json(alpha)
    assert report["ok"] is True
    assert report["commit"] and report["commit"] == report["commit"].strip()
    sync_part = report["sync"]
    assert sync_part["ok"] is True
    assert sync_part["merge"]["kind"] in ("merge", "fast-forward")
    assert sync_part["merge"]["head"] == head_id(alpha)
    assert "refs/remotes/beta/main" in sync_part["merge"]["merged"]
    by_name = {r["remote"]: r for r in sync_part["remotes"]}
    assert sorted(by_name) == ["beta", "hub"]
    for entry in by_name.values():
        assert entry["ok"] is True
        assert entry["line"].startswith(entry["remote"] + ": ")
        assert entry["fetch"]["ok"] and entry["push"]["ok"]
    assert "refs/heads/main" in by_name["hub"]["push"]["refs"]
    assert "refs/remotes/alpha/synced/main" in by_name["beta"]["push"]["refs"]


def test_a_failing_remote_gives_a_non_zero_exit_while_the_others_sync(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    alpha = make_node(tmp_path, "alpha", {"a.txt": "a\n"})
    add_remote(alpha, "gone", tmp_path / "no-such-repository")
    add_remote(alpha, "hub", hub)
    code, out, err = sync(alpha, expect=None)
    assert code != 0
    assert "gone:" in err
    assert "hub:" in out and "pushed" in out
    assert head_id(hub, "refs/heads/main") == head_id(alpha)
    put(alpha, "a.txt", "a2\n")
    report = sync_json(alpha, expect=None)
    assert report["ok"] is False
    by_name = {r["remote"]: r for r in report["sync"]["remotes"]}
    assert by_name["gone"]["ok"] is False
    assert by_name["hub"]["ok"] is True
    assert head_id(hub, "refs/heads/main") == head_id(alpha)


# --- resolvemerge=false ---------------------------------------------------------------------------


@pytest.mark.parametrize("through", ["hub", "peer"])
def test_resolvemerge_false_holds_a_conflicting_merge_back(tmp_path: Path, through: str) -> None:
    if through == "hub":
        _hub, alpha, beta = seeded_pair(tmp_path)
        put(alpha, "notes.md", "alpha's version\n")
        sync(alpha)
    else:
        alpha = make_node(tmp_path, "alpha", {"notes.md": "shared\n"})
        beta = make_node(tmp_path, "beta")
        add_remote(beta, "alpha", alpha)
        sync(alpha)
        sync(beta)
        put(alpha, "notes.md", "alpha's version\n")
        sync(alpha)
    git(beta, "config", "annexsync.resolvemerge", "false")
    put(beta, "notes.md", "beta's version\n")
    put(beta, "untouched.txt", "mine\n")
    code, out, err = sync(beta, expect=None)
    assert code != 0
    assert "not merged" in out + err and "resolvemerge" in out + err
    repo = pygit2.Repository(str(beta))
    head = repo.head.peel(pygit2.Commit)
    assert len(head.parents) == 1, "no merge commit"
    assert "Annexsync-Node: beta" in head.message
    assert disk_files(beta)["notes.md"] == b"beta's version\n"
    assert variants_of(disk_files(beta), "notes") == {}
    assert_settled(beta)
    report = sync_json(beta, expect=None)
    assert report["ok"] is False
    assert report["sync"]["merge"]["held_back"]
    assert len(repo.head.peel(pygit2.Commit).parents) == 1
    status = annexsync("-C", str(beta), "status")
    assert "not merged: refs/remotes/" in status.stdout and "resolvemerge" in status.stdout
    held = json.loads(annexsync("-C", str(beta), "status", "--json").stdout)["held_merges"]
    assert held and all("resolvemerge" in why for why in held.values())
    # turning resolution back on merges it, and status no longer reports it
    git(beta, "config", "annexsync.resolvemerge", "true")
    sync(beta)
    assert "not merged" not in annexsync("-C", str(beta), "status").stdout
    files = head_files(beta)
    assert sorted(d for p, d in files.items() if p.startswith("notes.")) == [
        b"alpha's version\n",
        b"beta's version\n",
    ]
    assert_settled(beta)


def test_resolvemerge_false_still_merges_what_does_not_conflict(tmp_path: Path) -> None:
    _hub, alpha, beta = seeded_pair(tmp_path)
    git(beta, "config", "annexsync.resolvemerge", "false")
    put(alpha, "notes.md", "alpha's version\n")
    put(beta, "new.txt", "beta\n")
    sync(alpha)
    sync(beta)
    sync(alpha)
    assert head_id(alpha) == head_id(beta)
    assert head_files(beta)["notes.md"] == b"alpha's version\n"


# --- the working-tree update, in-process ----------------------------------------------------------


def engine(path: Path) -> AutoCommitter:
    r = pygit2.Repository(str(path))
    ac = AutoCommitter(r, ensure_initialised(r, name="laptop"), Settings())
    ac.git_settle = 0.0  # git commands run right before the engine in these tests
    return ac


def seeded_engine(repo: Path, files: dict[str, str]) -> AutoCommitter:
    for rel, data in files.items():
        put(repo, rel, data)
    ac = engine(repo)
    assert ac.commit_paths([""]).commit is not None
    assert ac.sync_index()
    return ac


def incoming(
    ac: AutoCommitter,
    changes: dict[str, str | None],
    parent: pygit2.Oid | None = None,
    when: int = T0,
) -> pygit2.Oid:
    """A peer's commit with ``changes`` (None deletes) on top of ``parent`` (default: our
    HEAD), under refs/remotes/peer/main."""
    repo = ac.repo
    head = repo[parent or repo.head.target].peel(pygit2.Commit)
    builder = pygit2.Index()
    builder.read_tree(head.tree)
    for path, data in changes.items():
        if data is None:
            builder.remove(path)
        else:
            builder.add(pygit2.IndexEntry(path, repo.create_blob(data.encode()), 0o100644))
    sig = pygit2.Signature("peer", "peer@example.com", when, 0)
    oid = repo.create_commit(
        None, sig, sig, "peer edit\n\nAnnexsync-Node: peer\n", builder.write_tree(repo), [head.id]
    )
    repo.references.create("refs/remotes/peer/main", oid, force=True)
    return oid


def stats(root: Path, paths: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for path in paths:
        st = os.lstat(root / path)
        out[path] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return out


def user_edit(path: Path, data: str) -> None:
    """Change a file so its stamp (inode, size, mtime) surely differs."""
    path.write_text(data)
    later = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(later, later))


@pytest.mark.parametrize("local_commit", [False, True], ids=["fast-forward", "merge"])
def test_edit_during_the_tree_update_wins_and_the_incoming_version_is_kept(
    repo: Path, monkeypatch: pytest.MonkeyPatch, local_commit: bool
) -> None:
    ac = seeded_engine(repo, {"notes.md": "base\n", "gone.txt": "g\n", "keep.txt": "k\n"})
    seed = ac.repo.head.target
    if local_commit:
        put(repo, "keep.txt", "a local change\n")
        assert ac.commit_paths(["keep.txt"]).commit is not None
        assert ac.sync_index()
    changes: dict[str, str | None] = {
        "notes.md": "incoming\n",
        "gone.txt": None,
        "new.txt": "new\n",
    }
    peer = incoming(ac, changes, parent=seed)
    real_apply = integrate_module.apply
    calls = []

    def racing_apply(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not calls:
            user_edit(repo / "notes.md", "typed by the user while the merge ran\n")
            user_edit(repo / "gone.txt", "the user kept editing this one\n")
        calls.append(1)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(integrate_module, "apply", racing_apply)
    result = integrate(ac)
    assert result.paused is None, result.paused
    r = ac.repo
    head = r.head.peel(pygit2.Commit)
    assert r.descendant_of(head.id, peer), "the peer's commit is merged"
    files = disk_files(repo)
    assert files["notes.md"] == b"typed by the user while the merge ran\n"
    assert files["gone.txt"] == b"the user kept editing this one\n"
    assert files["new.txt"] == b"new\n"
    assert head_files(repo) == files, "the user's versions are committed"
    notes = [d for p, d in files.items() if p.startswith("notes.")]
    assert b"incoming\n" in notes, "the incoming version of notes.md is still in the tree"
    assert files["keep.txt"] == (b"a local change\n" if local_commit else b"k\n")
    assert result.kind == ("merge" if local_commit else "fast-forward")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_edit_just_before_the_tree_update_redoes_the_merge(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = seeded_engine(repo, {"notes.md": "base\n", "keep.txt": "k\n"})
    peer = incoming(ac, {"notes.md": "incoming\n", "new.txt": "new\n"})
    seed = ac.repo.head.target
    real_inspect = integrate_module.inspect
    calls = []

    def racing_inspect(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not calls:
            user_edit(repo / "notes.md", "typed by the user\n")
        calls.append(1)
        return real_inspect(*args, **kwargs)

    monkeypatch.setattr(integrate_module, "inspect", racing_inspect)
    result = integrate(ac)
    assert result.paused is None, result.paused
    assert len(calls) >= 2, "the merge was planned again after the edit"
    r = ac.repo
    head = r.head.peel(pygit2.Commit)
    assert r.descendant_of(head.id, peer)
    files = disk_files(repo)
    assert head_files(repo) == files
    notes = sorted(d for p, d in files.items() if p.startswith("notes."))
    assert notes == [b"incoming\n", b"typed by the user\n"]
    assert files["notes.md"] == b"typed by the user\n"  # the newer commit keeps the path
    user_commit = next(p for p in head.parents if p.id != peer)
    assert user_commit.parent_ids == [seed]
    assert user_commit.tree["notes.md"].data == b"typed by the user\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_tree_update_touches_only_the_changed_paths(repo: Path) -> None:
    unrelated = [f"dir{i}/file{j}.txt" for i in range(3) for j in range(5)]
    ac = seeded_engine(repo, {p: f"{p}\n" for p in [*unrelated, "changed.txt", "local.txt"]})
    put(repo, "local.txt", "a local edit\n")
    incoming(ac, {"changed.txt": "changed by the peer\n", "dir9/added.txt": "added\n"})
    before = stats(repo, unrelated)
    local_before = stats(repo, ["local.txt"])
    result = integrate(ac)
    assert result.kind == "merge" and result.paused is None
    assert stats(repo, unrelated) == before
    assert stats(repo, ["local.txt"]) == local_before
    files = disk_files(repo)
    assert files["changed.txt"] == b"changed by the peer\n"
    assert files["dir9/added.txt"] == b"added\n"
    assert files["local.txt"] == b"a local edit\n"
    assert head_files(repo) == files
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_sync_touches_only_the_changed_paths(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    unrelated = {f"d{i}/f{j}.txt": f"{i}-{j}\n" for i in range(3) for j in range(4)}
    alpha = make_node(tmp_path, "alpha", {**unrelated, "shared.txt": "v1\n"})
    beta = make_node(tmp_path, "beta")
    add_remote(alpha, "hub", hub)
    add_remote(beta, "hub", hub)
    sync(alpha)
    sync(beta)
    put(alpha, "shared.txt", "v2\n")
    sync(alpha)
    before = stats(beta, list(unrelated))
    sync(beta)
    assert stats(beta, list(unrelated)) == before
    assert (beta / "shared.txt").read_text() == "v2\n"
    assert_settled(beta)

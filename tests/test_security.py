"""The security model (docs/security.md), one section per guarantee, each proven against real
repositories, real assistants and, where the network matters, a real OpenSSH sshd.

1. Host keys are checked strictly: no trust on first use, a changed key stops the sync.
2. Names: node, remote and branch names that git or a shell would misread are refused, and
   remote paths cannot inject commands.
3. Incoming trees: checking out a peer's commit never writes through a symlink, outside the
   working tree or into .git; what git would refuse, annexsync refuses.
4. Hooks and config from peers never run here.
5. The control socket and the state directory are private to the user.
6. No secret (key, passphrase, agent contents) ever reaches a log, status or an error.

Where an existing test already proves a point, a comment names it instead of repeating it.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
import pytest
from conftest import Daemon, annexsync, git, head_files, wait_until
from test_sync import add_remote, disk_files, head_id, make_node, put, sync, sync_json

from assistant.autocommit import AutoCommitter
from assistant.checkout import UnsafePath, apply, inspect, path_problem, plan
from assistant.config import Settings
from assistant.daemon.control import private_dir_problem, socket_path
from assistant.merge import merge_message
from assistant.names import branch_name_problem, remote_name_problem
from assistant.node import ensure_initialised
from assistant.remotes import fetch_target, parse_url, read_remotes

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

Factory = Callable[[Path], Daemon]
# Sessions on a test sshd find this installation's annexsync (notify-changes) and git.
PEER_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


# --- helpers ---------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Everything under ``root`` (not following symlinks): path -> (mode, content or target)."""
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = os.lstat(full)
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, os.fsencode(os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_mode, full.read_bytes())
            else:
                out[rel] = (st.st_mode, b"")
    return out


def git_dir_snapshot(repo: Path) -> dict[str, tuple[int, bytes]]:
    """The parts of .git a peer's content must never reach: hooks, info and config (but
    the keys annexsync itself keeps there, such as a local peer's recorded uuid)."""
    git_dir = repo / ".git"
    out = {f"hooks/{k}": v for k, v in snapshot(git_dir / "hooks").items()}
    out.update({f"info/{k}": v for k, v in snapshot(git_dir / "info").items()})
    config = git(repo, "config", "--local", "--list").splitlines()
    kept = [
        line
        for line in config
        if not line.split("=")[0].split(".")[-1].startswith("annexsync")
        and not line.startswith("annexsync.")
    ]
    out["config"] = (0, "\n".join(kept).encode())
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A sentinel directory outside every working tree; the test asserts it never changes."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "sentinel.txt").write_text("must not change\n")
    (path / "hooks").mkdir()
    before = snapshot(path)
    yield path
    assert snapshot(path) == before, "something was written outside the working tree"


def hash_object(repo: Path, kind: str, data: bytes) -> str:
    """Store an object exactly as given (``--literally``: no checks), as a peer could."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", kind, "--literally", "-w", "--stdin"],
        input=data,
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode().strip()


def raw_tree(repo: Path, entries: list[tuple[str, bytes, str]], ordered: bool = True) -> str:
    """A tree object of (mode, name, oid) entries, in git's order unless ``ordered`` is
    False; names may hold anything, even what git itself would never write."""
    if ordered:
        entries = sorted(entries, key=lambda e: e[1] + (b"/" if e[0] == "40000" else b""))
    data = b"".join(
        f"{mode} ".encode() + name + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries
    )
    return hash_object(repo, "tree", data)


def tree_entries(repo: Path, rev: str) -> list[tuple[str, bytes, str]]:
    """The top-level entries of a commit's tree, as raw_tree takes them."""
    r = pygit2.Repository(str(repo))
    tree = r.revparse_single(rev).peel(pygit2.Tree)
    return [(f"{e.filemode:o}", e.raw_name, str(e.id)) for e in tree]


def commit_tree(repo: Path, tree: str, parent: str, message: str) -> str:
    return git(
        repo, "-c", "user.name=Evil", "-c", "user.email=evil@example.com",
        "commit-tree", tree, "-p", parent, "-m", message,
    ).strip()  # fmt: skip


HOOK = b"#!/bin/sh\necho fired >> /tmp/annexsync-security-canary\n"


def _hooks_dir(repo: Path) -> str:
    """A directory holding ``hooks/post-checkout``, the shape every .git attack aims for."""
    blob = hash_object(repo, "blob", HOOK)
    return raw_tree(
        repo, [("40000", b"hooks", raw_tree(repo, [("100755", b"post-checkout", blob)]))]
    )


def _nested(repo: Path, names: list[bytes], leaf: str) -> str:
    """Trees nested along ``names`` down to one file ``x`` holding blob ``leaf``."""
    oid = raw_tree(repo, [("100644", b"x", leaf)])
    for name in reversed(names):
        oid = raw_tree(repo, [("40000", name, oid)])
    return oid


def _link_and_dir(repo: Path, outside: Path, link_first: bool) -> list[tuple[str, bytes, str]]:
    link = hash_object(repo, "blob", os.fsencode(outside))
    below = raw_tree(repo, [("100644", b"file", hash_object(repo, "blob", b"escaped\n"))])
    pair = [("120000", b"d", link), ("40000", b"d", below)]
    return pair if link_first else pair[::-1]


# Each: what a peer's commit adds to the tree (entries at the top), and whether the entries
# are written in the given order rather than git's.
BAD_TREES: dict[str, Callable[[Path, Path], tuple[list[tuple[str, bytes, str]], bool]]] = {
    ".git/hooks": lambda r, o: ([("40000", b".git", _hooks_dir(r))], True),
    ".GIT/hooks": lambda r, o: ([("40000", b".GIT", _hooks_dir(r))], True),
    "sub/.git/hooks": lambda r, o: (
        [("40000", b"sub", raw_tree(r, [("40000", b".git", _hooks_dir(r))]))],
        True,
    ),
    "..": lambda r, o: ([("40000", b"..", _nested(r, [], hash_object(r, "blob", b"x\n")))], True),
    "a/../../x": lambda r, o: (
        [("40000", b"a", _nested(r, [b"..", b".."], hash_object(r, "blob", b"x\n")))],
        True,
    ),
    "ntfs git~1": lambda r, o: ([("40000", b"git~1", _hooks_dir(r))], True),
    "ntfs .git. .": lambda r, o: ([("40000", b".git. .", _hooks_dir(r))], True),
    "hfs .g\\u200cit": lambda r, o: ([("40000", ".g\u200cit".encode(), _hooks_dir(r))], True),
    "name with /": lambda r, o: (
        [("100644", b".git/config", hash_object(r, "blob", b"[core]\n"))],
        True,
    ),
    "name with NUL": lambda r, o: (
        [("100644", b"a\0b", hash_object(r, "blob", b"x\n"))],
        True,
    ),
    "symlink and dir d": lambda r, o: (_link_and_dir(r, o, link_first=True), False),
    "dir and symlink d": lambda r, o: (_link_and_dir(r, o, link_first=False), False),
    ".gitmodules symlink": lambda r, o: (
        [("120000", b".gitmodules", hash_object(r, "blob", os.fsencode(o / "sentinel.txt")))],
        True,
    ),
}


# What the fetch reports: git index-pack --strict names the fsck check that failed; a tree
# too corrupt to read is refused by the peer's own git before it sends anything.
FSCK_SAYS = {
    ".git/hooks": "hasDotgit: contains '.git'",
    ".GIT/hooks": "hasDotgit: contains '.git'",
    "sub/.git/hooks": "hasDotgit: contains '.git'",
    "..": "hasDotdot: contains '..'",
    "a/../../x": "hasDotdot: contains '..'",
    "ntfs git~1": "hasDotgit: contains '.git'",
    "ntfs .git. .": "hasDotgit: contains '.git'",
    "hfs .g\\u200cit": "hasDotgit: contains '.git'",
    "name with /": "fullPathname: contains full pathnames",
    "name with NUL": "repository corruption on the remote side",
    "symlink and dir d": "duplicateEntries: contains duplicate file entries",
    "dir and symlink d": "duplicateEntries: contains duplicate file entries",
    ".gitmodules symlink": "gitmodulesSymlink",
}


def evil_commit(repo: Path, case: str, outside: Path, parent: str = "HEAD") -> str:
    """A commit on top of ``parent`` whose tree adds the entries of BAD_TREES[case]."""
    added, ordered = BAD_TREES[case](repo, outside)
    base = tree_entries(repo, parent)
    tree = raw_tree(repo, base + added if ordered else added + base, ordered=ordered)
    return commit_tree(repo, tree, git(repo, "rev-parse", parent).strip(), f"evil: {case}")


def clone(source: Path, dest: Path, name: str) -> Path:
    git(source.parent, "clone", "-q", str(source), str(dest))
    pygit2.Repository(str(dest)).config["annexsync.name"] = name
    return dest


def no_escape(ours: Path) -> None:
    """Nothing from a refused tree reached our .git or left a trace of an attempt."""
    assert not (ours / ".git" / "hooks" / "post-checkout").exists()
    assert not (ours / "git~1").exists() and not (ours / "sub").exists()
    assert not list(ours.glob(".annexsync-tmp-*"))
    assert not Path("/tmp/annexsync-security-canary").exists()


# --- 1. host keys ----------------------------------------------------------------------------
# At the transport level, tests/test_transport_ssh.py proves:
#   test_unknown_host_key: an unknown key is refused with its fingerprint (empty or missing
#     known_hosts, and 'UserKnownHostsFile none', which asyncssh alone would take as "no
#     checking"): never trusted on first use;
#   test_changed_host_key: a changed key (hashed known_hosts, same or other key type) is
#     refused with a loud WARNING, and the new key is never written to known_hosts;
#   test_hashed_known_hosts, test_proxy_jump_from_ssh_config: hashed entries and jump hosts
#     are checked the same way.
# Here: the same through `annexsync sync` and a running assistant.


@pytest.fixture
def hub_on_server(ssh_home: ClientHome) -> Path:
    """An empty bare repository on the test sshd."""
    path = ssh_home.server.home / f"hub-{uuid.uuid4().hex[:8]}.git"
    git(ssh_home.server.home, "init", "-q", "--bare", str(path))
    return path


@pytest.mark.parametrize("known", ["unknown", "changed"])
def test_a_host_key_not_in_known_hosts_stops_sync_and_is_never_trusted(
    ssh_home: ClientHome, hub_on_server: Path, tmp_path: Path, daemon_factory: Factory, known: str
) -> None:
    server = ssh_home.server
    if known == "unknown":
        ssh_home.known_hosts.write_text("")
        expected = "is unknown (ED25519 key SHA256:"
    else:
        ssh_home.known_hosts.write_text(
            server.known_hosts_line(server.public_key(server.keys.other_host_key))
        )
        expected = "WARNING: the host key of peer (127.0.0.1 port"
    trusted = ssh_home.known_hosts.read_bytes()
    ours = make_node(tmp_path, "ours", {"notes.md": "secret plans\n"})
    add_remote(ours, "hub", f"peer:{hub_on_server}")

    report = sync_json(ours, expect=1)["sync"]

    line = report["remotes"][0]["line"]
    assert expected in line and "refusing to connect" in line, line
    assert "\n" not in line
    if known == "changed":
        assert "has CHANGED" in line and "ssh-keygen -R" in line
    assert git(hub_on_server, "for-each-ref") == "", "nothing reached the impostor"
    daemon = daemon_factory(ours).start()

    def refused() -> bool:
        peers = daemon.status()["peers"]
        return bool(peers and expected in (peers[0]["last_error"] or ""))

    wait_until(refused, timeout=30)
    text = annexsync("-C", str(ours), "status").stdout
    assert expected in text, text
    log = (ours / ".git" / "annexsync" / "daemon.log").read_text()
    assert expected in log
    assert ssh_home.known_hosts.read_bytes() == trusted, "known_hosts must never change"
    assert git(hub_on_server, "for-each-ref") == ""


# --- 2. names and remote paths -----------------------------------------------------------
# Node names: tests/test_names.py (test_invalid_names_are_refused_with_a_reason: '..', shell
# syntax, control characters, '/', '.lock'; test_every_accepted_name_is_a_valid_git_ref_
# component) and tests/test_cli.py (test_invalid_name_is_refused_and_recorded_name_kept,
# test_invalid_name_recorded_by_hand_is_reported_by_every_command).
# URLs: tests/test_remotes.py test_bad_urls (a host, user or path starting with '-', control
# characters), test_shell_quote_round_trips / test_shell_quote_matches_git; over sshd,
# tests/test_transport_ssh.py test_paths_with_spaces_quotes_and_dollars.


@pytest.mark.parametrize(
    ("branch", "why"),
    [
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a..b", "'..'"),
        ("x/../../../../config", "'..'"),
        ("HEAD", "not a branch"),
        ("@", "not a branch"),
        ("ctl\x1b[31m", "control character"),
        ("new\nline", "control character"),
        ("del\x7f", "control character"),
        ("$(touch canary)", "space"),
        ("$(id)", "shell syntax"),
        ("a;b", "shell syntax"),
        ("a`b`", "shell syntax"),
        ("a|b", "shell syntax"),
        ("a&b", "shell syntax"),
        ("a'b", "shell syntax"),
        ("a@{1}", "shell syntax"),
        ("a b", "space"),
        ("a:b", "space"),
        ("a\\b", "space"),
        ("", "empty"),
        ("a//b", "empty path component"),
        ("/a", "empty path component"),
        ("a/", "empty path component"),
        (".hidden", "starts with '.'"),
        ("a/.b", "starts with '.'"),
        ("main.lock", ".lock"),
        ("a.", "ends with '.'"),
        ("-opt", "starts with '-'"),
    ],
)
def test_branch_names_git_or_a_shell_would_misread_are_refused(branch: str, why: str) -> None:
    problem = branch_name_problem(branch)
    assert problem is not None and why in problem, problem
    assert fetch_target(f"refs/heads/{branch}", "peer") is None


@pytest.mark.parametrize(
    "branch", ["main", "feature/x-1", "v1.2", "user_name/topic.2", "caf\u00e9", "a-b+c=d,e", "@x"]
)
def test_branch_names_git_accepts_are_fetched_and_git_agrees(branch: str) -> None:
    assert branch_name_problem(branch) is None
    assert fetch_target(f"refs/heads/{branch}", "peer") == f"refs/remotes/peer/{branch}"
    proc = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True)
    assert proc.returncode == 0, branch


@pytest.mark.parametrize(
    "name", ["a;touch canary", "$(touch canary)", "a`id`", "a..b", "up/stream", "tab\tname", ".x"]
)
def test_a_remote_whose_name_is_not_one_safe_ref_component_stops_sync(
    tmp_path: Path, name: str
) -> None:
    """``refs/remotes/<remote>/`` must hold one remote's branches and nothing else: a remote
    named ``up/stream`` would share ``refs/remotes/up/`` with node ``up``'s pushes."""
    assert remote_name_problem(name) is not None
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    peer = tmp_path / "peer"
    git(tmp_path, "init", "-q", str(peer))
    git(ours, "config", f"remote.{name}.url", str(peer))

    proc = annexsync("-C", str(ours), "sync", cwd=tmp_path)

    assert proc.returncode != 0
    assert proc.stderr.startswith(f"annexsync: error: refusing remote {name!r}: "), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert git(peer, "for-each-ref") == ""
    assert not list(tmp_path.rglob("canary*")) and not Path("canary").exists()
    # Left out on purpose, it is ignored and the rest syncs.
    git(ours, "config", f"remote.{name}.annexsync-sync", "false")
    assert read_remotes(pygit2.Repository(str(ours)), ours) == []
    sync(ours)


def test_a_file_url_is_always_an_absolute_path_never_an_option(tmp_path: Path) -> None:
    assert parse_url("file://-oops", tmp_path).path == str(tmp_path / "-oops")  # type: ignore[union-attr]
    assert parse_url("file:///srv/x.git", tmp_path).path == "/srv/x.git"  # type: ignore[union-attr]


# Branches a crafted upload-pack adds to its real advertisement: none may be written here.
ODD_BRANCHES = [
    b"refs/heads/../x",
    b"refs/heads/a..b",
    b"refs/heads/x/../../../../config",
    b"refs/heads/ctl\x1b[31m",
    b"refs/heads/new\nline",
    b"refs/heads/HEAD",
    b"refs/heads/$(touch canary)",
    b"refs/heads/$(id)",
    b"refs/heads/-opt",
    b"refs/heads/.hidden",
    b"refs/heads/a.lock",
]

FAKE_UPLOAD_PACK = '''#!{python}
"""git-upload-pack that appends branches with odd names to the real advertisement."""
import subprocess, sys, threading
ODD = {odd!r}
proc = subprocess.Popen(
    ["git", "upload-pack", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE
)
packets = []
while True:
    size = int(proc.stdout.read(4), 16)
    if size == 0:
        break
    packets.append(proc.stdout.read(size - 4))
tip = next(p.split(b" ")[0] for p in packets if p.rstrip(b"\\n").endswith(b" refs/tags/odd"))
packets += [tip + b" " + name + b"\\n" for name in ODD]
out = sys.stdout.buffer
out.write(b"".join(b"%04x" % (len(p) + 4) + p for p in packets) + b"0000")
out.flush()


def pump_in():
    while chunk := sys.stdin.buffer.read1(65536):
        proc.stdin.write(chunk)
        proc.stdin.flush()
    proc.stdin.close()


threading.Thread(target=pump_in, daemon=True).start()
while chunk := proc.stdout.read1(65536):
    out.write(chunk)
    out.flush()
sys.exit(proc.wait())
'''


def test_a_peer_advertising_branches_with_odd_names_gets_only_its_valid_ones_fetched(
    ssh_home: ClientHome, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> None:
    """Over a real sshd whose git-upload-pack adds ``refs/heads/../x``, ``a..b``, control
    characters, ``HEAD``, shell syntax... pointing at a commit we must never fetch: each is
    skipped with a warning, the valid branch is fetched and merged, and no ref is written
    outside refs/remotes/<remote>/."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    fake = fakebin / "git-upload-pack"
    fake.write_text(FAKE_UPLOAD_PACK.format(python=sys.executable, odd=ODD_BRANCHES))
    fake.chmod(0o755)
    server = sshd_factory({"PATH": f"{fakebin}:{PEER_PATH}"})
    with ssh_home.known_hosts.open("a") as f:
        f.write(server.known_hosts_line())
    peer = make_node(server.home, f"peer-{uuid.uuid4().hex[:8]}", {"a.txt": "a\n"})
    git(peer, "add", "-A")
    git(peer, "commit", "-q", "-m", "first")
    ours = clone(peer, tmp_path / "ours", "ours")
    git(ours, "remote", "remove", "origin")
    add_remote(ours, "peer", f"ssh://root@127.0.0.1:{server.port}{peer}")
    git(peer, "checkout", "-q", "-b", "side")
    put(peer, "evil.txt", "must never arrive\n")
    git(peer, "add", "evil.txt")
    git(peer, "commit", "-q", "-m", "only under odd names")
    evil = head_id(peer)
    git(peer, "tag", "odd")
    git(peer, "checkout", "-q", "main")
    git(peer, "branch", "-D", "side")
    put(peer, "b.txt", "b\n")
    git(peer, "add", "b.txt")
    git(peer, "commit", "-q", "-m", "second")

    _, _, err = sync(ours)

    assert head_files(ours) == {"a.txt": b"a\n", "b.txt": b"b\n"}
    for name in ODD_BRANCHES:
        assert f"not fetching the branch {name.decode()!r}" in err, err
    assert "Traceback" not in err
    refs = git(ours, "for-each-ref", "--format=%(refname)").split()
    assert sorted(refs) == ["refs/heads/main", "refs/remotes/peer/main"]
    assert subprocess.run(["git", "-C", str(ours), "cat-file", "-e", evil]).returncode != 0
    for path in (ours / ".git").rglob("*"):
        if path.is_file() and "objects" not in path.relative_to(ours / ".git").parts:
            assert evil.encode() not in path.read_bytes(), path
    assert git(ours, "config", "remote.peer.url").strip()  # .git/config is still config
    for place in (tmp_path, server.home, ssh_home.path):
        assert not list(place.rglob("canary")), place


def test_git_allowed_odd_branches_of_a_real_repository_are_skipped_with_a_warning(
    tmp_path: Path,
) -> None:
    """Branch names git itself lets ``update-ref`` create: ``refs/heads/HEAD`` (it would
    pass for refs/remotes/<remote>/HEAD, a remote's default-branch pointer), a leading '-'
    and shell syntax."""
    peer = make_node(tmp_path, "peer", {"a.txt": "a\n"})
    sync(peer)
    odd = ["refs/heads/HEAD", "refs/heads/-opt", "refs/heads/$(id)", "refs/heads/a;b"]
    for ref in odd:
        git(peer, "update-ref", ref, "HEAD")
    ours = make_node(tmp_path, "ours")
    add_remote(ours, "peer", peer)

    _, _, err = sync(ours)

    assert head_files(ours) == {"a.txt": b"a\n"}
    assert sorted(git(ours, "for-each-ref", "--format=%(refname)").split()) == [
        "refs/heads/main",
        "refs/remotes/peer/main",
    ]
    for ref in odd:
        assert f"not fetching the branch {ref!r}" in err, err


def test_remote_paths_cannot_inject_commands_over_ssh(
    ssh_home: ClientHome,
    sshd_factory: Callable[..., SSHServer],
    tmp_path: Path,
    daemon_factory: Factory,
) -> None:
    """Hubs whose paths hold ``$(…)``, backticks, ';', '|', '&&', quotes and '!' really
    exist on the server: push, fetch, the bare probe (``sh -c``) and the notify stream
    (``cd … && annexsync notify-changes``) all reach them literally, and no canary appears,
    neither on the far side nor here."""
    server = sshd_factory({"PATH": PEER_PATH})
    with ssh_home.known_hosts.open("a") as f:
        f.write(server.known_hosts_line())
    base = server.home / f"inj-{uuid.uuid4().hex[:8]}"
    payloads = {
        "subst": "x$(touch ~/canary-subst)y",
        "backtick": "a`touch ~/canary-backtick`b",
        "semicolon": "a;touch ~/canary-semicolon;b",
        "pipe": "a|touch ~/canary-pipe",
        "and": "a&&touch ~/canary-and",
        "quotes": 'it\'s "$(touch ~/canary-quotes)" !x',
        "home": "$HOME",
    }
    ours = make_node(tmp_path, "ours", {"notes.md": "notes\n"})
    port = server.port
    hubs = {}
    for key, payload in payloads.items():
        hub = base / payload / "hub.git"
        hub.parent.mkdir(parents=True)
        git(base, "init", "-q", "--bare", str(hub))
        hubs[key] = hub
        if key in ("subst", "quotes", "home"):
            # home-relative: the probe and notify stream go through the far side's shell
            url = f"ssh://root@127.0.0.1:{port}/~/{hub.relative_to(server.home)}"
        else:
            url = f"ssh://root@127.0.0.1:{port}{hub}"
        add_remote(ours, key, url)

    report = sync_json(ours)["sync"]

    assert all(r["ok"] for r in report["remotes"]), report
    head = head_id(ours)
    for key, hub in hubs.items():
        assert git(hub, "rev-parse", "refs/heads/main").strip() == head, key
    # The assistant: probes, notify streams and pushes on the same remotes.
    put(ours, "later.md", "later\n")
    daemon = daemon_factory(ours).start()
    log = ours / ".git" / "annexsync" / "daemon.log"

    def streams_and_pushes_done() -> bool:
        text = log.read_text()
        listening = all(f"listening for changes on {key}" in text for key in payloads)
        pushed = all(
            git(hub, "rev-parse", "refs/heads/main").strip() == head_id(ours)
            for hub in hubs.values()
        )
        return listening and pushed and "later.md" in head_files(ours)

    wait_until(streams_and_pushes_done, timeout=60)
    daemon.stop()
    # ~ is the far side's HOME there, and ours (the client HOME) had it been expanded here
    for place in (server.home, ssh_home.path, tmp_path, Path.cwd(), Path("/root")):
        for key in payloads:
            assert not (place / f"canary-{key}").exists(), (place, key)


def test_a_remote_url_with_a_newline_is_refused_before_anything_runs(tmp_path: Path) -> None:
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    git(ours, "config", "remote.nl.url", f"peer:x\ntouch {tmp_path}/canary")

    proc = annexsync("-C", str(ours), "sync", cwd=tmp_path)

    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert "bad remote url" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "canary").exists()


def test_a_peer_pushing_under_a_refused_node_name_is_not_merged(tmp_path: Path) -> None:
    """git lets a peer push ``refs/remotes/$(id)/synced/main``; annexsync holds it back."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    peer = clone(ours, tmp_path / "peer", "peer")
    put(peer, "b.txt", "b\n")
    git(peer, "add", "b.txt")
    git(peer, "commit", "-q", "-m", "b")
    git(peer, "push", "-q", str(ours), "HEAD:refs/remotes/$(id)/synced/main")

    report = sync_json(ours, expect=1)["sync"]

    held = report["merge"]["held_back"]
    assert list(held) == ["refs/remotes/$(id)/synced/main"]
    assert "node name '$(id)'" in held["refs/remotes/$(id)/synced/main"]
    assert "b.txt" not in head_files(ours)


def test_a_node_name_with_control_characters_stays_out_of_merge_messages(repo: Path) -> None:
    r = pygit2.Repository(str(repo))
    sig = pygit2.Signature("x", "x@example.com", 1_700_000_000, 0)
    tree = r.TreeBuilder().write()
    good = r.get(r.create_commit(None, sig, sig, "a\n\nAnnexsync-Node: laptop\n", tree, []))
    bad = r.get(r.create_commit(None, sig, sig, "b\n\nAnnexsync-Node: \x1b]0;x\x07\n", tree, []))
    message = merge_message(good, bad, [])  # type: ignore[arg-type]
    assert "(laptop)" in message and "\x1b" not in message and "\x07" not in message


def test_what_a_peer_prints_cannot_drive_our_terminal(tmp_path: Path) -> None:
    """A peer's hook that declines a push with escape sequences (retitle the terminal,
    clear the screen) and a NUL: sync shows its words on one line, control bytes escaped."""
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    hook = hub / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nprintf 'no \\033]0;owned\\007 \\033[2J\\000 way\\n' >&2\nexit 1\n")
    hook.chmod(0o755)
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    add_remote(ours, "hub", hub)

    _, out, err = sync(ours, expect=1)

    line = next(line for line in err.splitlines() if line.startswith("hub: "))
    assert "\\x1b]0;owned\\x07" in line and "\\x1b[2J" in line, line
    assert (out + err).replace("\n", "").isprintable(), repr(out + err)


# --- 3. incoming trees -----------------------------------------------------------------------
# tests/test_merge_safety.py test_nothing_is_read_or_removed_through_a_symlinked_directory
# (a directory the user replaced by a symlink is never read or removed through) and
# test_submodule_entries_from_a_peer_are_never_checked_out complete this section.


@pytest.mark.parametrize(
    ("path", "mode", "why"),
    [
        ("", None, "empty"),
        ("/etc/passwd", None, "absolute"),
        ("a\0b", None, "NUL"),
        ("a//b", None, "empty component"),
        (".", None, "'.'"),
        ("..", None, "'..'"),
        ("a/../../x", None, "'..'"),
        ("a/./b", None, "'.'"),
        (".git/config", None, ".git"),
        (".GIT/hooks/x", None, ".git"),
        ("sub/.Git", None, ".git"),
        (".git. /config", None, ".git"),
        (".git . ./x", None, ".git"),
        (".git::$INDEX_ALLOCATION/x", None, ".git"),
        ("GIT~1/config", None, ".git"),
        ("a\\.git\\config", None, ".git"),
        (".g\u200cit/config", None, ".git"),
        (".\u200fgi\ufefft/x", None, ".git"),
        (".gitmodules", 0o120000, "symlink named .gitmodules"),
        (".GITMODULES. ", 0o120000, "symlink named .gitmodules"),
        ("GITMOD~1", 0o120000, "symlink named .gitmodules"),
        ("gi7eba~9", 0o120000, "symlink named .gitmodules"),
        ("sub/.git\u200cmodules", 0o120000, "symlink named .gitmodules"),
    ],
)
def test_paths_git_would_refuse_to_check_out_are_refused(
    path: str, mode: int | None, why: str
) -> None:
    problem = path_problem(path, mode)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("notes.md", 0o100644),
        (".gitignore", 0o100644),
        (".github/workflows/x.yml", 0o100644),
        (".gitx/a", 0o100644),
        ("git~2", 0o100644),
        ("a.git", 0o100644),
        ("..a/b", 0o100644),
        ("a../b", 0o100644),
        (".gitmodules", 0o100644),
        ("link", 0o120000),
        ("caf\u00e9/\u200cnote", 0o100644),
    ],
)
def test_paths_git_checks_out_are_accepted(path: str, mode: int) -> None:
    assert path_problem(path, mode) is None


@pytest.mark.parametrize("case", list(BAD_TREES))
def test_a_tree_git_refuses_is_refused_when_fetched_and_other_peers_still_sync(
    tmp_path: Path, outside: Path, case: str
) -> None:
    """A peer we fetch from (local path: the same ``git index-pack --strict`` as over ssh)
    serves a commit with the refused entry: its fetch fails with one line, nothing of it is
    stored or checked out, our .git is untouched, and another peer's commit still merges."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    evil = clone(ours, tmp_path / "evil", "evil")
    good = clone(ours, tmp_path / "good", "good")
    git(evil, "update-ref", "refs/heads/main", evil_commit(evil, case, outside))
    put(good, "good.txt", "from a good peer\n")
    git(good, "add", "good.txt")
    git(good, "commit", "-q", "-m", "good")
    add_remote(ours, "evil", evil)
    add_remote(ours, "good", good)
    before = git_dir_snapshot(ours)

    report = sync_json(ours, expect=1)["sync"]

    by_name = {r["remote"]: r for r in report["remotes"]}
    fetched = by_name["evil"]["fetch"]
    assert not fetched["ok"] and fetched["summary"].isprintable(), fetched
    assert FSCK_SAYS[case] in fetched["summary"], fetched["summary"]
    assert by_name["good"]["ok"], by_name["good"]
    assert head_files(ours) == {"a.txt": b"a\n", "good.txt": b"from a good peer\n"}
    assert disk_files(ours) == head_files(ours)
    assert "refs/remotes/evil/main" not in git(ours, "for-each-ref")
    assert git_dir_snapshot(ours) == before
    no_escape(ours)


def engine(repo: Path) -> AutoCommitter:
    r = pygit2.Repository(str(repo))
    return AutoCommitter(r, repo, ensure_initialised(r).name, Settings())


@pytest.mark.parametrize("case", list(BAD_TREES))
def test_a_tree_git_refuses_is_held_back_when_pushed_here_and_other_peers_still_merge(
    tmp_path: Path, outside: Path, case: str
) -> None:
    """A peer pushes to us (git receive-pack does not check objects unless told to), so our
    own check before checkout is what refuses the commit: it is held back with one line in
    the report and status, and another peer's commit is merged in the same pass."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    evil = clone(ours, tmp_path / "evil", "evil")
    commit = evil_commit(evil, case, outside)
    pushed = subprocess.run(
        [
            "git",
            "-C",
            str(evil),
            "push",
            "-q",
            str(ours),
            f"{commit}:refs/remotes/evil/synced/main",
        ],
        capture_output=True,
        text=True,
    )
    if pushed.returncode != 0:
        # git's own pack-objects cannot even read a corrupt tree; a hand-written client
        # could send it, and receive-pack would store it: store it here the same way.
        assert case == "name with NUL", pushed.stderr
        commit = evil_commit(ours, case, outside)
        git(ours, "update-ref", "refs/remotes/evil/synced/main", commit)
    good = clone(ours, tmp_path / "good", "good")
    put(good, "good.txt", "from a good peer\n")
    git(good, "add", "good.txt")
    git(good, "commit", "-q", "-m", "good")
    git(good, "push", "-q", str(ours), "HEAD:refs/remotes/good/synced/main")
    before = git_dir_snapshot(ours)

    report = sync_json(ours, expect=1)["sync"]

    held = report["merge"]["held_back"]
    assert list(held) == ["refs/remotes/evil/synced/main"], report["merge"]
    assert held["refs/remotes/evil/synced/main"].startswith("refused: ")
    assert "\n" not in held["refs/remotes/evil/synced/main"]
    assert report["merge"]["merged"] == ["refs/remotes/good/synced/main"]
    assert head_files(ours) == {"a.txt": b"a\n", "good.txt": b"from a good peer\n"}
    assert disk_files(ours) == head_files(ours)
    assert git_dir_snapshot(ours) == before
    status = json.loads(annexsync("-C", str(ours), "status", "--json").stdout)
    assert status["held_merges"] == held
    no_escape(ours)


def broken_commit(repo: Path) -> str:
    """A commit on HEAD's tree whose parent exists nowhere."""
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    return hash_object(
        repo,
        "commit",
        f"tree {tree}\nparent {'1' * 40}\nauthor E <e@e> 1700000000 +0000\n"
        f"committer E <e@e> 1700000000 +0000\n\nbroken\n".encode(),
    )


def test_a_peer_commit_whose_history_is_missing_is_held_back_not_a_crash(tmp_path: Path) -> None:
    """A commit naming a parent that is nowhere (as a hand-made push could leave it, with
    receive-pack's connectivity check skipped): held back, and the good peer merged."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    git(ours, "update-ref", "refs/remotes/evil/synced/main", broken_commit(ours))
    good = clone(ours, tmp_path / "good", "good")
    put(good, "good.txt", "from a good peer\n")
    git(good, "add", "good.txt")
    git(good, "commit", "-q", "-m", "good")
    git(good, "push", "-q", str(ours), "HEAD:refs/remotes/good/synced/main")

    report = sync_json(ours, expect=1)["sync"]

    assert list(report["merge"]["held_back"]) == ["refs/remotes/evil/synced/main"]
    assert head_files(ours) == {"a.txt": b"a\n", "good.txt": b"from a good peer\n"}


def test_the_assistant_holds_back_a_refused_commit_and_keeps_merging_other_peers(
    tmp_path: Path, outside: Path, daemon_factory: Factory
) -> None:
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    evil = clone(ours, tmp_path / "evil", "evil")
    good = clone(ours, tmp_path / "good", "good")
    daemon = daemon_factory(ours).start()
    before = git_dir_snapshot(ours)
    commit = evil_commit(evil, ".git/hooks", outside)
    git(evil, "push", "-q", str(ours), f"{commit}:refs/remotes/evil/synced/main")

    def held() -> bool:
        return "refs/remotes/evil/synced/main" in daemon.status()["held_merges"]

    wait_until(held, timeout=30)
    reason = daemon.status()["held_merges"]["refs/remotes/evil/synced/main"]
    assert reason.startswith("refused: '.git': it has a .git component"), reason
    log = (ours / ".git" / "annexsync" / "daemon.log").read_text()
    assert f"not merging refs/remotes/evil/synced/main ({commit[:10]}): refused:" in log
    for n in (1, 2):  # later commits of other peers keep coming in
        put(good, "good.txt", f"good {n}\n")
        git(good, "add", "good.txt")
        git(good, "commit", "-q", "-m", f"good {n}")
        git(good, "push", "-q", str(ours), "HEAD:refs/remotes/good/synced/main")
        wait_until(
            lambda n=n: disk_files(ours).get("good.txt") == f"good {n}\n".encode(), timeout=30
        )
    # the file is written before the branch moves to the merge that brought it
    wait_until(lambda: head_files(ours)["good.txt"] == b"good 2\n", timeout=30)
    assert held()
    # A commit whose history is missing does not stop the merge loop either.
    git(ours, "update-ref", "refs/remotes/broken/synced/main", broken_commit(ours))
    put(good, "good.txt", "good 3\n")
    git(good, "commit", "-q", "-am", "good 3")
    git(good, "push", "-q", str(ours), "HEAD:refs/remotes/good/synced/main")
    wait_until(lambda: disk_files(ours).get("good.txt") == b"good 3\n", timeout=30)
    wait_until(lambda: "refs/remotes/broken/synced/main" in daemon.status()["held_merges"])
    assert git_dir_snapshot(ours) == before
    assert "Traceback" not in daemon.stderr()
    assert "Traceback" not in (ours / ".git" / "annexsync" / "daemon.log").read_text()
    no_escape(ours)


def peer_commit(peer: Path, message: str, edit: Callable[[], None]) -> None:
    edit()
    git(peer, "add", "-A")
    git(peer, "commit", "-q", "-m", message)


def test_symlinks_across_commits_never_carry_a_write_outside_or_into_git(
    tmp_path: Path, outside: Path
) -> None:
    """Commit 1 makes ``d`` a symlink to a directory outside, ``up`` a relative one to it,
    and ``g`` a symlink to ``.git``; later commits write ``d/file``, ``up/file`` and
    ``g/hooks/post-checkout`` (each a real directory in the peer), and replace a symlinked
    directory by a plain file. Everything lands inside the working tree as what the commit
    says, and the symlinks' targets are never written through."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    peer = clone(ours, tmp_path / "peer", "peer")
    add_remote(ours, "peer", peer)
    hooks_before = git_dir_snapshot(ours)

    def links() -> None:
        os.symlink(outside, peer / "d")
        os.symlink(os.path.relpath(outside, peer), peer / "up")
        os.symlink(".git", peer / "g")
        os.symlink(outside / "hooks", peer / "h")

    peer_commit(peer, "links", links)
    sync(ours)
    assert os.readlink(ours / "d") == str(outside) and os.readlink(ours / "g") == ".git"

    def through() -> None:
        for name in ("d", "up", "g"):
            (peer / name).unlink()
        put(peer, "d/file", "inside d\n")
        put(peer, "up/file", "inside up\n")
        put(peer, "g/hooks/post-checkout", "#!/bin/sh\ntouch /tmp/annexsync-security-canary\n")
        (peer / "g/hooks/post-checkout").chmod(0o755)
        (peer / "h").unlink()
        put(peer, "h", "a plain file now\n")

    peer_commit(peer, "through the links", through)
    sync(ours)

    assert head_id(ours) == head_id(peer)
    for name in ("d", "up", "g"):
        assert stat.S_ISDIR(os.lstat(ours / name).st_mode), name
    assert (ours / "d" / "file").read_text() == "inside d\n"
    assert (ours / "up" / "file").read_text() == "inside up\n"
    assert stat.S_ISREG(os.lstat(ours / "h").st_mode)
    assert disk_files(ours) == head_files(ours)
    assert git_dir_snapshot(ours) == hooks_before
    no_escape(ours)


def test_merging_a_symlink_from_one_peer_and_a_directory_from_another_stays_inside(
    tmp_path: Path, outside: Path
) -> None:
    """Peer A makes ``d`` a symlink to a directory outside, peer B (from the same base)
    writes ``d/file``: merged in one pass, or A first and B later, ``d/file`` is written in
    a real directory ``d`` and the symlink is kept beside it as a variant."""
    for order in ("together", "one after the other"):
        root = tmp_path / order.replace(" ", "-")
        root.mkdir()
        ours = make_node(root, "ours", {"a.txt": "a\n"})
        sync(ours)
        a = clone(ours, root / "a", "a")
        b = clone(ours, root / "b", "b")
        peer_commit(a, "link", lambda a=a: os.symlink(outside, a / "d"))
        peer_commit(b, "dir", lambda b=b: put(b, "d/file", "from b\n"))
        add_remote(ours, "a", a)
        if order == "one after the other":
            sync(ours)
            assert (ours / "d").is_symlink()
        add_remote(ours, "b", b)
        sync(ours)
        assert stat.S_ISDIR(os.lstat(ours / "d").st_mode), order
        assert (ours / "d" / "file").read_text() == "from b\n"
        variants = [p for p in disk_files(ours) if p.startswith("d.variant-")]
        assert len(variants) == 1 and os.readlink(ours / variants[0]) == str(outside)
        assert disk_files(ours) == head_files(ours)


@pytest.mark.parametrize("link_first", [True, False], ids=["link-first", "dir-first"])
def test_checkout_itself_never_writes_through_a_symlink_it_just_wrote(
    tmp_path: Path, outside: Path, link_first: bool
) -> None:
    """The last line of defence, below the tree check: handed a tree that holds ``d`` both
    as a symlink to a directory outside and as a directory with ``file``, the working-tree
    update refuses to write ``d/file`` through the link."""
    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    r = pygit2.Repository(str(ours))
    commit = evil_commit(ours, "symlink and dir d" if link_first else "dir and symlink d", outside)
    old = r.head.peel(pygit2.Commit).tree
    new = r[commit].peel(pygit2.Tree)
    work = plan(old, new, ["d", "d/file"])
    _dirty, stamps = inspect(r, ours, old, work.paths())
    try:
        apply(r, ours, work, stamps)
    except UnsafePath as exc:
        assert "is not a directory" in str(exc)
    assert not (outside / "file").exists()


def test_a_peer_change_below_a_directory_the_user_made_a_symlink_writes_nothing_outside(
    tmp_path: Path, outside: Path
) -> None:
    """Here ``d`` is a directory in every commit, but on disk the user replaced it by a
    symlink to a directory outside; a peer's edit of ``d/f.txt`` must not land there."""
    ours = make_node(tmp_path, "ours", {"d/f.txt": "f\n", "a.txt": "a\n"})
    sync(ours)
    peer = clone(ours, tmp_path / "peer", "peer")
    add_remote(ours, "peer", peer)
    peer_commit(peer, "edit", lambda: put(peer, "d/f.txt", "edited by the peer\n"))
    shutil.rmtree(ours / "d")
    os.symlink(outside, ours / "d")

    sync(ours)

    assert stat.S_ISDIR(os.lstat(ours / "d").st_mode)
    assert (ours / "d" / "f.txt").read_text() == "edited by the peer\n"
    variants = [p for p in disk_files(ours) if p.startswith("d.variant-")]
    assert len(variants) == 1 and os.readlink(ours / variants[0]) == str(outside)
    assert disk_files(ours) == head_files(ours)


# --- 4. hooks and config from peers ----------------------------------------------------------


def test_peer_hooks_and_config_never_reach_or_run_in_our_repository(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    """A peer with hooks of every kind (in .git/hooks and under core.hooksPath) and config
    that runs programs (core.fsmonitor, core.sshCommand, a clean/smudge filter its
    .gitattributes asks for, uploadpack.packObjectsHook): after syncing both ways, with our
    assistant running, our hooks and config are as they were and no canary ran in our
    repository. The peer's own hooks do run on its side when we push to it, as with git
    push, which also proves the canaries work."""
    token = f"CANARY-{uuid.uuid4().hex}"
    log = tmp_path / "canary.log"
    canary = tmp_path / "canary.sh"
    canary.write_text(f'#!/bin/sh\necho "{token} $(basename "$0") $(pwd -P)" >> {log}\nexit 0\n')
    filt = tmp_path / "filter.sh"
    filt.write_text(f'#!/bin/sh\necho "{token} filter $(pwd -P)" >> {log}\nexec cat\n')
    for script in (canary, filt):
        script.chmod(0o755)
    hook_names = [
        "pre-receive", "update", "post-receive", "post-update", "reference-transaction",
        "post-merge", "post-checkout", "post-commit", "pre-commit", "pre-push",
        "post-rewrite", "pre-auto-gc", "fsmonitor-watchman",
    ]  # fmt: skip

    ours = make_node(tmp_path, "ours", {"a.txt": "a\n"})
    sync(ours)
    peer = clone(ours, tmp_path / "peer", "peer")
    hooks_path = tmp_path / "peer-hooks"
    hooks_path.mkdir()
    for name in hook_names:
        for where in (peer / ".git" / "hooks", hooks_path):
            shutil.copy(canary, where / name)
    for key, value in {
        "core.hooksPath": str(hooks_path),
        "core.fsmonitor": str(canary),
        "core.sshCommand": str(canary),
        "uploadpack.packObjectsHook": str(canary),
        "filter.evil.clean": str(filt),
        "filter.evil.smudge": str(filt),
        "filter.evil.required": "true",
    }.items():
        git(peer, "config", key, value)

    def tracked_hooks() -> None:
        put(peer, ".gitattributes", "* filter=evil\n")
        put(peer, ".githooks/post-checkout", f"#!/bin/sh\necho {token} tracked >> {log}\n")
        (peer / ".githooks" / "post-checkout").chmod(0o755)

    peer_commit(peer, "hooks as content", tracked_hooks)
    add_remote(ours, "peer", peer)
    our_git = git_dir_snapshot(ours)
    daemon = daemon_factory(ours).start()

    sync(ours)  # fetch and merge the peer's commit, push ours to the peer
    sync(peer, "origin")  # the peer fetches from us and pushes into refs/remotes/peer/synced/
    peer_commit(peer, "more", lambda: put(peer, "b.txt", "b\n"))
    sync(peer, "origin")
    wait_until(lambda: head_id(ours) == head_id(peer), timeout=30)
    sync(ours)
    git(ours, "status")  # our own git, reading the .gitattributes that came from the peer

    assert (ours / ".githooks" / "post-checkout").read_bytes().startswith(b"#!/bin/sh")
    assert head_files(ours)[".gitattributes"] == b"* filter=evil\n"
    assert git_dir_snapshot(ours) == our_git
    config = git(ours, "config", "--local", "--list")
    for key in ("hookspath", "fsmonitor", "sshcommand", "packobjectshook", "filter.evil"):
        assert key not in config.lower(), config
    for path in (ours / ".git").rglob("*"):
        if path.is_file() and "objects" not in path.relative_to(ours / ".git").parts:
            assert token.encode() not in path.read_bytes(), path
    fired = log.read_text().splitlines() if log.exists() else []
    here = [line for line in fired if str(ours.resolve()) in line.split(" ", 2)[-1]]
    assert here == [], here
    assert not [line for line in fired if " tracked" in line], "a tracked file ran as a hook"
    assert any("post-receive" in line for line in fired), "the peer's own hooks ran there"
    assert "Traceback" not in daemon.stderr()


# --- 5. the control socket and the state directory -----------------------------------------
# tests/test_lifecycle.py test_control_socket_and_state_dir_are_private checks the modes
# (socket 0600 in a 0700 directory, state directory 0700); tests/test_cli.py
# test_init_records_uuid_name_and_private_state_directory checks the directory at init.


@pytest.fixture
def other_user() -> pwd.struct_passwd:
    from sshd import ensure_peer_user

    if os.geteuid() != 0:
        pytest.skip("switching to another local user needs root")
    name = ensure_peer_user()
    if name is None:
        pytest.skip("no second local account to test with")
    return pwd.getpwnam(name)


def as_user(user: pwd.struct_passwd, probe: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Run ``probe`` in a child process that has become ``user``; its answers come back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the other user, probe, report, and leave at once
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            data = json.dumps(probe()).encode()
        except BaseException as exc:
            data = json.dumps({"child failed": repr(exc)}).encode()
            code = 1
        os.write(write_end, data)
        os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other local users may enter (pytest's own tmp tree is 0700, which would
    hide the repository from them and prove nothing)."""
    path = Path(tempfile.mkdtemp(prefix="annexsync-shared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_another_local_user_can_neither_drive_the_assistant_nor_read_its_state(
    shared_dir: Path, other_user: pwd.struct_passwd, daemon_factory: Factory
) -> None:
    repo = shared_dir / "notes"
    repo.mkdir()
    git(repo, "init", "-q")
    put(repo, "a.txt", "a\n")
    daemon = daemon_factory(repo).start()
    state = repo / ".git" / "annexsync"
    sock = daemon.socket
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700

    def probe() -> dict[str, str]:
        def connect() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(sock))
                s.sendall(b'{"cmd": "stop"}\n')

        return {
            "read .git/HEAD": attempt(lambda: (repo / ".git" / "HEAD").read_bytes()),
            "connect": attempt(connect),
            "list state": attempt(lambda: os.listdir(state)),
            "read log": attempt(lambda: (state / "daemon.log").read_bytes()),
        }

    seen = as_user(other_user, probe)

    assert seen["read .git/HEAD"] == "ok", seen  # the repository itself is reachable...
    assert seen["connect"] == "PermissionError", seen  # ...its assistant is not
    assert seen["list state"] == "PermissionError", seen
    assert seen["read log"] == "PermissionError", seen
    assert daemon.status()["running"]


def _fake_assistant(user: pwd.struct_passwd, path: Path) -> tuple[int, int]:
    """As ``user``, listen at ``path`` and answer one request as if an assistant; the pipe
    says whether anyone connected. Returns (pid, read end of the pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o777)
            server.listen(1)
            os.write(write_end, b"listening\n")
            conn, _ = server.accept()
            os.write(write_end, b"connected\n")
            conn.recv(65536)
            conn.sendall(json.dumps({"ok": True, "running": True, "node": "impostor"}).encode())
            conn.sendall(b"\n")
            conn.close()
        finally:
            os._exit(0)
    os.close(write_end)
    return pid, read_end


def test_a_socket_directory_another_user_prepared_is_refused(
    tmp_path: Path,
    other_user: pwd.struct_passwd,
    daemon_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the repository's path is too long for a unix socket, the socket moves to
    ``$XDG_RUNTIME_DIR/annexsync-<uid>/`` (or /tmp). Another user who created that
    directory first (and listens there, posing as the assistant) gets nothing: the assistant
    refuses to start with one line, and the command line never talks to the impostor."""
    runtime = Path(tempfile.mkdtemp(prefix="annexsync-runtime-"))
    try:
        runtime.chmod(0o1777)  # shared and sticky, like /tmp
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        repo = tmp_path / ("d" * 60) / ("e" * 60)
        repo.mkdir(parents=True)
        git(repo, "init", "-q")
        sock = socket_path(repo / ".git" / "annexsync")
        assert sock.parent == runtime / f"annexsync-{os.getuid()}"

        def prepare() -> dict[str, str]:
            os.mkdir(sock.parent, 0o777)
            os.chmod(sock.parent, 0o777)
            return {}

        assert as_user(other_user, prepare) == {}
        pid, pipe = _fake_assistant(other_user, sock)
        try:
            assert os.read(pipe, 100) == b"listening\n"
            status = annexsync("-C", str(repo), "status", "--json")
            reply = json.loads(status.stdout)
            assert reply["running"] is False and reply.get("node") != "impostor", reply
            ready, _, _ = select.select([pipe], [], [], 0)
            assert not ready, "the command line talked to another user's socket"
            daemon = daemon_factory(repo).start(wait=False)
            assert daemon.proc is not None
            assert daemon.proc.wait(timeout=30) != 0
            err = daemon.stderr().strip()
            assert err == (
                f"annexsync: error: refusing to open the control socket in {sock.parent}: "
                f"it belongs to another user (uid {other_user.pw_uid})"
            ), err
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(pipe)
        shutil.rmtree(sock.parent)
        daemon = daemon_factory(repo).start()
        assert stat.S_IMODE(os.lstat(sock.parent).st_mode) == 0o700
        assert os.lstat(sock.parent).st_uid == os.getuid()
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        assert daemon.status()["running"]
        daemon.stop()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_private_dir_problem(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o700)
    loose.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(good)
    assert private_dir_problem(good) is None
    assert "mode 0755" in (private_dir_problem(loose) or "")
    assert "not a directory" in (private_dir_problem(link) or "")
    assert private_dir_problem(tmp_path / "missing") is not None


# --- 6. no secrets in logs, status or errors -------------------------------------------------


def key_lines(path: Path) -> list[str]:
    """The base64 body lines of a private key file: none may ever be shown."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("-----") and len(line.strip()) >= 16
    ]


def assert_no_secret(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


def everything_shown(repo: Path, daemon: Daemon | None) -> dict[str, str]:
    """Every place annexsync writes for people: the daemon's logs and stderr, status in
    text and JSON."""
    state = repo / ".git" / "annexsync"
    shown = {str(p.name): p.read_text(errors="replace") for p in sorted(state.glob("daemon.log*"))}
    for args in (["status"], ["status", "--json"]):
        proc = annexsync("-C", str(repo), *args)
        shown[" ".join(args)] = proc.stdout + proc.stderr
    if daemon is not None:
        shown["assistant stderr"] = daemon.stderr()
    return shown


def test_no_key_passphrase_or_agent_content_is_ever_shown(
    ssh_home: ClientHome,
    hub_on_server: Path,
    tmp_path: Path,
    daemon_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client key is protected by a passphrase; annexsync reads no passphrase itself
    (an encrypted key is only usable through ssh-agent). Without the agent, authentication
    fails and says how to fix it; with the key in the agent, syncing works. In neither case
    does the key, the passphrase or what the agent holds appear in a log, a status or an
    error, also with --verbose logging."""
    for tool in ("ssh-agent", "ssh-add"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    passphrase = f"correct horse battery {uuid.uuid4().hex}"
    plain_key = ssh_home.server.keys.client_key
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", passphrase, "-f", str(ssh_home.key)],
        check=True,
        capture_output=True,
    )
    secrets = [passphrase, *key_lines(plain_key), *key_lines(ssh_home.key)]
    assert len(secrets) > 3
    ours = make_node(tmp_path, "ours", {"notes.md": "notes\n"})
    add_remote(ours, "hub", f"peer:{hub_on_server}")

    # 1. no agent: authentication fails
    _, out, err = sync(ours, "--json", expect=1)
    assert "authentication to root@peer" in out, out
    assert_no_secret(out + err, secrets, "sync output")
    daemon = daemon_factory(ours).start("--verbose")
    wait_until(lambda: daemon.status()["peers"][0]["last_error"], timeout=30)
    assert "authentication" in daemon.status()["peers"][0]["last_error"]
    daemon.stop()
    for where, text in everything_shown(ours, daemon).items():
        assert_no_secret(text, secrets, where)

    # 2. the key, unlocked with its passphrase, in ssh-agent
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(sock.exists, timeout=5)
        askpass = tmp_path / "askpass.sh"
        askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
        askpass.chmod(0o700)
        env = {
            **os.environ,
            "SSH_AUTH_SOCK": str(sock),
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0",
        }
        subprocess.run(
            ["ssh-add", str(ssh_home.key)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        daemon = daemon_factory(ours).start("--verbose")
        wait_until(
            lambda: (
                git(
                    hub_on_server, "rev-parse", "-q", "--verify", "refs/heads/main", check=False
                ).strip()
                == head_id(ours)
            ),
            timeout=30,
        )
        _, out, err = sync(ours, "--json")
        assert_no_secret(out + err, secrets, "sync output")
        daemon.stop()
        for where, text in everything_shown(ours, daemon).items():
            assert_no_secret(text, secrets, where)
    finally:
        agent.terminate()
        agent.wait(timeout=5)

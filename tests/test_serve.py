"""``annexsync serve``, the forced command of a restricted ssh key.

First the pure decisions, table style: which ``SSH_ORIGINAL_COMMAND`` forms are accepted (the
forms generated here by the client's own quoting code), how paths map to the served
repositories, which ref updates a node may make, and how a pack's end is found. Then end to
end through a real sshd whose authorized_keys line forces ``serve`` on the client key: what
annexsync and plain git and ssh may do through it, and that every refusal reaches the client
and changes nothing on the server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import annexsync, git, wait_until

from assistant.daemon.listener import invocation
from assistant.notify import DEFAULT_COMMAND, watch_remote
from assistant.peers import remote_path_expr
from assistant.protocol.pack import encode_pack
from assistant.protocol.packend import PackEnd
from assistant.protocol.pktline import Decoder, ProtocolError
from assistant.remotes import SSHLocation, shell_quote
from assistant.serve import (
    Command,
    Push,
    Refused,
    Request,
    Served,
    child_environment,
    expand_path,
    find_repository,
    judge,
    log_line,
    outcome,
    parse_command,
    parse_push,
    refusal,
    valid_branch,
)
from assistant.transport.ssh import SSHPool, SSHTransport

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

A = "a" * 40
B = "b" * 40
Z = "0" * 40
PEER = "laptop"


# --- the command parser ----------------------------------------------------------------------


def client_run_form(argv: list[str]) -> str:
    """What SSHTransport.run sends for ``argv`` (the bare-repository probe)."""
    return " ".join(shell_quote(arg) for arg in argv)


def bare_probe(path: str) -> str:
    """The probe annexsync's client sends (assistant.peers._probe_bare)."""
    script = f"git -C {remote_path_expr(path)} rev-parse --is-bare-repository"
    return client_run_form(["sh", "-c", script])


def notify_form(path: str) -> str:
    """What the change listener sends for a peer path (listener.invocation + open)."""
    name, arg = invocation(SSHLocation("host", path), DEFAULT_COMMAND)
    return f"{name} {shell_quote(arg)}"


ODD = '/srv/it\'s a "repo" with $dollar and !bang'


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("git-receive-pack '/srv/notes'", Request("receive-pack", "/srv/notes")),
        ("git-upload-pack '/srv/notes'", Request("upload-pack", "/srv/notes")),
        ("git receive-pack '/srv/notes'", Request("receive-pack", "/srv/notes")),
        ("git upload-pack /srv/notes", Request("upload-pack", "/srv/notes")),
        ("git-receive-pack '~/notes'", Request("receive-pack", "~/notes")),
        ("git-upload-pack 'notes'", Request("upload-pack", "notes")),
        (f"git-receive-pack {shell_quote(ODD)}", Request("receive-pack", ODD)),
        (notify_form("/srv/notes"), Request("notify-changes", "/srv/notes")),
        (notify_form("~/notes"), Request("notify-changes", "~/notes")),
        (notify_form("~"), Request("notify-changes", "~")),
        (notify_form("~bob/notes"), Request("notify-changes", "~bob/notes")),
        (notify_form(ODD), Request("notify-changes", ODD)),
        ("~/.local/bin/annexsync notify-changes '/x'", Request("notify-changes", "/x")),
        (bare_probe("/srv/hub.git"), Request("is-bare", "/srv/hub.git")),
        (bare_probe("~/hub.git"), Request("is-bare", "~/hub.git")),
        (bare_probe("~"), Request("is-bare", "~")),
        (bare_probe(ODD), Request("is-bare", ODD)),
        ("git -C /srv/hub.git rev-parse --is-bare-repository", Request("is-bare", "/srv/hub.git")),
    ],
)
def test_the_forms_git_and_annexsync_send_are_understood(command: str, expected: Request) -> None:
    assert parse_command(command) == expected


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (None, "no shell"),
        ("", "no shell"),
        ("   ", "no shell"),
        ("ls", "may run only"),
        ("ls -la /", "may run only"),
        ("bash", "may run only"),
        ("git-upload-archive '/srv/notes'", "may run only"),
        ("git-receive-pack", "may run only"),
        ("git-receive-pack '/srv/notes' --strict", "may run only"),
        ("git-receive-pack '/srv/notes'; rm -rf /", "may run only"),
        ("git-receive-pack '/srv/notes' && id", "may run only"),
        ("git-upload-pack '/srv/notes", "cannot parse"),
        ("git-receive-pack ''", "path is empty"),
        ("git --exec-path=/tmp receive-pack /srv/notes", "may run only"),
        ("git -C /srv/notes rev-parse --git-dir", "may run only"),
        ("sh -c 'git-receive-pack /srv/notes'", "may run only"),
        ("sh -c id", "may run only"),
        ("bash -c 'git -C /srv/hub.git rev-parse --is-bare-repository'", "may run only"),
        ("cd /srv/notes && ls", "may run only"),
        ("cd /srv/notes && annexsync notify-changes . && id", "may run only"),
        ("cd /srv/notes; annexsync notify-changes .", "may run only"),
        ("annexsync serve --repo / --peer x", "may run only"),
        ("annexsync-evil notify-changes /srv/notes", "may run only"),
        ("python3 -m assistant notify-changes /srv/notes", "may run only"),
    ],
)
def test_every_other_command_is_refused_in_one_line(command: str | None, says: str) -> None:
    with pytest.raises(Refused) as info:
        parse_command(command)
    message = str(info.value)
    assert says in message
    assert message.startswith("refused") and "\n" not in message


# --- paths and repositories ------------------------------------------------------------------


def homes(user: str) -> str | None:
    return {"bob": "/home/bob"}.get(user)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/notes", "/srv/notes"),
        ("/srv/notes/", "/srv/notes"),
        ("/srv/../srv/notes", "/srv/notes"),
        ("~", "/home/me"),
        ("~/", "/home/me"),
        ("~/notes", "/home/me/notes"),
        ("~bob", "/home/bob"),
        ("~bob/notes", "/home/bob/notes"),
        ("notes", "/login/notes"),  # relative to the login's directory, as git reads it
        ("../x", "/x"),
    ],
)
def test_paths_expand_as_git_expands_them(path: str, expected: str) -> None:
    assert expand_path(path, "/home/me", "/login", homes) == expected


@pytest.mark.parametrize(
    ("path", "home", "says"),
    [("~nobody/x", "/home/me", "no user 'nobody'"), ("~/x", None, "HOME is not set")],
)
def test_a_path_that_cannot_expand_is_refused(path: str, home: str | None, says: str) -> None:
    with pytest.raises(Refused, match=says):
        expand_path(path, home, "/", homes)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, list[Served]]:
    """A non-bare repository, a bare one, a symlink to the first, and something else."""
    (tmp_path / "notes" / ".git").mkdir(parents=True)
    (tmp_path / "hub.git").mkdir()
    (tmp_path / "other" / ".git").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "notes")
    root = tmp_path.resolve()
    return root, [Served(str(root / "notes")), Served(str(root / "hub.git"), hub=True)]


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("notes", "notes"),
        ("notes/", "notes"),
        ("notes/.git", "notes"),
        ("link", "notes"),
        ("link/.git", "notes"),
        ("other/../notes", "notes"),
        ("hub.git", "hub.git"),
        ("hub", "hub.git"),
        ("other", None),
        ("notes/sub", None),
        (".", None),
        ("hub.git/..", None),
        ("/", None),
    ],
)
def test_a_path_finds_only_a_served_repository(
    layout: tuple[Path, list[Served]], path: str, found: str | None
) -> None:
    root, served = layout
    absolute = os.path.normpath(os.path.join(root, path))
    repo = find_repository(absolute, served)
    assert (repo.path if repo else None) == (str(root / found) if found else None)


# --- the ref policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("main", True),
        ("feature/x", True),
        ("v1.2", True),
        ("ünïcode", True),
        ("", False),
        ("HEAD", False),
        ("@", False),
        ("-x", False),
        ("a..b", False),
        ("a/", False),
        ("/a", False),
        ("a//b", False),
        (".hidden", False),
        ("a/.b", False),
        ("x.lock", False),
        ("x.lock/y", False),
        ("end.", False),
        ("a@{1}", False),
        ("a b", False),
        ("a~1", False),
        ("a^", False),
        ("a:b", False),
        ("a?", False),
        ("a*", False),
        ("a[b", False),
        ("a\\b", False),
        ("a\x01b", False),
        ("a\x7fb", False),
    ],
)
def test_branch_names_follow_gits_rules(name: str, valid: bool) -> None:
    assert valid_branch(name) is valid


SYNCED = f"refs/remotes/{PEER}/synced/"


@pytest.mark.parametrize(
    ("old", "new", "ref", "hub", "says", "check_ff"),
    [
        (Z, A, SYNCED + "main", False, "", False),
        (A, B, SYNCED + "main", False, "", False),  # its own ref: may be rewritten
        (Z, A, SYNCED + "feature/x", False, "", False),
        (A, B, SYNCED + "main", True, "", False),
        (A, Z, SYNCED + "main", False, "deleting refs is not allowed", False),
        (Z, A, SYNCED + "HEAD", False, "not a valid branch name", False),
        (Z, A, SYNCED, False, "not a valid branch name", False),
        (Z, A, SYNCED + "../../heads/main", False, "not a valid branch name", False),
        (Z, A, "refs/remotes/desktop/synced/main", False, "belongs to node desktop", False),
        (Z, A, f"refs/remotes/{PEER}2/synced/main", True, f"belongs to node {PEER}2", False),
        (Z, A, f"refs/remotes/{PEER}/main", False, "may write only", False),
        (Z, A, "refs/heads/main", False, "this repository is not a hub", False),
        (A, B, "refs/heads/main", False, "this repository is not a hub", False),
        (Z, A, "refs/heads/main", True, "", False),  # a new branch on a hub: nothing rewritten
        (A, B, "refs/heads/main", True, "", True),  # moving one: only forward
        (A, Z, "refs/heads/main", True, "deleting refs is not allowed", False),
        (Z, A, "refs/heads/-x", True, "not a valid branch name", False),
        (Z, A, "refs/tags/v1", True, "may write only", False),
        (Z, A, "refs/notes/commits", True, "may write only", False),
        (Z, A, "HEAD", True, "may write only", False),
        (Z, A, "refs/heads", True, "may write only", False),
        ("xyz", A, SYNCED + "main", False, "malformed", False),
        (Z, A.upper(), SYNCED + "main", False, "malformed", False),
        (Z, "c" * 64, SYNCED + "main", False, "", False),  # a SHA-256 repository
    ],
)
def test_a_node_may_write_only_its_synced_refs_and_a_hubs_branches_forward(
    old: str, new: str, ref: str, hub: bool, says: str, check_ff: bool
) -> None:
    verdict = judge(Command(old, new, ref), PEER, hub)
    assert verdict.allowed is (not says)
    assert says in verdict.reason
    assert verdict.check_fast_forward is check_ff
    assert "\n" not in verdict.reason


def test_a_push_command_list_is_parsed_with_its_capabilities() -> None:
    packets = [
        f"shallow {A}".encode(),
        f"{Z} {A} {SYNCED}main\0 report-status side-band-64k agent=git/2\n".encode(),
        f"{A} {Z} refs/heads/old".encode(),
    ]
    push = parse_push(packets)
    assert push.commands == [Command(Z, A, SYNCED + "main"), Command(A, Z, "refs/heads/old")]
    assert push.capabilities == {"report-status", "side-band-64k", "agent=git/2"}
    assert push.report and push.sideband == 65520 and push.sends_pack
    assert not parse_push([f"{A} {Z} refs/heads/x".encode()]).sends_pack
    with pytest.raises(ProtocolError):
        parse_push([b"nonsense"])


def decode(data: bytes) -> list[bytes | None]:
    decoder = Decoder()
    decoder.feed(data)
    packets = list(decoder.packets())
    assert not decoder.rest()
    return packets


def test_a_refusal_is_reported_through_side_band_with_an_ng_line_per_update() -> None:
    push = Push(
        [Command(Z, A, "refs/heads/main"), Command(Z, A, SYNCED + "main")],
        {"report-status", "side-band-64k"},
    )
    report, stderr = refusal(push, {"refs/heads/main": "not a hub"})
    packets = decode(report)
    assert packets[-1] is None  # the flush that ends the side-band stream
    bands = [p for p in packets if p is not None]
    assert bands[0].startswith(b"\x02annexsync serve: push refused")
    inner = b"".join(p[1:] for p in bands if p[:1] == b"\x01")
    assert decode(inner) == [
        b"unpack ok\n",
        b"ng refs/heads/main not a hub\n",
        b"ng " + SYNCED.encode() + b"main annexsync serve: not updated, the push was refused"
        b" as a whole\n",
        None,
    ]
    assert stderr == []


def test_a_refusal_without_side_band_puts_the_reasons_on_stderr() -> None:
    plain = Push([Command(Z, A, "refs/tags/x")], {"report-status"})
    report, stderr = refusal(plain, {"refs/tags/x": "no tags"})
    assert decode(report) == [b"unpack ok\n", b"ng refs/tags/x no tags\n", None]
    assert len(stderr) == 1
    silent = Push([Command(Z, A, "refs/tags/x")], set())
    assert refusal(silent, {"refs/tags/x": "annexsync serve: no tags"}) == (
        b"",
        ["annexsync serve: refused refs/tags/x: no tags"],
    )


def test_a_long_report_is_cut_into_side_band_packets_the_client_accepts() -> None:
    commands = [Command(Z, A, f"refs/tags/t{i:04}") for i in range(200)]
    push = Push(commands, {"report-status", "side-band"})  # 1000-byte packets
    report, _ = refusal(push, {c.ref: "no" for c in commands})
    packets = [p for p in decode(report) if p is not None]
    assert all(len(p) + 4 <= 1000 for p in packets)
    inner = decode(b"".join(p[1:] for p in packets if p[:1] == b"\x01"))
    assert len(inner) == 202  # unpack ok, 200 ng lines, flush


def test_log_lines_and_outcomes() -> None:
    when = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    line = log_line(when, PEER, "accepted", Command(Z, A, SYNCED + "main"), "updated")
    assert line == f"2025-03-01T12:00:00+01:00 {PEER} accepted {SYNCED}main 0000000..aaaaaaa" + (
        " updated"
    )
    assert outcome(Command(Z, A, "r"), A) == "updated"
    assert outcome(Command(Z, A, "r"), B) == "not updated (the ref is at bbbbbbb)"
    assert outcome(Command(Z, A, "r"), None) == "not updated (the ref is at nothing)"


def test_git_variables_from_the_client_do_not_reach_git() -> None:
    env = {"PATH": "/bin", "GIT_DIR": "/etc", "GIT_CONFIG_PARAMETERS": "x", "GIT_PROTOCOL": "v=2"}
    assert child_environment(env) == {"PATH": "/bin", "GIT_PROTOCOL": "v=2"}


# --- where a pack ends -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real packs: whole objects, offset deltas, and a thin pack of reference deltas."""
    repo = tmp_path_factory.mktemp("packs")
    git(repo, "init", "-q")
    text = "".join(f"line {i} of a file that changes a little each time\n" for i in range(2000))
    for n in range(3):
        (repo / "big.txt").write_text(text + f"edit {n}\n")
        (repo / f"small{n}.txt").write_text(f"{n}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{n}")

    def pack(*args: str, revs: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(repo), "pack-objects", "--stdout", "--revs", "-q", *args],
            input=revs.encode(),
            capture_output=True,
            check=True,
        ).stdout

    return {
        "whole": encode_pack([(3, b"blob one\n"), (3, os.urandom(70000))]),
        "empty": encode_pack([]),
        "ofs-delta": pack("--delta-base-offset", revs="HEAD\n"),
        "thin-ref-delta": pack("--thin", revs="HEAD\n^HEAD~1\n"),
    }


@pytest.mark.parametrize("kind", ["whole", "empty", "ofs-delta", "thin-ref-delta"])
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_the_end_of_a_pack_is_found_in_pieces_of_any_size(
    packs: dict[str, bytes], kind: str, piece: int
) -> None:
    data = packs[kind] + b"TRAILING"
    end = PackEnd()
    taken = 0
    for start in range(0, len(data), piece):
        used = end.feed(data[start : start + piece])
        if used is not None:
            taken += used
            break
        taken += min(piece, len(data) - start)
    assert end.done and taken == len(packs[kind])


def test_packs_really_hold_deltas(packs: dict[str, bytes]) -> None:
    """The delta cases above are only worth something if the packs contain deltas."""
    for kind, wanted in (("ofs-delta", 6), ("thin-ref-delta", 7)):
        types = object_types(packs[kind])
        assert wanted in types, (kind, types)


def object_types(pack: bytes) -> list[int]:
    count = int.from_bytes(pack[8:12], "big")
    pos, types = 12, []
    for _ in range(count):
        first = pack[pos]
        types.append((first >> 4) & 7)
        while pack[pos] & 0x80:
            pos += 1
        pos += 1
        if types[-1] == 6:
            while pack[pos] & 0x80:
                pos += 1
            pos += 1
        elif types[-1] == 7:
            pos += 20
        inflate = zlib.decompressobj()
        inflate.decompress(pack[pos:])
        pos = len(pack) - len(inflate.unused_data)
    return types


@pytest.mark.parametrize(
    "data",
    [b"NOPE" + b"\0" * 8, b"PACK\0\0\0\x09\0\0\0\x01", b"PACK\0\0\0\x02\0\0\0\x01\x00garbage"],
)
def test_what_is_not_a_pack_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        PackEnd().feed(data + b"\x78\x9c" + b"\xff" * 40)


# --- the command line, without ssh -----------------------------------------------------------


def serve_here(*args: str, command: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [sys.executable, "-m", "assistant", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--repo", "/srv/x", "--peer", "a/b"], "not a valid node name"),
        (["--repo", "/srv/x", "--peer", ""], "not a valid node name"),
        (["--peer", "laptop"], "needs at least one --repo"),
    ],
)
def test_a_bad_serve_line_in_authorized_keys_is_one_error_line(args: list[str], says: str) -> None:
    proc = serve_here(*args, command="git-upload-pack '/srv/x'")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_the_bare_probe_is_answered_from_the_repository(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--bare", "hub.git")
    git(tmp_path, "init", "-q", "notes")
    args = ["--repo", str(tmp_path / "notes"), "--repo", str(tmp_path / "hub.git")]
    answers = [
        serve_here(*args, "--peer", PEER, command=bare_probe(str(tmp_path / name)))
        for name in ("hub.git", "notes", "notes/.git")
    ]
    assert [(p.returncode, p.stdout) for p in answers] == [
        (0, "true\n"),
        (0, "false\n"),
        (0, "false\n"),
    ]
    outside = serve_here(*args, "--peer", PEER, command=bare_probe(str(tmp_path)))
    assert outside.returncode != 0 and outside.stdout == ""
    assert "is not a repository this key may use" in outside.stderr


# --- end to end through sshd -----------------------------------------------------------------


@dataclass
class Site:
    """A server whose client key is forced into ``serve``, and our repository."""

    server: SSHServer
    home: ClientHome
    notes: Path  # non-bare, --repo
    hub: Path  # bare, --hub (named as ~/hub.git)
    plain: Path  # bare, --repo: not a hub
    confighub: Path  # bare, --repo, annexsync.hub=true
    ours: Path

    def ssh(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.home.config), "-o", "BatchMode=yes", "-T", "peer", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def git(self, *args: str, where: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GIT_SSH_COMMAND": f"ssh -F {self.home.config} -o BatchMode=yes"}
        return subprocess.run(
            ["git", "-C", str(where or self.ours), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def commit(self, name: str, text: str) -> str:
        (self.ours / name).write_text(text)
        git(self.ours, "add", name)
        git(self.ours, "commit", "-q", "-m", f"edit {name}")
        return git(self.ours, "rev-parse", "HEAD").strip()


def snapshot(repo: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Every ref, every object, and anything left in the objects directory's top level."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    objects = git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    gitdir = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    top = sorted(p.name for p in (gitdir / "objects").iterdir() if len(p.name) != 2)
    return dict(line.split(" ", 1) for line in refs.splitlines()), objects.split(), top


def serve_log(repo: Path) -> str:
    gitdir = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    path = gitdir / "annexsync" / "serve.log"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def site(private_ssh_home: ClientHome, tmp_path: Path) -> Iterator[Site]:
    server = private_ssh_home.server
    notes = server.home / "notes"
    git(server.home, "init", "-q", "notes")
    (notes / "theirs.txt").write_text("from the server\n")
    git(notes, "add", ".")
    git(notes, "commit", "-q", "-m", "theirs")
    hub, plain, confighub = (server.home / n for n in ("hub.git", "plain.git", "confighub.git"))
    for bare in (hub, plain, confighub):
        git(server.home, "init", "-q", "--bare", bare.name)
    git(confighub, "config", "annexsync.hub", "true")
    command = (
        f"{sys.executable} -m assistant serve --repo {notes} --hub ~/hub.git "
        f"--repo {plain} --repo {confighub} --peer {PEER}"
    )
    server.authorize_client(f'command="{command}",restrict')
    ours = tmp_path / "ours"
    git(tmp_path, "init", "-q", "ours")
    assert annexsync("-C", str(ours), "init", "--name", PEER).returncode == 0
    remotes = {
        "notes": "peer:~/notes",
        "hub": "peer:~/hub.git",
        "plain": f"peer:{plain}",
        "confighub": f"ssh://peer{confighub}",
    }
    for name, url in remotes.items():
        git(ours, "remote", "add", name, url)
    site = Site(server, private_ssh_home, notes, hub, plain, confighub, ours)
    site.commit("notes.txt", "first\n")
    yield site


def test_annexsync_push_and_fetch_work_through_serve(site: Site) -> None:
    head = git(site.ours, "rev-parse", "HEAD").strip()
    pushed = annexsync("-C", str(site.ours), "push", "notes", "hub", "confighub")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    # serve answered the bare probe: synced refs on the non-bare repository, branches on hubs
    assert snapshot(site.notes)[0][f"{SYNCED}main"] == head
    assert snapshot(site.hub)[0] == {"refs/heads/main": head}
    assert snapshot(site.confighub)[0] == {"refs/heads/main": head}
    assert f"{PEER} accepted {SYNCED}main 0000000..{head[:7]} updated" in serve_log(site.notes)
    assert f"{PEER} accepted refs/heads/main 0000000..{head[:7]} updated" in serve_log(site.hub)

    # a fast-forward, checked in a quarantine first: large enough for git pack-objects
    (site.ours / "data.bin").write_bytes(os.urandom(9 << 20))
    git(site.ours, "add", "data.bin")
    second = site.commit("notes.txt", "second\n")
    pushed = annexsync("-C", str(site.ours), "push", "hub")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    refs, objects, top = snapshot(site.hub)
    assert refs == {"refs/heads/main": second}
    assert git(site.ours, "rev-parse", "HEAD:data.bin").strip() in objects
    assert top == ["info", "pack"]  # no quarantine left behind

    theirs = git(site.notes, "rev-parse", "HEAD").strip()
    fetched = annexsync("-C", str(site.ours), "fetch", "notes")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert git(site.ours, "rev-parse", "refs/remotes/notes/main").strip() == theirs


@pytest.mark.parametrize("size", [10, 8 << 20])
def test_annexsync_push_to_a_bare_repository_that_is_no_hub_shows_the_reason(
    site: Site, size: int
) -> None:
    (site.ours / "data.bin").write_bytes(os.urandom(size))
    git(site.ours, "add", "data.bin")
    git(site.ours, "commit", "-q", "-m", "data")
    before = snapshot(site.plain)
    pushed = annexsync("-C", str(site.ours), "push", "plain")
    assert pushed.returncode == 1
    assert "plain: rejected refs/heads/main: annexsync serve: this repository is not a hub" in (
        pushed.stderr
    )
    assert snapshot(site.plain) == before
    assert f"{PEER} refused refs/heads/main" in serve_log(site.plain)


def test_plain_git_pushes_and_fetches_within_the_namespace_work(site: Site, tmp_path: Path) -> None:
    head = git(site.ours, "rev-parse", "HEAD").strip()
    ok = site.git("push", "notes", f"main:{SYNCED}main")
    assert ok.returncode == 0, ok.stderr
    ok = site.git("push", "hub", "main")
    assert ok.returncode == 0, ok.stderr
    site.commit("notes.txt", "forward\n")
    ok = site.git("push", "hub", "main")
    assert ok.returncode == 0, ok.stderr
    assert snapshot(site.hub)[0]["refs/heads/main"] == git(site.ours, "rev-parse", "HEAD").strip()
    assert snapshot(site.notes)[0][f"{SYNCED}main"] == head

    clone = site.git("clone", "-q", "peer:~/hub.git", str(tmp_path / "clone"), where=tmp_path)
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "clone" / "notes.txt").read_text() == "forward\n"
    fetched = site.git("fetch", "-q", "notes")
    assert fetched.returncode == 0, fetched.stderr


@pytest.mark.parametrize(
    ("remote", "refspec", "says"),
    [
        ("notes", "+main:refs/heads/main", "this repository is not a hub"),
        ("notes", "main:refs/heads/new", "this repository is not a hub"),
        ("notes", "main:refs/remotes/desktop/synced/main", "belongs to node desktop"),
        ("notes", f":{SYNCED}main", "deleting refs is not allowed"),
        ("notes", "main:refs/tags/v1", f"may write only {SYNCED}*"),
        ("notes", f"main:{SYNCED}main +main:refs/heads/main", "this repository is not a hub"),
        ("hub", ":refs/heads/main", "deleting refs is not allowed"),
        ("hub", "+main:refs/heads/main", "non-fast-forward"),
        ("hub", "main:refs/remotes/desktop/synced/main", "belongs to node desktop"),
    ],
)
def test_plain_git_push_outside_what_the_key_may_write_is_refused_and_changes_nothing(
    site: Site, remote: str, refspec: str, says: str
) -> None:
    # something to delete or rewrite: our synced ref on notes, and main on the hub
    assert site.git("push", "notes", f"main:{SYNCED}main").returncode == 0
    assert site.git("push", "hub", "main").returncode == 0
    if remote == "hub" and refspec.startswith("+"):  # a history without the hub's main
        git(site.ours, "checkout", "-q", "--orphan", "other")
        site.commit("rewritten.txt", "a new blob the hub lacks\n")
        git(site.ours, "branch", "-f", "main", "other")
    else:
        site.commit("notes.txt", "new objects for the pack\n")
    repo = site.notes if remote == "notes" else site.hub
    before = snapshot(repo)

    proc = site.git("push", remote, *refspec.split())
    assert proc.returncode != 0
    assert "[remote rejected]" in proc.stderr and says in proc.stderr, proc.stderr
    assert "push refused as a whole; nothing was stored" in proc.stderr
    assert snapshot(repo) == before
    assert f"{PEER} refused" in serve_log(repo)


@pytest.mark.parametrize("remote", ["notes", "hub"])
def test_a_refused_push_with_a_large_pack_still_tells_the_client_why(
    site: Site, remote: str
) -> None:
    """The pack (far more than pipes and the ssh window hold) is read and thrown away, so the
    client finishes sending it and then reads the refusal."""
    repo = site.notes if remote == "notes" else site.hub
    before = snapshot(repo)
    (site.ours / "big.bin").write_bytes(os.urandom(8 << 20))
    git(site.ours, "add", "big.bin")
    git(site.ours, "commit", "-q", "-m", "big")
    proc = site.git("push", remote, "main:refs/tags/big")
    assert proc.returncode != 0
    assert "[remote rejected]" in proc.stderr and "may write only" in proc.stderr, proc.stderr
    assert snapshot(repo) == before


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["ls", "-la"], "may run only"),
        ([], "no shell"),
        (["git-upload-pack '/etc'"], "/etc is not a repository this key may use"),
        (["git-receive-pack '~'"], "~ is not a repository this key may use"),
        (["git-upload-pack '~/notes/..'"], "is not a repository this key may use"),
        (["git-upload-archive '~/notes'"], "may run only"),
        (["sh -c 'id'"], "may run only"),
        (["annexsync notify-changes /"], "/ is not a repository this key may use"),
    ],
)
def test_ssh_commands_other_than_the_services_on_served_repositories_are_refused(
    site: Site, command: list[str], says: str
) -> None:
    proc = site.ssh(*command)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("annexsync: error: refused"), proc.stderr
    assert says in lines[0]


def test_no_shell_syntax_runs_even_beside_an_allowed_command(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for command in (
        f"git-upload-pack '~/notes'; touch {marker}",
        f"git-upload-pack '~/notes' && touch {marker}",
        f'git-upload-pack "$(touch {marker})"',
        f"git-upload-pack `touch {marker}`",
    ):
        proc = site.ssh(command)
        assert proc.returncode != 0, command
        assert "refused" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("url_path", ["~/notes", "NOTES"])
def test_notify_changes_works_through_serve(site: Site, url_path: str) -> None:
    path = str(site.notes) if url_path == "NOTES" else url_path
    location = SSHLocation("peer", path)
    name, arg = invocation(location, DEFAULT_COMMAND)
    main = git(site.notes, "rev-parse", "refs/heads/main").strip()

    async def listen() -> list[tuple[str, str | None]]:
        pool = SSHPool()
        seen: list[tuple[str, str | None]] = []
        stream = watch_remote(SSHTransport(pool, location), arg, name)
        try:
            async with asyncio.timeout(30):
                while ("refs/heads/main", main) not in seen:
                    seen.append(await anext(stream))
                await asyncio.to_thread(git, site.notes, "update-ref", "refs/heads/feature", main)
                while ("refs/heads/feature", main) not in seen:
                    seen.append(await anext(stream))
        finally:
            try:
                await stream.aclose()  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                # an aborted ssh channel re-raises its stderr reader's cancellation (see
                # ChangeListener._listen); only a cancellation of this task is real
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            await pool.close()
        return seen

    from sshd import descendants

    seen = asyncio.run(listen())
    assert seen[-1] == ("refs/heads/feature", main)
    # the channel closed, so serve (and the notify-changes it runs) ended
    wait_until(lambda: not descendants(site.server.pid), timeout=20)

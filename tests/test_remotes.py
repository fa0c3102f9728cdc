"""Remote URLs, remote-shell quoting, the ref mapping, and the per-remote switches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest
from conftest import git

from assistant.errors import ConfigError
from assistant.remotes import (
    DEFAULT_NOTIFY_COMMAND,
    LocalLocation,
    Remote,
    SSHLocation,
    fetch_target,
    parse_notify,
    parse_url,
    push_target,
    read_remotes,
    select_remotes,
    shell_quote,
)

BASE = Path("/home/alice/notes")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # ssh:// URLs
        ("ssh://host/srv/notes.git", SSHLocation("host", "/srv/notes.git")),
        ("ssh://alice@host/srv/notes", SSHLocation("host", "/srv/notes", "alice")),
        ("ssh://alice@host:2222/srv/notes", SSHLocation("host", "/srv/notes", "alice", 2222)),
        ("ssh://host:22/r", SSHLocation("host", "/r", None, 22)),
        ("ssh://host:/r", SSHLocation("host", "/r")),  # an empty port is the default
        ("git+ssh://host/r", SSHLocation("host", "/r")),
        ("ssh+git://host/r", SSHLocation("host", "/r")),
        ("ssh://[::1]/srv/notes", SSHLocation("::1", "/srv/notes")),
        ("ssh://alice@[::1]:2200/r", SSHLocation("::1", "/r", "alice", 2200)),
        ("ssh://[fe80::1%eth0]/r", SSHLocation("fe80::1%eth0", "/r")),
        ("ssh://host/~/notes", SSHLocation("host", "~/notes")),
        ("ssh://host/~alice/notes", SSHLocation("host", "~alice/notes")),
        ("ssh://host/path with spaces/it's", SSHLocation("host", "/path with spaces/it's")),
        ("ssh://my-alias/r", SSHLocation("my-alias", "/r")),  # a Host alias from ssh config
        # scp-like
        ("host:notes", SSHLocation("host", "notes")),
        ("host:/srv/notes.git", SSHLocation("host", "/srv/notes.git")),
        ("alice@host:~/notes", SSHLocation("host", "~/notes", "alice")),
        ("alice@host:~bob/notes", SSHLocation("host", "~bob/notes", "alice")),
        ("[::1]:notes", SSHLocation("::1", "notes")),
        ("alice@[::1]:/srv/r", SSHLocation("::1", "/srv/r", "alice")),
        ("host:with:colons", SSHLocation("host", "with:colons")),
        # local paths
        ("file:///srv/notes.git", LocalLocation("/srv/notes.git")),
        ("file:///", LocalLocation("/")),
        ("/media/usb/notes.git", LocalLocation("/media/usb/notes.git")),
        ("/media/usb/odd:name", LocalLocation("/media/usb/odd:name")),
        ("../peer", LocalLocation("/home/alice/peer")),
        ("peer.git", LocalLocation("/home/alice/notes/peer.git")),
        ("./odd:name", LocalLocation("/home/alice/notes/odd:name")),  # a slash before ':'
        ("sub/dir:x", LocalLocation("/home/alice/notes/sub/dir:x")),
        ("/path with spaces/it's", LocalLocation("/path with spaces/it's")),
    ],
)
def test_parse_url(url: str, expected: object) -> None:
    assert parse_url(url, BASE) == expected


def test_scp_like_wins_over_an_existing_local_file(tmp_path: Path, monkeypatch) -> None:
    """As in git: 'foo:bar' is host foo even when ./foo:bar exists, whatever the current
    directory; './foo:bar' is the local path."""
    (tmp_path / "foo:bar").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_url("foo:bar", tmp_path) == SSHLocation("foo", "bar")
    assert parse_url("./foo:bar", tmp_path) == LocalLocation(str(tmp_path / "foo:bar"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "bad remote url"),
        ("https://example.com/notes.git", "scheme https://"),
        ("git://example.com/notes.git", "scheme git://"),
        ("http://example.com/notes.git", "scheme http://"),
        ("ftp://host/r", "scheme ftp://"),
        ("ssh://host", "ssh://[user@]host[:port]/path"),
        ("ssh://host:notaport/r", "ssh://"),
        ("ssh://host:99999/r", "port 99999"),
        ("ssh://host:0/r", "port 0"),
        ("host:", "no path"),
        ("ssh://host/r\n", "bad remote url"),
        ("host:r\nProxyCommand=x", "bad remote url"),
        ("/srv/r\x00x", "bad remote url"),
        ("/srv/\x1b[31mred", "bad remote url"),
        ("host:\tpath", "bad remote url"),
        ("ssh://-oProxyCommand=evil/r", "may not start with '-'"),
        ("-oProxyCommand=evil:r", "may not start with '-'"),
        ("host:-u", "may not start with '-'"),
        ("-l@host:r", "may not start with '-'"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url, BASE)
    assert message in str(info.value)
    assert repr(url) in str(info.value)


def test_describe() -> None:
    assert SSHLocation("host", "/r").describe() == "host"
    assert SSHLocation("host", "/r", "alice", 2222).describe() == "alice@host:2222"
    assert LocalLocation("/r").describe() == "this machine"


# --- shell_quote -----------------------------------------------------------------------------

NASTY = [
    "plain",
    "",
    "with space",
    "  leading and trailing  ",
    "it's",
    "''",
    'double "quotes"',
    "$HOME and ${HOME} and $(id) and `id`",
    "back\\slash\\",
    "bang!bang!!",
    "semi;colon && pipe | amp & redirect > < * ? [a-z] {a,b}",
    "new\nline",
    "tab\there",
    "~/tilde",
    "~alice/x",
    "-dash",
    "#comment",
    "unicode: é ü 日本",
    "'!'\\''",
]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shell_quote_round_trips(shell: str) -> None:
    for path in NASTY:
        out = subprocess.run(
            [shell, "-c", f"printf %s {shell_quote(path)}"],
            capture_output=True,
            check=True,
        ).stdout
        assert out.decode() == path, (shell, path)


def test_shell_quote_is_one_word() -> None:
    script = " ".join(["printf '<%s>'", *(shell_quote(p) for p in NASTY)])
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout.decode()
    assert out == "".join(f"<{p}>" for p in NASTY)


def test_shell_quote_matches_git() -> None:
    """The same quoting as git's sq_quote."""
    assert shell_quote("a b") == "'a b'"
    assert shell_quote("it's") == "'it'\\''s'"
    assert shell_quote("hi!") == "'hi'\\!''"


# --- the ref mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "node", "bare", "expected"),
    [
        ("refs/heads/main", "laptop", True, "refs/heads/main"),
        ("refs/heads/main", "laptop", False, "refs/remotes/laptop/synced/main"),
        ("refs/heads/feature/x", "laptop", False, "refs/remotes/laptop/synced/feature/x"),
        ("refs/heads/feature/x", "laptop", True, "refs/heads/feature/x"),
        ("main", "desk", False, "refs/remotes/desk/synced/main"),
    ],
)
def test_push_target(branch: str, node: str, bare: bool, expected: str) -> None:
    assert push_target(branch, node, bare) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("refs/heads/main", "refs/remotes/usb/main"),
        ("refs/heads/feature/x", "refs/remotes/usb/feature/x"),
        ("HEAD", None),
        ("refs/tags/v1", None),
        ("refs/remotes/laptop/synced/main", None),
        ("refs/notes/commits", None),
    ],
)
def test_fetch_target(ref: str, expected: str | None) -> None:
    assert fetch_target(ref, "usb") == expected


# --- read_remotes and select_remotes -------------------------------------------------------


def set_config(repo: Path, key: str, value: str) -> None:
    git(repo, "config", key, value)


def test_read_remotes_with_switches(repo: Path) -> None:
    git(repo, "remote", "add", "usb", "/media/usb/notes.git")
    git(repo, "remote", "add", "desk", "alice@desk:notes")
    git(repo, "remote", "add", "archive", "ssh://nas:2222/srv/notes")
    git(repo, "remote", "add", "near", "../near")
    git(repo, "remote", "add", "usb.backup", "/media/backup/notes.git")  # dots in the name
    set_config(repo, "remote.archive.annexsync-sync", "false")
    set_config(repo, "remote.desk.annexsync-push", "no")
    set_config(repo, "remote.usb.annexsync-pull", "off")
    set_config(repo, "remote.near.annexsync-push", "yes")
    set_config(repo, "remote.near.annexsync-pull", "1")
    set_config(repo, "remote.nourl.fetch", "+refs/heads/*:refs/remotes/nourl/*")

    remotes = read_remotes(pygit2.Repository(str(repo)), repo)
    assert [r.name for r in remotes] == ["archive", "desk", "near", "usb", "usb.backup"]
    by = {r.name: r for r in remotes}
    assert by["archive"].location == SSHLocation("nas", "/srv/notes", None, 2222)
    assert (by["archive"].sync, by["archive"].push, by["archive"].pull) == (False, True, True)
    assert by["desk"].location == SSHLocation("desk", "notes", "alice")
    assert (by["desk"].sync, by["desk"].push, by["desk"].pull) == (True, False, True)
    assert by["usb"].url == "/media/usb/notes.git"
    assert (by["usb"].sync, by["usb"].push, by["usb"].pull) == (True, True, False)
    assert by["near"].location == LocalLocation(str((repo / ".." / "near").resolve()))
    assert (by["near"].sync, by["near"].push, by["near"].pull) == (True, True, True)
    assert by["usb.backup"].location == LocalLocation("/media/backup/notes.git")

    assert [r.name for r in select_remotes(remotes, [], "push")] == ["near", "usb", "usb.backup"]
    assert [r.name for r in select_remotes(remotes, [], "pull")] == ["desk", "near", "usb.backup"]
    assert [r.name for r in select_remotes(remotes, [], "sync")] == [
        "desk",
        "near",
        "usb",
        "usb.backup",
    ]
    # named remotes are taken as asked, in the order asked, switches or not
    assert [r.name for r in select_remotes(remotes, ["usb", "archive"], "push")] == [
        "usb",
        "archive",
    ]


def test_no_remotes(repo: Path) -> None:
    assert read_remotes(pygit2.Repository(str(repo)), repo) == []


@pytest.mark.parametrize("switch", ["sync", "push", "pull"])
def test_bad_boolean_names_the_key(repo: Path, switch: str) -> None:
    git(repo, "remote", "add", "usb", "/media/usb/notes.git")
    set_config(repo, f"remote.usb.annexsync-{switch}", "maybe")
    with pytest.raises(ConfigError) as info:
        read_remotes(pygit2.Repository(str(repo)), repo)
    assert f"remote.usb.annexsync-{switch}" in str(info.value)
    assert "maybe" in str(info.value)


def test_bad_url_in_config_is_a_config_error(repo: Path) -> None:
    git(repo, "remote", "add", "web", "https://example.com/notes.git")
    with pytest.raises(ConfigError, match="https://"):
        read_remotes(pygit2.Repository(str(repo)), repo)


def remote(name: str, **switches: bool) -> Remote:
    return Remote(name, f"/r/{name}", LocalLocation(f"/r/{name}"), **switches)


def test_select_unknown_names_lists_them() -> None:
    remotes = [remote("usb"), remote("desk")]
    with pytest.raises(ConfigError) as info:
        select_remotes(remotes, ["usb", "nas", "cloud"], "push")
    message = str(info.value)
    assert "nas, cloud" in message
    assert "usb" not in message.split("(")[0]


def test_select_defaults() -> None:
    remotes = [
        remote("a"),
        remote("b", sync=False),
        remote("c", push=False),
        remote("d", pull=False),
        remote("e", push=False, pull=False),
    ]
    assert [r.name for r in select_remotes(remotes, [], "push")] == ["a", "d"]
    assert [r.name for r in select_remotes(remotes, [], "pull")] == ["a", "c"]
    assert select_remotes([], [], "push") == []


# --- remote.<name>.annexsync-notify ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_NOTIFY_COMMAND),
        ("true", DEFAULT_NOTIFY_COMMAND),
        ("Yes", DEFAULT_NOTIFY_COMMAND),
        ("1", DEFAULT_NOTIFY_COMMAND),
        ("false", None),
        ("off", None),
        ("0", None),
        ("", None),
        ("   ", None),
        (
            "/opt/annexsync/bin/annexsync notify-changes",
            "/opt/annexsync/bin/annexsync notify-changes",
        ),
        ("  ~/.local/bin/annexsync notify-changes  ", "~/.local/bin/annexsync notify-changes"),
        (
            "env PYTHONPATH='/srv/a b' python3 -m assistant notify-changes",
            "env PYTHONPATH='/srv/a b' python3 -m assistant notify-changes",
        ),
    ],
)
def test_parse_notify(value: str | None, expected: str | None) -> None:
    assert parse_notify("remote.desk.annexsync-notify", value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("annexsync notify-changes\nrm -rf ~", "one line"),
        ("annexsync\tnotify-changes", "one line"),
        ("annexsync 'notify-changes", "quotation"),
    ],
)
def test_bad_notify_command_names_the_key(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_notify("remote.desk.annexsync-notify", value)
    message = str(info.value)
    assert "remote.desk.annexsync-notify" in message
    assert why in message
    assert "\n" not in message  # one line, the value shown escaped


def test_read_remotes_notify_command(repo: Path) -> None:
    git(repo, "remote", "add", "desk", "alice@desk:notes")
    git(repo, "remote", "add", "hub", "ssh://nas/srv/notes.git")
    git(repo, "remote", "add", "usb", "/media/usb/notes.git")
    set_config(repo, "remote.desk.annexsync-notify", "/opt/annexsync/bin/annexsync notify-changes")
    set_config(repo, "remote.hub.annexsync-notify", "false")

    by = {r.name: r for r in read_remotes(pygit2.Repository(str(repo)), repo)}
    assert by["desk"].notify == "/opt/annexsync/bin/annexsync notify-changes"
    assert by["hub"].notify is None
    assert by["usb"].notify == DEFAULT_NOTIFY_COMMAND == "annexsync notify-changes"


def test_read_remotes_bad_notify_command_is_a_config_error(repo: Path) -> None:
    git(repo, "remote", "add", "desk", "alice@desk:notes")
    set_config(repo, "remote.desk.annexsync-notify", "annexsync 'notify-changes")
    with pytest.raises(ConfigError, match=r"remote\.desk\.annexsync-notify"):
        read_remotes(pygit2.Repository(str(repo)), repo)


def test_remote_built_without_notify_gets_the_default() -> None:
    assert remote("usb").notify == DEFAULT_NOTIFY_COMMAND

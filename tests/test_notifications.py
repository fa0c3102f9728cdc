"""Desktop notifications from a real assistant, received by a real notification server (dunst
on a private session bus): a conflict kept as a variant, deletions held by the guard, a peer
unreachable for long and back again; none while ``annexsync.notifications`` is false, and
they start as soon as it is turned on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import Daemon, annexsync, git, head_files, wait_until

from assistant.config import settings_from_values
from assistant.daemon.notifier import CHECK_MAX, CHECK_MIN, check_interval, home_relative

if TYPE_CHECKING:
    from desktop_session import NotificationServer, Received

pytest_plugins = ["desktop_session"]


@pytest.fixture
def desktop(
    notification_server: NotificationServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotificationServer]:
    """The notification server, on the session bus every assistant started here uses."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", notification_server.address)
    yield notification_server


def node(tmp_path: Path, directory: str, name: str, files: dict[str, str] | None = None) -> Path:
    path = tmp_path / directory
    path.mkdir()
    git(path, "init", "-q")
    assert annexsync("-C", str(path), "init", "--name", name).returncode == 0
    for rel, data in (files or {}).items():
        (path / rel).write_text(data)
    return path


def sync(path: Path) -> None:
    proc = annexsync("-C", str(path), "sync")
    assert proc.returncode == 0, proc.stderr


def config(repo: Path, **values: str) -> None:
    for key, value in values.items():
        git(repo, "config", f"annexsync.{key}", value)


def told(server: NotificationServer, title: str, timeout: float = 20) -> Received:
    """The one notification titled ``title``, once it has arrived."""
    found: list[Received] = []

    def arrived() -> bool:
        found[:] = [r for r in server.received() if r.title == title]
        return bool(found)

    try:
        wait_until(arrived, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"no {title!r} among {server.received()}") from None
    assert len(found) == 1, found
    return found[0]


def test_a_conflict_kept_as_a_variant_is_told_with_both_file_names(
    tmp_path: Path, desktop: NotificationServer, daemon_factory: Callable[[Path], Daemon]
) -> None:
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    alpha = node(tmp_path, "alpha", "alpha", {"notes.md": "shared\n"})
    beta = node(tmp_path, "beta", "laptop")
    for path in (alpha, beta):
        git(path, "remote", "add", "hub", str(hub))
        sync(path)
    (alpha / "notes.md").write_text("alpha's version\n")
    sync(alpha)
    (beta / "notes.md").write_text("beta's version\n")

    daemon_factory(beta).start()

    wait_until(lambda: any(p.startswith("notes.variant-") for p in head_files(beta)), timeout=30)
    (variant,) = [p for p in head_files(beta) if p.startswith("notes.variant-")]
    got = told(desktop, "Conflict in beta (laptop): both versions kept")
    assert got.app == "annexsync"
    assert got.body == (
        f"notes.md was changed on two nodes. The other version is {variant}.\n"
        "Compare the two, keep what you want, delete the other."
    )
    assert len(desktop.received()) == 1


def forty_files(repo: Path) -> list[str]:
    names = [f"note{i:02}.txt" for i in range(40)]
    for name in names:
        (repo / name).write_text(f"{name}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "forty notes")
    config(repo, delay="300ms", maxdelay="5s")  # one quiet window holds a whole `rm`
    return names


def test_deletions_held_by_the_guard_are_told_with_the_command_that_releases_them(
    tmp_path: Path, desktop: NotificationServer, daemon_factory: Callable[[Path], Daemon]
) -> None:
    work = node(tmp_path, "work", "desk")
    doomed = forty_files(work)[:30]
    d = daemon_factory(work).start()

    for name in doomed:
        (work / name).unlink()

    wait_until(lambda: len(d.status()["held"]) == 30)
    got = told(desktop, "Deletions held in work (desk)")
    assert got.body == (
        "The mass-deletion guard holds back 30 deletions: note00.txt, note01.txt, note02.txt, "
        "note03.txt, note04.txt, and 25 more.\n"
        f"If you meant it, run `annexsync sync --allow-deletions` in {work}; "
        "if not, put the files back."
    )


def broken_peer(tmp_path: Path) -> Path:
    """A peer directory whose repository cannot be opened: present, so not an unplugged
    drive, but every sync with it fails."""
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / ".git").write_text("gitdir: /nonexistent/repository\n")
    return peer


def test_a_peer_unreachable_past_the_threshold_is_told_once_and_its_return_too(
    tmp_path: Path, desktop: NotificationServer, daemon_factory: Callable[[Path], Daemon]
) -> None:
    work = node(tmp_path, "work", "desk", {"a.txt": "a\n"})
    peer = broken_peer(tmp_path)
    git(work, "remote", "add", "peer", str(peer))
    config(work, notifyunreachable="1s", retrydelay="200ms", retrymax="1s")
    d = daemon_factory(work).start()

    lost = told(desktop, "work (desk) cannot reach peer")
    assert lost.body.startswith("peer: unreachable for ")
    assert "cannot open the repository at" in lost.body
    assert lost.body.endswith(
        "\nChanges wait and are synced when it is back. `annexsync status` shows more."
    )
    (peer / ".git").unlink()
    git(peer, "init", "-q")

    back = told(desktop, "work (desk) reaches peer again")
    assert back.body.startswith("peer: back after ")
    assert back.body.endswith("\nSyncing has resumed.")
    assert {p["remote"]: p["state"] for p in d.status()["peers"]} == {"peer": "connected"}
    titles = [r.title for r in desktop.received()]
    assert titles == ["work (desk) cannot reach peer", "work (desk) reaches peer again"]


def test_notifications_off_shows_none_and_turning_them_on_needs_no_restart(
    tmp_path: Path, desktop: NotificationServer, daemon_factory: Callable[[Path], Daemon]
) -> None:
    work = node(tmp_path, "work", "desk")
    doomed = forty_files(work)[:32]
    git(work, "remote", "add", "peer", str(broken_peer(tmp_path)))
    config(work, notifications="false", notifyunreachable="1s", retrydelay="200ms")
    d = daemon_factory(work).start()

    for name in doomed[:30]:
        (work / name).unlink()
    wait_until(lambda: len(d.status()["held"]) == 30)

    def long_unreachable() -> bool:
        (peer,) = d.status()["peers"]
        return peer["offline_since"] is not None and time.time() - peer["offline_since"] > 1.5

    wait_until(long_unreachable)
    # Absence cannot be waited for: give the notifier several of its 0.25 s rounds to act.
    time.sleep(1.0)
    assert desktop.received() == []

    config(work, notifications="true")
    told(desktop, "work (desk) cannot reach peer")
    for name in doomed[30:]:
        (work / name).unlink()
    wait_until(lambda: len(d.status()["held"]) == 32)
    got = told(desktop, "Deletions held in work (desk)")
    assert "holds back 32 deletions" in got.body


# --- the keys ---------------------------------------------------------------------------------


def test_notifications_are_on_by_default_with_a_one_hour_outage_threshold() -> None:
    settings = settings_from_values({}, [])
    assert (settings.notifications, settings.notifyunreachable, settings.notifycommand) == (
        True,
        3600.0,
        "",
    )
    parsed = settings_from_values(
        {"notifications": "off", "notifyunreachable": "10m", "notifycommand": " my-notify -x "},
        [],
    )
    assert (parsed.notifications, parsed.notifyunreachable, parsed.notifycommand) == (
        False,
        600.0,
        "my-notify -x",
    )
    assert settings_from_values({"notifyunreachable": "0"}, []).notifyunreachable == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("notifications", "maybe", "bad value for annexsync.notifications: 'maybe'"),
        ("notifyunreachable", "soon", "bad value for annexsync.notifyunreachable: 'soon'"),
        (
            "notifyunreachable",
            "500ms",
            "bad value for annexsync.notifyunreachable: it must be 0 (off) or at least 1s",
        ),
    ],
)
def test_a_bad_notification_key_stops_the_assistant_with_one_line(
    repo: Path, key: str, value: str, message: str
) -> None:
    config(repo, **{key: value})
    proc = annexsync("-C", str(repo), "assistant", "--foreground")
    assert proc.returncode != 0
    assert proc.stderr.startswith("annexsync: error: ")
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_bad_value_set_while_running_keeps_the_settings_it_had(
    repo: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    d = daemon_factory(repo).start()
    config(repo, notifications="maybe")
    log = repo / ".git" / "annexsync" / "daemon.log"
    wait_until(lambda: "notification settings not reloaded" in log.read_text())
    assert "bad value for annexsync.notifications: 'maybe'" in log.read_text()
    assert d.status()["running"]


@pytest.mark.parametrize(
    ("threshold", "interval"),
    [(1.0, 0.25), (3600.0, CHECK_MAX), (0.0, CHECK_MAX), (0.2, CHECK_MIN)],
)
def test_peers_are_looked_at_often_enough_to_tell_an_outage_a_quarter_late_at_most(
    threshold: float, interval: float
) -> None:
    assert check_interval(threshold) == interval


def test_the_release_command_names_the_repository_as_its_owner_knows_it() -> None:
    home = Path("/home/al")
    assert home_relative(Path("/home/al/notes"), home) == "~/notes"
    assert home_relative(Path("/srv/notes"), home) == "/srv/notes"

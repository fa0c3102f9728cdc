"""Delivering notices to the desktop: where they go, how text is made safe, and real delivery
to dunst on a private session bus, to notify-send, and to a command of the user's own."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import wait_until

from assistant.desktop import (
    Desktop,
    Route,
    choose_route,
    clean,
    command_line,
    escape_markup,
    gvariant_string,
    notification_id,
    session_bus,
)
from assistant.notices import Notice

if TYPE_CHECKING:
    from desktop_session import NotificationServer

pytest_plugins = ["desktop_session"]

TOOLS = {"gdbus": "/usr/bin/gdbus", "notify-send": "/usr/bin/notify-send"}


def which_of(*present: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in present else None


def files(*present: str) -> Callable[[str], bool]:
    return lambda path: path in present


# --- where notifications go ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "platform", "env", "tools", "sockets", "route"),
    [
        ("", "linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/b"}, ("gdbus", "notify-send"),
         ("/tmp/b",), Route("gdbus", "/usr/bin/gdbus", "unix:path=/tmp/b")),
        ("", "linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/b"}, ("notify-send",),
         ("/tmp/b",), Route("notify-send", "/usr/bin/notify-send", "unix:path=/tmp/b")),
        ("", "linux", {}, ("gdbus",), ("/run/user/1000/bus",),
         Route("gdbus", "/usr/bin/gdbus", "unix:path=/run/user/1000/bus")),
        ("", "linux", {"XDG_RUNTIME_DIR": "/xdg"}, ("gdbus",), ("/xdg/bus",),
         Route("gdbus", "/usr/bin/gdbus", "unix:path=/xdg/bus")),
        ("", "linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus-x,guid=1"},
         ("gdbus",), (), Route("gdbus", "/usr/bin/gdbus", "unix:abstract=/tmp/dbus-x,guid=1")),
        ("", "linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/b%20c,guid=1"}, ("gdbus",),
         ("/tmp/b c",), Route("gdbus", "/usr/bin/gdbus", "unix:path=/tmp/b%20c,guid=1")),
        ("my-notifier --loud", "linux", {}, (), (), Route("command", "my-notifier --loud")),
        ("my-notifier", "darwin", {}, ("osascript",), (), Route("command", "my-notifier")),
        ("", "darwin", {}, ("osascript",), (), Route("osascript", "/usr/bin/osascript")),
    ],
    ids=[
        "bus-address-gdbus-first",
        "bus-address-notify-send",
        "default-user-socket",
        "xdg-runtime-dir-socket",
        "abstract-socket-trusted",
        "escaped-socket-path",
        "own-command",
        "own-command-wins-on-macos",
        "macos",
    ],
)  # fmt: skip
def test_notifications_go_to_the_user_command_or_the_platform_service(
    command: str,
    platform: str,
    env: dict[str, str],
    tools: tuple[str, ...],
    sockets: tuple[str, ...],
    route: Route,
) -> None:
    chosen, why = choose_route(command, platform, env, 1000, which_of(*tools), files(*sockets))
    assert (chosen, why) == (route, "")


@pytest.mark.parametrize(
    ("platform", "env", "tools", "sockets", "reason"),
    [
        ("linux", {}, ("gdbus",), (), "no session bus"),
        ("linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/gone"}, ("gdbus",), (),
         "no session bus"),
        ("linux", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/b"}, (), ("/tmp/b",),
         "neither gdbus nor notify-send"),
        ("darwin", {}, (), (), "osascript not found"),
    ],
    ids=["no-bus", "bus-socket-gone", "no-client", "macos-without-osascript"],
)  # fmt: skip
def test_without_a_notification_service_there_is_no_route_and_a_reason(
    platform: str,
    env: dict[str, str],
    tools: tuple[str, ...],
    sockets: tuple[str, ...],
    reason: str,
) -> None:
    chosen, why = choose_route("", platform, env, 1000, which_of(*tools), files(*sockets))
    assert chosen is None
    assert why.startswith(reason)


def test_the_bus_socket_is_looked_for_only_where_there_is_no_address() -> None:
    env = {"DBUS_SESSION_BUS_ADDRESS": "tcp:host=localhost,port=1"}
    assert session_bus(env, 0, files()) == "tcp:host=localhost,port=1"
    assert session_bus({}, 0, files("/run/user/0/bus")) == "unix:path=/run/user/0/bus"


# --- text made safe --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("plain", "'plain'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("two\nlines", "'two\\nlines'"),
        ('"quoted"', "'\"quoted\"'"),
        ("€ ünïcode", "'€ ünïcode'"),
    ],
)
def test_strings_reach_gdbus_as_gvariant_literals(text: str, literal: str) -> None:
    assert gvariant_string(text) == literal


def test_markup_is_escaped_so_it_shows_as_text() -> None:
    assert (
        escape_markup("<b>x</b> & <a href='y'>") == "&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href='y'&gt;"
    )


def test_titles_are_one_line_and_bodies_keep_their_lines_within_limits() -> None:
    assert clean("a\nb\x1bc", 50) == "a b\ufffdc"
    assert clean("a\nb\x1bc", 50, newlines=True) == "a\nb\ufffdc"
    long = clean("x" * 1000, 100, newlines=True)
    assert len(long) == 100 and "…" in long


def test_the_gdbus_call_carries_app_replaced_id_urgency_and_escaped_body() -> None:
    notice = Notice("held", "Title <b>", "body <i>\nline", key="held", urgency="critical")
    argv = command_line(Route("gdbus", "gdbus", "unix:path=/b"), notice, replaces=7)
    assert argv[-8:] == [
        "'annexsync'",
        "uint32 7",
        "''",
        "'Title <b>'",
        "'body &lt;i&gt;\\nline'",
        "@as []",
        "@a{sv} {'urgency': <byte 2>}",
        "int32 -1",
    ]
    plain = command_line(Route("gdbus", "gdbus"), notice, markup=False)
    assert plain[-4] == "'body <i>\\nline'"


def test_a_user_command_gets_title_and_body_as_arguments_never_as_shell_text() -> None:
    notice = Notice("variant", "t", "$(touch pwned)")
    argv = command_line(Route("command", "my-notifier --flag"), notice)
    assert argv == [
        "/bin/sh",
        "-c",
        'my-notifier --flag "$@"',
        "annexsync-notify",
        "t",
        "$(touch pwned)",
    ]


def test_the_id_of_a_shown_notification_is_read_from_gdbus() -> None:
    assert notification_id("(uint32 42,)\n") == 42
    assert notification_id("") is None


# --- real delivery ----------------------------------------------------------------------------


def show(desktop: Desktop, *notices: Notice) -> list[bool]:
    async def go() -> list[bool]:
        return [await desktop.show(n) for n in notices]

    return asyncio.run(go())


HOSTILE_TITLE = "Conflict in <b>notes</b> & co\x1b[31m"
HOSTILE_BODY = "'quoted' \"double\" \\ back\n<i>markup</i> &amp; \u202eevil\x07\nthird line"


def test_a_notice_reaches_a_real_notification_server_as_plain_text(
    notification_server: NotificationServer,
) -> None:
    desktop = Desktop(env={**os.environ, **notification_server.env()})
    assert show(desktop, Notice("variant", HOSTILE_TITLE, HOSTILE_BODY)) == [True]
    (got,) = notification_server.received()
    assert got.app == "annexsync"
    assert got.title == "Conflict in <b>notes</b> & co\ufffd[31m"
    assert got.body == (
        "'quoted' \"double\" \\ back\n<i>markup</i> &amp; \ufffdevil\ufffd\nthird line"
    )
    assert "<i>" not in got.raw_body  # escaped: dunst reads the body as markup


def test_a_newer_notice_about_the_same_thing_replaces_the_older(
    notification_server: NotificationServer,
) -> None:
    desktop = Desktop(env={**os.environ, **notification_server.env()})
    first = Notice("held", "Deletions held", "25 deletions", key="held")
    second = Notice("held", "Deletions held", "30 deletions", key="held")
    other = Notice("variant", "Conflict", "a.md")
    assert show(desktop, first, second, other) == [True, True, True]
    assert notification_server.displayed() == 2
    assert [r.body for r in notification_server.received()] == ["30 deletions", "a.md"]


def test_notify_send_is_used_where_gdbus_is_not_installed(
    notification_server: NotificationServer,
) -> None:
    if shutil.which("notify-send") is None:
        pytest.skip("notify-send not installed (Debian: libnotify-bin)")
    desktop = Desktop(
        env={**os.environ, **notification_server.env()},
        which=lambda name: None if name == "gdbus" else shutil.which(name),
    )
    assert show(desktop, Notice("held", "Held <x>", "a & b\nc")) == [True]
    (got,) = notification_server.received()
    assert (got.title, got.body) == ("Held <x>", "a & b\nc")


def test_a_bus_without_a_notification_server_is_logged_once_and_quiet(
    notification_server: NotificationServer, caplog: pytest.LogCaptureFixture
) -> None:
    notification_server.stop_dunst()
    desktop = Desktop(env={**os.environ, **notification_server.env()})
    with caplog.at_level(logging.DEBUG, logger="annexsync.desktop"):
        assert show(desktop, Notice("held", "a", "b"), Notice("held", "c", "d")) == [False, False]
    records = [r for r in caplog.records if r.name == "annexsync.desktop"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert "no notification service" in records[0].getMessage()


def test_no_session_bus_means_no_process_and_one_debug_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus", "PATH": os.environ["PATH"]}
    desktop = Desktop(env=env)
    with caplog.at_level(logging.DEBUG, logger="annexsync.desktop"):
        assert show(desktop, *[Notice("held", "a", "b")] * 3) == [False, False, False]
    messages = [r.getMessage() for r in caplog.records if r.name == "annexsync.desktop"]
    assert messages == [
        "no desktop notifications here: no session bus "
        "(DBUS_SESSION_BUS_ADDRESS unset, no /run/user/UID/bus)"
    ]


def test_the_users_command_gets_title_and_body_verbatim(tmp_path: Path) -> None:
    script = tmp_path / "notifier"
    script.write_text('#!/bin/sh\nprintf "%s\\n--\\n" "$@" >> "$OUT"\n')
    script.chmod(0o755)
    out = tmp_path / "got"
    desktop = Desktop(f"{script} --from-annexsync", env={**os.environ, "OUT": str(out)})
    body = "a.md → a.variant-1.md\n$(touch pwned) `id` ; rm -rf x"
    assert show(desktop, Notice("variant", "Conflict in notes", body)) == [True]
    assert out.read_text() == f"--from-annexsync\n--\nConflict in notes\n--\n{body}\n--\n"
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


def test_a_command_that_fails_is_logged_once_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desktop = Desktop("echo broken >&2; exit 3;", env=dict(os.environ))
    with caplog.at_level(logging.DEBUG, logger="annexsync.desktop"):
        assert show(desktop, Notice("held", "a", "b"), Notice("held", "a", "b")) == [False, False]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "desktop notification through command failed: broken"
    ]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_command_that_hangs_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait; true"
    desktop = Desktop(command, env=dict(os.environ), timeout=0.5)
    started = time.monotonic()
    assert show(desktop, Notice("held", "a", "b")) == [False]
    assert time.monotonic() - started < 5
    for pid in (int(p) for p in pids.read_text().split()):
        wait_until(lambda pid=pid: gone(pid), timeout=5)

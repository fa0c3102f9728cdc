"""Showing a notice on the desktop: the freedesktop notification service on the session bus
(through ``gdbus`` or ``notify-send``), ``osascript`` on macOS, or a command of the user's own
(``annexsync.notifycommand``, given the title and body as arguments).

Delivery never blocks the event loop (each notification is a short-lived subprocess under a
time limit) and never raises into the daemon. Where no notification service exists, that is
logged once at debug level and nothing else happens. Text is made safe on the way out: control
characters cannot reach a terminal or forge lines, and the body is escaped where the server
reads markup (the specification lets servers interpret a subset of HTML there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from assistant.notices import Notice
from assistant.textsafe import printable
from assistant.timeouts import within

log = logging.getLogger("annexsync.desktop")

APP_NAME = "annexsync"
TIMEOUT = 5.0  # seconds one notification may take to deliver
TITLE_MAX = 120
BODY_MAX = 800
URGENCY = {"low": 0, "normal": 1, "critical": 2}
BUS_NAME = "org.freedesktop.Notifications"
BUS_PATH = "/org/freedesktop/Notifications"
# gdbus's words for "nobody shows notifications on this bus": none is registered, the bus
# is gone, or the service could not be started (a notification daemon without a display)
NO_SERVICE = (
    "ServiceUnknown",
    "not provided by any",
    "Could not connect",
    "No such file",
    "org.freedesktop.DBus.Error.Spawn",
)


@dataclass(frozen=True)
class Route:
    """How notifications are shown here: ``kind`` is command, osascript, gdbus or
    notify-send; ``program`` the command to run; ``bus`` the session bus address a D-Bus
    client is to use."""

    kind: str
    program: str
    bus: str | None = None


def _unix_paths(address: str) -> list[str | None]:
    """The socket path of each alternative of a D-Bus address; None where it is not a
    ``unix:path=`` one (an abstract socket, tcp) and so cannot be checked from here."""
    out: list[str | None] = []
    for alternative in address.split(";"):
        transport, _, params = alternative.partition(":")
        path = None
        if transport == "unix":
            for param in params.split(","):
                key, _, value = param.partition("=")
                if key == "path":
                    path = unquote(value)
        out.append(path)
    return out


def session_bus(env: Mapping[str, str], uid: int, exists: Callable[[str], bool]) -> str | None:
    """The session bus address: ``DBUS_SESSION_BUS_ADDRESS``, or the per-user socket in
    ``$XDG_RUNTIME_DIR`` (``/run/user/UID``) that systemd and dbus-broker provide. None when
    there is none, or when every socket the address names is missing."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS", "").strip()
    if address:
        paths = _unix_paths(address)
        if paths and all(p is not None and not exists(p) for p in paths):
            return None
        return address
    socket = os.path.join(env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}", "bus")
    return f"unix:path={socket}" if exists(socket) else None


def choose_route(
    command: str,
    platform: str,
    env: Mapping[str, str],
    uid: int,
    which: Callable[[str], str | None],
    exists: Callable[[str], bool],
) -> tuple[Route | None, str]:
    """Where notifications go (the user's command first, then the platform's service), or
    None with the reason there is nowhere."""
    if command.strip():
        return Route("command", command.strip()), ""
    if platform == "darwin":
        osascript = which("osascript")
        if osascript:
            return Route("osascript", osascript), ""
        return None, "osascript not found"
    bus = session_bus(env, uid, exists)
    if bus is None:
        return None, "no session bus (DBUS_SESSION_BUS_ADDRESS unset, no /run/user/UID/bus)"
    for kind in ("gdbus", "notify-send"):
        program = which(kind)
        if program:
            return Route(kind, program, bus), ""
    return None, "neither gdbus nor notify-send is installed"


def clean(text: str, limit: int, newlines: bool = False) -> str:
    """Printable text of at most ``limit`` characters; line breaks are kept if asked."""
    lines = text.split("\n") if newlines else [text.replace("\n", " ")]
    joined = "\n".join(printable(line, limit) for line in lines)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def escape_markup(text: str) -> str:
    """Text shown as itself by a server that reads the body as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def gvariant_string(text: str) -> str:
    """A string in GVariant text format, as ``gdbus call`` parses its arguments."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def command_line(route: Route, notice: Notice, replaces: int = 0, markup: bool = True) -> list[str]:
    """The command that shows ``notice`` by ``route``."""
    title = clean(notice.title, TITLE_MAX)
    body = clean(notice.body, BODY_MAX, newlines=True)
    if route.kind == "command":
        return ["/bin/sh", "-c", f'{route.program} "$@"', "annexsync-notify", title, body]
    if route.kind == "osascript":
        script = "display notification (item 2 of argv) with title (item 1 of argv)"
        return [route.program, "-e", "on run argv", "-e", script, "-e", "end run", title, body]
    if markup:
        body = escape_markup(body)
    urgency = notice.urgency if notice.urgency in URGENCY else "normal"
    if route.kind == "notify-send":
        return [route.program, f"--app-name={APP_NAME}", f"--urgency={urgency}", "--", title, body]
    return _gdbus_call(
        route,
        "Notify",
        gvariant_string(APP_NAME),
        f"uint32 {replaces}",
        gvariant_string(""),
        gvariant_string(title),
        gvariant_string(body),
        "@as []",
        f"@a{{sv}} {{'urgency': <byte {URGENCY[urgency]}>}}",
        "int32 -1",
    )


def capabilities_command(route: Route) -> list[str]:
    return _gdbus_call(route, "GetCapabilities")


def _gdbus_call(route: Route, method: str, *args: str) -> list[str]:
    """gdbus's command line calling ``method`` of the notification service."""
    return [
        route.program,
        *("call", "--session", "--dest", BUS_NAME, "--object-path", BUS_PATH),
        *("--method", f"{BUS_NAME}.{method}", *args),
    ]


def notification_id(reply: str) -> int | None:
    """The id in gdbus's answer to Notify, ``(uint32 7,)``."""
    match = re.search(r"uint32 (\d+)", reply)
    return int(match.group(1)) if match else None


async def run(argv: list[str], env: Mapping[str, str], timeout: float) -> tuple[int, str, str]:
    """Run a command to its end within ``timeout`` seconds: (exit code, stdout, stderr). One
    that overstays is killed with whatever it started, and reported as exit code -1."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    try:
        out, err = await within(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return -1, "", f"took longer than {timeout:g}s"
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Desktop:
    """Shows notices on this desktop, one at a time, quietly doing nothing where it cannot."""

    def __init__(
        self,
        command: str = "",
        env: Mapping[str, str] | None = None,
        platform: str = sys.platform,
        timeout: float = TIMEOUT,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.command = command
        self.which = which
        self.env = os.environ if env is None else env
        self.platform = platform
        self.timeout = timeout
        self.shown = 0
        self._ids: dict[str, int] = {}  # notice key -> the server's id, to replace it
        self._markup: dict[Route, bool] = {}
        self._said: set[str] = set()

    def _once(self, key: str, level: int, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, *args)

    async def show(self, notice: Notice) -> bool:
        """Show ``notice``; whether it was handed to the desktop. Never raises."""
        try:
            return await self._show(notice)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the daemon's work goes on whatever the desktop does
            self._once(
                f"error {type(exc).__name__}",
                logging.WARNING,
                "desktop notification failed: %s",
                exc,
            )
            return False

    async def _show(self, notice: Notice) -> bool:
        route, why = choose_route(
            self.command, self.platform, self.env, os.getuid(), self.which, os.path.exists
        )
        if route is None:
            self._once("none", logging.DEBUG, "no desktop notifications here: %s", why)
            return False
        env = dict(self.env)
        if route.bus is not None:
            env["DBUS_SESSION_BUS_ADDRESS"] = route.bus
        replaces = self._ids.get(notice.key, 0) if notice.key else 0
        markup = await self._reads_markup(route, env) if route.kind == "gdbus" else True
        code, out, err = await run(command_line(route, notice, replaces, markup), env, self.timeout)
        if code != 0:
            line = printable(err.strip() or f"exit code {code}", 200)
            if route.kind in ("gdbus", "notify-send") and any(s in err for s in NO_SERVICE):
                self._once("no service", logging.DEBUG, "no notification service: %s", line)
            else:
                self._once(
                    f"failed {route.kind}",
                    logging.WARNING,
                    "desktop notification through %s failed: %s",
                    route.kind,
                    line,
                )
            return False
        if route.kind == "gdbus" and notice.key:
            shown = notification_id(out)
            if shown is not None:
                self._ids[notice.key] = shown
        self.shown += 1
        return True

    async def _reads_markup(self, route: Route, env: Mapping[str, str]) -> bool:
        """Whether the server interprets markup in the body (asked once): a server that does
        not would show escapes literally."""
        if route not in self._markup:
            code, out, _ = await run(capabilities_command(route), env, self.timeout)
            if code != 0:
                return True  # the Notify call that follows says what is wrong
            self._markup[route] = "'body-markup'" in out
        return self._markup[route]

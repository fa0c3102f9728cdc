"""A real desktop notification service for tests: a private D-Bus session bus, a virtual X
display (Xvfb) and dunst on it, owning ``org.freedesktop.Notifications``.

What dunst received is read back with ``dunstctl``: every notification is closed into its
history, then the history is listed, oldest first. Use it as a pytest plugin
(``pytest_plugins = ["desktop_session"]``); each process is stopped by the PID this module
started.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd_tools import terminate

TOOLS = ("dbus-daemon", "Xvfb", "dunst", "dunstctl", "gdbus")
# A session bus of our own that starts no service on demand: what answers is what we ran.
BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
DUNSTRC = """\
[global]
    notification_limit = 0
    idle_threshold = 0
    history_length = 1000
    stack_duplicates = false
    markup = full
[urgency_low]
    timeout = 0
[urgency_normal]
    timeout = 0
[urgency_critical]
    timeout = 0
"""


def missing_tools() -> str | None:
    """Why no notification server can be run here, or None when it can."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (Debian: dbus, xvfb, dunst, libglib2.0-bin; "
            "tests/run.sh installs them)"
        )
    return None


@dataclass(frozen=True)
class Received:
    """One notification as the server got it: the body with markup entities decoded, i.e.
    as the person reads it, and the raw body as sent."""

    id: int
    timestamp: int
    app: str
    title: str
    body: str
    raw_body: str


def _first_line(stream: int, timeout: float) -> str:
    """Read one line from a file descriptor within ``timeout`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise AssertionError(f"no line within {timeout}s (got {data!r})")
        chunk = os.read(stream, 4096)
        if not chunk:
            raise AssertionError(f"stream closed (got {data!r})")
        data += chunk
    return data.decode().strip()


class NotificationServer:
    """dbus-daemon + Xvfb + dunst, started and stopped together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.address = ""
        self.display = ""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.socket_dir: Path | None = None

    def _spawn(self, argv: list[str], log: str, **kwargs: object) -> subprocess.Popen[bytes]:
        with open(self.root / f"{log}.log", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=err, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def start(self) -> NotificationServer:
        self.root.mkdir(parents=True, exist_ok=True)
        bus_config = self.root / "bus.conf"
        # a short directory: a socket path may be no longer than 107 bytes
        self.socket_dir = Path(tempfile.mkdtemp(prefix="annexsync-bus-", dir="/tmp"))
        bus_config.write_text(BUS_CONFIG.format(dir=self.socket_dir))
        bus = self._spawn(
            ["dbus-daemon", f"--config-file={bus_config}", "--nofork", "--print-address=1"],
            "dbus",
            stdout=subprocess.PIPE,
        )
        assert bus.stdout is not None
        self.address = _first_line(bus.stdout.fileno(), 10)
        read, write = os.pipe()
        try:
            self._spawn(
                [
                    "Xvfb",
                    "-displayfd",
                    str(write),
                    "-nolisten",
                    "tcp",
                    "-screen",
                    "0",
                    "800x600x24",
                ],
                "xvfb",
                pass_fds=(write,),
                stdout=subprocess.DEVNULL,
            )
            os.close(write)
            self.display = ":" + _first_line(read, 20)
        finally:
            os.close(read)
        config = self.root / "dunstrc"
        config.write_text(DUNSTRC)
        self.dunst = self._spawn(
            ["dunst", "-config", str(config)],
            "dunst",
            env={**os.environ, **self.env(), "DISPLAY": self.display},
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while self._ctl("count", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"dunst did not start: {self.log('dunst')}")
            time.sleep(0.05)
        return self

    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["dunstctl", *args],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"dunstctl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def displayed(self) -> int:
        """How many notifications are on screen now."""
        for line in self._ctl("count").stdout.splitlines():
            if "displayed" in line.lower():
                return int(line.split(":")[1])
        raise AssertionError("dunstctl count said nothing of displayed notifications")

    def received(self) -> list[Received]:
        """Every notification received so far, oldest first (each is closed on the way)."""
        self._ctl("close-all")
        data = json.loads(self._ctl("history").stdout)["data"]
        items = data[0] if data else []
        out = [
            Received(
                id=int(item["id"]["data"]),
                timestamp=int(item["timestamp"]["data"]),
                app=item["appname"]["data"],
                title=item["summary"]["data"],
                body=html.unescape(item["body"]["data"]),
                raw_body=item["body"]["data"],
            )
            for item in items
        ]
        return sorted(out, key=lambda r: (r.timestamp, r.id))

    def stop_dunst(self) -> None:
        """Stop the notification server, leaving the bus without one."""
        self.dunst.terminate()
        self.dunst.wait(timeout=10)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            terminate(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def notification_server(tmp_path: Path) -> Iterator[NotificationServer]:
    """A running notification server on a private session bus; skipped where the tools are
    missing."""
    problem = missing_tools()
    if problem is not None:
        pytest.skip(problem)
    server = NotificationServer(tmp_path / "desktop")
    try:
        yield server.start()
    finally:
        with contextlib.suppress(Exception):
            server.stop()

"""Test hosts on one machine: each a network namespace of its own, joined to the others by
veth links that carry addresses from the loopback range (127.100.0.0/16, routed with
``route_localnet``), all inside one private mount namespace where each node's repository has
a small tmpfs. Each namespace is held open by a sleeping process of ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOOLS = ("unshare", "nsenter", "ip", "mount")


def namespaces_problem() -> str | None:
    """Why hosts in namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network and mount namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces, veth links and mounts need root"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux, iproute2)"
    try:
        space = MountSpace()
    except RuntimeError as exc:
        return str(exc)
    try:
        made = space.run("sh", "-c", "d=$(mktemp -d) && mount -t tmpfs tmpfs $d && umount $d")
        if made.returncode != 0:
            return f"cannot mount a tmpfs in a private mount namespace: {made.stderr.strip()}"
        a, b = Host("probe-a", space), Host("probe-b", space)
        try:
            Link.between(a, b, 250)
        except RuntimeError as exc:
            return f"cannot create veth links: {exc}"
        finally:
            a.close()
            b.close()
    except RuntimeError as exc:
        return str(exc)
    finally:
        space.close()
    return None


class _Holder:
    """A sleeping process of ours that keeps namespaces alive; ended by its own pid."""

    def __init__(self, argv: list[str], kind: str) -> None:
        self.proc = subprocess.Popen(
            [*argv, "sleep", "86400"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        ours = os.readlink(f"/proc/self/ns/{kind}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{argv[0]} failed: {err.strip() or self.proc.returncode}")
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self.pid}/ns/{kind}") != ours:
                    return
            time.sleep(0.01)
        self.close()
        raise RuntimeError(f"{argv[0]} did not enter a new {kind} namespace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class MountSpace(_Holder):
    """A private mount namespace shared by the cluster: its tmpfs mounts are invisible outside
    and vanish with it. Files in it are reached from outside through ``/proc/<pid>/root``
    (git and libgit2 resolve such paths to ones that do not exist here, so they run inside)."""

    def __init__(self) -> None:
        super().__init__(["unshare", "--mount", "--propagation", "private"], "mnt")

    def command(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "--", *argv]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def outside(self, inside: Path) -> Path:
        """Where a path inside is seen from outside the mount namespace."""
        return Path(f"/proc/{self.pid}/root") / inside.relative_to("/")

    def mount_tmpfs(self, where: Path, size: str) -> None:
        proc = self.run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
        if proc.returncode != 0:
            raise RuntimeError(f"mount tmpfs at {where}: {proc.stderr.strip()}")


class Host(_Holder):
    """A network namespace of our own inside the cluster's mount namespace: one machine."""

    def __init__(self, name: str, space: MountSpace) -> None:
        self.name = name
        super().__init__(space.command("unshare", "--net"), "net")
        self.run_checked("ip", "link", "set", "lo", "up")
        # 127.0.0.0/8 belongs to lo; give lo only 127.0.0.1 so the rest can cross the links.
        self.run("ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
        self.sysctl("net.ipv4.conf.all.route_localnet", "1")

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespaces."""
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *argv]

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    def run_checked(self, *argv: str) -> str:
        proc = self.run(*argv)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside; ``nsenter`` execs it, so the pid is the process's own."""
        return subprocess.Popen(self.command(*argv), **kwargs)

    def sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        self.run_checked("sh", "-c", f"echo {value} > {path}")


@dataclass
class Link:
    """A veth pair between two hosts, one address at each end."""

    a: Host
    b: Host
    dev_a: str  # the device on a's side (named after b)
    dev_b: str
    addr_a: str
    addr_b: str

    @classmethod
    def between(cls, a: Host, b: Host, number: int) -> Link:
        dev_a, dev_b = f"to-{b.name}"[:15], f"to-{a.name}"[:15]
        made = subprocess.run(
            ["ip", "link", "add", dev_a, "netns", str(a.pid), "type", "veth",
             "peer", "name", dev_b, "netns", str(b.pid)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(made.stderr.strip())
        link = cls(a, b, dev_a, dev_b, f"127.100.{number}.1", f"127.100.{number}.2")
        for host, dev, addr in ((a, dev_a, link.addr_a), (b, dev_b, link.addr_b)):
            host.sysctl(f"net.ipv4.conf.{dev}.route_localnet", "1")
            host.run_checked("ip", "addr", "add", f"{addr}/30", "dev", dev)
            host.run_checked("ip", "link", "set", dev, "up")
        return link

    def address_of(self, host: Host) -> str:
        return self.addr_a if host is self.a else self.addr_b

    def cut(self) -> None:
        """Take a's end down: no packet crosses until healed (open connections stall)."""
        self.a.run_checked("ip", "link", "set", self.dev_a, "down")

    def heal(self) -> None:
        self.a.run_checked("ip", "link", "set", self.dev_a, "up")

    def is_up(self) -> bool:
        out = self.a.run("ip", "-br", "link", "show", self.dev_a).stdout
        return " UP " in f" {out} "

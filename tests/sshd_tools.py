"""Plain helpers for running a real OpenSSH sshd, shared by the test fixtures (tests/sshd.py)
and the benchmarks (bench/_sshd.py); no pytest needed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_unavailable() -> str | None:
    """Why a real sshd cannot run here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (openssh-server)"
    for tool in ("ssh-keygen", "git"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "sshd needs root here (it switches to the logged-in user)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    """An unencrypted ed25519 key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def public_key(path: Path) -> str:
    """``TYPE BASE64`` of a key pair's public half."""
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def terminate(proc: subprocess.Popen[bytes], patience: float = 5.0) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it is still there after ``patience``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)

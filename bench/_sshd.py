"""Real OpenSSH servers on 127.0.0.1 for the benchmarks, one per node, and a client HOME
that reaches them all. No pytest needed (tests/sshd.py is the test suite's fixture version).

Each server runs ``/usr/sbin/sshd -D -e -f CONFIG`` as this (root) user on a free port with
its own ed25519 host key. Sessions get ``HOME`` set to a clean directory of the server's own
(so no shell start-up file of root's is read) and ``PATH`` set by ``SetEnv``, so the far
side finds ``git``, ``git-annex-shell`` and this checkout's ``annexsync``. Servers and the
per-connection processes forked from them are only ever signalled by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sshd_tools import (
    SSHD,
    descendants,
    free_port,
    keygen,
    public_key,
    terminate,
)

PRIVSEP_DIR = Path("/run/sshd")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark process dies, so no sshd is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SSHServer:
    """One sshd with its own host key, serving sessions with a fixed HOME and PATH."""

    def __init__(self, root: Path, client_key: Path, env: dict[str, str]) -> None:
        self.root = root
        self.home = root / "home"
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.env = env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.home.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(root / "ssh_host_ed25519_key", f"host-{root.name}")
        (root / "authorized_keys").write_text(public_key(client_key) + " client\n")
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = Peer\n\temail = peer@example.com\n"
            "[init]\n\tdefaultBranch = main\n[safe]\n\tdirectory = *\n"
        )

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {public_key(self.host_key)}\n"

    def url(self, path: Path) -> str:
        """An ssh:// URL for ``path`` on this server."""
        return f"ssh://root@127.0.0.1:{self.port}{path}"

    def _write_config(self) -> None:
        setenv = " ".join(f"{k}={v}" for k, v in {"HOME": str(self.home), **self.env}.items())
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "PrintMotd no\n"
            "UseDNS no\n"
            "MaxStartups 100\n"
            "MaxSessions 50\n"
            "LogLevel INFO\n"
            f"SetEnv {setenv}\n"
        )

    def start(self) -> SSHServer:
        """Start on a free port; raise with the log if it does not listen within 10 s."""
        PRIVSEP_DIR.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            self.port = free_port()
            self._write_config()
            with open(self.log, "ab") as log:
                offset = log.tell()
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_die_with_parent,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = self._log_since(offset)
                if f"Server listening on 127.0.0.1 port {self.port}" in text:
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.01)
            self.stop()
            if "Address already in use" not in self._log_since(offset):
                break
        raise RuntimeError(f"sshd did not start:\n{self.log.read_text(errors='replace')}")

    def _log_since(self, offset: int) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        """Kill the per-connection processes, then the listener, by PID."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        terminate(proc)


def client_home(home: Path, key: Path, servers: list[SSHServer]) -> Path:
    """A HOME whose ``.ssh`` holds the client key, a config naming it for 127.0.0.1 and a
    known_hosts trusting every server. Returns the ssh config file (OpenSSH reads the
    passwd home, not $HOME, so OpenSSH clients must be given it with ``-F``)."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    ssh.chmod(0o700)
    identity = ssh / "id_ed25519"
    identity.write_bytes(key.read_bytes())
    identity.chmod(0o600)
    Path(f"{identity}.pub").write_bytes(Path(f"{key}.pub").read_bytes())
    (ssh / "known_hosts").write_text("".join(s.known_hosts_line() for s in servers))
    config = ssh / "config"
    config.write_text(
        "Host 127.0.0.1\n"
        "  User root\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
    )
    return config

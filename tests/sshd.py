"""A real OpenSSH sshd on 127.0.0.1 for transport tests, and a client HOME that reaches it.

The server runs ``/usr/sbin/sshd -D -e -f CONFIG`` as this (root) user on a free port, with
its own ed25519 host key and an authorized client key. Every session gets ``HOME`` set to a
clean directory (so no shell start-up file is read there and ``~/repo`` paths resolve into
it). The client side is a temporary HOME holding ``.ssh/config`` (a ``Host peer`` alias),
the client key and ``known_hosts``; tests point ``$HOME`` at it.

Use it as a pytest plugin (``pytest_plugins = ["sshd"]``). Servers are only ever signalled
by the PIDs this module started (and the per-connection processes forked from them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd_tools import (
    SSHD,
    descendants,
    free_port,
    keygen,
    public_key,
    sshd_unavailable,
    terminate,
)

PRIVSEP_DIR = Path("/run/sshd")
# A non-root account for permission tests; created once (by root) if it does not exist.
PEER_USER = "annexsync-peer"


@dataclass
class Keys:
    """Key material shared by every server and client of a test session."""

    root: Path
    host_key: Path  # the servers' host key
    other_host_key: Path  # a host key no server uses (a "changed" key)
    client_key: Path  # authorized on every server
    stranger_key: Path  # authorized nowhere

    @classmethod
    def create(cls, root: Path) -> Keys:
        root.mkdir(parents=True, exist_ok=True)
        return cls(
            root,
            keygen(root / "ssh_host_ed25519_key", "host"),
            keygen(root / "other_host_ed25519_key", "other-host"),
            keygen(root / "client_ed25519", "client"),
            keygen(root / "stranger_ed25519", "stranger"),
        )


class SSHServer:
    """One sshd process: start, stop, restart, pause and resume it by its own PID."""

    def __init__(self, root: Path, keys: Keys, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.keys = keys
        self.home = root / "home"  # HOME of every session on this server
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.env = env or {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        for d in (root, self.home):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # other users log in here too
        self.authorize_client()
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = Peer\n\temail = peer@example.com\n"
            "[init]\n\tdefaultBranch = main\n[safe]\n\tdirectory = *\n"
        )

    def authorize_client(self, options: str = "") -> None:
        """(Re)write authorized_keys: the client key, with ``options`` in front when given
        (``command="...",restrict`` forces a command). sshd reads it at each login."""
        authorized = self.root / "authorized_keys"
        prefix = f"{options} " if options else ""
        authorized.write_text(prefix + public_key(self.keys.client_key) + " client\n")
        authorized.chmod(0o644)

    @property
    def host_public_key(self) -> str:
        return public_key(self.keys.host_key)

    @staticmethod
    def public_key(path: Path) -> str:
        """``TYPE BASE64`` of a key pair's public half."""
        return public_key(path)

    def known_hosts_line(self, key: str | None = None) -> str:
        return f"[127.0.0.1]:{self.port} {key or self.host_public_key}\n"

    def _write_config(self) -> None:
        setenv = " ".join(f"{k}={v}" for k, v in {"HOME": str(self.home), **self.env}.items())
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.keys.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\n"
            "PrintMotd no\n"
            "MaxStartups 100\n"
            "MaxSessions 20\n"
            "LogLevel VERBOSE\n"
            f"SetEnv {setenv}\n"
        )

    def start(self) -> SSHServer:
        PRIVSEP_DIR.mkdir(parents=True, exist_ok=True)
        fixed_port = bool(self.port)
        for _attempt in range(5):
            if not fixed_port:
                self.port = free_port()
            self._write_config()
            offset = self.log.stat().st_size if self.log.exists() else 0
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = self._log_since(offset)
                if f"Server listening on 127.0.0.1 port {self.port}" in text:
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.01)
            self._terminate()
            if "Address already in use" not in self._log_since(offset):
                break
            time.sleep(0.2)
        raise RuntimeError(f"sshd did not start on port {self.port}:\n{self.log.read_text()}")

    def _log_since(self, offset: int) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def accepted(self) -> int:
        """How many logins this server has accepted so far."""
        return self.log_text().count("Accepted publickey for ")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "sshd is not running"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze_connections(self) -> None:
        """SIGSTOP every per-connection process: open connections go silent (keepalives
        unanswered) while the listener still accepts new ones."""
        if self.running():
            for pid in descendants(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    def kill_connections(self) -> int:
        """Kill every per-connection process (and its sessions) at once: open connections
        drop, the listener stays up. Returns how many processes were killed."""
        if not self.running():
            return 0
        killed = 0
        for _ in range(2):
            for pid in descendants(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.kill_connections()
            terminate(self.proc)
        self.proc = None

    def stop(self) -> None:
        """Stop the server and drop every connection to it (the port is then refused)."""
        self._terminate()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the listener: connections are accepted by the kernel but never answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@dataclass
class ClientHome:
    """A client HOME: ``.ssh/config`` with a ``peer`` alias, the client key as the default
    identity, and ``known_hosts`` trusting the server."""

    path: Path
    server: SSHServer

    @property
    def ssh(self) -> Path:
        return self.path / ".ssh"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def config(self) -> Path:
        return self.ssh / "config"

    @property
    def key(self) -> Path:
        return self.ssh / "id_ed25519"

    def setup(self) -> ClientHome:
        self.ssh.mkdir(parents=True, exist_ok=True)
        self.ssh.chmod(0o700)
        shutil.copy(self.server.keys.client_key, self.key)
        shutil.copy(f"{self.server.keys.client_key}.pub", f"{self.key}.pub")
        self.key.chmod(0o600)
        self.known_hosts.write_text(self.server.known_hosts_line())
        self.write_config()
        return self

    def write_config(self, extra: str = "", identity: Path | None = None) -> None:
        """The ``peer`` alias (plus ``extra`` config text, placed first)."""
        self.config.write_text(
            extra + "Host peer\n"
            "  HostName 127.0.0.1\n"
            f"  Port {self.server.port}\n"
            "  User root\n"
            f"  IdentityFile {identity or self.key}\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
        )

    def url(self, path: str | Path, user: str = "root") -> str:
        """An ssh:// URL for ``path`` on the server, spelling out user and port."""
        return f"ssh://{user}@127.0.0.1:{self.server.port}{path}"


def ensure_peer_user() -> str | None:
    """The non-root account's name, creating it (with no password, but not locked, which
    sshd would refuse) if needed; None when that is impossible."""
    try:
        pwd.getpwnam(PEER_USER)
        exists = True
    except KeyError:
        exists = False
    if not exists:
        if os.geteuid() != 0 or shutil.which("useradd") is None:
            return None
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "-p", "*", PEER_USER],
            capture_output=True,
            check=False,
        )
        try:
            pwd.getpwnam(PEER_USER)
        except KeyError:
            return None
    elif _locked(PEER_USER):
        if os.geteuid() != 0:
            return None
        subprocess.run(["usermod", "--password", "*", PEER_USER], capture_output=True, check=False)
    return None if _locked(PEER_USER) else PEER_USER


def _locked(user: str) -> bool:
    try:
        with open("/etc/shadow") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == user:
                    return rest.startswith("!")
    except OSError:
        return False
    return False


@contextlib.contextmanager
def _server_dir(prefix: str) -> Iterator[Path]:
    # Not under pytest's 0700 tmp tree: other local users must reach the server's files.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_keys() -> Iterator[Keys]:
    reason = sshd_unavailable()
    if reason:
        pytest.skip(f"real sshd tests skipped: {reason}")
    with _server_dir("annexsync-sshkeys-") as root:
        yield Keys.create(root / "keys")


@pytest.fixture(scope="session")
def sshd(ssh_keys: Keys) -> Iterator[SSHServer]:
    """A shared sshd for tests that do not stop or pause it."""
    with _server_dir("annexsync-sshd-") as root:
        server = SSHServer(root, ssh_keys)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def private_sshd(ssh_keys: Keys) -> Iterator[SSHServer]:
    """An sshd of this test's own, which it may stop, restart or pause."""
    with _server_dir("annexsync-sshd-") as root:
        server = SSHServer(root, ssh_keys)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def sshd_factory(ssh_keys: Keys, tmp_path: Path) -> Iterator[Callable[..., SSHServer]]:
    """Start extra servers (``env`` adds SetEnv variables, e.g. a PATH); all are stopped at
    teardown."""
    started: list[SSHServer] = []

    def make(env: dict[str, str] | None = None) -> SSHServer:
        root = Path(tempfile.mkdtemp(prefix="annexsync-sshd-"))
        root.chmod(0o755)
        server = SSHServer(root, ssh_keys, env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def peer_user() -> str:
    """A non-root account that logs in with the client key (skips when there is none)."""
    user = ensure_peer_user()
    if user is None:
        pytest.skip(f"no non-root account {PEER_USER!r} to log in as (root could create it)")
    return user


@pytest.fixture
def ssh_home(sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClientHome:
    """$HOME pointed at a fresh client HOME for the shared server; no ssh-agent."""
    return _client_home(sshd, tmp_path, monkeypatch)


@pytest.fixture
def private_ssh_home(
    private_sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ClientHome:
    """$HOME pointed at a fresh client HOME for this test's own server."""
    return _client_home(private_sshd, tmp_path, monkeypatch)


def _client_home(server: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClientHome:
    home = ClientHome(tmp_path / "client-home", server).setup()
    monkeypatch.setenv("HOME", str(home.path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home

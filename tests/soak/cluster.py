"""Three nodes, each a host of its own (namespaces.py) with its repository on a small tmpfs,
a real sshd and a real ``annexsync assistant --foreground``, wired as peers over ssh:// URLs
in a full mesh.

Why a full mesh: every pair of nodes talks directly, so concurrent edits meet in as many
merges as possible, and a cut link leaves the two nodes it joined to reach each other's
edits through the third (the flood through a middle node), while cutting both links of a
node partitions it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

from conftest import ROOT
from sshd_tools import SSHD, descendants, keygen, public_key, terminate

from assistant.daemon.control import request, socket_path
from soak.namespaces import Host, Link, MountSpace
from soak.repostate import RepoReader

NAMES = ("A", "B", "C")
BRANCH = "refs/heads/main"
# Sessions on every node's sshd find this installation's annexsync and git.
PEER_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
# Settings of every node: failed peers are retried at most this far apart, so the time to
# converge after a fault heals measures the product, not a five-minute backoff.
NODE_CONFIG = {"annexsync.retrymax": "10s"}
# Every node follows every other's change stream, except C, which does not follow A's: A's
# commits reach C by push (into refs/remotes/nodeA/synced/main), so pushes are exercised too.
NOT_FOLLOWED = {("C", "A")}


def faketime_library() -> Path | None:
    """libfaketime as the ``libfaketime`` package ships it (0.9.10 as Debian has it breaks
    Python 3.11's ``time.sleep`` when only the wall clock is faked)."""
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    return path if path.exists() else None


def read_ref(gitdir: Path, ref: str = BRANCH) -> str:
    """A ref's commit id read straight from the files (loose, else packed); "" if none."""
    with contextlib.suppress(OSError):
        text = (gitdir / ref).read_text().strip()
        if len(text) == 40:
            return text
    with contextlib.suppress(OSError), open(gitdir / "packed-refs") as f:
        for line in f:
            oid, _, name = line.strip().partition(" ")
            if name == ref:
                return oid
    return ""


class NodeSSHD:
    """An sshd inside a host, on port 22 of every address it has."""

    def __init__(self, host: Host, root: Path, host_key: Path, client_key: Path) -> None:
        self.host = host
        self.root = root
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.proc: subprocess.Popen[bytes] | None = None
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / ".gitconfig").write_text(
            "[user]\n\tname = Peer\n\temail = peer@example.com\n[safe]\n\tdirectory = *\n"
        )
        (root / "authorized_keys").write_text(public_key(client_key) + " client\n")
        self.config.write_text(
            "Port 22\nListenAddress 0.0.0.0\n"
            f"HostKey {host_key}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "PrintMotd no\nMaxStartups 100\nMaxSessions 50\nLogLevel VERBOSE\n"
            f"SetEnv HOME={home} PATH={PEER_PATH}\n"
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = self.host.popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(offset)
                if b"Server listening on 0.0.0.0 port 22" in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"sshd of {self.host.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the server and drop every connection to it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for _ in range(2):
                for pid in descendants(self.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            terminate(self.proc)
        self.proc = None


class Node:
    """One machine: its host, repository (on a tmpfs of ``size``), sshd, assistant, clock."""

    def __init__(
        self, name: str, base: Path, keys: dict[str, Path], size: str, space: MountSpace
    ) -> None:
        self.name = name
        self.base = base
        self.space = space
        self.host = Host(name, space)
        try:
            self._set_up(base, keys, size)
        except BaseException:
            self.host.close()
            raise

    def _set_up(self, base: Path, keys: dict[str, Path], size: str) -> None:
        """The tmpfs, the repository (initialised and configured), the sshd and the HOME."""
        name, space = self.name, self.space
        self.mount = base / name  # a tmpfs inside the mount namespace, empty outside
        self.mount.mkdir()
        space.mount_tmpfs(self.mount, size)
        self.inside = self.mount / "repo"  # the repository's path as the node sees it
        self.repo = space.outside(self.inside)  # ... and as we see it from outside
        self.gitdir = self.repo / ".git"
        self.ballast = space.outside(self.mount / "ballast")
        self.home = base / f"{name}-home"  # the assistant's HOME: ssh key, known_hosts
        self.clock = base / f"{name}-clock"  # libfaketime's offset for the assistant
        self.clock.write_text("+0\n")
        self.log = base / f"{name}-assistant.stderr"
        self.sshd = NodeSSHD(self.host, base / f"{name}-sshd", keys["host"], keys["client"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True)
        ssh.chmod(0o700)
        (ssh / "id_ed25519").write_bytes(keys["client"].read_bytes())
        (ssh / "id_ed25519").chmod(0o600)
        self.repo.mkdir()
        self._run_checked("git", "init", "-q", str(self.inside))
        self._run_checked(
            sys.executable,
            "-m",
            "assistant",
            "-C",
            str(self.inside),
            "init",
            "--name",
            f"node{name}",
        )
        for key, value in NODE_CONFIG.items():
            self.git("config", key, value)

    def _run_checked(self, *argv: str) -> None:
        proc = self.host.run(*argv)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)}: {proc.stderr.strip()}")

    def git(self, *args: str, check: bool = True) -> str:
        """git in the node's repository (run inside: git cannot work through /proc/PID/root)."""
        proc = self.space.run("git", "-C", str(self.inside), *args)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name}: git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def head(self) -> str:
        return read_ref(self.gitdir)

    # --- the assistant ---------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.space.outside(socket_path(self.inside / ".git" / "annexsync"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> bool:
        """Start the assistant and wait until it answers; False if it exited (a full disk)."""
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env.update(HOME=str(self.home), PYTHONPATH=str(ROOT))
        library = faketime_library()
        if library is not None:
            env.update(
                LD_PRELOAD=str(library),
                FAKETIME_TIMESTAMP_FILE=str(self.clock),
                FAKETIME_DONT_FAKE_MONOTONIC="1",
                FAKETIME_CACHE_DURATION="1",
            )
        argv = [
            sys.executable,
            "-m",
            "assistant",
            "-C",
            str(self.inside),
            "assistant",
            "--foreground",
        ]
        with open(self.log, "ab") as err:
            err.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
            self.proc = self.host.popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            reply = request(self.socket, {"cmd": "ping"}, timeout=2)
            if reply and reply.get("ok"):
                return True
            time.sleep(0.02)
        raise RuntimeError(f"assistant of {self.name} did not answer within {timeout}s")

    def kill(self) -> None:
        """kill -9, as a crash or a power cut would."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict | None:
        return request(self.socket, {"cmd": "status"}, timeout=10)

    # --- faults -----------------------------------------------------------------------------

    def fill_disk(self) -> int:
        """A ballast file taking every free byte of the node's tmpfs; returns its size."""
        stat = os.statvfs(self.ballast.parent)
        size = stat.f_bavail * stat.f_frsize
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, max(size, 1))
        finally:
            os.close(fd)
        return size

    def free_disk(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def set_clock(self, offset: int) -> None:
        """The assistant's wall clock jumps to ``offset`` seconds from the real one (within
        libfaketime's one-second cache); monotonic and boot time go on untouched."""
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        tmp.replace(self.clock)

    def close(self) -> None:
        self.stop(timeout=15)
        self.kill()
        self.sshd.stop()
        self.host.close()


class Cluster:
    """The three nodes, their links, and the peers each knows."""

    def __init__(self, base: Path, size: str) -> None:
        self.base = base
        keys_dir = base / "keys"
        keys_dir.mkdir()
        keys = {
            "host": keygen(keys_dir / "ssh_host_ed25519_key", "host"),
            "client": keygen(keys_dir / "client_ed25519", "client"),
        }
        self.nodes: dict[str, Node] = {}
        self.links: dict[frozenset[str], Link] = {}
        self.space = MountSpace()
        self.reader: RepoReader | None = None
        try:
            self.reader = RepoReader(self.space.command(), Path(__file__).resolve().parent.parent)
            for name in NAMES:
                self.nodes[name] = Node(name, base, keys, size, self.space)
            for number, (a, b) in enumerate(combinations(NAMES, 2), start=1):
                self.links[frozenset((a, b))] = Link.between(
                    self.nodes[a].host, self.nodes[b].host, number
                )
            host_key = public_key(keys["host"])
            known = "".join(
                f"{link.addr_a} {host_key}\n{link.addr_b} {host_key}\n"
                for link in self.links.values()
            )
            for node in self.nodes.values():
                (node.home / ".ssh" / "known_hosts").write_text(known)
                node.sshd.start()
            for x, y in combinations(NAMES, 2):
                for src, dst in ((x, y), (y, x)):
                    self.nodes[src].git("remote", "add", dst, self.url(src, dst))
            for src, dst in NOT_FOLLOWED:
                self.nodes[src].git("config", f"remote.{dst}.annexsync-notify", "false")
        except BaseException:
            self.close()
            raise

    def url(self, src: str, dst: str) -> str:
        """How ``src`` reaches ``dst``: over their link, to ``dst``'s repository."""
        link = self.links[frozenset((src, dst))]
        address = link.address_of(self.nodes[dst].host)
        return f"ssh://root@{address}:22{self.nodes[dst].inside}"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def heads(self) -> dict[str, str]:
        return {n.name: n.head() for n in self}

    def repos(self) -> dict[str, str]:
        """Each node's repository path inside the mount namespace."""
        return {n.name: str(n.inside) for n in self}

    def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.close()
        if self.reader is not None:
            self.reader.close()
        self.space.close()

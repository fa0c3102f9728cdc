"""Shared fixtures: isolated git config, real repositories, and a real assistant process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest

from assistant.daemon.control import request, socket_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def isolated_git_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads the developer's ~/.gitconfig; every git has an identity and 'main'."""
    home = tmp_path_factory.mktemp("gitconfig")
    config = home / "gitconfig"
    config.write_text(
        "[user]\n\tname = Test User\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
    )
    keys = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "DBUS_SESSION_BUS_ADDRESS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["GIT_CONFIG_GLOBAL"] = str(config)
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    # No assistant under test reaches the desktop's notification service; the notification
    # tests start a session bus of their own.
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={home}/no-session-bus"
    for level in (pygit2.enums.ConfigLevel.GLOBAL,):
        with contextlib.suppress(Exception):
            pygit2.settings.search_path[level] = str(home)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run real git in ``repo`` and return its stdout."""
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def annexsync(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real command line (python -m assistant) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(
        f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}"
    )


def head_files(repo: Path) -> dict[str, bytes]:
    """Every blob in HEAD's tree, path -> content (symlinks give their target)."""
    r = pygit2.Repository(str(repo))
    if r.head_is_unborn:
        return {}
    out: dict[str, bytes] = {}
    stack = [("", r.head.peel(pygit2.Commit).tree)]
    while stack:
        prefix, tree = stack.pop()
        for entry in tree:
            path = f"{prefix}{entry.name}"
            if entry.filemode == 0o040000:
                stack.append((path + "/", r[entry.id]))
            else:
                out[path] = r[entry.id].data
    return out


def head_modes(repo: Path) -> dict[str, int]:
    """Every blob's git file mode in HEAD."""
    r = pygit2.Repository(str(repo))
    out: dict[str, int] = {}
    if r.head_is_unborn:
        return out
    for entry in _walk(r, r.head.peel(pygit2.Commit).tree, ""):
        out[entry[0]] = entry[1]
    return out


def _walk(r: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, int]]:
    for entry in tree:
        if entry.filemode == 0o040000:
            yield from _walk(r, r[entry.id], f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}", entry.filemode


def commit_count(repo: Path) -> int:
    out = git(repo, "rev-list", "--count", "HEAD", check=False).strip()
    return int(out) if out.isdigit() else 0


def new_node(parent: Path, name: str) -> Path:
    """A fresh repository at ``parent/name`` with its node identity recorded as ``name``."""
    path = parent / name
    path.mkdir()
    git(path, "init", "-q")
    assert annexsync("-C", str(path), "init", "--name", name).returncode == 0
    return path


def nodes_with_one_start(parent: Path, files: dict[str, str]) -> tuple[Path, Path]:
    """Nodes ``alpha`` and ``beta`` sharing one first commit of ``files`` (each a peer of
    the other is for the caller to set)."""
    a, b = new_node(parent, "alpha"), new_node(parent, "beta")
    for name, text in files.items():
        (a / name).write_text(text)
    git(a, "add", *files)
    git(a, "commit", "-qm", "base")
    git(b, "fetch", "-q", str(a), "HEAD")
    git(b, "reset", "-q", "--hard", "FETCH_HEAD")
    return a, b


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh, empty (unborn) non-bare repository."""
    path = tmp_path / "work"
    path.mkdir()
    git(path, "init", "-q")
    return path


class Daemon:
    """A real ``annexsync assistant --foreground`` process on a repository."""

    def __init__(self, repo: Path, wrapper: tuple[str, ...] = ()) -> None:
        self.repo = repo
        self.wrapper = wrapper  # a command the assistant runs under, such as setpriv
        self.log = repo.parent / f"assistant-{repo.name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return socket_path(self.repo / ".git" / "annexsync")

    def start(self, *extra: str, wait: bool = True) -> Daemon:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "assistant",
                    "-C",
                    str(self.repo),
                    "assistant",
                    "--foreground",
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if wait:
            wait_until(self.ready, timeout=30)
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"assistant exited {self.proc.returncode}: {self.stderr()}")
        reply = request(self.socket, {"cmd": "ping"}, timeout=2)
        return bool(reply and reply.get("ok"))

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict:
        reply = request(self.socket, {"cmd": "status"}, timeout=10)
        assert reply is not None, "assistant did not answer"
        return reply

    def idle(self) -> bool:
        """Nothing pending and nothing paused."""
        s = self.status()
        return s["pending_count"] == 0 and not s["writing"]

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    """Start assistants on repositories; each is stopped (by its own PID) afterwards."""
    started: list[Daemon] = []

    def make(path: Path, wrapper: tuple[str, ...] = ()) -> Daemon:
        d = Daemon(path, wrapper)
        started.append(d)
        return d

    yield make
    for d in started:
        with contextlib.suppress(Exception):
            d.stop(timeout=10)
        d.kill()


@pytest.fixture
def daemon(repo: Path, daemon_factory: Callable[[Path], Daemon]) -> Daemon:
    """A running assistant on the ``repo`` fixture."""
    return daemon_factory(repo).start()


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` of our own at ``mountpoint`` (a small disk that fills up),
    unmounted afterwards; the test is skipped where mounting is not allowed."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def namespace_problem(*tools: str) -> str | None:
    """Why mounts cannot be made in a private mount namespace here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "mount namespaces are Linux only"
    for tool in ("unshare", "mount", "umount", *tools):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "d=$(mktemp -d) && mount -t tmpfs none \"$d\" && umount \"$d\"; r=$?; "
         "rmdir \"$d\" 2>/dev/null; exit $r"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"unshare -m / mount not permitted: {probe.stderr.strip() or probe.returncode}"
    return None

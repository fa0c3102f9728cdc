#!/bin/sh
""":"
# annexsync git hook: tells this repository's assistant what git just did. It never fails or
# holds up the git command. See docs/hooks.md.
# 'annexsync hooks install' puts a copy under each hook's name. 'annexsync hooks uninstall'
# removes it and puts back the hook it replaced. Until then that hook is kept as
# NAME.annexsync-orig, and this one runs it first with the same arguments and input.
# This file is both a POSIX sh script and a Python script. sh runs these lines and hands over
# to Python with the standard library only and without site-packages, so it starts fast:
# through the installed package's compiled module when 'pkg' names it, else this file.
# annexsync-hook-sha256: unset
py=python3 pkg=
if [ -n "$pkg" ] && [ -f "$pkg/assistant/hookscript.py" ] && command -v "$py" >/dev/null 2>&1
then
  exec "$py" -I -S -c 'import sys
sys.path[:0] = sys.argv[1:2]
from assistant.hookscript import main
sys.exit(main(sys.argv[2:]))' "$pkg" "$0" "$@"
fi
for p in "$py" python3; do
  command -v "$p" >/dev/null 2>&1 && exec "$p" -I -S "$0" "$@"
done
[ -x "$0.annexsync-orig" ] && exec "$0.annexsync-orig" "$@"
exit 0
":"""

# Everything below is Python. The common path imports only modules that cost next to
# nothing (`_socket`, not `socket`; no `json`, no `subprocess`): those would double the hook's
# start-up time (see bench/hooks.py). Run through the package, it imports the package's
# __init__ too, which must stay free of imports.

import errno
import os
import sys
import time

ORIGINAL_SUFFIX = ".annexsync-orig"
BACKGROUND_FLAG = "--annexsync-background-sync"
TIMEOUT = 0.2
"""Longest wait (seconds) for an assistant that accepts the request but does not answer."""
MAX_SOCKET_PATH = 100
RECORD = "received.log"
RECORD_MAX = 1 << 20
"""The record of received ref updates is rotated (one old generation kept) past this size."""
SYNC_LOG = "hooksync.log"

REQUESTS = {
    "post-commit": ("committed",),
    "post-merge": ("reread", "committed"),
    "post-rewrite": ("reread", "committed"),
    "post-checkout": ("reread",),
}
"""What each hook asks the running assistant, in order. A merge or rewrite moved the branch
by hand, so after re-reading, its result is pushed like a commit."""

ABSENT = "absent"
BUSY = "busy"
OK = "ok"

# Set by git around hooks; a background `annexsync sync` must find the repository itself.
GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_NAMESPACE",
    "GIT_REFLOG_ACTION",
)


def say(message: str) -> None:
    """One line on stderr (git shows a hook's output to the user)."""
    try:  # noqa: SIM105 (importing contextlib would cost start-up time)
        os.write(2, f"annexsync: {message}\n".encode(errors="replace"))
    except OSError:
        pass


# --- where things are -------------------------------------------------------------------------


def find_git_dir() -> str | None:
    """The repository's git directory, as git left it for the hook: ``GIT_DIR`` when set, else
    the working tree's ``.git`` (a directory, or a file naming one), else the current
    directory when it is a bare repository."""
    given = os.environ.get("GIT_DIR")
    if given:
        return os.path.realpath(given)
    if os.path.isdir(".git"):
        return os.path.realpath(".git")
    if os.path.isfile(".git"):
        with open(".git", encoding="utf-8", errors="surrogateescape") as f:
            line = f.readline().strip()
        if line.startswith("gitdir:"):
            return os.path.realpath(line[len("gitdir:") :].strip())
        return None
    if os.path.isfile("HEAD") and os.path.isdir("objects"):
        return os.path.realpath(".")
    return None


def socket_path(state: str) -> str:
    """The assistant's control socket for the state directory ``state``: the same answer as
    ``assistant.daemon.control.socket_path``."""
    preferred = os.path.join(state, "control.sock")
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    import hashlib
    import tempfile

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(os.fsencode(os.path.realpath(state))).hexdigest()[:16]
    return os.path.join(base, f"annexsync-{os.getuid()}", f"{digest}.sock")


# --- talking to the assistant -----------------------------------------------------------------


def private_dir(directory: str) -> bool:
    """True when ``directory`` is a real directory of this user's that nobody else may use,
    as ``assistant.daemon.control`` requires of the socket's directory."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    is_dir = st.st_mode & 0o170000 == 0o040000
    return is_dir and st.st_uid == os.getuid() and not st.st_mode & 0o077


def ask(path: str, command: str, timeout: float = TIMEOUT, wait: bool = True) -> str:
    """Send one request; ``OK``, ``ABSENT`` (nobody listening: no assistant, or a stale
    socket), ``BUSY`` (no answer in time: the request waits in the socket, and a stuck
    assistant reads it once it is going again), or the assistant's error message. Without
    ``wait``, ``OK`` means sent."""
    import _socket

    if not private_dir(os.path.dirname(path)):
        return ABSENT  # whatever listens there is not our assistant
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return ABSENT
        except OSError:
            return BUSY
        try:
            sock.sendall(b'{"cmd": "' + command.encode() + b'"}\n')
            reply = b"" if wait else b"\n"
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            return BUSY
    finally:
        sock.close()
    if reply.startswith(b'{"ok": true') or reply == b"\n":
        return OK
    if not reply:
        return BUSY  # closed without an answer: going away, or stuck mid-request
    import json

    try:
        error = json.loads(reply).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error or f"the assistant's answer to {command!r} makes no sense: {reply[:80]!r}")


# --- the user's own hook ----------------------------------------------------------------------


def run_original(path: str, args: list[str], stdin: bytes | None) -> int:
    """Run the hook this one replaced, as git would have; its exit status (128+N for a
    signal). ``stdin`` replaces our standard input when it was already read."""
    actions = []
    if stdin is not None:
        fd = _stdin_file(stdin)
        actions.append((os.POSIX_SPAWN_DUP2, fd, 0))
    try:
        pid = os.posix_spawn(path, [path, *args], os.environ, file_actions=actions)
    except OSError as exc:
        if exc.errno != errno.ENOEXEC:
            say(f"cannot run {path}: {exc.strerror}")
            return 1
        # No #! line: git runs such a hook with sh, so do we.
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", path, *args], os.environ, file_actions=actions)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _stdin_file(data: bytes) -> int:
    """A readable descriptor holding ``data`` (no pipe: a hook that never reads its input
    must not block us)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("annexsync-hook-stdin")
    else:
        import tempfile

        fd, name = tempfile.mkstemp()
        os.unlink(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# --- what landed here -------------------------------------------------------------------------


def parse_updates(data: bytes) -> list[tuple[str, str, str]]:
    """post-receive's input: one ``<old> <new> <ref>`` line per updated ref."""
    updates = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    return updates


def record_lines(updates: list[tuple[str, str, str]], now: float) -> bytes:
    """The record's lines: local time to the millisecond with its UTC offset (as in
    serve.log, plus milliseconds), old and new object ids, ref name."""
    local = time.localtime(now)
    offset = time.strftime("%z", local)
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", local)
        + f".{int(now * 1000) % 1000:03d}{offset[:3]}:{offset[3:]}"
    )
    text = "".join(f"{stamp} {old} {new} {ref}\n" for old, new, ref in updates)
    return text.encode("utf-8", "surrogateescape")


def record(gitdir: str, state: str, updates: list[tuple[str, str, str]]) -> None:
    """Append what landed to ``<state>/received.log`` in one write (concurrent pushes
    interleave by whole lines), rotating it to ``received.log.1`` past its size limit."""
    if not updates:
        return
    if not os.path.isdir(state):
        # A hub shared by a group: the state directory gets the repository's mode.
        try:  # noqa: SIM105 (importing contextlib would cost start-up time)
            os.mkdir(state, os.stat(gitdir).st_mode & 0o7777)
        except FileExistsError:
            pass
    path = os.path.join(state, RECORD)
    try:
        if os.stat(path).st_size >= RECORD_MAX:
            os.replace(path, path + ".1")
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        say(f"cannot record what landed in {path}: {exc.strerror}")
        return
    try:
        os.write(fd, record_lines(updates, time.time()))
    finally:
        os.close(fd)


# --- with no assistant: an optional background sync -------------------------------------------


def parse_git_bool(value: str | None) -> bool | None:
    """git's reading of a boolean; None for a value git would refuse."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("", "true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(lowered) != 0
    except ValueError:
        return None


def read_config() -> dict[str, str | None]:
    """``annexsync.uuid`` and ``annexsync.hooksync`` as git sees them (None for a key given
    without a value); one ``git config`` process."""
    read, write = os.pipe()
    try:
        pid = os.posix_spawnp(
            "git",
            ["git", "config", "-z", "--get-regexp", r"^annexsync\.(uuid|hooksync)$"],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, write, 1)],
        )
    finally:
        os.close(write)
    try:
        data = read_all(read)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    values: dict[str, str | None] = {}
    for item in data.decode("utf-8", "replace").split("\0"):
        if item:
            key, newline, value = item.partition("\n")
            values[key.lower()] = value if newline else None
    return values


def start_background_sync(gitdir: str, script: str) -> None:
    """When ``annexsync.hooksync`` is true in an annexsync repository: mark a sync as wanted
    and start a detached runner; its output goes to ``<state>/hooksync.log``."""
    values = read_config()
    if "annexsync.uuid" not in values or "annexsync.hooksync" not in values:
        return
    wanted = parse_git_bool(values["annexsync.hooksync"])
    if wanted is None:
        value = values["annexsync.hooksync"]
        say(f"bad value for annexsync.hooksync: {value!r} (expected true or false)")
        return
    if not wanted:
        return
    state = os.path.join(gitdir, "annexsync")
    os.makedirs(state, mode=0o700, exist_ok=True)
    with open(os.path.join(state, "hooksync.pending"), "wb"):
        pass
    log = os.path.join(state, SYNC_LOG)
    try:
        if os.stat(log).st_size >= RECORD_MAX:
            os.replace(log, log + ".1")
    except FileNotFoundError:
        pass
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}
    argv = [sys.executable, "-I", "-S", os.path.abspath(script), BACKGROUND_FLAG]
    argv += [os.getcwd(), state]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, out, 2),
    ]
    try:
        try:
            os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
        except NotImplementedError:
            os.posix_spawn(sys.executable, argv, env, file_actions=actions)
    finally:
        os.close(out)


def background_sync(root: str, state: str) -> int:
    """The detached runner: ``annexsync sync`` until no commit is left waiting for one. Only
    one runner works at a time (an flock); a runner that finds the lock taken leaves the
    work to its holder, which looks for new work again after letting go."""
    import fcntl
    import subprocess

    pending = os.path.join(state, "hooksync.pending")
    while True:
        lock = os.open(os.path.join(state, "hooksync.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            while _take(pending):
                print(time.strftime("%Y-%m-%d %H:%M:%S"), "annexsync sync (after a commit)")
                sys.stdout.flush()
                command = [sys.executable, "-m", "assistant", "-C", root, "sync"]
                code = subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
                print(f"exit status {code}", flush=True)
        finally:
            os.close(lock)
        if not os.path.exists(pending):
            return 0


def _take(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


# --- the hook -----------------------------------------------------------------------------


def react(hook: str, script: str, updates: list[tuple[str, str, str]] | None) -> None:
    """Our part of the hook, after the user's own: tell the assistant, record what landed,
    or start a background sync."""
    gitdir = find_git_dir()
    if gitdir is None:
        return
    state = os.path.join(gitdir, "annexsync")
    if updates is not None:  # post-receive
        record(gitdir, state, updates)
        # refs/remotes/... (a peer's push) is seen by the assistant's own watcher; a push
        # into a branch (receive.denyCurrentBranch=updateInstead) is news like a merge.
        moved = any(ref.startswith("refs/heads/") for _old, _new, ref in updates)
        commands: tuple[str, ...] = ("reread", "committed") if moved else ()
    else:
        commands = REQUESTS.get(hook, ())
    path = socket_path(state) if commands else ""
    busy = False
    for command in commands:
        # Once the assistant is slow to answer, the rest is only handed over: it waits in
        # the socket like the first request, and git is not held up any longer.
        answer = ask(path, command, wait=not busy)
        if answer == ABSENT:
            if hook == "post-commit":
                start_background_sync(gitdir, script)
            return
        if answer == BUSY:
            busy = True
            continue
        if answer != OK:
            if "unknown command" in answer:
                answer = (
                    f"the running assistant does not know {command!r}: it is older than its "
                    "hooks; restart it (annexsync assistant --stop && annexsync assistant)"
                )
            say(answer)
            return


def main(argv: list[str]) -> int:
    """Run as the hook ``argv[0]`` with git's arguments; the status to exit with (the user's
    hook's, or 0)."""
    if len(argv) == 4 and argv[1] == BACKGROUND_FLAG:
        return background_sync(argv[2], argv[3])
    hook = os.path.basename(argv[0])
    stdin = read_all(0) if hook == "post-receive" else None
    status = 0
    original = argv[0] + ORIGINAL_SUFFIX
    try:
        if os.path.isfile(original) and os.access(original, os.X_OK):
            status = run_original(original, argv[1:], stdin)
        react(hook, argv[0], parse_updates(stdin) if stdin is not None else None)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # our part never fails the git command
        say(f"{hook} hook: {type(exc).__name__}: {exc}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))

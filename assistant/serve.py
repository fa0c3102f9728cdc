"""``annexsync serve``: the forced command of a restricted ssh key in ``authorized_keys``.

sshd runs it instead of whatever the client asked for, and puts the client's request in
``SSH_ORIGINAL_COMMAND``. It carries out only these, on the repositories it was given:
``git-upload-pack``, ``annexsync notify-changes``, the bare-repository probe annexsync's
client sends, and ``git-receive-pack`` limited to ``refs/remotes/<peer>/synced/*`` (plus
fast-forwards of ``refs/heads/*`` on a hub). Nothing else runs and no shell is involved.

receive-pack is proxied, not trusted to hooks (those are the repository owner's): the client's
ref updates are read and judged before git sees them, and a push with any refused update is
refused whole before a byte of its pack is stored. Every decision is a pure function here; the
process plumbing sits at the end.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

import pygit2

from assistant.config import parse_bool
from assistant.errors import AnnexsyncError, ConfigError
from assistant.names import name_problem
from assistant.protocol.packend import PackEnd
from assistant.protocol.pktline import FLUSH, ProtocolError, encode, parse_length, strip_newline

LOG_NAME = "serve.log"
LOG_MAX_BYTES = 1 << 20  # then serve.log becomes serve.log.1
HUB_KEY = "annexsync.hub"
COMMANDS_HELP = (
    "this key may run only git-receive-pack, git-upload-pack and annexsync notify-changes "
    "on the repositories it is given"
)
# git's own settings on top of the checks here: refs are never deleted, and branches
# (refs/heads/*, the only ref space git's check covers) only move forward.
RECEIVE_PACK_CONFIG = ("receive.denyDeletes=true", "receive.denyNonFastForwards=true")

BARE_PROBE = ["rev-parse", "--is-bare-repository"]

Kind = Literal["receive-pack", "upload-pack", "notify-changes", "is-bare"]


class Refused(AnnexsyncError):
    """The client asked for something this key may not do; the message says what and why."""


# --- what the client asked for (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One allowed operation and the repository path as the client wrote it."""

    kind: Kind
    path: str


def _shown(command: str) -> str:
    text = command if len(command) <= 80 else command[:77] + "..."
    return repr(text)


def _is_annexsync(word: str) -> bool:
    """``annexsync`` or a path to it (``~/.local/bin/annexsync``): never run, only named."""
    return posixpath.basename(word) == "annexsync"


def _shell_path(word: str) -> str:
    """A path the client's command meant for a shell: ``$HOME`` (what annexsync's client
    writes for ``~``) spelled as ``~`` again, so one expansion rule serves every form."""
    if word == "$HOME" or word.startswith("$HOME/"):
        return "~" + word[len("$HOME") :]
    return word


def parse_command(command: str | None) -> Request:
    """The operation ``SSH_ORIGINAL_COMMAND`` asks for, accepting exactly the forms git and
    annexsync send; anything else raises Refused.

    - ``git-receive-pack PATH``, ``git-upload-pack PATH`` (also ``git receive-pack PATH``)
    - ``annexsync notify-changes PATH``, and ``cd DIR && annexsync notify-changes PATH``
      (annexsync's form for a ``~`` path)
    - ``git -C PATH rev-parse --is-bare-repository``, alone or as ``sh -c '…'``
    """
    if command is None or not command.strip():
        raise Refused(f"refused: no shell here; {COMMANDS_HELP}")
    try:
        words = shlex.split(command)
    except ValueError:
        raise Refused(f"refused: cannot parse the command {_shown(command)}") from None
    request = _match(words)
    if request is None and len(words) == 3 and words[:2] == ["sh", "-c"]:
        try:
            request = _match(shlex.split(words[2]))
        except ValueError:
            request = None
        if request is not None and request.kind != "is-bare":
            request = None
    if request is None:
        raise Refused(f"refused: {_shown(command)}: {COMMANDS_HELP}")
    if not request.path:
        raise Refused(f"refused: {_shown(command)}: the repository path is empty")
    return request


def _match(words: list[str]) -> Request | None:
    if len(words) == 2 and words[0] in ("git-receive-pack", "git-upload-pack"):
        return Request(words[0].removeprefix("git-"), words[1])  # type: ignore[arg-type]
    if len(words) == 3 and words[0] == "git" and words[1] in ("receive-pack", "upload-pack"):
        return Request(words[1], words[2])  # type: ignore[arg-type]
    if len(words) == 3 and _is_annexsync(words[0]) and words[1] == "notify-changes":
        return Request("notify-changes", _shell_path(words[2]))
    if (
        len(words) == 6
        and words[0] == "cd"
        and words[2] == "&&"
        and _is_annexsync(words[3])
        and words[4] == "notify-changes"
    ):
        base, path = _shell_path(words[1]), words[5]
        if path.startswith("/") or path.startswith("~"):
            return Request("notify-changes", _shell_path(path))
        return Request("notify-changes", base if path == "." else posixpath.join(base, path))
    if len(words) == 5 and words[:2] == ["git", "-C"] and words[3:] == BARE_PROBE:
        return Request("is-bare", _shell_path(words[2]))
    return None


def expand_path(
    path: str, home: str | None, cwd: str, user_home: Callable[[str], str | None]
) -> str:
    """An absolute path for ``path`` as git reads a remote path: a leading ``~`` is $HOME,
    ``~user`` that user's home directory, and a relative path is relative to ``cwd``."""
    if path.startswith("~"):
        user, sep, rest = path[1:].partition("/")
        base = home if not user else user_home(user)
        if not base:
            who = "HOME is not set" if not user else f"there is no user {user!r}"
            raise Refused(f"refused: cannot expand {path!r}: {who}")
        path = posixpath.join(base, rest) if sep and rest else base
    return posixpath.normpath(posixpath.join(cwd, path))


def lookup_user_home(user: str) -> str | None:
    """A user's home directory from the password database."""
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


@dataclass(frozen=True)
class Served:
    """A repository this key may use: its canonical path, and whether ``--hub`` named it."""

    path: str
    hub: bool = False


def find_repository(
    path: str, served: Sequence[Served], realpath: Callable[[str], str] = os.path.realpath
) -> Served | None:
    """The served repository ``path`` names: the repository itself, its ``.git``, or with
    ``.git`` appended, as git finds repositories (symlinks resolved); None if none."""
    wanted = {realpath(p) for p in (path, path + ".git", posixpath.join(path, ".git"))}
    for repo in served:
        if {repo.path, realpath(posixpath.join(repo.path, ".git"))} & wanted:
            return repo
    return None


# --- ref updates (pure) ---------------------------------------------------------------------

_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def valid_branch(name: str) -> bool:
    """Whether ``refs/heads/<name>`` is a branch git would create (git check-ref-format
    --branch): no empty, dot-led or ``.lock`` component, no ``..``, ``@{``, control
    characters, space or ``~^:?*[\\``; not ``@``, ``HEAD`` or led by ``-``."""
    if not name or name in ("@", "HEAD") or name.startswith("-") or name.endswith("."):
        return False
    if ".." in name or "@{" in name or _BAD_REF_CHARS.search(name):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


@dataclass(frozen=True)
class Command:
    """One ``old new ref`` line of a push."""

    old: str
    new: str
    ref: str

    @property
    def creates(self) -> bool:
        return set(self.old) == {"0"}

    @property
    def deletes(self) -> bool:
        return set(self.new) == {"0"}


@dataclass(frozen=True)
class Verdict:
    """Whether an update may go on (``reason`` empty), and whether it must first be shown to
    be a fast-forward once its pack has arrived."""

    reason: str = ""
    check_fast_forward: bool = False

    @property
    def allowed(self) -> bool:
        return not self.reason


def judge(command: Command, peer: str, hub: bool) -> Verdict:
    """The policy: node ``peer`` may create or move ``refs/remotes/<peer>/synced/<branch>``,
    and on a hub create ``refs/heads/<branch>`` or move it forward. Nothing is deleted."""
    own = f"refs/remotes/{peer}/synced/"
    allowed = f"refs/remotes/{peer}/synced/*" + (
        " and fast-forwards of refs/heads/*" if hub else ""
    )
    if not (_OID.match(command.old) and _OID.match(command.new)):
        return Verdict(f"annexsync serve: malformed update of {command.ref}")
    if command.deletes:
        return Verdict("annexsync serve: deleting refs is not allowed")
    if command.ref.startswith(own):
        if valid_branch(command.ref[len(own) :]):
            return Verdict()
        return Verdict(f"annexsync serve: {command.ref[len(own) :]!r} is not a valid branch name")
    if command.ref.startswith("refs/heads/"):
        if not hub:
            return Verdict(
                f"annexsync serve: this repository is not a hub; node {peer} may write only "
                f"{allowed}"
            )
        if not valid_branch(command.ref.removeprefix("refs/heads/")):
            return Verdict("annexsync serve: not a valid branch name")
        return Verdict(check_fast_forward=not command.creates)
    match = re.match(r"^refs/remotes/([^/]+)/synced/", command.ref)
    if match:
        return Verdict(
            f"annexsync serve: refs/remotes/{match[1]}/synced/* belongs to node {match[1]}; "
            f"node {peer} may write only {allowed}"
        )
    return Verdict(f"annexsync serve: node {peer} may write only {allowed}")


@dataclass
class Push:
    """The client's side of a push up to its pack: commands, capabilities, shallow lines."""

    commands: list[Command]
    capabilities: set[str]
    push_cert: bool = False

    @property
    def sends_pack(self) -> bool:
        """git sends a pack unless every update is a deletion."""
        return any(not c.deletes for c in self.commands)

    @property
    def report(self) -> bool:
        return bool({"report-status", "report-status-v2"} & self.capabilities)

    @property
    def sideband(self) -> int:
        """The largest side-band packet the client accepts (header included), 0 for none."""
        if "side-band-64k" in self.capabilities:
            return 65520
        return 1000 if "side-band" in self.capabilities else 0


def parse_push(packets: Sequence[bytes]) -> Push:
    """The command list (the packets before the client's first flush)."""
    push = Push([], set())
    for raw in packets:
        line = strip_newline(raw)
        if b"\0" in line:
            line, caps = line.split(b"\0", 1)
            push.capabilities |= set(caps.decode(errors="replace").split())
        if line.startswith(b"shallow "):
            continue
        if line.startswith(b"push-cert"):
            push.push_cert = True  # the commands are inside the certificate: refused
            break
        parts = line.decode(errors="replace").split(" ", 2)
        if len(parts) != 3:
            raise ProtocolError(f"bad ref update line {raw[:100]!r}")
        push.commands.append(Command(*parts))
    return push


def refusal(push: Push, reasons: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """What to send a client whose push is refused: report-status with an ``ng`` line per
    update (through side-band when asked for, with the reasons as remote messages too), and
    the message lines (for stderr when the client hears no side-band)."""
    if push.report:  # each ref's reason is in its ng line; say once what happened
        named = {c.ref for c in push.commands}
        messages = ["annexsync serve: push refused as a whole; nothing was stored"] + [
            why for ref, why in reasons.items() if ref not in named
        ]
    else:
        messages = [
            f"annexsync serve: refused {ref}: {why.removeprefix('annexsync serve: ')}"
            for ref, why in reasons.items()
        ]
    status = b""
    if push.report:
        lines = ["unpack ok"] + [
            f"ng {c.ref} "
            + reasons.get(c.ref, "annexsync serve: not updated, the push was refused as a whole")
            for c in push.commands
        ]
        status = b"".join(encode(line + "\n") for line in lines) + FLUSH
    if not push.sideband:
        return status, messages
    out = bytearray()
    for message in messages:
        out += encode(b"\x02" + f"{message}\n".encode())
    size = push.sideband - 5  # the length header and the band byte
    for start in range(0, len(status), size):
        out += encode(b"\x01" + status[start : start + size])
    return bytes(out + FLUSH), []


def log_line(when: datetime, peer: str, event: str, command: Command, detail: str) -> str:
    """One line of serve.log: time, node, what happened to which ref, and how it ended."""
    old = "0" * 7 if command.creates else command.old[:7]
    return (
        f"{when.isoformat(timespec='seconds')} {peer} {event} {command.ref} "
        f"{old}..{command.new[:7]} {detail}".rstrip()
    )


def outcome(command: Command, now: str | None) -> str:
    """How an accepted update ended, from where its ref points after receive-pack."""
    if now == command.new:
        return "updated"
    return f"not updated (the ref is at {now[:7] if now else 'nothing'})"


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for git: no ``GIT_*`` variable a client might have had accepted by
    sshd (``GIT_DIR``, ``GIT_CONFIG_*`` …) except ``GIT_PROTOCOL``, which picks the wire
    protocol version."""
    return {k: v for k, v in environ.items() if not k.startswith("GIT_") or k == "GIT_PROTOCOL"}


# --- the command ----------------------------------------------------------------------------


def serve(
    repos: Sequence[str],
    hubs: Sequence[str],
    peer: str,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Carry out the request in ``SSH_ORIGINAL_COMMAND`` if this key may; Refused if not."""
    environ = os.environ if environ is None else environ
    problem = name_problem(peer)
    if problem:
        raise ConfigError(f"annexsync serve --peer {peer!r}: not a valid node name: {problem}")
    if not repos and not hubs:
        raise ConfigError("annexsync serve needs at least one --repo PATH or --hub PATH")
    home, cwd = environ.get("HOME"), os.getcwd()

    def canonical(path: str) -> str:
        return os.path.realpath(expand_path(path, home, cwd, lookup_user_home))

    # hubs first: a path given both ways is a hub
    served = [Served(canonical(p), True) for p in hubs] + [Served(canonical(p)) for p in repos]
    request = parse_command(environ.get("SSH_ORIGINAL_COMMAND"))
    repo = find_repository(expand_path(request.path, home, cwd, lookup_user_home), served)
    if repo is None:
        raise Refused(f"refused: {request.path} is not a repository this key may use")
    env = child_environment(environ)
    if request.kind == "is-bare":
        print("true" if _open(repo).is_bare else "false", flush=True)
        return 0
    if request.kind == "notify-changes":
        from assistant.notify import notify_changes

        return notify_changes(Path(repo.path))
    if request.kind == "upload-pack":
        sys.stdout.flush()
        os.execvpe("git", ["git", "upload-pack", repo.path], env)
    opened = _open(repo)
    hub = repo.hub or _hub_config(opened)
    return ReceivePack(opened, repo.path, peer, hub, env).run()


def _open(repo: Served) -> pygit2.Repository:
    try:
        return pygit2.Repository(repo.path, pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError):
        raise Refused(f"{repo.path} is not a git repository") from None


def _hub_config(repo: pygit2.Repository) -> bool:
    try:
        text = repo.config[HUB_KEY]
    except KeyError:
        return False
    return parse_bool(HUB_KEY, str(text))


class _Input:
    """Buffered reads from a file descriptor: pkt-lines, or raw bytes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def _fill(self) -> bool:
        data = os.read(self.fd, 65536)
        self.buffer += data
        return bool(data)

    def packet(self) -> tuple[bytes, bytes | None] | None:
        """(raw bytes, payload or None for a flush); None at end of input."""
        while True:
            if len(self.buffer) >= 4:
                length = parse_length(bytes(self.buffer[:4]))
                if length in (1, 2):
                    raise ProtocolError("unexpected delimiter packet")
                size = 4 if length == 0 else length
                if len(self.buffer) >= size:
                    raw = bytes(self.buffer[:size])
                    del self.buffer[:size]
                    return raw, (None if length == 0 else raw[4:])
            if not self._fill():
                return None

    def section(self) -> tuple[bytes, list[bytes]] | None:
        """The raw bytes and payloads up to and including the next flush; None at EOF."""
        raw = bytearray()
        payloads: list[bytes] = []
        while (packet := self.packet()) is not None:
            raw += packet[0]
            if packet[1] is None:
                return bytes(raw), payloads
            payloads.append(packet[1])
        return None

    def chunk(self) -> bytes:
        """Buffered bytes first, then the next read; b'' at end of input."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        return os.read(self.fd, 65536)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _send(pipe: BinaryIO, data: bytes) -> None:
    """All of ``data`` to receive-pack's input (an unbuffered pipe may take it in parts)."""
    if pipe.closed:
        raise BrokenPipeError("receive-pack's input is closed")
    _write(pipe.fileno(), data)


def _close(pipe: BinaryIO) -> None:
    """End receive-pack's input; closing twice is harmless."""
    with contextlib.suppress(OSError):
        pipe.close()


class ReceivePack:
    """git-receive-pack behind a judge: relay its advertisement, read the client's commands,
    and pass them and the pack on only when every update is allowed."""

    def __init__(
        self,
        repo: pygit2.Repository,
        path: str,
        peer: str,
        hub: bool,
        env: dict[str, str],
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        self.repo = repo
        self.path = path
        self.peer = peer
        self.hub = hub
        self.env = env
        self.client = _Input(stdin_fd)
        self.out = stdout_fd
        self.log_path = Path(repo.path) / "annexsync" / LOG_NAME

    def run(self) -> int:
        argv = ["git"]
        for setting in RECEIVE_PACK_CONFIG:
            argv += ["-c", setting]
        proc = subprocess.Popen(
            [*argv, "receive-pack", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            bufsize=0,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            return self._run(proc, proc.stdin, _Input(proc.stdout.fileno()))
        except ProtocolError as exc:
            raise Refused(f"refused: the client broke the git protocol: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def _run(self, proc: subprocess.Popen[bytes], to_git: BinaryIO, git: _Input) -> int:
        advertisement = git.section()
        if advertisement is None:  # receive-pack failed; its stderr went to the client
            _write(self.out, bytes(git.buffer))
            return proc.wait() or 1
        _write(self.out, advertisement[0])
        section = self.client.section()
        if section is None or not section[1]:  # the client hung up, or has nothing to push
            with contextlib.suppress(OSError):
                _send(to_git, FLUSH)
            _close(to_git)
            _relay(git, self.out)
            return proc.wait()
        push = parse_push(section[1])
        options = b""
        if "push-options" in push.capabilities:
            more = self.client.section()
            if more is None:
                raise Refused("the client hung up in the middle of its push")
            options = more[0]
        verdicts = [(c, judge(c, self.peer, self.hub)) for c in push.commands]
        reasons = {c.ref: v.reason for c, v in reversed(verdicts) if not v.allowed}
        if push.push_cert:
            reasons["(push certificate)"] = "annexsync serve: signed pushes are not supported"
        pack: Path | None = None
        quarantine: str | None = None
        try:
            checks = [c for c, v in verdicts if v.check_fast_forward]
            if not reasons and checks:
                quarantine = tempfile.mkdtemp(
                    prefix="incoming-annexsync-", dir=os.path.join(self.repo.path, "objects")
                )
                pack = Path(quarantine) / "incoming.pack"
                with open(pack, "wb") as f:
                    self._read_pack(push, f.write)
                reasons = self._fast_forward_problems(quarantine, pack, checks)
            if reasons:
                return self._refuse(proc, to_git, git, push, reasons, read_pack=pack is None)
            relay = threading.Thread(target=_relay, args=(git, self.out), daemon=True)
            relay.start()
            try:
                _send(to_git, section[0] + options)
                if pack is not None:
                    with open(pack, "rb") as f:
                        while data := f.read(1 << 16):
                            _send(to_git, data)
                    _close(to_git)
                else:
                    threading.Thread(target=self._pump, args=(to_git,), daemon=True).start()
            except BrokenPipeError:
                pass  # receive-pack ended early; what it said is on its way to the client
            relay.join()
            status = proc.wait()
        finally:
            if quarantine is not None:
                shutil.rmtree(quarantine, ignore_errors=True)
        for command in push.commands:
            self._log("accepted", command, outcome(command, self._ref(command.ref)))
        return status

    def _pump(self, to_git: BinaryIO) -> None:
        """The rest of the client's input (its pack) to receive-pack, untouched."""
        try:
            while data := self.client.chunk():
                _send(to_git, data)
        except (OSError, ValueError):  # receive-pack is gone, or its pipe was closed
            pass
        finally:
            _close(to_git)

    def _read_pack(self, push: Push, sink: Callable[[bytes], object]) -> None:
        """Read the client's pack to its end (or to the end of input)."""
        if not push.sends_pack:
            return
        hash_size = 32 if any(len(c.new) == 64 for c in push.commands) else 20
        end = PackEnd(hash_size)
        while data := self.client.chunk():
            used = end.feed(data)
            sink(data if used is None else data[:used])
            if used is not None:
                return

    def _fast_forward_problems(
        self, quarantine: str, pack: Path, checks: list[Command]
    ) -> dict[str, str]:
        """Index the pack into ``quarantine`` (the repository's objects stay untouched) and
        check each update there; the refused ones with their reasons."""
        objects = os.path.join(self.repo.path, "objects")
        env = {
            **self.env,
            "GIT_DIR": self.repo.path,
            "GIT_OBJECT_DIRECTORY": quarantine,
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": objects,
        }
        with open(pack, "rb") as f:
            indexed = subprocess.run(
                ["git", "index-pack", "--stdin", "--fix-thin"],
                stdin=f,
                capture_output=True,
                env=env,
                check=False,
            )
        if indexed.returncode != 0:
            why = (indexed.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return {c.ref: f"annexsync serve: the pack is unusable: {why}" for c in checks}
        problems = {}
        for command in checks:
            ancestor = subprocess.run(
                ["git", "merge-base", "--is-ancestor", command.old, command.new],
                capture_output=True,
                env=env,
                check=False,
            ).returncode
            if ancestor != 0:
                problems[command.ref] = (
                    "annexsync serve: non-fast-forward; branches here only move forward "
                    "(fetch and merge first)"
                )
        return problems

    def _refuse(
        self,
        proc: subprocess.Popen[bytes],
        to_git: BinaryIO,
        git: _Input,
        push: Push,
        reasons: dict[str, str],
        read_pack: bool,
    ) -> int:
        """Let receive-pack go with no update, take in the client's pack and throw it away,
        then tell the client why."""
        with contextlib.suppress(OSError):
            _send(to_git, FLUSH)
        _close(to_git)
        _relay(git, None)
        proc.wait()
        if read_pack:
            with contextlib.suppress(ProtocolError):
                self._read_pack(push, lambda _data: None)
        for command in push.commands:
            why = reasons.get(command.ref, "another update in this push was refused")
            self._log("refused", command, why.removeprefix("annexsync serve: "))
        report, messages = refusal(push, reasons)
        _write(self.out, report)
        for message in messages:
            print(message, file=sys.stderr)
        sys.stderr.flush()
        return 1

    def _ref(self, name: str) -> str | None:
        try:
            return str(self.repo.references[name].target)
        except (KeyError, pygit2.GitError, ValueError):
            return None

    def _log(self, event: str, command: Command, detail: str) -> None:
        """Append to serve.log (rotated at 1 MiB); a log that cannot be written is no reason
        to fail the push."""
        line = log_line(datetime.now().astimezone(), self.peer, event, command, detail)
        try:
            self.log_path.parent.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if self.log_path.stat().st_size > LOG_MAX_BYTES:
                    os.replace(self.log_path, self.log_path.with_name(LOG_NAME + ".1"))
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass


def _relay(source: _Input, fd: int | None) -> None:
    """Copy ``source`` to ``fd`` (or discard it) until its end."""
    try:
        while data := source.chunk():
            if fd is not None:
                _write(fd, data)
    except OSError:
        pass

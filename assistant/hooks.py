"""``annexsync hooks install|uninstall|status``: put annexsync's git hooks in place beside the
user's own, and take them out again leaving exactly what was there before.

The hook itself is ``hookscript.py`` (see docs/hooks.md). Each installed copy is sealed with a
checksum of its own content, so a later run can tell a copy annexsync wrote (any version) from
one the user has edited since, which is never removed or overwritten. A hook the user already
had is renamed to ``NAME.annexsync-orig`` (same inode: content, mode and times kept) and run
by ours first; uninstalling renames it back.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pygit2

from assistant import gitrepo
from assistant.config import parse_bool
from assistant.errors import AnnexsyncError, ConfigError
from assistant.hookscript import ORIGINAL_SUFFIX, RECORD

WORKTREE_HOOKS = ("post-commit", "post-merge", "post-checkout", "post-rewrite", "post-receive")
"""The hooks installed in a repository with a working tree."""
BARE_HOOKS = ("post-receive",)
"""A bare repository (a hub) only ever receives."""
MARKER = b"# annexsync-hook-sha256: "
UNSET = b"unset"
SETTINGS_LINE = b"py=python3 pkg="
_SEAL = re.compile(rb"^" + re.escape(MARKER) + rb"(\S+)$", re.MULTILINE)
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9_./+@%:,=-]+$")


class Kind(enum.Enum):
    """What a hook name holds on disk."""

    ABSENT = "absent"
    OURS = "ours"  # written by annexsync and unchanged since (any version)
    EDITED = "edited"  # written by annexsync, changed since
    FOREIGN = "foreign"  # someone else's hook (a file or a symlink)
    OTHER = "other"  # a directory or something else we never touch


class Action(enum.Enum):
    """What install or uninstall does with one hook name."""

    WRITE = "write"  # write ours (new, or an update of ours)
    CHAIN = "chain"  # rename the user's hook to NAME.annexsync-orig, then write ours
    KEEP = "keep"  # ours is there and current
    REMOVE = "remove"  # delete ours
    RESTORE = "restore"  # rename NAME.annexsync-orig back to NAME (over ours, if there)
    LEAVE = "leave"  # something that is not ours to change is in the way
    NOTHING = "nothing"


@dataclass(frozen=True)
class OnDisk:
    """One hook name in the hooks directory: what it holds, and whether a chained original
    is kept beside it."""

    name: str
    kind: Kind
    current: bool = False  # ours, and byte for byte what install would write now
    original: bool = False


@dataclass(frozen=True)
class Step:
    """What install or uninstall does with one hook, and the line that says so."""

    name: str
    action: Action
    message: str
    problem: bool = False


# --- the hook's content ---------------------------------------------------------------------


def template() -> bytes:
    """The hook as shipped (``assistant/hookscript.py``)."""
    return resources.files("assistant").joinpath("hookscript.py").read_bytes()


def render(source: bytes, python: str | None, package: str | None = None) -> bytes:
    """The hook as installed, sealed: ``python`` (an absolute interpreter path) and
    ``package`` (the directory holding the ``assistant`` package, whose compiled hook module
    starts faster than this file) written into it. Without them, or if the package is gone
    later, the hook runs itself with python3 from PATH."""
    if python and usable_path(python):
        settings = b"py=" + python.encode()
        if package and usable_path(package):
            settings += b" pkg=" + package.encode()
        source = source.replace(SETTINGS_LINE, settings, 1)
    return seal(source)


def usable_path(path: str) -> bool:
    """Whether ``path`` can be written into the hook as it is (no quoting needed)."""
    return bool(_PLAIN_PATH.match(path))


def package_root() -> str:
    """The directory that holds the ``assistant`` package (site-packages, or a checkout)."""
    return str(Path(__file__).resolve().parent.parent)


def _digest(unsealed: bytes) -> bytes:
    return hashlib.sha256(unsealed).hexdigest().encode()


def seal(source: bytes) -> bytes:
    """Write the checksum of ``source`` (with its marker unset) into its marker line."""
    unsealed = _SEAL.sub(MARKER + UNSET, source, count=1)
    return _SEAL.sub(MARKER + _digest(unsealed), unsealed, count=1)


def classify(content: bytes) -> Kind:
    """OURS when the content carries our marker and its checksum still matches, EDITED when
    the marker is there but the content changed, FOREIGN otherwise."""
    match = _SEAL.search(content)
    if match is None:
        return Kind.FOREIGN
    unsealed = _SEAL.sub(MARKER + UNSET, content, count=1)
    return Kind.OURS if match.group(1) == _digest(unsealed) else Kind.EDITED


# --- decisions ------------------------------------------------------------------------------


def plan_install(found: OnDisk) -> Step:
    """What install does with one hook: never overwrite or move anything that is not ours,
    except a user's hook, which is kept as NAME.annexsync-orig and chained."""
    name, orig = found.name, found.name + ORIGINAL_SUFFIX
    if found.kind is Kind.ABSENT:
        if found.original:
            return Step(name, Action.WRITE, f"installed; it runs your {orig} first")
        return Step(name, Action.WRITE, "installed")
    if found.kind is Kind.OURS:
        if found.current:
            return Step(name, Action.KEEP, "already installed")
        return Step(name, Action.WRITE, "updated")
    if found.kind is Kind.EDITED:
        return Step(name, Action.LEAVE, "edited since annexsync installed it; left as it is", True)
    if found.kind is Kind.FOREIGN and not found.original:
        return Step(name, Action.CHAIN, f"installed; your hook is now {orig} and runs first")
    if found.kind is Kind.FOREIGN:
        return Step(
            name,
            Action.LEAVE,
            f"a hook of yours is there and {orig} exists too; left as it is "
            "(move one of them away and install again)",
            True,
        )
    return Step(name, Action.LEAVE, "not a file; left as it is", True)


def plan_uninstall(found: OnDisk) -> Step:
    """What uninstall does with one hook: remove only an unchanged copy of ours, and put the
    user's own hook back."""
    name, orig = found.name, found.name + ORIGINAL_SUFFIX
    if found.kind is Kind.OURS:
        if found.original:
            return Step(name, Action.RESTORE, "removed; your own hook is back")
        return Step(name, Action.REMOVE, "removed")
    if found.kind is Kind.EDITED:
        kept = f" (the hook it replaced is still {orig})" if found.original else ""
        return Step(
            name,
            Action.LEAVE,
            f"edited since annexsync installed it; left in place{kept}",
            True,
        )
    if found.kind is Kind.ABSENT:
        if found.original:
            return Step(name, Action.RESTORE, "your own hook is back")
        return Step(name, Action.NOTHING, "not installed")
    if found.kind is Kind.FOREIGN and found.original:
        return Step(name, Action.NOTHING, f"not annexsync's; left as it is, and {orig} too")
    return Step(name, Action.NOTHING, "not annexsync's; left as it is")


def describe(found: OnDisk) -> str:
    """The status line for one hook."""
    chained = f"; runs your {found.name}{ORIGINAL_SUFFIX} first" if found.original else ""
    if found.kind is Kind.OURS:
        if found.current:
            return f"installed{chained}"
        return f"installed, another version{chained} ('annexsync hooks install' updates it)"
    if found.kind is Kind.EDITED:
        return "installed, then edited by hand (annexsync leaves it alone)"
    if found.kind is Kind.FOREIGN:
        return "not installed: a hook of your own is there ('annexsync hooks install' chains it)"
    if found.kind is Kind.OTHER:
        return "not installed: something that is not a file is in its place"
    if found.original:
        return f"not installed; your {found.name}{ORIGINAL_SUFFIX} is not in use"
    return "not installed"


# --- the repository and its hooks directory -------------------------------------------------


def open_repository(path: Path) -> pygit2.Repository:
    """The repository at or above ``path``, bare or not (a hub takes the receiving hook); a
    working tree gets open_worktree's checks too."""
    repo = gitrepo.open_repository(path)
    return repo if repo.is_bare else gitrepo.open_worktree(path)


def hook_names(repo: pygit2.Repository) -> tuple[str, ...]:
    """The hooks annexsync manages in this repository."""
    return BARE_HOOKS if repo.is_bare else WORKTREE_HOOKS


def hooks_dir(repo: pygit2.Repository) -> Path:
    """Where git looks for this repository's hooks: ``core.hooksPath`` if set, else the
    (common) git directory's ``hooks``. git itself answers, so its rules apply exactly."""
    where = repo.path if repo.is_bare else repo.workdir
    assert where is not None
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    try:
        proc = subprocess.run(
            ["git", "-C", where, "rev-parse", "--git-path", "hooks"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        raise AnnexsyncError(f"cannot run git: {exc.strerror or exc}") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise AnnexsyncError(f"cannot find the hooks directory: {why}")
    directory = Path(os.path.normpath(os.path.join(where, proc.stdout.rstrip("\n"))))
    if directory.exists() and not directory.is_dir():
        raise AnnexsyncError(f"the hooks directory {directory} is not a directory")
    return directory


def probe(directory: Path, name: str, wanted: bytes) -> OnDisk:
    """Look at one hook name without following anything we would not touch."""
    path = directory / name
    original = os.path.lexists(directory / (name + ORIGINAL_SUFFIX))
    try:
        st = path.lstat()
    except FileNotFoundError:
        return OnDisk(name, Kind.ABSENT, original=original)
    except OSError as exc:
        raise AnnexsyncError(f"cannot look at {path}: {exc.strerror or exc}") from None
    if path.is_symlink():
        return OnDisk(name, Kind.FOREIGN, original=original)
    if not path.is_file():
        return OnDisk(name, Kind.OTHER, original=original)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise AnnexsyncError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = classify(content)
    current = kind is Kind.OURS and content == wanted and st.st_mode & 0o111 == 0o111
    return OnDisk(name, kind, current=current, original=original)


def _write(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with an executable file holding ``content``."""
    tmp = path.with_name(f".{path.name}.annexsync-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def apply(directory: Path, step: Step, content: bytes) -> None:
    """Carry out one step. Renames keep the user's file as it is: same content, mode, owner
    and times."""
    path = directory / step.name
    orig = directory / (step.name + ORIGINAL_SUFFIX)
    if step.action is Action.CHAIN:
        if os.path.lexists(orig):  # appeared since we looked: never overwrite it
            raise AnnexsyncError(f"{orig} appeared meanwhile; nothing changed for {step.name}")
        os.rename(path, orig)
        _write(path, content)
    elif step.action is Action.WRITE:
        _write(path, content)
    elif step.action is Action.REMOVE:
        path.unlink()
    elif step.action is Action.RESTORE:
        os.rename(orig, path)


# --- the commands ---------------------------------------------------------------------------


@dataclass
class Report:
    """What a command did, one line per hook, for the command line to print."""

    directory: Path
    steps: list[Step]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not any(step.problem for step in self.steps)


def _notes(repo: pygit2.Repository, directory: Path) -> list[str]:
    notes = []
    inside = [Path(repo.path).resolve()]
    if repo.workdir:
        inside.append(Path(repo.workdir).resolve())
    common = _common_dir(repo)
    inside.append(common)
    real = directory.resolve()
    if not any(real == top or top in real.parents for top in inside):
        notes.append(
            f"core.hooksPath is {directory}, outside this repository: every repository using "
            "it runs these hooks (they do nothing where annexsync is not set up)"
        )
    return notes


def _common_dir(repo: pygit2.Repository) -> Path:
    gitdir = Path(repo.path)
    commondir = gitdir / "commondir"
    if commondir.is_file():
        return (gitdir / commondir.read_text().strip()).resolve()
    return gitdir.resolve()


def _change(repo: pygit2.Repository, plan: Callable[[OnDisk], Step]) -> Report:
    directory = hooks_dir(repo)
    wanted = render(template(), sys.executable, package_root())
    steps = []
    for name in hook_names(repo):
        step = plan(probe(directory, name, wanted))
        try:
            if step.action in (Action.WRITE, Action.CHAIN):
                directory.mkdir(parents=True, exist_ok=True)
            apply(directory, step, wanted)
        except OSError as exc:
            step = Step(name, Action.LEAVE, f"failed: {exc.strerror or exc}", True)
        except AnnexsyncError as exc:
            step = Step(name, Action.LEAVE, str(exc), True)
        steps.append(step)
    return Report(directory, steps, _notes(repo, directory))


def install(repo: pygit2.Repository) -> Report:
    """Install (or update) every hook; idempotent."""
    report = _change(repo, plan_install)
    if not usable_path(sys.executable):
        report.notes.append(
            f"the interpreter path {sys.executable} cannot be written into a hook; "
            "the hooks run python3 from PATH"
        )
    return report


def uninstall(repo: pygit2.Repository) -> Report:
    """Remove our hooks and put the user's back; hooks edited since are left alone."""
    return _change(repo, plan_uninstall)


@dataclass
class Status:
    """Each hook's state, the hooksync setting, and what the received record holds."""

    directory: Path
    hooks: list[OnDisk]
    hooksync: str
    received: str | None


def status(repo: pygit2.Repository) -> Status:
    directory = hooks_dir(repo)
    wanted = render(template(), sys.executable, package_root())
    found = [probe(directory, name, wanted) for name in hook_names(repo)]
    return Status(directory, found, _hooksync(repo), _received(Path(repo.path) / "annexsync"))


def _hooksync(repo: pygit2.Repository) -> str:
    if repo.is_bare:
        return "not used in a bare repository"
    try:
        value = repo.config["annexsync.hooksync"]
    except KeyError:
        value = None
    except (pygit2.GitError, ValueError) as exc:
        return f"cannot read annexsync.hooksync: {exc}"
    try:
        on = value is not None and parse_bool("annexsync.hooksync", value)
    except ConfigError as exc:
        return str(exc)
    if on:
        return "on: with no assistant running, a commit starts a background 'annexsync sync'"
    return "off: with no assistant running, a commit waits for the next sync (annexsync.hooksync)"


def _received(state: Path) -> str | None:
    """'N ref updates recorded, the last at T: REF' from the record, or None."""
    lines: list[str] = []
    for name in (RECORD + ".1", RECORD):
        try:
            lines += (state / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
    if not lines:
        return None
    stamp, _old, new, ref = [*lines[-1].split(" ", 3), "", "", "", ""][:4]
    count = len(lines)
    return (
        f"{count} ref update{'s' if count != 1 else ''} recorded in {state / RECORD}; "
        f"the last at {stamp}: {ref} -> {new[:10]}"
    )


def report_lines(report: Report) -> list[tuple[str, bool]]:
    """The lines install and uninstall print; True marks a problem (for stderr)."""
    lines = [(f"hooks in {report.directory}:", False)]
    for step in report.steps:
        if step.problem:
            lines.append((f"annexsync: {step.name}: {step.message}", True))
        else:
            lines.append((f"  {step.name + ':':<15} {step.message}", False))
    lines += [(f"note: {note}", False) for note in report.notes]
    return lines


def status_lines(state: Status) -> list[str]:
    """``annexsync hooks status``."""
    lines = [f"hooks in {state.directory}:"]
    lines += [f"  {found.name + ':':<15} {describe(found)}" for found in state.hooks]
    lines.append(f"hooksync:   {state.hooksync}")
    lines.append(f"received:   {state.received or 'nothing recorded yet'}")
    return lines

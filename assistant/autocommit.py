"""Turn a set of changed paths into one commit on the checked-out branch.

Cost grows with the change: each path is compared with HEAD's tree, the new tree is built
with tree builders along the changed paths only, and the branch is moved with a
compare-and-swap. The index, whose rewrite costs time in proportion to the whole tree, is
brought up to date afterwards (``sync_index``), off the write-to-commit path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
from pygit2.enums import RepositoryState

from assistant.changes import Change, Entry, classify, commit_message, quote_path
from assistant.config import Settings
from assistant.gitrepo import state_dir, worktree_root
from assistant.guard import DeletionWindow, is_mass_deletion
from assistant.ignore import IgnoreRules
from assistant.locks import LockNotes
from assistant.node import NodeIdentity
from assistant.objects import blob_size, store_blobs
from assistant.treeedit import apply_edits, entry_at, files_under
from assistant.worktree import (
    MODE_TREE,
    Absent,
    ParentCheck,
    Present,
    Skipped,
    read_path,
    walk_files,
)

log = logging.getLogger("annexsync.commit")

# Lists (one JSON string a line) paths committed whose entries are not yet in the index.
INDEX_BEHIND = "index-behind"
# Paths a merge brought that could not be written here (a name too long for this
# filesystem): absent from disk, but never to be committed as deletions. A JSON object.
UNWRITABLE = "unwritable.json"
# git releases index.lock before it moves HEAD (a checkout writes the new tree's files and
# index, unlocks, then points HEAD at the new branch): an index or HEAD written by someone
# else this recently means git may be half-way through, so the commit waits.
GIT_SETTLE = 0.3

_STATE_NAMES = {
    RepositoryState.MERGE: "merge",
    RepositoryState.REVERT: "revert",
    RepositoryState.REVERT_SEQUENCE: "revert",
    RepositoryState.CHERRYPICK: "cherry-pick",
    RepositoryState.CHERRYPICK_SEQUENCE: "cherry-pick",
    RepositoryState.BISECT: "bisect",
    RepositoryState.REBASE: "rebase",
    RepositoryState.REBASE_INTERACTIVE: "rebase",
    RepositoryState.REBASE_MERGE: "rebase",
    RepositoryState.APPLY_MAILBOX: "git am",
    RepositoryState.APPLY_MAILBOX_OR_REBASE: "rebase",
}


@dataclass
class CommitResult:
    """What one attempt produced. ``blocked`` set means nothing was looked at: retry later."""

    commit: str | None = None
    changes: list[Change] = field(default_factory=list)
    requeue: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    blocked: str | None = None
    retry_soon: bool = False


def collapse(paths: Iterable[str]) -> list[str]:
    """Drop paths that lie under another path of the set ('' stands for the whole tree)."""
    ordered = sorted(set(paths))
    if "" in ordered:
        return [""]
    kept: list[str] = []
    for path in ordered:
        if kept and path.startswith(kept[-1] + "/"):
            continue
        kept.append(path)
    return kept


def moved_paths(old: dict[str, Entry | None], new: dict[str, Entry | None]) -> set[str]:
    """Paths this batch deletes whose content it adds at another path: moves, not deletions.
    Each added file accounts for one deleted path at most, so deleting a hundred identical
    (say empty) files while adding one is still a hundred deletions to the guard."""
    added = Counter(e.oid for p, e in new.items() if e is not None and old.get(p) != e)
    moved = set()
    for path in sorted(p for p, e in new.items() if e is None):
        was = old.get(path)
        if was is not None and added[was.oid] > 0:
            added[was.oid] -= 1
            moved.add(path)
    return moved


class AutoCommitter:
    """The one object that writes commits, refs and the index of a repository."""

    def __init__(self, repo: pygit2.Repository, identity: NodeIdentity, settings: Settings) -> None:
        self.repo = repo
        self.root = worktree_root(repo)
        self.identity = identity
        self.settings = settings
        self.rules = IgnoreRules(repo, settings.ignore)
        self.locks = LockNotes(state_dir(repo), Path(repo.path))
        self.held: set[str] = set()
        self.held_with: set[str] = set()  # additions held because they replace held paths
        self.large: dict[str, int] = {}
        self.nested: set[str] = set()
        # path -> why it is not committed (a directory's path ends in '/'); for status
        self.skipped: dict[str, str] = {}
        self._unwritable_file = state_dir(repo) / UNWRITABLE
        self.unwritable: dict[str, str] = read_unwritable(self._unwritable_file)
        self.skipped.update({p: unwritable_message(why) for p, why in self.unwritable.items()})
        self.window = DeletionWindow()
        self.last_commit: str | None = None
        self.last_summary: str | None = None
        self._index_pending: dict[str, Entry | None] = {}
        self.recheck: set[str] = set()  # paths to commit again (see sync_index)
        self._index_head: str | None = None
        self._index_behind = state_dir(repo) / INDEX_BEHIND
        self._conflict_stamp: tuple[int, int, int] | None = None
        self._conflicted = False
        self._own_index_stamp: tuple[int, int, int] | None = None
        self.git_settle = GIT_SETTLE

    # --- preconditions -------------------------------------------------------------------
    def blocked_reason(self) -> tuple[str, bool] | None:
        """Why no commit may be made now, and whether to retry soon (a lock) or wait."""
        if not self.root.is_dir():
            return "the working tree root is missing", False
        state = self.repo.state()
        if state != RepositoryState.NONE:
            return f"a {_STATE_NAMES.get(state, 'git operation')} is in progress", False
        if self.repo.head_is_detached:
            return "HEAD is detached; auto-commit is paused until a branch is checked out", False
        if os.path.exists(os.path.join(self.repo.path, "index.lock")):
            return "another git process holds .git/index.lock", True
        if self._git_recently_active():
            return "git is updating the repository", True
        if self._index_has_conflicts():
            return (
                "the index has unresolved conflicts (for example from 'git stash pop'); "
                "resolve them and 'git add' the files",
                False,
            )
        return None

    def _stamp(self, name: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.repo.path, name))
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _git_recently_active(self) -> bool:
        """True when someone else wrote the index or HEAD within ``git_settle`` seconds."""
        if self.git_settle <= 0:
            return False
        settle = int(self.git_settle * 1e9)
        now = time.time_ns()
        # Later than now (beyond the same slack) is a clock set back or a skewed file server,
        # no sign of git at work: it must not pause commits until the clock catches up.
        horizon, future = now - settle, now + settle
        index = self._stamp("index")
        if index is not None and index != self._own_index_stamp and horizon < index[2] <= future:
            return True
        head = self._stamp("HEAD")
        return head is not None and horizon < head[2] <= future

    def _index_has_conflicts(self) -> bool:
        """Whether git left conflict entries in the index; re-checked only when the index
        file changed, since the check walks every entry."""
        stamp = self._stamp("index")
        if stamp is None:
            return False
        if stamp != self._conflict_stamp:
            index = self.repo.index
            with contextlib.suppress(pygit2.GitError):
                index.read(False)
            self._conflicted = index.conflicts is not None
            self._conflict_stamp = stamp
        return self._conflicted

    # --- the commit ------------------------------------------------------------------------
    def commit_paths(
        self, paths: Iterable[str], allow_deletions: bool = False, now: float | None = None
    ) -> CommitResult:
        """Commit what changed at ``paths`` (files or directories, relative, posix)."""
        wanted = set(paths)
        if allow_deletions:
            wanted |= self.held | self.held_with
        now = time.monotonic() if now is None else now
        for _attempt in range(5):
            blocked = self.blocked_reason()
            if blocked:
                return CommitResult(blocked=blocked[0], retry_soon=blocked[1])
            try:
                return self._commit_once(wanted, allow_deletions, now)
            except _BranchMoved:
                continue
            except (OSError, pygit2.GitError) as exc:  # a full disk (libgit2 may say either)
                return CommitResult(blocked=f"cannot write to the repository: {exc}")
        return CommitResult(blocked="the branch keeps moving under us", retry_soon=True)

    def _commit_once(self, paths: set[str], allow_deletions: bool, now: float) -> CommitResult:
        repo = self.repo
        before = self.git_snapshot()
        branch = repo.references["HEAD"].target
        assert isinstance(branch, str)
        parent = None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)
        base = parent.tree if parent is not None else None
        old, new, data, requeue = self._evaluate(paths, base)
        result = CommitResult(requeue=requeue)
        # A path whose content this batch adds again elsewhere was moved, not deleted: moving
        # a folder of most files is no mass deletion, and is not counted as one later.
        moved = moved_paths(old, new)
        deletions = sorted(p for p, e in new.items() if e is None and p not in moved)
        if allow_deletions:
            self.held.clear()
            self.held_with.clear()
        elif deletions and self._must_hold(deletions, new, base, now):
            self.held.update(deletions)
            result.held = deletions
            for path in deletions:
                del new[path]
            log.warning(
                "mass-deletion guard: holding %d deletions; run 'annexsync sync "
                "--allow-deletions' to commit them, or restore the files",
                len(self.held),
            )
        if self.held:
            self._hold_what_would_replace_held(new)
        else:
            self.held_with.clear()
        if not new:
            return result
        store_blobs(repo, [data[p] for p, e in new.items() if e is not None and p in data])
        tree = apply_edits(repo, base, new)
        if base is not None and tree == base.id:
            return result
        changes = classify({p: old.get(p) for p in new}, new)
        message = commit_message(changes, self.identity.name)
        signature = self._signature()
        if self.git_moved(branch, before):
            raise _BranchMoved
        self._note_index_behind(new)
        try:
            with self.locks.creating(f"{branch}.lock"):
                commit = repo.create_commit(
                    branch, signature, signature, message, tree, [parent.id] if parent else []
                )
        except pygit2.GitError as exc:
            if "not the first parent" in str(exc):
                raise _BranchMoved from None
            raise
        deleted = sum(1 for p, e in new.items() if e is None and p not in moved)
        self.window.record(now, deleted)
        self.last_commit = str(commit)
        self.last_summary = message.split("\n", 1)[0]
        self._index_pending.update(new)
        self._index_head = str(commit)
        result.commit = str(commit)
        result.changes = changes
        return result

    def git_snapshot(self) -> tuple[object, object]:
        """What ``git_moved`` compares against: the index's and HEAD's stamps."""
        return (self._stamp("index"), self._stamp("HEAD"))

    def git_moved(self, branch: str, before: tuple[object, object]) -> bool:
        """Whether git touched HEAD, the index or its lock, or started an operation, since
        ``before``: then what we read may be half of a checkout, and the work starts over."""
        if os.path.exists(os.path.join(self.repo.path, "index.lock")):
            return True
        if self.git_snapshot() != before or self.repo.state() != RepositoryState.NONE:
            return True
        return self.repo.references["HEAD"].target != branch

    def adopt(self, commit: str, edits: dict[str, Entry | None]) -> None:
        """HEAD is about to move to ``commit`` (made elsewhere, e.g. a merge) whose tree
        differs from the index at ``edits``: bring the index along at the next sync."""
        self._note_index_behind(edits)
        self._index_pending.update(edits)
        self._index_head = commit

    def _note_index_behind(self, edits: dict[str, Entry | None]) -> None:
        """Record, before the commit exists, which paths the index will lag on, so a crash
        anywhere after this point is repaired on those paths alone."""
        with contextlib.suppress(OSError), open(self._index_behind, "a") as note:
            note.write("".join(json.dumps(path) + "\n" for path in edits))

    def _hold_what_would_replace_held(self, new: dict[str, Entry | None]) -> None:
        """A file or symlink where a held deletion's directory was (a folder moved away and
        a link left in its place), or a file under a held file's name, would replace the held
        paths in the tree all the same: it is held with them."""
        ancestors = {h.rsplit("/", i)[0] for h in self.held for i in range(1, h.count("/") + 1)}
        for path, entry in list(new.items()):
            if entry is None:
                continue
            parts = path.split("/")
            under_held = any("/".join(parts[:i]) in self.held for i in range(1, len(parts)))
            if path in ancestors or under_held:
                del new[path]
                self.held_with.add(path)

    def _must_hold(
        self,
        deletions: list[str],
        new: dict[str, Entry | None],
        base: pygit2.Tree | None,
        now: float,
    ) -> bool:
        """The guard: too many deletions at once (with the recent window and what is held
        already), anything while something is held, or a tree about to be emptied."""
        recent = self.window.recent(now)
        tracked = self.tracked_count()
        pending_total = len(self.held | set(deletions)) + recent
        if is_mass_deletion(pending_total, tracked + recent, self.settings.massdelete):
            return True
        if self.held:
            return True
        if base is not None and len(deletions) >= 2 and self.settings.massdelete.enabled:
            survivors = [p for p, e in new.items() if e is not None]
            if not survivors and tracked <= len(deletions):
                return True
        return False

    def tracked_count(self) -> int:
        """How many files HEAD tracks: the index's count, corrected by our commits whose
        entries ``sync_index`` has not written yet."""
        index = self.repo.index
        with contextlib.suppress(pygit2.GitError):
            index.read(False)
        count = len(index)
        for path, entry in self._index_pending.items():
            present = path in index
            if entry is None and present:
                count -= 1
            elif entry is not None and not present:
                count += 1
        return count

    def _signature(self) -> pygit2.Signature:
        config = self.repo.config
        try:
            return pygit2.Signature(config["user.name"], config["user.email"])
        except (KeyError, ValueError, pygit2.GitError):
            return pygit2.Signature(self.identity.name, f"annexsync@{self.identity.name}")

    # --- reading the working tree ------------------------------------------------------
    def _evaluate(
        self, paths: set[str], base: pygit2.Tree | None
    ) -> tuple[dict[str, Entry | None], dict[str, Entry | None], dict[str, bytes], list[str]]:
        """Compare the disk with ``base`` at ``paths``: old and new entries of changed files,
        the bytes of new blobs, and paths to look at again later."""
        check = ParentCheck(self.root, self._note_nested)

        def tracked(rel: str) -> bool:
            return entry_at(base, rel) is not None

        def skip_dir(rel: str) -> bool:
            if not check.dir_ok(rel):
                if (why := check.dir_problem(rel)) is not None:
                    unreadable_dir(rel, why)
                return True
            return self.rules.is_ignored(rel, is_dir=True) and not tracked(rel)

        def skip_file(rel: str) -> bool:
            return self.rules.is_ignored(rel) and not tracked(rel)

        def unreadable_dir(reldir: str, why: str) -> None:
            stale.discard(f"{reldir}/")
            self._skip(f"{reldir}/", f"not committed: cannot read the directory: {why}")

        def unlistable(reldir: str, exc: OSError) -> None:
            unreadable_dir(reldir, _why(exc))

        candidates: set[str] = set()
        for path in collapse(paths):
            candidates.update(f for f, _ in files_under(self.repo, base, path))
            if path == "" or (
                check.parents_ok(path)
                and (self.root / path).is_dir()
                and not (self.root / path).is_symlink()
            ):
                if path == "" or check.dir_ok(path):
                    stale = {k for k in self.skipped if k.endswith("/") and _below(k[:-1], path)}
                    candidates.update(walk_files(self.root, path, skip_dir, skip_file, unlistable))
                    for key in stale:
                        self.skipped.pop(key, None)
            else:
                candidates.add(path)

        old: dict[str, Entry | None] = {}
        new: dict[str, Entry | None] = {}
        data: dict[str, bytes] = {}
        requeue: list[str] = []
        for path in sorted(candidates):
            node = entry_at(base, path)
            head = (
                None
                if node is None or node.filemode == MODE_TREE
                else Entry(str(node.id), node.filemode)
            )
            if head is None and skip_file(path):
                continue
            if not check.parents_ok(path):
                if any(path.startswith(n + "/") for n in self.nested):
                    continue
                problem = check.problem(path)
                state: Present | Absent | Skipped = (
                    Absent() if problem is None else Skipped("unreadable", problem)
                )
            else:
                state = read_path(self.root, path, self.settings.largefiles)
            if not isinstance(state, Skipped) or state.reason == "large":
                self.skipped.pop(path, None)
            if isinstance(state, Present):
                self.held.discard(path)
                self.large.pop(path, None)
                self._writable(path)
                if state.entry != head:
                    old[path], new[path] = head, state.entry
                    data[path] = state.data
            elif isinstance(state, Absent):
                self.large.pop(path, None)
                if head is not None and path in self.unwritable:
                    self.skipped[path] = unwritable_message(self.unwritable[path])
                elif head is not None:
                    old[path], new[path] = head, None
                else:
                    self._writable(path)
            elif state.reason == "unsettled":
                requeue.append(path)
            elif state.reason == "large":
                if path not in self.large:
                    log.warning(
                        "not committing %s: larger than annexsync.largefiles (%s)",
                        path,
                        state.detail,
                    )
                self.large[path] = int(state.detail.split()[0])
            elif path in self.unwritable:
                self.skipped[path] = unwritable_message(self.unwritable[path])
            else:
                self._skip(path, f"not committed: {state.detail}")
        return old, new, data, requeue

    def _note_nested(self, reldir: str) -> None:
        if reldir not in self.nested:
            self.nested.add(reldir)
            log.warning("not committing %s/: it is a nested git repository", reldir)

    def _skip(self, path: str, message: str) -> None:
        """Note why ``path`` is not committed; logged when that is news."""
        if self.skipped.get(path) != message:
            self.skipped[path] = message
            log.warning("%s: %s", quote_path(path), message)

    # --- paths a merge could not write -------------------------------------------------
    def note_unwritable(self, failed: dict[str, str]) -> None:
        """A merge puts these paths in HEAD but could not write them here: their absence from
        disk is not a deletion, and status shows why (kept across restarts). Raises OSError
        when the record cannot be saved: the merge must not go ahead without it."""
        for path, why in failed.items():
            self.unwritable[path] = why
            self.skipped[path] = unwritable_message(why)
        self._write_unwritable()

    def _writable(self, path: str) -> None:
        """The path is on disk now, or gone from HEAD: it needs no protection any more."""
        if self.unwritable.pop(path, None) is not None:
            self.skipped.pop(path, None)
            self._save_unwritable()

    def _save_unwritable(self) -> None:
        with contextlib.suppress(OSError):
            self._write_unwritable()

    def _write_unwritable(self) -> None:
        if not self.unwritable:
            self._unwritable_file.unlink(missing_ok=True)
            return
        tmp = self._unwritable_file.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.write(json.dumps(self.unwritable, indent=1, sort_keys=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._unwritable_file)

    # --- whole-tree scans --------------------------------------------------------------
    def scan_candidates(self) -> list[str]:
        """Paths where the working tree or index may differ from HEAD. git's own status does
        the walk in a subprocess (the daemon stays responsive: an in-process scan of 100,000
        files would hold the interpreter for most of a second); optional locks are off, so it
        never rewrites the index under us. libgit2's status is the fallback."""
        try:
            proc = subprocess.run(
                [
                    "git",
                    "--no-optional-locks",
                    f"--git-dir={self.repo.path}",
                    f"--work-tree={self.root}",
                    "status",
                    "--porcelain=v1",
                    "-z",
                    "--untracked-files=all",
                    "--no-renames",
                    "--ignore-submodules=all",
                ],
                cwd=self.root,
                capture_output=True,
                check=False,
                env={**_plain_git_env(), "LC_ALL": "C"},  # its warnings are read below
            )
        except OSError:
            proc = None
        if proc is None or proc.returncode != 0:
            return self._scan_in_process()
        # what git could not look into is looked at again here, to say why it is skipped
        out = unreadable_dirs(proc.stderr)
        for item in proc.stdout.split(b"\0"):
            if len(item) < 4:
                continue
            code, path = item[:2], os.fsdecode(item[3:]).rstrip("/")
            if code == b"??" and self.rules.is_ignored(path):
                continue
            out.append(path)
        return sorted(set(out))

    def _scan_in_process(self) -> list[str]:
        status = self.repo.status(untracked_files="all", ignored=False)
        return sorted(
            path.rstrip("/")
            for path, flags in status.items()
            if flags not in (pygit2.GIT_STATUS_CURRENT, pygit2.GIT_STATUS_IGNORED)
            and not (flags == pygit2.GIT_STATUS_WT_NEW and self.rules.is_ignored(path.rstrip("/")))
        )

    # --- the index -----------------------------------------------------------------------
    @property
    def index_dirty(self) -> bool:
        return bool(self._index_pending)

    def sync_index(self) -> bool:
        """Write our commits' entries into the index; False when it must be retried later."""
        if not self._index_pending:
            return True
        repo = self.repo
        if repo.head_is_unborn or str(repo.head.target) != self._index_head:
            # Someone else moved HEAD and owns the index now; their commit may have been made
            # from an index without our entries, so those paths are looked at again.
            self.recheck.update(self._index_pending)
            self._index_pending.clear()
            with contextlib.suppress(OSError):
                self._index_behind.unlink()
            return True
        if os.path.exists(os.path.join(repo.path, "index.lock")):
            return False
        index = repo.index
        try:
            index.read(False)
        except pygit2.GitError:
            return False
        pending = sorted(self._index_pending.items(), key=lambda item: item[1] is not None)
        for path, entry in pending:
            if entry is None:
                with contextlib.suppress(OSError, pygit2.GitError, KeyError):
                    index.remove(path)
                continue
            try:
                # the file's stat data makes `git status` quick; a file of another size is
                # another version, and is never hashed just to find that out
                if self._same_size(path, entry):
                    index.add(path)
                    current = index[path]
                    if str(current.id) == entry.oid and current.mode == entry.mode:
                        continue
            except (OSError, pygit2.GitError, KeyError, ValueError):
                pass
            index.add(pygit2.IndexEntry(path, pygit2.Oid(hex=entry.oid), entry.mode))
        try:
            with self.locks.creating("index.lock"):
                index.write()
        except pygit2.GitError:
            return False
        self._own_index_stamp = self._stamp("index")
        self._index_pending.clear()
        with contextlib.suppress(OSError):
            self._index_behind.unlink()
        return True

    def _same_size(self, path: str, entry: Entry) -> bool:
        return os.lstat(self.root / path).st_size == blob_size(self.repo, entry)

    def repair_index(self) -> None:
        """After a crash between a commit and its index write, make the index agree with HEAD
        again on the paths that commit touched (noted on disk beforehand), so `git status`
        tells the truth. Every other index entry, such as what the user staged, is left."""
        try:
            lines = self._index_behind.read_text().splitlines()
        except OSError:
            return
        paths: set[str] = set()
        for line in lines:
            with contextlib.suppress(ValueError):
                paths.add(json.loads(line))
        if self.repo.head_is_unborn or self.repo.head_is_detached or not paths:
            self._index_behind.unlink(missing_ok=True)
            return
        head = self.repo.head.peel(pygit2.Commit)
        for path in paths:
            node = entry_at(head.tree, path)
            self._index_pending[path] = (
                None
                if node is None or node.filemode == MODE_TREE
                else Entry(str(node.id), node.filemode)
            )
        self._index_head = str(head.id)
        self.sync_index()


class _BranchMoved(Exception):
    """The branch changed between reading HEAD and moving it: start over."""


_UNREADABLE_DIR = re.compile(rb"^warning: could not open directory '(.*?)(?:': .*)?$", re.M)


def unreadable_dirs(stderr: bytes) -> list[str]:
    """The directories `git status` warned it could not open (no permission, a path longer
    than the system allows), relative to the root. git cuts its messages at 4 KiB, so a
    path that long arrives cut short: its last whole directory is given instead."""
    found = []
    for m in _UNREADABLE_DIR.finditer(stderr):
        path = os.fsdecode(m.group(1))
        whole = m.group(0).endswith(b"'") or b"': " in m.group(0)
        found.append(path.rstrip("/") if whole else path.rpartition("/")[0])
    return found


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _below(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or lies under it ('' is the whole tree)."""
    return top == "" or path == top or path.startswith(top + "/")


def unwritable_message(why: str) -> str:
    return f"in the commit but not written here: {why}"


def read_unwritable(file: Path) -> dict[str, str]:
    """The paths recorded by ``note_unwritable``, from an earlier run too."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _plain_git_env() -> dict[str, str]:
    """The environment without variables that would point git at another repository."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
    }

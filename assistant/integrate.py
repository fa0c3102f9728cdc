"""Bring what peers sent into the checked-out branch: commit local work first, merge each
incoming commit deterministically, update only the changed files, then move the branch."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from assistant.autocommit import AutoCommitter
from assistant.changes import Entry, quote_path
from assistant.checkout import (
    Plan,
    UnsafePath,
    apply,
    inspect,
    plan,
    restore,
    tree_problem,
    write_entry,
)
from assistant.gitrepo import state_dir
from assistant.lineage import read_joined, record_joined, unrelated_problem
from assistant.merge import VARIANT_HEX, Variant, merge_commits, variant_path
from assistant.names import name_problem
from assistant.objects import blob_size
from assistant.treeedit import entry_at
from assistant.worktree import MODE_TREE, Absent, Present, read_path

log = logging.getLogger("annexsync.merge")
ATTEMPTS = 5
HELD_MERGES = "held-merges.json"
# (ref, commit) pairs refused in this process: warned about once, not at every merge
_refused_seen: set[tuple[str, str]] = set()


def record_held_merges(state: Path, held_back: dict[str, str]) -> None:
    """Remember which peers' commits were left unmerged (for status), or forget them."""
    path = state / HELD_MERGES
    if not held_back:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(held_back, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_held_merges(state: Path) -> dict[str, str]:
    """Peers' commits left unmerged by the last merge, and why."""
    try:
        data = json.loads((state / HELD_MERGES).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


@dataclass
class IntegrateResult:
    """The branch's new commit (if it moved), how, the variants kept, and refs left out."""

    head: str | None = None
    kind: str = "up-to-date"
    merged: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    paused: str | None = None
    held_back: dict[str, str] = field(default_factory=dict)


def incoming_refs(
    repo: pygit2.Repository, branch: str, pull_from: set[str] | None = None
) -> list[tuple[str, pygit2.Oid]]:
    """What peers have for ``branch``, ordered by commit id: every
    ``refs/remotes/<node>/synced/<branch>`` pushed to us, and ``refs/remotes/<remote>/<branch>``
    for each remote in ``pull_from`` (every remote when None)."""
    found = []
    for name in repo.references:
        if not name.startswith("refs/remotes/"):
            continue
        rest = name.removeprefix("refs/remotes/")
        node, _, tail = rest.partition("/")
        pushed = bool(node) and tail == f"synced/{branch}"
        if pull_from is None:
            fetched = bool(node) and tail == branch
        else:
            fetched = any(rest == f"{remote}/{branch}" for remote in pull_from)
        if not (pushed or fetched):
            continue
        try:
            found.append((name, repo.references[name].peel(pygit2.Commit).id))
        except (pygit2.GitError, ValueError):
            continue
    return sorted(found, key=lambda item: (str(item[1]), item[0]))


def has_incoming(repo: pygit2.Repository, pull_from: set[str] | None = None) -> bool:
    """Whether any incoming ref for the current branch holds a commit HEAD lacks."""
    if repo.head_is_detached:
        return False
    branch = str(repo.references["HEAD"].target).removeprefix("refs/heads/")
    head = None if repo.head_is_unborn else repo.head.target
    return any(
        not _already_ours(repo, head, oid) for _name, oid in incoming_refs(repo, branch, pull_from)
    )


def refused_incoming(
    repo: pygit2.Repository, name: str, ours: pygit2.Oid | None, theirs: pygit2.Oid
) -> str | None:
    """Why a peer's ref is never merged here, or None: pushed under a node name annexsync
    refuses, or a commit whose tree git would refuse to check out (checked where it differs
    from ours). Such a ref is held back; the other peers' commits are merged as usual."""
    node, _, tail = name.removeprefix("refs/remotes/").partition("/")
    if tail.startswith("synced/") and (problem := name_problem(node)) is not None:
        return f"refused: pushed under the node name {node!r}, and {problem}"
    try:
        old = repo[ours].peel(pygit2.Tree) if ours is not None else None
        problem = tree_problem(repo, old, repo[theirs].peel(pygit2.Tree))
    except (pygit2.GitError, KeyError, ValueError) as exc:
        problem = f"its commit cannot be read ({exc})"
    if problem is None:
        return None
    return f"refused: {problem}; git would not check this out"


def _already_ours(repo: pygit2.Repository, ours: pygit2.Oid | None, theirs: pygit2.Oid) -> bool:
    """Whether ``theirs`` is in our history (False too when its history cannot be read)."""
    try:
        return ours is not None and (theirs == ours or repo.descendant_of(ours, theirs))
    except (pygit2.GitError, KeyError, ValueError):
        return False


def _related(repo: pygit2.Repository, ours: pygit2.Oid | None, theirs: pygit2.Oid) -> bool:
    """Whether ``theirs`` shares any history with ``ours`` (an unborn branch shares with all;
    a history that cannot be read is left to the merge to judge)."""
    if ours is None:
        return True
    try:
        return repo.merge_base(ours, theirs) is not None
    except (pygit2.GitError, KeyError, ValueError):
        return True


def _changed(old: pygit2.Tree | None, new: pygit2.Tree) -> set[str]:
    diff = new.diff_to_tree(old, swap=True) if old is not None else new.diff_to_tree(swap=True)
    return {p for d in diff.deltas for p in (d.old_file.path, d.new_file.path)}


def _entries(tree: pygit2.Tree, paths: set[str]) -> dict[str, Entry | None]:
    out: dict[str, Entry | None] = {}
    for path in paths:
        node = entry_at(tree, path)
        out[path] = (
            None
            if node is None or node.filemode == MODE_TREE
            else Entry(str(node.id), node.filemode)
        )
    return out


def _keep_merged_versions(
    repo: pygit2.Repository, root: Path, work: Plan, kept: list[str]
) -> list[str]:
    """The user changed these files while the tree was being updated, so their versions stay;
    the version the merge brought for each is written beside it as a variant, as a conflict
    would have it, so that it is not lost either. Returns the variant paths written."""
    written = []
    for path in kept:
        entry = work.write.get(path)
        if entry is None:
            continue  # the merge removed the file: the user's version is all there is
        size = blob_size(repo, entry)
        current = read_path(root, path, largefiles=size)
        if isinstance(current, Present) and current.entry == entry:
            continue
        kept_at = None
        digits = VARIANT_HEX
        while kept_at is None and digits <= len(entry.oid):
            candidate = variant_path(path, entry.oid, digits)
            there = read_path(root, candidate, largefiles=size)
            if isinstance(there, Present) and there.entry == entry:
                kept_at = candidate  # already beside it
            elif isinstance(there, Absent) and not (root / candidate).is_dir():
                try:
                    write_entry(repo, root, candidate, entry)
                except (UnsafePath, OSError) as exc:
                    log.error("cannot keep the merged version of %s beside it: %s", path, exc)
                    break
                kept_at = candidate
            digits += 4
        if kept_at is None:
            continue
        log.warning("kept both versions of %s: the merged one is %s", path, kept_at)
        written.append(kept_at)
    return written


def _report_unwritable(committer: AutoCommitter, failed: dict[str, str]) -> None:
    """Paths the merge brought that this filesystem cannot hold: said once each; they stay in
    the commit (and on every peer that can hold them), and their absence here is never
    committed as a deletion."""
    for path, why in sorted(failed.items()):
        log.error(
            "cannot write %s: %s; it stays in the commit, but not on disk here",
            quote_path(path),
            why,
        )
    committer.note_unwritable(failed)


def integrate(
    committer: AutoCommitter,
    resolve: bool = True,
    pull_from: set[str] | None = None,
    scan: bool = True,
    busy: frozenset[str] = frozenset(),
) -> IntegrateResult:
    """Merge every incoming ref for the current branch into it (see the module doc), and
    remember for status which peers' commits had to be left unmerged. ``busy`` are files
    still open for writing: neither committed nor written here, whatever they hold now (a
    moment between an editor's truncate and its write); the merged version goes beside."""
    result = _integrate(committer, resolve, pull_from, scan, busy)
    if result.paused is None:
        with contextlib.suppress(OSError):
            record_held_merges(state_dir(committer.repo), result.held_back)
    return result


def _integrate(
    committer: AutoCommitter,
    resolve: bool,
    pull_from: set[str] | None,
    scan: bool,
    busy: frozenset[str],
) -> IntegrateResult:
    repo = committer.repo
    state = state_dir(repo)
    joined = read_joined(state)
    stubborn: set[str] = set(busy)
    for attempt in range(ATTEMPTS):
        blocked = committer.blocked_reason()
        if blocked:
            return IntegrateResult(paused=blocked[0])
        # The daemon flushes its own batch first and skips the whole-tree scan; edits made
        # meanwhile are still caught by the check of each path before it is written.
        candidates = committer.scan_candidates() if scan or attempt else []
        pending = committer.commit_paths([p for p in candidates if p not in busy])
        if pending.blocked:
            return IntegrateResult(paused=pending.blocked)
        committer.sync_index()
        before = committer.git_snapshot()
        branch = repo.references["HEAD"].target
        assert isinstance(branch, str)
        short = branch.removeprefix("refs/heads/")
        # The ref object read now: set_target on it is a compare-and-swap against this value.
        ref = None if repo.head_is_unborn else repo.references[branch]
        head = ref.peel(pygit2.Commit) if ref is not None else None
        result = IntegrateResult()
        target = head.id if head is not None else None
        ours: list[str] = []  # incoming refs whose history is already in ours
        for name, oid in incoming_refs(repo, short, pull_from):
            if _already_ours(repo, target, oid):
                ours.append(name)
                continue
            refused = refused_incoming(repo, name, target, oid)
            if refused is None and name in joined:
                refused = unrelated_problem(name, short, True, _related(repo, target, oid))
            if refused is not None:
                result.held_back[name] = refused
                level = logging.DEBUG if (name, str(oid)) in _refused_seen else logging.WARNING
                _refused_seen.add((name, str(oid)))
                log.log(level, "not merging %s (%s): %s", name, str(oid)[:10], refused)
                continue
            if target is None:
                target, result.kind = oid, "fast-forward"
                result.merged.append(name)
                continue
            try:
                outcome = merge_commits(repo, target, oid)
            except OSError as exc:  # a full disk: nothing was changed yet, try again later
                return IntegrateResult(paused=f"cannot write to the repository: {exc}")
            except (pygit2.GitError, KeyError, ValueError) as exc:
                # whatever libgit2 refuses in a peer's commit holds back that commit only
                result.held_back[name] = f"cannot be merged: {exc}"
                log.warning("not merging %s (%s): %s", name, str(oid)[:10], exc)
                continue
            if outcome.kind == "up-to-date":
                continue
            if outcome.variants and not resolve:
                result.held_back[name] = (
                    "conflicting changes and annexsync.resolvemerge is false; resolve by hand"
                )
                continue
            target = outcome.commit
            result.merged.append(name)
            result.variants.extend(outcome.variants)
            result.kind = (
                "merge" if outcome.kind == "merge" or result.kind == "merge" else ("fast-forward")
            )
        if target is None or (head is not None and target == head.id):
            result.kind = "up-to-date"
            result.merged = []
            record_joined(state, joined, ours)
            return result
        old_tree = head.tree if head is not None else None
        try:
            new_tree = repo[target].tree  # type: ignore[attr-defined]
        except KeyError:  # seen once under a concurrent repack; the next look finds it
            return IntegrateResult(paused=f"commit {str(target)[:10]} is not readable yet")
        changed = _changed(old_tree, new_tree)
        try:
            work = plan(old_tree, new_tree, changed)
        except UnsafePath as exc:
            return IntegrateResult(paused=str(exc))
        dirty, stamps = inspect(repo, committer.root, old_tree, work.paths())
        for path in busy & set(stamps):
            del stamps[path]  # clean now, but being written: never replaced under the writer
            dirty.append(path)
        # A path still dirty right after committing cannot be committed here (ignored on
        # this node only, too large, unreadable): keep it as it is, the incoming version
        # goes beside it, and merging goes on.
        stubborn |= set(dirty) if attempt > 0 else set()
        if set(dirty) - stubborn:
            log.info(
                "the user changed %d files during the merge; committing them first", len(dirty)
            )
            continue
        if committer.git_moved(branch, before):
            continue
        failed: dict[str, str] = {}
        try:
            done, kept = apply(repo, committer.root, work, stamps, failed)
        except (UnsafePath, OSError) as exc:
            log.error("cannot update the working tree: %s; merge postponed", exc)
            return IntegrateResult(paused=f"cannot update the working tree: {exc}")
        if committer.git_moved(branch, before):
            log.info("git changed the repository during the merge; undoing the update")
            restore(repo, committer.root, old_tree, work, done)
            continue
        if failed:
            # Recorded before the branch moves: after a crash in between, a path missing
            # here and not recorded would be committed as a deletion and spread to every peer.
            try:
                _report_unwritable(committer, failed)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    restore(repo, committer.root, old_tree, work, done)
                return IntegrateResult(paused=f"cannot write to the repository: {exc}")
        committer.adopt(str(target), _entries(new_tree, changed))
        try:
            # Noted like a commit's: a crash while git's lock is held leaves it for the next
            # start to clear, where it used to block every commit and merge for good.
            with committer.locks.creating(f"{branch}.lock"):
                if ref is None:
                    repo.references.create(branch, target, force=False)
                else:
                    ref.set_target(target, f"annexsync: {result.kind}")
        except OSError as exc:  # a full disk; files left merged are committed as local edits
            with contextlib.suppress(OSError):
                restore(repo, committer.root, old_tree, work, done)
            return IntegrateResult(paused=f"cannot write to the repository: {exc}")
        except (pygit2.GitError, pygit2.AlreadyExistsError):
            log.info("the branch moved during the merge; undoing the update and merging again")
            restore(repo, committer.root, old_tree, work, done)
            continue
        committer.sync_index()
        if kept:
            log.info("kept the local version of %s, changed during the merge", ", ".join(kept))
            beside = _keep_merged_versions(repo, committer.root, work, kept)
            committer.commit_paths([p for p in kept if p not in busy] + beside)
            committer.sync_index()
        result.head = str(repo.head.target)
        record_joined(state, joined, ours + result.merged)
        for variant in result.variants:
            log.warning(
                "kept both versions of %s: the other one is %s", variant.path, variant.variant
            )
        return result
    return IntegrateResult(paused="the working tree kept changing during the merge")

"""Bring what peers sent into the checked-out branch: commit local work first, merge each
incoming commit deterministically, update only the changed files, then move the branch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pygit2

from assistant.autocommit import AutoCommitter
from assistant.changes import Entry
from assistant.checkout import UnsafePath, apply, inspect, plan
from assistant.merge import Variant, merge_commits
from assistant.treeedit import entry_at
from assistant.worktree import MODE_TREE

log = logging.getLogger("annexsync.merge")
ATTEMPTS = 5


@dataclass
class IntegrateResult:
    """The branch's new commit (if it moved), how, the variants kept, and refs left out."""

    head: str | None = None
    kind: str = "up-to-date"
    merged: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    paused: str | None = None
    held_back: dict[str, str] = field(default_factory=dict)


def incoming_refs(repo: pygit2.Repository, branch: str) -> list[tuple[str, pygit2.Oid]]:
    """What peers have for ``branch``: every ``refs/remotes/*/synced/<branch>`` pushed to us
    and every ``refs/remotes/<remote>/<branch>`` fetched, ordered by commit id."""
    found = []
    for name in repo.references:
        if not name.startswith("refs/remotes/"):
            continue
        rest = name.removeprefix("refs/remotes/")
        remote, _, tail = rest.partition("/")
        if tail in (f"synced/{branch}", branch) and remote:
            try:
                found.append((name, repo.references[name].peel(pygit2.Commit).id))
            except (pygit2.GitError, ValueError):
                continue
    return sorted(found, key=lambda item: (str(item[1]), item[0]))


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


def integrate(committer: AutoCommitter, resolve: bool = True) -> IntegrateResult:
    """Merge every incoming ref for the current branch into it; see the module doc."""
    repo = committer.repo
    for _attempt in range(ATTEMPTS):
        blocked = committer.blocked_reason()
        if blocked:
            return IntegrateResult(paused=blocked[0])
        pending = committer.commit_paths(committer.scan_candidates())
        if pending.blocked:
            return IntegrateResult(paused=pending.blocked)
        committer.sync_index()
        branch = repo.references["HEAD"].target
        assert isinstance(branch, str)
        short = branch.removeprefix("refs/heads/")
        head = None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)
        result = IntegrateResult()
        target = head.id if head is not None else None
        for name, oid in incoming_refs(repo, short):
            if target is None:
                target, result.kind = oid, "fast-forward"
                result.merged.append(name)
                continue
            outcome = merge_commits(repo, target, oid)
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
            return result
        old_tree = head.tree if head is not None else None
        new_tree = repo[target].tree  # type: ignore[attr-defined]
        changed = _changed(old_tree, new_tree)
        try:
            work = plan(old_tree, new_tree, changed)
        except UnsafePath as exc:
            return IntegrateResult(paused=str(exc))
        dirty, stamps = inspect(committer.root, old_tree, work.paths())
        if dirty:
            log.info(
                "the user changed %d files during the merge; committing them first", len(dirty)
            )
            continue
        try:
            kept = apply(repo, committer.root, work, stamps)
        except (UnsafePath, OSError) as exc:
            log.error("cannot update the working tree: %s; merge postponed", exc)
            return IntegrateResult(paused=f"cannot update the working tree: {exc}")
        committer.adopt(str(target), _entries(new_tree, changed))
        try:
            if head is None:
                repo.references.create(branch, target, force=False)
            else:
                repo.references[branch].set_target(target, f"annexsync: {result.kind}")
        except (pygit2.GitError, pygit2.AlreadyExistsError):
            log.info("the branch moved during the merge; merging again")
            continue
        committer.sync_index()
        if kept:
            log.info("kept the user's version of %s, changed during the merge", ", ".join(kept))
            committer.commit_paths(kept)
            committer.sync_index()
        result.head = str(repo.head.target)
        for variant in result.variants:
            log.warning(
                "kept both versions of %s: the other one is %s", variant.path, variant.variant
            )
        return result
    return IntegrateResult(paused="the working tree kept changing during the merge")

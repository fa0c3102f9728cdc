"""The receiving end of objects streamed with a peer's change notifications: checks each
frame before anything is written, stores it, and on the ref line that follows moves our
tracking ref for that peer so the merge starts at once, with no fetch."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pygit2

from assistant.peers import branch_tips
from assistant.remotes import fetch_target
from assistant.streamed import Record, problem_with, store

log = logging.getLogger("annexsync.listener")


class StreamSink:
    """One peer's stream into our repository (through the replicator's handle, on the loop)."""

    def __init__(
        self, repo: pygit2.Repository, remote: str, node: str, on_arrived: Callable[[], None]
    ) -> None:
        self.repo = repo
        self.remote = remote
        self.node = node
        self.on_arrived = on_arrived
        self._accepted: set[str] = set()

    def hello(self) -> str:
        """Ask for objects, naming ourselves (the peer's assistant then need not push to us)
        and the commits we hold: our branches and what we last had of this peer's, so the
        peer sends only what is new."""
        tips = set(branch_tips(self.repo).values())
        prefix = f"refs/remotes/{self.remote}/"
        for name in self.repo.references:
            if name.startswith(prefix):
                try:
                    tips.add(str(self.repo.references[name].peel(pygit2.Commit).id))
                except (pygit2.GitError, KeyError, ValueError):
                    continue
        haves = "".join(f"have {oid}\n" for oid in sorted(tips))
        return f"stream\nnode {self.node}\n{haves}"

    def objects(self, records: list[Record]) -> None:
        odb = self.repo.odb
        problem = problem_with(records, lambda oid: bool(odb.exists(oid)))
        if problem:
            log.warning("%s sent objects that are not taken (%s); fetching instead", self.remote,
                        problem)  # fmt: skip
            return
        try:
            self._accepted.update(store(self.repo, records))
        except (OSError, pygit2.GitError) as exc:
            log.warning("cannot store objects from %s (%s); fetching instead", self.remote, exc)

    def take(self, ref: str, oid: str) -> bool:
        """Whether ``oid`` came with the stream; if so our tracking ref moves to it."""
        if oid not in self._accepted:
            return False
        self._accepted.discard(oid)
        target = fetch_target(ref, self.remote)
        if target is None:
            return False
        new = pygit2.Oid(hex=oid)
        try:
            current = self.repo.references.get(target)
            if current is not None and self.repo.descendant_of(current.target, new):
                return True  # a fetch moved it further meanwhile: nothing to take
            self.repo.references.create(target, new, force=True)
        except (pygit2.GitError, ValueError, OSError, KeyError) as exc:
            log.warning("cannot move %s (%s); fetching instead", target, exc)
            return False
        self.on_arrived()
        return True

"""What ``annexsync demo`` shows: the tour, each step timed live to the file on disk, and
in live mode a line for each commit as it lands on each node."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pygit2

from assistant.daemon import lifecycle
from assistant.errors import AnnexsyncError
from assistant.node import NodeIdentity

STEP_DEADLINE = 30.0
TOUR_POLL = 0.002  # timings are measured to the file on disk: a coarse poll would blur them
LIVE_POLL = 0.02
GIT_LOG = ("log", "--graph", "--no-color", "--format=%h %s", "-n", "8")


class TourFailed(AnnexsyncError):
    """A step of the tour did not converge in time, or an assistant failed."""


@dataclass
class Node:
    """One node of the demo: a repository standing for a machine."""

    name: str
    root: Path
    identity: NodeIdentity

    @property
    def state(self) -> Path:
        return self.root / ".git" / "annexsync"

    @property
    def log(self) -> Path:
        return self.state / lifecycle.LOG_NAME


# --- pure helpers --------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def arrivals_text(times: dict[str, float]) -> str:
    """{desktop: 0.031, server: 0.058} -> "on desktop after 31 ms, on server after 58 ms"."""
    return ", ".join(f"on {name} after {ms(t)}" for name, t in sorted(times.items(), key=_by_time))


def _by_time(item: tuple[str, float]) -> float:
    return item[1]


def commit_note(message: str) -> str:
    """A commit's summary line, with the variants a merge kept (from its message) after it."""
    lines = message.splitlines()
    kept = [line for line in lines if line.startswith("Kept both versions of ")]
    note = "; ".join([lines[0] if lines else "(no message)", *kept])
    # a file name is the user's to choose: no control character of its reaches the terminal
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in note)


def activity_line(node: str, note: str, first: tuple[str, float] | None, now: float) -> str:
    """What live mode prints when ``node``'s branch moves to a commit: made here (or first
    seen here), or arrived from the node where it was first seen, and how long that took."""
    if first is None or first[0] == node:
        return f"  {node:<8} {note}"
    origin, at = first
    return f"  {node:<8} ← {note}  (from {origin}, {ms(now - at)})"


# --- reading the nodes ---------------------------------------------------------------------
def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def head_of(repo: pygit2.Repository) -> str | None:
    try:
        return str(repo.head.target)
    except (pygit2.GitError, KeyError):
        return None


def note_of(repo: pygit2.Repository, commit_id: str) -> str:
    try:
        return commit_note(repo[commit_id].message)
    except (KeyError, ValueError, pygit2.GitError):
        return commit_id[:10]


def save(path: Path, text: str) -> None:
    """Save as gedit does: into a scratch file beside it, renamed into place, so that nothing
    ever reads it half-written."""
    scratch = path.with_name(f".goutputstream-{path.name}")
    scratch.write_text(text)
    os.replace(scratch, path)


async def poll_until(
    done: Callable[[], bool], deadline: float, failure: Callable[[], str], poll: float = TOUR_POLL
) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise TourFailed(failure())
        await asyncio.sleep(poll)


# --- the tour ------------------------------------------------------------------------------
class Tour:
    """Four steps, each timed live: a new file, an edit flowing back, a concurrent edit kept
    in both versions, and the history."""

    def __init__(self, nodes: list[Node], out: TextIO) -> None:
        self.nodes = nodes
        self.out = out
        self.repos = {n.name: pygit2.Repository(str(n.root)) for n in nodes}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> None:
        first, second, last = self.nodes[0], self.nodes[1], self.nodes[-1]
        text = f"# Notes\n\nwritten on {first.name}\n"
        times = await self.spread(1, first, "notes.md", text)
        self.say(f"1. notes.md written on {first.name} → {arrivals_text(times)}")
        text += f"{second.name} was here too\n"
        times = await self.spread(2, second, "notes.md", text)
        self.say(f"2. notes.md edited on {second.name} → {arrivals_text(times)}")
        await self.conflict(3, first, last, "notes.md", text)
        await self.history(4, first)

    async def spread(self, step: int, origin: Node, rel: str, text: str) -> dict[str, float]:
        """Write ``rel`` on ``origin``; the time until it reads the same on each other node."""
        others = [n for n in self.nodes if n is not origin]
        start = time.monotonic()
        save(origin.root / rel, text)
        times: dict[str, float] = {}

        def arrived() -> bool:
            for node in others:
                if node.name not in times and read_text(node.root / rel) == text:
                    times[node.name] = time.monotonic() - start
            return len(times) == len(others)

        def failure() -> str:
            missing = [n for n in others if n.name not in times]
            return (
                f"step {step}: {rel} did not reach {', '.join(n.name for n in missing)} within "
                f"{STEP_DEADLINE:g} s (see {missing[0].log})"
            )

        await poll_until(arrived, start + STEP_DEADLINE, failure)
        await self.settle(step, start)
        return times

    def agreed(self) -> bool:
        heads = [head_of(r) for r in self.repos.values()]
        return heads[0] is not None and len(set(heads)) == 1

    async def settle(self, step: int, start: float) -> None:
        """Every node's branch at the same commit."""
        await poll_until(
            self.agreed,
            start + STEP_DEADLINE,
            lambda: (
                f"step {step}: the nodes did not agree on one commit within "
                f"{STEP_DEADLINE:g} s (see {self.nodes[0].log})"
            ),
        )

    async def conflict(self, step: int, one: Node, two: Node, rel: str, base: str) -> None:
        """Edit ``rel`` on two nodes at once: every node must end with both versions."""
        versions = {one.name: f"{base}{one.name}'s edit\n", two.name: f"{base}{two.name}'s edit\n"}
        start = time.monotonic()
        for node in (one, two):
            save(node.root / rel, versions[node.name])
        stem = Path(rel).stem

        def copies(node: Node) -> dict[str, str | None]:
            return {p.name: read_text(p) for p in sorted(node.root.glob(f"{stem}*"))}

        def converged() -> bool:
            """Exactly the two versions on every node (a file being replaced reads None)."""
            wanted = sorted(versions.values())
            for node in self.nodes:
                texts = list(copies(node).values())
                if None in texts or sorted(t for t in texts if t is not None) != wanted:
                    return False
            return True

        await poll_until(
            converged,
            start + STEP_DEADLINE,
            lambda: (
                f"step {step}: the two edits of {rel} did not converge within "
                f"{STEP_DEADLINE:g} s (see {one.log})"
            ),
        )
        await self.settle(step, start)
        took = time.monotonic() - start
        self.say(
            f"{step}. {rel} edited on {one.name} and {two.name} at once → both versions on "
            f"every node after {ms(took)}:"
        )
        whose = {text: name for name, text in versions.items()}
        for name, text in copies(one).items():
            self.say(f"     {name:<28} {whose.get(text or '', '?')}'s edit")

    async def history(self, step: int, node: Node) -> None:
        self.say(f"{step}. git log on {node.name}:")
        try:
            proc = await asyncio.create_subprocess_exec(
                "git", "-C", str(node.root), *GIT_LOG,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            self.say(f"     (cannot run git: {exc.strerror or exc})")
            return
        output, _ = await proc.communicate()
        for line in output.decode(errors="replace").splitlines():
            self.say(f"     {line.rstrip()}")


# --- live mode -----------------------------------------------------------------------------
async def watch_activity(nodes: list[Node], out: TextIO) -> None:
    """Print each commit as it lands on each node, until cancelled."""
    repos = {n.name: pygit2.Repository(str(n.root)) for n in nodes}
    heads = {name: head_of(repo) for name, repo in repos.items()}
    first: dict[str, tuple[str, float]] = {}
    while True:
        await asyncio.sleep(LIVE_POLL)
        for name, repo in repos.items():
            head = head_of(repo)
            if head is None or head == heads[name]:
                continue
            heads[name] = head
            now = time.monotonic()
            seen = first.setdefault(head, (name, now))
            line = activity_line(name, note_of(repo, head), seen, now)
            print(f"{time.strftime('%H:%M:%S')}{line}", file=out, flush=True)


def live_intro(nodes: list[Node]) -> list[str]:
    one, other = nodes[0], nodes[-1]
    return [
        "",
        "Live now. Edit files in these directories from another terminal:",
        *(f"  {n.name:<8} {n.root}" for n in nodes),
        "for example:",
        f"  echo hello >> {one.root}/hello.txt",
        f"  annexsync -C {other.root} status",
        "Each commit is shown below as it lands on each node. Ctrl-C stops the demo.",
        "",
    ]

"""Faults at random moments while the editors run, each healed after a while, all healed at
the end: kill -9 of an assistant (aimed at a commit, a merge or a push) and a restart; an
sshd stopped and restarted; a link cut and healed; a node's disk filled and freed; a node's
wall clock jumping.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from soak.activity import Editor, Request
from soak.cluster import Cluster, Node, faketime_library, read_ref

KINDS = ("kill", "sshd", "link", "disk", "clock")
KILL_AIMS = ("after-burst", "after-commit", "after-arrival")
CLOCK_JUMPS = (3600, -3600, 2 * 86400, -86400, 600, -600)


@dataclass
class FaultRecord:
    kind: str
    detail: str
    at: float
    lasted: float = 0.0


@dataclass
class FaultPlan:
    """How often and how long: gaps between faults, and each fault's duration (seconds)."""

    gap: tuple[float, float] = (2.0, 6.0)
    down: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "kill": (0.2, 3.0),
            "sshd": (1.0, 6.0),
            "link": (2.0, 10.0),
            "disk": (2.0, 8.0),
        }
    )
    at_once: int = 2  # faults in effect at the same time, at most

    @classmethod
    def for_run(cls, seconds: float) -> FaultPlan:
        """Longer runs also hold links down past the 15 s in which keepalives give up on a
        silent connection, and sshd and disks down for longer."""
        plan = cls()
        if seconds >= 300:
            plan.down.update(link=(2.0, 30.0), sshd=(1.0, 12.0), disk=(2.0, 15.0))
        return plan


class Faults:
    """Injects faults from a thread of its own until stopped; ``heal_all`` undoes the rest."""

    def __init__(
        self, cluster: Cluster, editors: dict[str, Editor], rng: random.Random, t0: float,
        plan: FaultPlan,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.editors = editors
        self.rng = rng
        self.t0 = t0
        self.plan = plan
        self.records: list[FaultRecord] = []
        self.kinds: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._active: list[threading.Thread] = []
        self._busy: set[str] = set()  # "node:A", "link:A-B": one fault at a time on each
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)
        # Clock jumps need libfaketime in the assistants (the libfaketime package).
        self.available = [k for k in KINDS if k != "clock" or faketime_library() is not None]

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # Every kind once, in random order, then at random: a short run still sees them all.
        first = list(self.available)
        self.rng.shuffle(first)
        while not self.stop.wait(self.rng.uniform(*self.plan.gap)):
            self._active = [t for t in self._active if t.is_alive()]
            if len(self._active) >= self.plan.at_once:
                continue
            kind = first.pop(0) if first else self.rng.choice(self.available)
            action = self._prepare(kind)
            if action is None:
                continue
            thread = threading.Thread(target=self._safely, args=(action,), daemon=True)
            self._active.append(thread)
            thread.start()

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # shown in the report; the run goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _claim(self, key: str) -> bool:
        with self._lock:
            if key in self._busy:
                return False
            self._busy.add(key)
            return True

    def _release(self, key: str) -> None:
        with self._lock:
            self._busy.discard(key)

    def _record(self, kind: str, detail: str) -> FaultRecord:
        record = FaultRecord(kind, detail, time.monotonic() - self.t0)
        with self._lock:
            self.records.append(record)
            self.kinds[kind] += 1
        return record

    def _hold(self, kind: str) -> float:
        """Wait out a fault's duration (cut short when the run stops); returns it."""
        low, high = self.plan.down[kind]
        started = time.monotonic()
        self.stop.wait(self.rng.uniform(low, high))
        return time.monotonic() - started

    def _prepare(self, kind: str) -> Callable[[], None] | None:
        """The fault, with its target and parameters drawn now (on the scheduler's thread, so a
        seed replays the same choices)."""
        nodes = list(self.cluster.nodes.values())
        if kind == "link":
            a, b = self.rng.sample(sorted(self.cluster.nodes), 2)
            return lambda: self.cut_link(a, b)
        node = self.rng.choice(nodes)
        if kind == "kill":
            aim = self.rng.choice(KILL_AIMS)
            return lambda: self.kill(node, aim)
        if kind == "sshd":
            return lambda: self.stop_sshd(node)
        if kind == "disk":
            return lambda: self.fill_disk(node)
        jump = self.rng.choice(CLOCK_JUMPS)
        return lambda: self.jump_clock(node, jump)

    # --- the faults -----------------------------------------------------------------------

    def kill(self, node: Node, aim: str) -> None:
        """kill -9 at a moment chosen to fall inside work: just after a burst of writes (mid
        commit), just after a commit (mid push), just after a peer's change arrived (mid
        merge); then start it again."""
        key = f"node:{node.name}"
        if not self._claim(key):
            return
        try:
            if aim == "after-burst":
                self.editors[node.name].ask(Request("burst")).done.wait(10)
                time.sleep(self.rng.uniform(0, 0.05))
            elif aim == "after-commit":
                _wait_change(lambda: read_ref(node.gitdir), 5.0)
                time.sleep(self.rng.uniform(0, 0.02))
            else:
                _wait_change(lambda: _remote_refs(node), 5.0)
                time.sleep(self.rng.uniform(0, 0.03))
            node.kill()
            record = self._record("kill", f"{node.name} {aim}")
            record.lasted = self._hold("kill")
            self._restart(node)
        finally:
            self._release(key)

    def _restart(self, node: Node) -> None:
        """Start the assistant again; while its disk is full it cannot start, so keep trying."""
        deadline = time.monotonic() + 120
        while not node.start():
            if time.monotonic() > deadline:
                raise RuntimeError(f"assistant of {node.name} would not start again")
            time.sleep(0.5)

    def stop_sshd(self, node: Node) -> None:
        key = f"sshd:{node.name}"
        if not self._claim(key):
            return
        try:
            node.sshd.stop()
            record = self._record("sshd", f"{node.name}")
            record.lasted = self._hold("sshd")
            node.sshd.start()
        finally:
            self._release(key)

    def cut_link(self, a: str, b: str) -> None:
        key = f"link:{min(a, b)}-{max(a, b)}"
        if not self._claim(key):
            return
        try:
            link = self.cluster.links[frozenset((a, b))]
            link.cut()
            record = self._record("link", f"{a}-{b}")
            record.lasted = self._hold("link")
            link.heal()
        finally:
            self._release(key)

    def fill_disk(self, node: Node) -> None:
        key = f"disk:{node.name}"
        if not self._claim(key):
            return
        try:
            size = node.fill_disk()
            record = self._record("disk", f"{node.name} ({size >> 20} MiB of ballast)")
            record.lasted = self._hold("disk")
            node.free_disk()
        finally:
            self._release(key)

    def jump_clock(self, node: Node, offset: int) -> None:
        node.set_clock(offset)
        self._record("clock", f"{node.name} {offset:+d}s")

    # --- the end --------------------------------------------------------------------------

    def heal_all(self) -> None:
        """Stop injecting, let every fault in effect heal, and make sure all is back: links up,
        sshd and assistants running, disks freed, clocks right."""
        self.stop.set()
        self.thread.join(timeout=60)
        for thread in self._active:
            thread.join(timeout=150)
        for link in self.cluster.links.values():
            if not link.is_up():
                link.heal()
        for node in self.cluster:
            node.free_disk()
            node.set_clock(0)
            if not node.sshd.running():
                node.sshd.start()
            if not node.alive():
                self._restart(node)


def _wait_change(read: Callable[[], object], timeout: float) -> None:
    """Until ``read()`` gives something new (polled every 2 ms), or ``timeout``."""
    start = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read() == start:
        time.sleep(0.002)


def _remote_refs(node: Node) -> tuple[tuple[str, float], ...]:
    """The node's remote-tracking refs as files (name, mtime): they move as changes arrive."""
    out = []
    base = node.gitdir / "refs" / "remotes"
    for directory, _dirs, names in os.walk(base):
        for name in names:
            path = os.path.join(directory, name)
            try:
                out.append((path, os.stat(path).st_mtime))
            except OSError:
                continue
    packed = node.gitdir / "packed-refs"
    with contextlib.suppress(OSError):
        out.append((str(packed), packed.stat().st_mtime))
    return tuple(sorted(out))

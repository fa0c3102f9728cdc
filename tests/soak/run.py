"""One soak run: build the cluster, edit on every node while faults strike, stop, heal, wait
for convergence, then collect what the invariants need and check them."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak import invariants
from soak.activity import Editor, Recorder, Request
from soak.cluster import Cluster, read_ref
from soak.faults import KINDS, FaultPlan, Faults
from soak.records import Commit, History
from soak.repostate import worktree

SEED_FILES = 24


@dataclass
class SoakSettings:
    seconds: float  # how long the editors and faults run
    seed: int
    bound: float  # converged within this long after the faults heal, or the run fails
    quiet: float = 5.0  # how long the commit count must then stay put
    disk: str = "1g"  # each node's tmpfs
    plan: FaultPlan | None = None  # FaultPlan.for_run(seconds) when not given
    collide_gap: tuple[float, float] = (1.0, 4.0)


@dataclass
class Outcome:
    """Everything a run measured and found; ``report()`` is its JSON form."""

    settings: SoakSettings
    recorder: Recorder
    faults: Faults | None = None
    converged_after_heal: float | None = None
    converged_after_stop: float | None = None
    heal_took: float = 0.0
    commits: int = 0
    merges: int = 0
    variants: int = 0
    files: int = 0
    pairs: int = 0
    collisions: int = 0
    harness_errors: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(len(self.problems.get(k, [])) for k in LOSS_CHECKS)

    def failures(self) -> list[str]:
        return [f"{k}: {p}" for k, ps in self.problems.items() for p in ps]

    def report(self) -> dict[str, Any]:
        edits = len(self.recorder.edits)
        faults = self.faults
        return {
            "seed": self.settings.seed,
            "seconds": self.settings.seconds,
            "topology": "full mesh of 3 nodes, each in its own network namespace",
            "edits": edits,
            "edits_by_kind": dict(sorted(self.recorder.kinds.items())),
            "edits_failed_by_kind": dict(sorted(self.recorder.failed.items())),
            "collisions": self.collisions,
            "faults": sum(faults.kinds.values()) if faults else 0,
            "faults_by_kind": dict(sorted(faults.kinds.items())) if faults else {},
            "fault_log": [
                {
                    "kind": r.kind,
                    "detail": r.detail,
                    "at": round(r.at, 2),
                    "lasted": round(r.lasted, 2),
                }
                for r in (faults.records if faults else [])
            ],
            "heal_seconds": round(self.heal_took, 2),
            "convergence_seconds": _round(self.converged_after_heal),
            "convergence_seconds_after_stop": _round(self.converged_after_stop),
            "convergence_bound": self.settings.bound,
            "versions_lost": self.lost,
            "commits": self.commits,
            "merges": self.merges,
            "commits_per_edit": round(self.commits / edits, 3) if edits else None,
            "concurrent_pairs_checked": self.pairs,
            "final_files": self.files,
            "final_variants": self.variants,
            "problems": self.problems,
            **self.notes,
        }


LOSS_CHECKS = ("versions lost", "disk versions lost", "commits lost", "concurrent versions")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Sampler:
    """Every node's branch, read every quarter second: commits that were ever on it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            for node in self.cluster:
                self.seen[node.name].add(read_ref(node.gitdir))

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def seed_files(cluster: Cluster, rng: random.Random) -> None:
    """A common start: files on A, which every node has before the run begins."""
    root = cluster.nodes["A"].repo
    for i in range(SEED_FILES):
        directory = root / ("docs", "notes", "src", "")[i % 4]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"seed-{i}.txt").write_text(f"seed {i} {rng.getrandbits(32):08x}\n" * (i + 1))


def wait_converged(cluster: Cluster, timeout: float) -> dict[str, Any] | None:
    """Until every node is on one commit with a working tree that matches it; the last state
    seen, or None on timeout."""
    assert cluster.reader is not None
    deadline = time.monotonic() + timeout
    while True:
        state = cluster.reader.ask(cmd="state", repos=cluster.repos())
        heads = {s["head"] for s in state.values()}
        if len(heads) == 1 and "" not in heads and not any(s["differs"] for s in state.values()):
            return state
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


def run(settings: SoakSettings, base: Path, log: Any = print) -> Outcome:
    master = random.Random(settings.seed)
    cluster = Cluster(base, settings.disk)
    recorder = Recorder(time.monotonic())
    outcome = Outcome(settings, recorder)
    try:
        seed_files(cluster, master)
        for node in cluster:
            if not node.start():
                raise RuntimeError(
                    f"assistant of {node.name} did not start:\n{node.log.read_text()}"
                )
        if wait_converged(cluster, 60) is None:
            raise RuntimeError("the seed did not reach every node")
        _soak(cluster, settings, master, outcome, log)
    finally:
        cluster.close()
    return outcome


def _soak(
    cluster: Cluster, settings: SoakSettings, master: random.Random, outcome: Outcome, log: Any
) -> None:
    t0 = time.monotonic()
    recorder = outcome.recorder
    recorder.t0 = t0
    editors = {
        n.name: Editor(
            n.name, n.repo, n.gitdir, recorder, random.Random(f"{settings.seed}-{n.name}")
        )
        for n in cluster
    }
    plan = settings.plan or FaultPlan.for_run(settings.seconds)
    faults = Faults(cluster, editors, random.Random(f"{settings.seed}-faults"), t0, plan)
    outcome.faults = faults
    sampler = Sampler(cluster)
    collide = random.Random(f"{settings.seed}-collide")
    for editor in editors.values():
        editor.start()
    faults.start()
    sampler.start()
    log(f"soak: seed {settings.seed}, {settings.seconds:g}s of edits and faults on 3 nodes")
    end = t0 + settings.seconds
    while time.monotonic() < end:
        time.sleep(min(collide.uniform(*settings.collide_gap), max(0.0, end - time.monotonic())))
        if time.monotonic() >= end:
            break
        files, _dirs = editors["A"].listing()
        path = (
            collide.choice(files)
            if files and collide.random() < 0.8
            else editors["A"].new_path(files)
        )
        at = time.monotonic() + 0.05
        for name in collide.sample(sorted(editors), collide.choice((2, 3))):
            editors[name].ask(Request("collide", path, at))
        outcome.collisions += 1

    for editor in editors.values():
        editor.join()
        outcome.harness_errors += [f"editor {editor.node}: {e}" for e in editor.errors]
    stopped = time.monotonic()
    snapshots = {n.name: worktree(n.repo) for n in cluster}
    log(f"soak: activity stopped after {stopped - t0:.1f}s: {len(recorder.edits)} edits, "
        f"{sum(faults.kinds.values())} faults; healing")  # fmt: skip
    faults.heal_all()
    healed = time.monotonic()
    outcome.heal_took = healed - stopped
    state = wait_converged(cluster, max(settings.bound * 3, 120))
    if state is None:
        assert cluster.reader is not None
        last = cluster.reader.ask(cmd="state", repos=cluster.repos())
        outcome.problems["converged"] = [f"no convergence: {last}"]
        outcome.problems["assistant logs"] = [_tail(n) for n in cluster]
        sampler.join()
        return
    done = time.monotonic()
    outcome.converged_after_heal = done - healed
    outcome.converged_after_stop = done - stopped
    if outcome.converged_after_heal > settings.bound:
        outcome.problems["converged"] = [
            f"converged {outcome.converged_after_heal:.1f}s after healing, over the "
            f"{settings.bound:g}s bound"
        ]
    log(f"soak: converged {outcome.converged_after_heal:.1f}s after healing")
    before = {k: (v["head"], v["count"]) for k, v in state.items()}
    time.sleep(settings.quiet)  # the window in which a merge ping-pong would show
    assert cluster.reader is not None
    after_state = cluster.reader.ask(cmd="state", repos=cluster.repos())
    after = {k: (v["head"], v["count"]) for k, v in after_state.items()}
    sampler.join()
    _check(cluster, outcome, snapshots, sampler, before, after)


def _check(
    cluster: Cluster,
    outcome: Outcome,
    snapshots: dict[str, dict[str, str]],
    sampler: Sampler,
    before: dict[str, tuple[str, int]],
    after: dict[str, tuple[str, int]],
) -> None:
    assert cluster.reader is not None
    raw = cluster.reader.ask(cmd="history", path=cluster.repos()["A"], reflogs=cluster.repos())
    history = History(
        head=raw["head"],
        commits={
            oid: Commit(c["parents"], {tuple(p) for p in c["new"]}, c["merge"])  # type: ignore[misc]
            for oid, c in raw["commits"].items()
        },
        tree=raw["tree"],
        contents={b: text.encode("latin-1") for b, text in raw["contents"].items()},
    )
    ever: dict[str, set[str]] = defaultdict(set)
    unapplied = 0
    for node, log in raw["reflogs"].items():
        heads, broken = invariants.reflog_heads([tuple(e) for e in log["entries"]], log["current"])
        ever[node] |= heads
        unapplied += broken
    for node, oids in sampler.seen.items():
        ever[node] |= oids
    for edit in outcome.recorder.edits:
        ever[edit.node].add(edit.head)
    history.ever = dict(ever)
    ancestry = invariants.Ancestry(history.commits)
    edits = outcome.recorder.edits
    disks = {n.name: worktree(n.repo) for n in cluster}
    heads = {n.name: n.head() for n in cluster}
    trees = {name: history.tree if head == history.head else {} for name, head in heads.items()}
    pair_check = invariants.concurrent_versions_kept(edits, history, ancestry)
    checks = {
        "trees identical": invariants.trees_differ(heads, trees, disks),
        "commits lost": invariants.commits_lost(history.ever, ancestry, history.head),
        "disk versions lost": invariants.disk_versions_lost(
            snapshots, invariants.versions_in_history(history)
        ),
        "versions lost": invariants.versions_lost(edits, history.tree),
        "concurrent versions": pair_check.problems,
        "conflict markers": invariants.conflict_markers(history),
        "stuck state": invariants.stuck_state({n.name: _leftovers(n.gitdir) for n in cluster}),
        "fsck": invariants.fsck_problems(
            {n.name: _fsck(n) for n in cluster}  # type: ignore[arg-type]
        ),
        "ping-pong": invariants.still_committing(before, after),
        "harness": outcome.harness_errors
        + [f"faults: {e}" for e in (outcome.faults.errors if outcome.faults else [])],
    }
    outcome.problems.update({k: v for k, v in checks.items() if v})
    outcome.pairs = pair_check.pairs
    outcome.commits = len(history.commits)
    outcome.merges = sum(1 for c in history.commits.values() if c.merge)
    outcome.files = len(history.tree)
    outcome.variants = sum(1 for p in history.tree if ".variant-" in p.rsplit("/", 1)[-1])
    outcome.notes["fault_kinds_unavailable"] = sorted(
        set(KINDS) - set(outcome.faults.available if outcome.faults else KINDS)
    )
    outcome.notes["reflog_entries_never_applied"] = unapplied
    outcome.notes["tracebacks"] = _tracebacks(cluster)
    outcome.notes["assistant_starts"] = {n.name: n.starts for n in cluster}
    outcome.notes["leftover_temp_files"] = sorted(
        f"{n.name}:{p}" for n in cluster for p in _temp_files(n.repo)
    )


def _leftovers(gitdir: Path) -> list[str]:
    """Signs of an operation cut off half way: merge state files and git lock files."""
    found = [n for n in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD") if (gitdir / n).exists()]
    found += [d for d in ("rebase-merge", "rebase-apply") if (gitdir / d).exists()]
    for lock in sorted(gitdir.glob("*.lock")):
        found.append(lock.name)
    for lock in sorted((gitdir / "refs").rglob("*.lock")):
        found.append(str(lock.relative_to(gitdir)))
    return found


def _fsck(node: Any) -> tuple[int, str]:
    proc = node.space.run(
        "git", "-C", str(node.inside), "fsck", "--strict", "--no-progress", "--no-dangling"
    )
    return proc.returncode, (proc.stdout + proc.stderr)


def _temp_files(root: Path) -> list[str]:
    return [
        str(p.relative_to(root))
        for p in root.rglob(".annexsync-tmp-*")
        if ".git" not in p.relative_to(root).parts
    ]


def _tracebacks(cluster: Cluster) -> list[str]:
    """Each traceback in the assistants' stderr and daemon logs, as its last line and the
    project's innermost frame, but for the logging module failing to write on a full disk."""
    found = []
    for node in cluster:
        for path in (node.log, node.gitdir / "annexsync" / "daemon.log"):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for i, line in enumerate(lines):
                if not line.startswith("Traceback") or "Logging error" in lines[i - 1]:
                    continue
                end = next((j for j in range(i + 1, len(lines)) if not lines[j][:1].isspace()), i)
                frames = [f.strip() for f in lines[i:end] if "/assistant/" in f]
                where = f" at {frames[-1][:160]}" if frames else ""
                found.append(f"{node.name} {path.name}: {lines[end][:200]}{where}")
    return found


def _tail(node: Any) -> str:
    try:
        return f"{node.name}: " + (node.gitdir / "annexsync" / "daemon.log").read_text()[-3000:]
    except OSError:
        return f"{node.name}: no daemon log"

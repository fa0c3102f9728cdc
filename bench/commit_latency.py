"""Write-to-commit latency on a 100-file and on a 100,000-file repository.

Measured from outside the daemon: the benchmark saves a file (in place, or the way atomic
savers do it: a temp file renamed over the original), notes the time the save finished, then
reads .git/refs/heads/main every 0.2 ms until it points at a commit that holds the new bytes.

    python bench/commit_latency.py [--quick] [--edits N] [--gap MS] [--only small|big]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import _common as c
import pygit2

WARMUP = 5
TIMEOUT = 10.0


def save_in_place(full: Path, data: bytes) -> None:
    with open(full, "wb") as handle:
        handle.write(data)


def save_replace(full: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=f".{full.name}.", suffix=".tmp")
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, full)


STYLES = {"in-place": save_in_place, "temp+rename": save_replace}


def run_edits(
    daemon: c.Daemon, rels: list[str], style: str, edits: int, gap: float, seed: int
) -> dict[str, object]:
    """Save ``edits`` random files one at a time; return latencies and daemon-side counts."""
    repo_path = daemon.repo
    repo = pygit2.Repository(str(repo_path))
    ref = c.RefReader(repo_path)
    save = STYLES[style]
    rng = random.Random(seed)
    latencies: list[float] = []
    misses = 0
    commits_before = daemon.status()["commits"]
    cpu_before = c.cpu_seconds(daemon.pid)
    host = c.HostCPU([daemon.pid])
    next_at = time.monotonic()
    for i in range(WARMUP + edits):
        rel = rng.choice(rels)
        data = f"{style} edit {i} {time.time_ns()}\n{rng.getrandbits(64):016x}\n".encode()
        if i == WARMUP:
            commits_before = daemon.status()["commits"]
            cpu_before = c.cpu_seconds(daemon.pid)
            host = c.HostCPU([daemon.pid])
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        old = ref.read()
        save(repo_path / rel, data)
        t0 = time.monotonic()
        seen = ref.wait_change(
            old, lambda value, rel=rel, data=data: c.blob_at(repo, value, rel) == data, TIMEOUT
        )
        if i >= WARMUP:
            if seen is None:
                misses += 1
            else:
                latencies.append(seen[0] - t0)
        next_at = t0 + gap
        if seen is not None:
            next_at = max(next_at, seen[0] + 0.001)
    cpu = c.cpu_seconds(daemon.pid) - cpu_before
    busy = host.others()
    commits = daemon.status()["commits"] - commits_before
    return {
        "latencies": latencies,
        "misses": misses,
        "commits": commits,
        "cpu": cpu,
        "busy": busy,
    }


def measure(label: str, repo_path: Path, rels: list[str], args: argparse.Namespace) -> list[list]:
    rows = []
    with c.temp_dir("latency-logs") as logs, c.Daemon(repo_path, logs) as daemon:
        daemon.wait_quiet(timeout=300)
        time.sleep(0.5)  # let the first index write finish
        print(
            f"{label}: assistant pid {daemon.pid} ready in {daemon.t_ready - daemon.t_spawn:.2f}s",
            flush=True,
        )
        for n, style in enumerate(STYLES):
            result = run_edits(daemon, rels, style, args.edits, args.gap / 1000, seed=n)
            lat = result["latencies"]
            assert isinstance(lat, list)
            done = max(len(lat), 1)
            row = [
                label,
                style,
                len(lat),
                c.ms(c.percentile(lat, 50)),
                c.ms(c.percentile(lat, 90)),
                c.ms(c.percentile(lat, 99)),
                c.ms(max(lat)) if lat else "-",
                c.ms(sum(lat) / done),
                f"{result['commits']}",
                f"{result['cpu'] * 1000 / done:.1f}",  # type: ignore[operator]
                result["misses"],
                f"{result['busy']:.0f}",
            ]
            rows.append(row)
            print(
                f"  {style:12s} p50 {row[3]} ms  p90 {row[4]} ms  max {row[6]} ms  "
                f"commits {row[8]}  misses {row[10]}",
                flush=True,
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="30 edits per style")
    parser.add_argument("--edits", type=int, help="edits per style and repository (200)")
    parser.add_argument("--gap", type=float, default=50.0, help="ms between saves (50)")
    parser.add_argument("--only", choices=["small", "big"], help="one repository only")
    args = parser.parse_args()
    if args.edits is None:
        args.edits = 30 if args.quick else 200
    c.setup_environment()
    print(f"commit latency: {args.edits} edits per style, one every {args.gap:g} ms")
    print(c.code_note())
    print(f"machine: {c.machine_note()}", flush=True)
    rows: list[list] = []
    if args.only != "big":
        with c.temp_dir("latency-small") as tmp:
            repo_path = tmp / "repo"
            rels = c.make_small_repo(repo_path, 100)
            rows += measure("100 files", repo_path, rels, args)
    if args.only != "small":
        with c.big_repo() as repo_path:
            try:
                rows += measure("100,000 files", repo_path, c.big_repo_paths(), args)
            finally:
                c.reset_big_repo(repo_path)
    print()
    print(f"machine at the end: {c.machine_note()}")
    headers = [
        "repository",
        "save",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "commits",
        "daemon CPU ms/edit",
        "missed",
        "other load %",
    ]
    print(c.table(headers, rows))
    print("target: p50 <= 10 ms, and no worse at 100,000 files than at 100")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A burst of 1000 new files in the 100-file repository: how long until one commit holds all of
them, and in how many commits they arrived.

Two layouts: 1000 files in 10 new directories (like copying a folder in), and 1000 files in one
existing directory. Each run uses a fresh repository and a fresh assistant.

    python bench/burst.py [--quick] [--runs N] [--files N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as c
import pygit2

TIMEOUT = 60.0
AFTER = 1.5  # seconds to keep watching for stray commits once everything is in


def burst_paths(layout: str, count: int) -> list[str]:
    if layout == "new dirs":
        return [f"burst/b{i % 10:02d}/n{i:05d}.txt" for i in range(count)]
    return [f"dir00/n{i:05d}.txt" for i in range(count)]


def holds_all(repo: pygit2.Repository, value: bytes, paths: list[str]) -> bool:
    try:
        tree = repo[value.decode()].peel(pygit2.Tree)
    except (KeyError, ValueError):
        return False
    for path in reversed(paths):  # the last written is the likeliest to be missing
        try:
            tree[path]
        except KeyError:
            return False
    return True


def commits_between(repo: pygit2.Repository, old: str, new: str) -> int:
    count = 0
    for commit in repo.walk(new, pygit2.enums.SortMode.TOPOLOGICAL):
        if str(commit.id) == old:
            return count
        count += 1
    return count


def write_all(root: Path, paths: list[str], payloads: list[bytes]) -> None:
    for rel, data in zip(paths, payloads, strict=True):
        full = root / rel
        try:
            handle = open(full, "wb")  # noqa: SIM115
        except FileNotFoundError:
            full.parent.mkdir(parents=True, exist_ok=True)
            handle = open(full, "wb")  # noqa: SIM115
        with handle:
            handle.write(data)


def one_run(layout: str, files: int) -> list[object]:
    with c.temp_dir("burst") as tmp:
        repo_path = tmp / "repo"
        c.make_small_repo(repo_path, 100)
        repo = pygit2.Repository(str(repo_path))
        ref = c.RefReader(repo_path)
        paths = burst_paths(layout, files)
        payloads = [f"burst file {i}\n{p}\n".encode() for i, p in enumerate(paths)]
        with c.temp_dir("burst-logs") as logs, c.Daemon(repo_path, logs) as daemon:
            daemon.wait_quiet()
            time.sleep(0.3)
            head0 = ref.read()
            commits0 = daemon.status()["commits"]
            host = c.HostCPU([daemon.pid])
            cpu0 = c.cpu_seconds_precise(daemon.pid)
            # The same writes where nothing watches: how fast this machine writes right now.
            t_ref = time.monotonic()
            write_all(tmp / "unwatched", paths, payloads)
            ref_ms = c.ms(time.monotonic() - t_ref)
            t_first = time.monotonic()
            write_all(repo_path, paths, payloads)
            t_written = time.monotonic()
            seen = ref.wait_change(head0, lambda v: holds_all(repo, v, paths), TIMEOUT)
            if seen is None:
                return [layout, files, ref_ms, c.ms(t_written - t_first), "timeout"] + ["-"] * 4
            t_done, head = seen
            cpu = c.cpu_seconds_precise(daemon.pid) - cpu0
            busy = host.others()
            time.sleep(AFTER)
            later = daemon.status()["commits"] - commits0
            count = commits_between(repo, head0.decode(), head.decode())
            extra = commits_between(repo, head.decode(), ref.read().decode())
        return [
            layout,
            files,
            ref_ms,
            c.ms(t_written - t_first),
            c.ms(t_done - t_first),
            count,
            f"{later} ({extra} after)",
            c.ms(cpu),
            f"{busy:.0f}",
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one run per layout")
    parser.add_argument("--runs", type=int, help="runs per layout (5)")
    parser.add_argument("--files", type=int, default=1000, help="files per burst (1000)")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 5)
    c.setup_environment()
    print(f"burst: {args.files} files, {runs} run(s) per layout")
    print(c.code_note())
    print(f"machine: {c.machine_note()}", flush=True)
    rows = []
    for layout in ("new dirs", "existing dir"):
        for _ in range(runs):
            row = one_run(layout, args.files)
            print(f"  {layout:12s} all in after {row[4]} ms in {row[5]} commit(s)", flush=True)
            rows.append(row)
    print()
    print(f"machine at the end: {c.machine_note()}")
    headers = [
        "layout",
        "files",
        "same writes, unwatched ms",
        "writing took ms",
        "first write -> all committed ms",
        "commits",
        "daemon commits in run",
        "daemon CPU ms",
        "other load %",
    ]
    print(c.table(headers, rows))
    print("target: all committed within 1000 ms, in at most 3 commits")
    return 0


if __name__ == "__main__":
    sys.exit(main())

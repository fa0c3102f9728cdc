"""Startup time, idle CPU and resident memory of the assistant on the 100,000-file repository.

Startup is timed from process start to (1) the control socket answering a ping, (2) the
daemon reporting ready (watches placed, startup scan done and queued), (3) status showing
nothing pending and no commit made. Idle CPU comes from utime+stime in /proc/<pid>/stat over
the idle window; memory is VmRSS and VmHWM (peak) from /proc/<pid>/status.

    python bench/idle.py [--quick] [--starts N] [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _common as c

SETTLE = 3.0  # seconds between the end of startup and the idle window


def import_time() -> float:
    """Seconds for a bare interpreter to import the daemon's modules (the floor of startup)."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import assistant.cli, assistant.daemon.app"],
        check=True,
    )
    return time.monotonic() - started


def start_once(repo_path, logs, idle: float | None) -> dict[str, float]:
    with c.Daemon(repo_path, logs) as daemon:
        status = daemon.wait_quiet(timeout=300)
        t_quiet = time.monotonic()
        assert daemon.t_socket is not None and daemon.t_ready is not None
        result = {
            "socket": daemon.t_socket - daemon.t_spawn,
            "ready": daemon.t_ready - daemon.t_spawn,
            "quiet": t_quiet - daemon.t_spawn,
            "commits": status["commits"],
            "dirs": status["watch"]["directories"],
            "rss_start": c.memory_kib(daemon.pid)["VmRSS"],
        }
        if idle is None:
            return result
        time.sleep(SETTLE)
        samples = []
        cpu0 = c.cpu_seconds(daemon.pid)
        precise0 = c.cpu_seconds_precise(daemon.pid)
        t0 = time.monotonic()
        previous = cpu0
        while (now := time.monotonic()) < t0 + idle:
            time.sleep(min(1.0, t0 + idle - now))
            cpu = c.cpu_seconds(daemon.pid)
            samples.append(cpu - previous)
            previous = cpu
        wall = time.monotonic() - t0
        precise = c.cpu_seconds_precise(daemon.pid) - precise0
        memory = c.memory_kib(daemon.pid)
        # One full reconcile scan (what annexsync.rescan triggers every 10 minutes), via sync.
        before = c.cpu_seconds_precise(daemon.pid)
        t_sync = time.monotonic()
        reply = c.request(daemon.sock, {"cmd": "sync"}, timeout=300)
        sync_wall = time.monotonic() - t_sync
        sync_cpu = c.cpu_seconds_precise(daemon.pid) - before
        if not reply or not reply.get("ok"):
            raise RuntimeError(f"sync failed: {reply!r}")
        after_scan = c.memory_kib(daemon.pid)
        result.update(
            {
                "idle_wall": wall,
                "idle_cpu": previous - cpu0,
                "idle_cpu_precise": precise,
                "idle_max_second": max(samples),
                "rss": memory["VmRSS"],
                "hwm": memory["VmHWM"],
                "threads": memory.get("Threads", 0),
                "commits_after": daemon.status()["commits"],
                "rescan_wall": sync_wall,
                "rescan_cpu": sync_cpu,
                "rss_scan": after_scan["VmRSS"],
                "hwm_scan": after_scan["VmHWM"],
            }
        )
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one start, 10 s idle")
    parser.add_argument("--starts", type=int, help="starts to time (3)")
    parser.add_argument("--idle", type=float, help="idle window in seconds (30)")
    args = parser.parse_args()
    starts = args.starts or (1 if args.quick else 3)
    idle = args.idle or (10.0 if args.quick else 30.0)
    c.setup_environment()
    print(f"idle: {starts} start(s) on the 100,000-file repository, then {idle:g}s idle")
    print(c.code_note())
    print(f"machine: {c.machine_note()}", flush=True)
    floor = import_time()
    runs = []
    with c.big_repo() as repo_path, c.temp_dir("idle-logs") as logs:
        for n in range(starts):
            last = n == starts - 1
            run = start_once(repo_path, logs, idle if last else None)
            print(
                f"  start {n + 1}: socket {run['socket']:.2f}s, ready {run['ready']:.2f}s, "
                f"nothing pending {run['quiet']:.2f}s, commits {run['commits']}",
                flush=True,
            )
            runs.append(run)
    print()
    print(f"machine at the end: {c.machine_note()}")
    print(f"directories watched: {runs[0]['dirs']}; python + imports alone: {floor:.2f}s")
    rows = [
        [
            n + 1,
            f"{r['socket']:.2f}",
            f"{r['ready']:.2f}",
            f"{r['quiet']:.2f}",
            r["commits"],
            f"{r['rss_start'] / 1024:.1f}",
        ]
        for n, r in enumerate(runs)
    ]
    print(
        c.table(
            [
                "start",
                "socket answers s",
                "ready (scan done) s",
                "status: nothing pending s",
                "commits",
                "VmRSS after start MiB",
            ],
            rows,
        )
    )
    last = runs[-1]
    cpu_pct = 100 * last["idle_cpu"] / last["idle_wall"]
    print()
    print(
        c.table(
            [
                "idle window s",
                "CPU s (stat)",
                "CPU % (stat)",
                "CPU % (schedstat)",
                "busiest second ms",
                "VmRSS MiB",
                "VmHWM MiB",
                "threads",
                "commits while idle",
            ],
            [
                [
                    f"{last['idle_wall']:.1f}",
                    f"{last['idle_cpu']:.3f}",
                    f"{cpu_pct:.3f}",
                    f"{100 * last['idle_cpu_precise'] / last['idle_wall']:.4f}",
                    f"{last['idle_max_second'] * 1000:.0f}",
                    f"{last['rss'] / 1024:.1f}",
                    f"{last['hwm'] / 1024:.1f}",
                    last["threads"],
                    last["commits_after"] - last["commits"],
                ]
            ],
        )
    )
    rescan_pct = 100 * last["rescan_cpu"] / 600
    print(
        f"one reconcile scan (sync): {last['rescan_wall']:.2f}s wall, "
        f"{last['rescan_cpu']:.2f}s CPU = {rescan_pct:.3f} % when spread over the default "
        f"10-minute annexsync.rescan; afterwards VmRSS {last['rss_scan'] / 1024:.1f} MiB, "
        f"VmHWM {last['hwm_scan'] / 1024:.1f} MiB"
    )
    print("targets: idle CPU < 0.5 %, memory < 150 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

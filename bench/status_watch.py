"""What watching costs: the round trip of one status request to a running assistant, and the
assistant's CPU while an `annexsync status --watch` redraws every half second, against the
same window idle. Also what the activity feed adds to a commit (the save-to-commit time is in
e2e_latency.py; this isolates the feed itself).

    python bench/status_watch.py [--files N] [--requests N] [--window SECONDS]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _common as c

from assistant.activity import Activity
from assistant.daemon.control import request, socket_path


def status_round_trips(repo, count: int) -> list[float]:
    sock = socket_path(repo / ".git" / "annexsync")
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = request(sock, {"cmd": "status"})
        times.append(time.perf_counter() - started)
        assert reply and reply.get("ok"), reply
    return times


def daemon_cpu(pid: int, window: float, watcher: bool, repo) -> float:
    """The assistant's CPU seconds over ``window``, with or without a live view attached."""
    proc = None
    if watcher:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "-C", str(repo), "status", "--watch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # its start-up is not the daemon's cost
    before = c.cpu_seconds_precise(pid)
    time.sleep(window)
    used = c.cpu_seconds_precise(pid) - before
    if proc is not None:
        proc.terminate()
        proc.wait()
    return used


def feed_cost(events: int) -> float:
    """Microseconds per emit with a subscriber, as the daemon does it."""
    feed = Activity()
    feed.subscribe(lambda _event: None)
    started = time.perf_counter()
    for n in range(events):
        feed.emit("commit", f"committed Update file{n}.md", commit="0" * 40)
    return (time.perf_counter() - started) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    c.setup_environment()
    print(c.machine_note())
    print(c.code_note())
    with c.temp_dir("annexsync-bench-status-") as tmp:
        repo = tmp / "repo"
        c.make_small_repo(repo, args.files)
        with c.Daemon(repo, tmp) as daemon:
            daemon.wait_quiet(timeout=120)
            trips = status_round_trips(repo, args.requests)
            idle = daemon_cpu(daemon.pid, args.window, False, repo)
            watched = daemon_cpu(daemon.pid, args.window, True, repo)
    rows = [
        [
            "status request (round trip)",
            c.ms(c.percentile(trips, 50)),
            c.ms(c.percentile(trips, 90)),
            c.ms(max(trips)),
        ],
    ]
    print(f"\n{args.files} files, {args.requests} status requests")
    print(c.table(["what", "p50", "p90", "max"], rows))
    print(
        f"\nassistant CPU over {args.window:g}s: idle {idle * 1000:.0f} ms, "
        f"with status --watch attached {watched * 1000:.0f} ms "
        f"({(watched - idle) / args.window * 100:.2f}% of one core for the view)"
    )
    print(f"activity feed: {feed_cost(100_000):.2f} us per event")


if __name__ == "__main__":
    main()

"""How small can the quiet window (annexsync.delay) be? Record the file events of saves done the
way editors do them and measure how far apart the events of one save fall.

Each save pattern is scripted in Python and repeated many times, with a pause between saves.
Two recorders watch the same saves at once:

* watchdog: the daemon's own watcher (TreeWatcher, same event filter and move grouping),
  timestamped with the asyncio loop clock when the callback runs -- exactly what the batcher
  sees;
* inotify: raw inotify read by a dedicated thread, timestamped when read() returns.

For every save: the spread from its first to its last event, and the largest gap between two
consecutive events. A save whose largest gap exceeds the quiet window can be cut in two commits
(for vim's pattern that means a commit in which the file is briefly deleted).

    python bench/delay_choice.py [--quick] [--saves N] [--pause MS] [--load N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _common as c

from assistant.batching import Batcher
from assistant.daemon.watcher import TreeWatcher
from assistant.ignore import BUILTIN_PATTERNS, compile_patterns, is_vim_probe

CANDIDATES_MS = (1, 2, 5, 10, 20)


# --- save patterns -------------------------------------------------------------------------
def _write(path: Path, data: bytes, fsync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def save_in_place(d: Path, data: bytes) -> None:
    """Open with O_TRUNC, write, close (nano, VS Code, most simple editors)."""
    _write(d / "note.txt", data)


def save_temp_rename(d: Path, data: bytes) -> None:
    """Write a temp file in the same directory, rename it over the file (atomic savers,
    gedit's .goutputstream-XXXXXX, many libraries)."""
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".note.txt.", suffix=".tmp")
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, d / "note.txt")


def save_vim(d: Path, data: bytes) -> None:
    """vim with its default backup handling: probe 4913, rename x to x~, write x, delete x~."""
    probe = d / "4913"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.close(fd)
    os.unlink(probe)
    target = d / "note.txt"
    os.rename(target, d / "note.txt~")
    _write(target, data, fsync=True)
    os.chmod(target, 0o644)
    os.unlink(d / "note.txt~")


def save_emacs(d: Path, data: bytes) -> None:
    """emacs: lock link .#x, auto-save #x#, rename x to x~ (backup), write x, delete #x#,
    remove the lock."""
    lock = d / ".#note.txt"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    os.symlink("user@host.1234:1700000000", lock)
    _write(d / "#note.txt#", data)
    os.rename(d / "note.txt", d / "note.txt~")
    _write(d / "note.txt", data, fsync=True)
    os.unlink(d / "#note.txt#")
    os.unlink(lock)
    os.unlink(d / "note.txt~")  # so the next save starts from the same state


def save_jetbrains(d: Path, data: bytes) -> None:
    """JetBrains 'safe write': x___jb_tmp___, rename x to x___jb_old___, rename tmp to x,
    delete the old one."""
    tmp = d / "note.txt___jb_tmp___"
    old = d / "note.txt___jb_old___"
    _write(tmp, data)
    os.rename(d / "note.txt", old)
    os.rename(tmp, d / "note.txt")
    os.unlink(old)


PATTERNS: dict[str, Callable[[Path, bytes], None]] = {
    "in-place": save_in_place,
    "temp+rename": save_temp_rename,
    "vim": save_vim,
    "emacs": save_emacs,
    "jetbrains": save_jetbrains,
}


# --- recorders -------------------------------------------------------------------------------
class WatchdogRecorder:
    """The daemon's TreeWatcher, its callbacks timed on an asyncio loop of their own."""

    name = "watchdog"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.times: list[float] = []
        self.events: list[tuple[float, str, bool | None, bool]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.watcher: TreeWatcher | None = None

    def _on_path(self, path: str, writing: bool | None, gone: bool = False) -> None:
        now = self.loop.time()
        self.times.append(now)
        self.events.append((now, path, writing, gone))

    def start(self) -> None:
        self.thread.start()
        self.watcher = TreeWatcher(
            self.root, self.root / ".git", self.loop, self._on_path, lambda: None, lambda: None
        )
        self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
RAW_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
RAW_MASK |= IN_CREATE | IN_DELETE
_EVENT = struct.Struct("iIII")


class InotifyRecorder:
    """Raw inotify on one directory, read by a thread that blocks until events arrive."""

    name = "inotify"

    def __init__(self, root: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(root), RAW_MASK) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")
        self.times: list[float] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            now = time.monotonic()
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                self.times.append(now)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        os.close(self.fd)


# --- analysis --------------------------------------------------------------------------------
def per_save(times: list[float], starts: list[float], end: float) -> list[list[float]]:
    """Split event times into saves: each save owns the events from its start to the next."""
    return [[e[0] for e in g] for g in group_events([(t,) for t in times], starts, end)]


def group_events(events: list[tuple], starts: list[float], end: float) -> list[list[tuple]]:
    """Split events (time first) into saves, the same way as ``per_save``."""
    bounds = [*starts[1:], end]
    groups: list[list[tuple]] = [[] for _ in starts]
    ordered = sorted(events, key=lambda e: e[0])
    i = 0
    for n, upper in enumerate(bounds):
        while i < len(ordered) and ordered[i][0] < upper:
            if ordered[i][0] >= starts[n]:
                groups[n].append(ordered[i])
            i += 1
    return groups


_TEMP = compile_patterns(BUILTIN_PATTERNS)


def harmless(path: str) -> bool:
    """A path the committer never adds (an editor's scratch name), so committing early
    while it is pending changes nothing."""
    name = path.rsplit("/", 1)[-1]
    return bool(_TEMP.match(name)) or is_vim_probe(name)


def simulate(group: list[tuple[float, str, bool | None]], delay: float) -> tuple[bool, bool]:
    """Feed one save's events to the real Batcher with quiet window ``delay``: (was a batch
    taken before the save's last event, did that batch hold a path that would be committed)."""
    batcher = Batcher(delay, 1.0, 5000)
    early = harmful = False
    for n, (when, path, writing, gone) in enumerate(group):
        if n:
            due = batcher.deadline()
            while due is not None and due < when:
                taken = batcher.take(due)
                if not taken:
                    break
                early = True
                harmful = harmful or not all(harmless(p) for p in taken)
                due = batcher.deadline()
        batcher.note(path, when, writing, gone)
    return early, harmful


def summarize(groups: list[list[float]], starts: list[float]) -> dict[str, object]:
    spreads, gaps, lags, counts = [], [], [], []
    for group, start in zip(groups, starts, strict=True):
        if not group:
            continue
        counts.append(len(group))
        spreads.append(group[-1] - group[0])
        gaps.append(max((b - a for a, b in itertools.pairwise(group)), default=0.0))
        lags.append(group[0] - start)
    splits = {ms: sum(1 for g in gaps if g > ms / 1000) for ms in CANDIDATES_MS}
    return {
        "saves": len(spreads),
        "empty": len(groups) - len(spreads),
        "events": c.percentile(counts, 50) if counts else 0,
        "lag": lags,
        "spread": spreads,
        "gap": gaps,
        "splits": splits,
    }


def run_pattern(name: str, saves: int, pause: float, base: Path) -> list[dict[str, object]]:
    d = base / name
    d.mkdir()
    (d / "note.txt").write_bytes(b"start\n")
    recorders = [WatchdogRecorder(d), InotifyRecorder(d)]
    for recorder in recorders:
        recorder.start()
    try:
        time.sleep(0.2)
        save = PATTERNS[name]
        starts: list[float] = []
        for i in range(saves):
            starts.append(time.monotonic())
            save(d, f"save {i}\n".encode() * 20)
            time.sleep(pause)
        end = time.monotonic() + 0.2
        time.sleep(0.2)
    finally:
        for recorder in recorders:
            recorder.stop()
    results = []
    for recorder in recorders:
        summary = summarize(per_save(recorder.times, starts, end), starts)
        summary["recorder"] = recorder.name
        summary["pattern"] = name
        if isinstance(recorder, WatchdogRecorder):
            groups = group_events(recorder.events, starts, end)
            outcome = {ms: [simulate(g, ms / 1000) for g in groups if g] for ms in CANDIDATES_MS}
            summary["early"] = {ms: sum(e for e, _ in o) for ms, o in outcome.items()}
            summary["harmful"] = {ms: sum(h for _, h in o) for ms, o in outcome.items()}
        results.append(summary)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="40 saves per pattern")
    parser.add_argument("--saves", type=int, help="saves per pattern (500)")
    parser.add_argument("--pause", type=float, default=40.0, help="ms between saves (40)")
    parser.add_argument("--load", type=int, default=0, help="busy processes to run alongside")
    args = parser.parse_args()
    saves = args.saves or (40 if args.quick else 500)
    c.setup_environment()
    print(f"delay choice: {saves} saves per pattern, {args.pause:g} ms apart, load {args.load}")
    print(c.code_note())
    print(f"machine: {c.machine_note()}", flush=True)
    burners: list[subprocess.Popen[bytes]] = []
    results: list[dict[str, object]] = []
    try:
        for _ in range(args.load):
            burners.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        with c.temp_dir("delay") as base:
            for name in PATTERNS:
                results += run_pattern(name, saves, args.pause / 1000, base)
                print(f"  {name} done", flush=True)
    finally:
        for proc in burners:
            proc.terminate()
            proc.wait(timeout=10)
    print()
    print(f"machine at the end: {c.machine_note()}")
    rows = []
    for r in results:
        lag, spread, gap = r["lag"], r["spread"], r["gap"]
        assert isinstance(lag, list) and isinstance(spread, list) and isinstance(gap, list)
        splits = r["splits"]
        assert isinstance(splits, dict)
        rows.append(
            [
                r["pattern"],
                r["recorder"],
                r["saves"],
                f"{r['events']:g}",
                f"{c.ms(c.percentile(lag, 50))}/{c.ms(c.percentile(lag, 99))}",
                f"{c.ms(c.percentile(spread, 50))}/{c.ms(c.percentile(spread, 99))}",
                c.ms(max(spread, default=0.0)),
                f"{c.ms(c.percentile(gap, 50))}/{c.ms(c.percentile(gap, 99))}",
                c.ms(max(gap, default=0.0)),
                " ".join(str(splits[ms]) for ms in CANDIDATES_MS),
            ]
        )
    headers = [
        "save",
        "recorder",
        "saves",
        "events",
        "first event lag p50/p99 ms",
        "spread p50/p99 ms",
        "spread max ms",
        "largest gap p50/p99 ms",
        "largest gap max ms",
        "saves split at " + "/".join(str(ms) for ms in CANDIDATES_MS) + " ms",
    ]
    print(c.table(headers, rows))
    seen = [r for r in results if r["recorder"] == "watchdog"]
    print()
    print("the daemon's Batcher replayed on the watchdog timelines: saves committed early")
    print("(a batch taken before the save's last event) / of those, batches holding a path")
    print("that would be committed (the file itself or a non-editor temp name):")
    sim_rows = []
    for r in seen:
        early, harmful = r["early"], r["harmful"]
        assert isinstance(early, dict) and isinstance(harmful, dict)
        sim_rows.append(
            [r["pattern"], r["saves"]] + [f"{early[ms]} / {harmful[ms]}" for ms in CANDIDATES_MS]
        )
    totals = ["all", sum(int(r["saves"]) for r in seen)]  # type: ignore[call-overload]
    for ms in CANDIDATES_MS:
        early_total = sum(r["early"][ms] for r in seen)  # type: ignore[index]
        harmful_total = sum(r["harmful"][ms] for r in seen)  # type: ignore[index]
        totals.append(f"{early_total} / {harmful_total}")
    sim_rows.append(totals)
    print(c.table(["save", "saves"] + [f"delay {ms} ms" for ms in CANDIDATES_MS], sim_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

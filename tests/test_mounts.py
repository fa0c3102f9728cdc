"""The mount table parser, its pure helpers, and the watcher against real mounts.

The real-mount tests run a script under ``unshare -m --propagation private``, so the mounts
it makes exist only in its own namespace and vanish with it; they are skipped, with the
reason, where unshare or mount is not permitted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import namespace_problem
from hypothesis import given
from hypothesis import strategies as st

from assistant.mounts import (
    Mount,
    MountWatcher,
    changes,
    is_removable_candidate,
    mount_of,
    parse_line,
    parse_mountinfo,
    unescape,
)

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """\
22 27 0:21 / /proc rw,relatime shared:13 - proc proc rw
23 27 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 27 0:26 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=3274464k,mode=755
41 27 259:1 / /boot/efi rw,relatime shared:30 - vfat /dev/nvme0n1p1 rw,fmask=0077,codepage=437
512 30 8:17 / /run/media/al/My\\040Stick rw shared:280 master:1 - exfat /dev/sdb1 rw,iocharset=utf8
513 27 8:33 / /media/bob/BACKUP rw,nosuid,nodev,relatime - ext4 /dev/sdc1 rw
600 27 259:2 /home/alice/src /srv/src\\011tab\\134back ro,relatime - ext4 /dev/nvme0n1p2 rw
700 27 0:50 / /mnt/wsl rw,relatime - tmpfs none rw
"""


def test_parse_sample() -> None:
    mounts = parse_mountinfo(SAMPLE)
    assert [m.mount_id for m in mounts] == [22, 23, 27, 30, 41, 512, 513, 600, 700]
    root = mounts[2]
    assert root == Mount(
        mount_id=27,
        parent_id=1,
        major=259,
        minor=2,
        root="/",
        mount_point="/",
        options=("rw", "relatime"),
        optional=("shared:1",),
        fs_type="ext4",
        source="/dev/nvme0n1p2",
        super_options=("rw", "errors=remount-ro"),
    )
    stick = mounts[5]
    assert stick.mount_point == "/run/media/al/My Stick"
    assert stick.optional == ("shared:280", "master:1")
    assert stick.fs_type == "exfat"
    assert stick.source == "/dev/sdb1"
    assert stick.device == "8:17"
    assert "iocharset=utf8" in stick.super_options
    bind = mounts[7]
    assert bind.root == "/home/alice/src"
    assert bind.mount_point == "/srv/src\ttab\\back"
    assert bind.read_only
    assert not root.read_only


def test_parse_no_optional_fields_and_empty_source() -> None:
    m = parse_line("35 24 0:30 / /tmp/x rw,relatime - tmpfs  rw,size=1024k")
    assert m.optional == ()
    assert m.fs_type == "tmpfs"
    assert m.source == ""
    assert m.super_options == ("rw", "size=1024k")


def test_parse_fuse_subtype_and_newline_escape() -> None:
    m = parse_line(
        "90 27 0:60 / /home/a/remote\\012x rw,nosuid,nodev - fuse.sshfs a@host:/d rw,user_id=0"
    )
    assert m.fs_type == "fuse.sshfs"
    assert m.source == "a@host:/d"
    assert m.mount_point == "/home/a/remote\nx"


def test_parse_skips_blank_and_malformed_lines() -> None:
    text = "\n".join(
        [
            "",
            "garbage",
            "1 2 3:4 / /a rw no-separator-here",
            "x 1 0:1 / /b rw - tmpfs t rw",
            "5 1 0:1 / /c rw - tmpfs t rw",
        ]
    )
    assert [m.mount_point for m in parse_mountinfo(text)] == ["/c"]


def test_parse_line_rejects_non_mountinfo() -> None:
    with pytest.raises(ValueError):
        parse_line("1 2 3:4 / /a rw")
    with pytest.raises(ValueError):
        parse_line("1 2 3:4 / /a rw - tmpfs")


def test_parse_real_table() -> None:
    """This machine's own table parses completely, and has a root mount."""
    try:
        text = Path("/proc/self/mountinfo").read_text(errors="surrogateescape")
    except OSError as exc:
        pytest.skip(f"no /proc/self/mountinfo here: {exc}")
    mounts = parse_mountinfo(text)
    assert len(mounts) == len([line for line in text.splitlines() if line.strip()])
    assert mount_of("/", mounts) is not None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_unescape_inverts_kernel_escaping(name: str) -> None:
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in name)
    assert unescape(escaped) == name
    line = f"7 1 0:5 / /m/{escaped} rw - tmpfs src rw"
    assert parse_line(line).mount_point == f"/m/{name}"


def _m(mount_id: int, point: str, parent: int = 1, fs: str = "ext4") -> Mount:
    return Mount(mount_id, parent, 8, mount_id, "/", point, ("rw",), (), fs, "/dev/x", ("rw",))


TABLE = [
    _m(1, "/", parent=0),
    _m(2, "/mnt"),
    _m(3, "/mnt/a", parent=2),
    _m(4, "/media/bob/Drive"),
    _m(5, "/media/bob/Drive", parent=4),  # stacked on top of 4
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", 1),
        ("/home/alice", 1),
        ("/mnt", 2),
        ("/mnt/", 2),
        ("/mnt/ab", 2),
        ("/mnt/a", 3),
        ("/mnt/a/repo/.git", 3),
        ("/mnt/a/../b", 2),
        ("//mnt/a", 3),
        ("/media/bob/Drive/x", 5),
        ("/media/bob", 1),
    ],
)
def test_mount_of(path: str, expected: int) -> None:
    found = mount_of(path, TABLE)
    assert found is not None
    assert found.mount_id == expected


def test_mount_of_stacking_independent_of_order() -> None:
    found = mount_of("/media/bob/Drive", list(reversed(TABLE)))
    assert found is not None and found.mount_id == 5


def test_mount_of_empty_table() -> None:
    assert mount_of("/x", []) is None


def test_changes() -> None:
    old = [_m(1, "/", 0), _m(2, "/mnt/a"), _m(3, "/mnt/b")]
    remounted = Mount(2, 1, 8, 2, "/", "/mnt/a", ("ro",), (), "ext4", "/dev/x", ("ro",))
    new = [_m(1, "/", 0), remounted, _m(9, "/mnt/b"), _m(10, "/mnt/c")]
    added, removed = changes(old, new)
    assert [m.mount_id for m in added] == [9, 10]
    assert [m.mount_id for m in removed] == [3]
    assert changes(old, old) == ([], [])
    assert changes([], old) == (old, [])
    assert changes(old, []) == ([], old)


@pytest.mark.parametrize(
    ("point", "fs", "expected"),
    [
        ("/boot/efi", "vfat", True),
        ("/srv/x", "exfat", True),
        ("/data", "ntfs3", True),
        ("/data", "fuseblk", True),
        ("/x", "hfsplus", True),
        ("/cdrom", "iso9660", True),
        ("/x", "udf", True),
        ("/run/media/alice/Stick", "ext4", True),
        ("/media/bob/BACKUP", "btrfs", True),
        ("/mnt", "ext4", True),
        ("/mnt/usb", "xfs", True),
        ("/Volumes/Drive", "", True),
        ("/media", "ext4", False),
        ("/run/media", "ext4", False),
        ("/mediax/y", "ext4", False),
        ("/", "ext4", False),
        ("/home", "btrfs", False),
        ("/mnt/wsl", "tmpfs", False),
        ("/media/auto", "autofs", False),
        ("/run/user/1000", "tmpfs", False),
    ],
)
def test_is_removable_candidate(point: str, fs: str, expected: bool) -> None:
    assert is_removable_candidate(_m(7, point, fs=fs)) is expected


def test_is_removable_candidate_on_sample() -> None:
    flagged = [m.mount_point for m in parse_mountinfo(SAMPLE) if is_removable_candidate(m)]
    assert flagged == ["/boot/efi", "/run/media/al/My Stick", "/media/bob/BACKUP"]


# --- the watcher, polling fallback with a fake table --------------------------------------


def test_watcher_polling_with_fake_table() -> None:
    tables = [[_m(1, "/", 0)]]
    seen: list[tuple[list[int], list[int]]] = []

    async def callback(added: list[Mount], removed: list[Mount]) -> None:
        await asyncio.sleep(0)
        seen.append(([m.mount_id for m in added], [m.mount_id for m in removed]))

    async def main() -> None:
        watcher = MountWatcher(callback, interval=0.01, read_table=lambda: tables[-1])
        await watcher.start()
        assert watcher.mode == "polling"
        assert [m.mount_id for m in watcher.mounts] == [1]
        tables.append([_m(1, "/", 0), _m(2, "/mnt/a")])
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        tables.append([_m(1, "/", 0)])
        for _ in range(200):
            if len(seen) > 1:
                break
            await asyncio.sleep(0.01)
        await watcher.stop()
        assert watcher.mode is None and not watcher.running
        tables.append([_m(1, "/", 0), _m(3, "/mnt/b")])
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert seen == [([2], []), ([], [2])]


def test_watcher_survives_failing_callback() -> None:
    tables = [[_m(1, "/", 0)]]
    calls = 0

    def callback(added: list[Mount], removed: list[Mount]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    async def main() -> None:
        async with MountWatcher(callback, interval=60, read_table=lambda: tables[-1]) as w:
            tables.append([_m(1, "/", 0), _m(2, "/x")])
            assert await w.check() == ([tables[-1][1]], [])
            tables.append([_m(1, "/", 0)])
            _, removed = await w.check()
            assert [m.mount_id for m in removed] == [2]
            assert w.running

    asyncio.run(main())
    assert calls == 2


def test_watcher_rejects_bad_interval() -> None:
    with pytest.raises(ValueError):
        MountWatcher(lambda a, r: None, interval=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mountinfo events are Linux")
def test_watcher_uses_events_on_linux_and_is_quiet() -> None:
    """With no mount changes, the event source neither spins nor calls back."""
    calls: list[object] = []

    wakeups = 0

    async def main() -> None:
        nonlocal wakeups
        watcher = MountWatcher(lambda a, r: calls.append((a, r)))
        on_ready = watcher._on_ready

        def counting() -> None:
            nonlocal wakeups
            wakeups += 1
            on_ready()

        watcher._on_ready = counting  # type: ignore[method-assign]
        async with watcher:
            assert watcher.mode == "events"
            assert watcher.mounts
            await asyncio.sleep(0.3)

    asyncio.run(main())
    assert calls == []
    assert wakeups <= 2  # a level-triggered loop that spun would wake thousands of times


# --- the watcher against real mounts, in a private mount namespace ------------------------

NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, subprocess, sys, time
    from assistant.mounts import MountWatcher

    base, kind, polling = sys.argv[1], sys.argv[2], sys.argv[3] == "polling"
    target = os.path.join(base, "my drive")
    os.makedirs(target, exist_ok=True)
    source = os.path.join(base, "source")
    os.makedirs(source, exist_ok=True)

    async def main():
        events = asyncio.Queue()

        def callback(added, removed):
            events.put_nowait((time.monotonic(), added, removed))

        async def wait_for(pred):
            deadline = time.monotonic() + 5
            while True:
                at, added, removed = await asyncio.wait_for(
                    events.get(), max(0.01, deadline - time.monotonic())
                )
                if pred(added, removed):
                    return at, added, removed

        watcher = MountWatcher(callback, polling=polling, interval=0.2)
        await watcher.start()
        out = {"mode": watcher.mode}
        if kind == "bind":
            cmd = ["mount", "--bind", source, target]
        else:
            cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "annexsync-test", target]
        subprocess.run(cmd, check=True)
        t0 = time.monotonic()
        at, added, _ = await wait_for(lambda a, r: any(m.mount_point == target for m in a))
        m = next(m for m in added if m.mount_point == target)
        out["added"] = {"point": m.mount_point, "fs": m.fs_type, "root": m.root,
                        "delay": at - t0}
        subprocess.run(["umount", target], check=True)
        t0 = time.monotonic()
        at, _, removed = await wait_for(lambda a, r: any(m.mount_point == target for m in r))
        out["removed"] = {"point": target, "delay": at - t0}
        await watcher.stop()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    ("kind", "mode"), [("bind", "events"), ("tmpfs", "events"), ("bind", "polling")]
)
def test_watcher_sees_real_mount_and_unmount(tmp_path: Path, kind: str, mode: str) -> None:
    reason = namespace_problem()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "watch.py"
    script.write_text(NAMESPACE_SCRIPT)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(script),
         str(tmp_path), kind, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    target = str(tmp_path / "my drive")
    assert out["mode"] == mode
    assert out["added"]["point"] == target
    if kind == "tmpfs":
        assert out["added"]["fs"] == "tmpfs"
    else:  # a bind mount's root is the bound directory, within its file system
        assert out["added"]["root"].endswith("/source")
    assert out["added"]["delay"] < 2.0
    assert out["removed"]["point"] == target
    assert out["removed"]["delay"] < 2.0
    # The mount lived only in the child's namespace.
    assert not any(
        m.mount_point == target for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    )

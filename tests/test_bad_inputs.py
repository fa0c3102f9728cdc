"""A catalogue of bad inputs (docs/bad-inputs.md): each case ends in a clear line, in the log,
status or on stderr, and loses nothing: the rest of the tree is still committed and synced,
files are left as they are, history is intact."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
import pytest
from conftest import Daemon, annexsync, git, head_files, new_node, wait_until

from assistant.autocommit import unreadable_dirs
from assistant.daemon.watcher import attrib_matters
from assistant.lineage import unrelated_problem

if TYPE_CHECKING:
    from sshd import ClientHome, SSHServer

pytest_plugins = ["sshd"]

Factory = Callable[[Path], Daemon]
# Root reads and writes any file whatever its mode; without these two capabilities it is held
# to the permission bits like any other user.
NO_DAC = "--bounding-set=-dac_override,-dac_read_search"


# --- helpers ----------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def commit_all(repo: Path, message: str = "setup") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def versions(repo: Path, path: str) -> list[bytes]:
    """The content of ``path`` in every commit of HEAD's history that has it, oldest first."""
    r = pygit2.Repository(str(repo))
    out: list[bytes] = []
    for commit in r.walk(r.head.target, pygit2.enums.SortMode.TOPOLOGICAL):
        with contextlib.suppress(KeyError):
            out.append(r[commit.tree[path].id].data)
    return out[::-1]


def committed(repo: Path, path: str, data: bytes) -> Callable[[], bool]:
    def check() -> bool:
        return head_files(repo).get(path) == data

    check.__name__ = f"{path} committed as {data[:40]!r}"
    return check


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def run_writer(program: str, path: Path) -> None:
    """Run ``program`` (Python, given ``path`` as its argument) as a separate writer process
    to its end; it must succeed."""
    writer = subprocess.Popen([sys.executable, "-c", program, str(path)])
    try:
        assert writer.wait(timeout=30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()


def settle(*daemons: Daemon) -> None:
    for d in daemons:
        wait_until(d.idle, timeout=30)


@pytest.fixture
def capped_factory(daemon_factory: Callable[..., Daemon]) -> Callable[[Path], Daemon]:
    """Assistants run as root without the capabilities that let root ignore file modes, so
    a file with mode 000 is as unreadable to them as to any user."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("dropping root's file-permission override needs root and setpriv")
    return lambda path: daemon_factory(path, ("setpriv", NO_DAC))


@pytest.mark.parametrize(
    ("reldir", "unlisted", "matters"),
    [
        ("secret", ["secret/"], True),  # the directory itself made readable
        ("a", ["a/b/"], True),  # one above it
        ("a/b/c", ["a/b/"], False),  # below it: not even seen while it is unreadable
        ("docs", ["secret/"], False),  # chmod -R, tar, rsync -a elsewhere: no file changed
        ("sec", ["secret/"], False),
        ("docs", [], False),
        ("docs", ["/"], True),  # the list could not be read: look
    ],
)
def test_only_a_mode_change_that_may_reveal_an_unlisted_directory_is_looked_into(
    reldir: str, unlisted: list[str], matters: bool
) -> None:
    assert attrib_matters(reldir, unlisted) is matters


# --- fifos and sockets ------------------------------------------------------------------------


def test_fifos_and_sockets_are_skipped_with_one_line_each_and_never_hang_the_committer(
    repo: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(repo).start()
    os.mkfifo(repo / "pipe")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    os.chdir(repo)
    try:
        listener.bind("app.sock")
    finally:
        os.chdir(here)
    try:
        write(repo / "a.txt", "a\n")
        wait_until(committed(repo, "a.txt", b"a\n"))
        # the committer is not stuck on the fifo: later saves and a full sync still go through
        write(repo / "b.txt", "b\n")
        wait_until(committed(repo, "b.txt", b"b\n"))
        sync = annexsync("-C", str(repo), "sync", timeout=30)
        assert sync.returncode == 0, sync.stderr
        skipped = d.status()["skipped"]
        shown = annexsync("-C", str(repo), "status").stdout
        d.stop()
        d.start()  # a start-up scan with them in the tree (git's scan passes over them)
        write(repo / "c.txt", "c\n")
        wait_until(committed(repo, "c.txt", b"c\n"))
    finally:
        listener.close()
    assert set(head_files(repo)) == {"a.txt", "b.txt", "c.txt"}
    assert stat.S_ISFIFO(os.lstat(repo / "pipe").st_mode)
    assert "not a regular file" in skipped["pipe"] and "not a regular file" in skipped["app.sock"]
    assert "skipped:   pipe: not committed: not a regular file" in shown
    log = d.stderr()
    assert len(lines_with(log, "pipe: not committed: not a regular file")) == 1, log
    assert len(lines_with(log, "app.sock: not committed: not a regular file")) == 1, log
    assert "Traceback" not in log


# --- unreadable files -------------------------------------------------------------------------


def test_unreadable_files_are_never_committed_as_deletions_and_are_picked_up_once_readable(
    repo: Path, capped_factory: Factory
) -> None:
    write(repo / "secret.txt", "v1\n")
    write(repo / "private/deep/kept.txt", "kept\n")
    write(repo / "other.txt", "o\n")
    commit_all(repo)
    d = capped_factory(repo).start()

    (repo / "secret.txt").chmod(0)
    write(repo / "secret.txt", "v2\n")  # root in this test; the assistant cannot read it
    write(repo / "private/deep/new.txt", "new\n")
    (repo / "private").chmod(0)
    write(repo / "fresh.txt", "fresh\n")
    (repo / "fresh.txt").chmod(0)
    write(repo / "other.txt", "o2\n")
    wait_until(committed(repo, "other.txt", b"o2\n"))
    sync = annexsync("-C", str(repo), "sync", timeout=30)  # a full rescan, and a commit
    assert sync.returncode == 0, sync.stderr
    settle(d)

    files = head_files(repo)
    assert files["secret.txt"] == b"v1\n" and files["private/deep/kept.txt"] == b"kept\n"
    assert "fresh.txt" not in files and "private/deep/new.txt" not in files
    skipped = d.status()["skipped"]
    assert "Permission denied" in skipped["secret.txt"] and "fresh.txt" in skipped
    assert any(path.startswith("private") for path in skipped), skipped
    log = d.stderr()
    assert lines_with(log, "secret.txt: not committed: Permission denied")
    assert lines_with(log, "fresh.txt: not committed: Permission denied")

    (repo / "secret.txt").chmod(0o644)
    (repo / "fresh.txt").chmod(0o644)
    (repo / "private").chmod(0o755)
    wait_until(committed(repo, "secret.txt", b"v2\n"))
    wait_until(committed(repo, "fresh.txt", b"fresh\n"))
    wait_until(committed(repo, "private/deep/new.txt", b"new\n"))
    assert head_files(repo)["private/deep/kept.txt"] == b"kept\n"
    assert not any("private" in p or "secret" in p for p in d.status()["skipped"])
    assert "Traceback" not in d.stderr()


# --- files that change while they are read ----------------------------------------------------


def test_a_file_appended_to_while_it_is_committed_is_only_ever_committed_whole(
    repo: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(repo).start()
    run_writer(
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
        "end = time.monotonic() + 3.0\n"
        "n = 0\n"
        "while time.monotonic() < end:\n"
        "    n += 1\n"
        "    os.write(fd, b'line %06d ' % n + b'x' * (n % 97) + b'\\n')\n"
        "    if n % 200 == 0:\n"
        "        time.sleep(0.02)  # a logger's bursts: the committer reads in between too\n"
        "os.close(fd)\n",
        repo / "growing.log",
    )
    final = (repo / "growing.log").read_bytes()
    wait_until(committed(repo, "growing.log", final), timeout=30)
    settle(d)

    seen = versions(repo, "growing.log")
    assert len(seen) >= 2, "nothing was committed while the file was being written"
    for version in seen:
        assert final.startswith(version) and version.endswith(b"\n"), version[-80:]
    assert [len(v) for v in seen] == sorted(len(v) for v in seen)
    assert seen[-1] == final
    assert "Traceback" not in d.stderr()


def test_a_file_rewritten_in_place_while_it_is_read_is_never_committed_torn(
    repo: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(repo).start()
    size = 4 << 20
    run_writer(
        "import os, random, sys, time\n"
        f"size = {size}\n"
        "states = [bytes([65 + i]) * size for i in range(3)]\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "end = time.monotonic() + 4.0\n"
        "i = 0\n"
        "while time.monotonic() < end:\n"
        "    os.pwrite(fd, states[i % 2], 0)  # same size: only the content says it moved\n"
        "    i += 1\n"
        "    time.sleep(random.random() * 0.03)\n"
        "os.pwrite(fd, states[2], 0)\n"
        "os.close(fd)\n",
        repo / "db.bin",
    )
    wait_until(committed(repo, "db.bin", b"C" * size), timeout=30)
    settle(d)

    seen = versions(repo, "db.bin")
    assert len(seen) >= 2, "nothing was committed while the file was being rewritten"
    for version in seen:
        assert len(version) == size and version == version[:1] * size, "a torn version"
    assert "Traceback" not in d.stderr()


# --- the repository deleted under the running assistant ---------------------------------------


def test_deleting_the_repository_stops_the_assistant_with_one_line_and_recreates_nothing(
    repo: Path, daemon_factory: Factory
) -> None:
    write(repo / "a.txt", "a\n")
    d = daemon_factory(repo).start()
    wait_until(committed(repo, "a.txt", b"a\n"))
    wait_until(lambda: git(repo, "status", "--porcelain") == "")  # idle, index written
    assert d.proc is not None

    shutil.rmtree(repo)

    code = d.proc.wait(timeout=30)
    assert code != 0
    log = d.stderr()
    assert len(lines_with(log, "was deleted")) == 1, log
    assert "Traceback" not in log and "Logging error" not in log
    time.sleep(0.5)  # anything it might still write would land now
    assert not repo.exists()


def test_deleting_only_the_git_directory_stops_the_assistant_and_leaves_the_files(
    repo: Path, daemon_factory: Factory
) -> None:
    write(repo / "a.txt", "a\n")
    d = daemon_factory(repo).start()
    wait_until(committed(repo, "a.txt", b"a\n"))
    wait_until(lambda: git(repo, "status", "--porcelain") == "")
    assert d.proc is not None

    shutil.rmtree(repo / ".git")

    assert d.proc.wait(timeout=30) != 0
    log = d.stderr()
    assert len(lines_with(log, "was deleted")) == 1, log
    assert "Traceback" not in log
    time.sleep(0.5)
    assert not (repo / ".git").exists()
    assert sorted(os.listdir(repo)) == ["a.txt"]
    assert (repo / "a.txt").read_text() == "a\n"


# --- paths longer than the system allows ------------------------------------------------------


def make_deep_file(root: Path, levels: int, content: bytes) -> str:
    """A file ``levels`` directories of 200-byte names deep, made relative to open directories
    (the only way past PATH_MAX); returns its path relative to ``root``."""
    parts = [f"{i:02d}" + "d" * 198 for i in range(levels)]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            os.mkdir(part, dir_fd=fd)
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        out = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, content)
        os.close(out)
    finally:
        os.close(fd)
    return "/".join([*parts, "deep.txt"])


@pytest.mark.parametrize(
    ("stderr", "dirs"),
    [
        (b"", []),
        (b"warning: could not open directory 'private/': Permission denied\n", ["private"]),
        (b"warning: could not open directory 'a b/c/': Permission denied\n", ["a b/c"]),
        # git cuts its messages at 4 KiB: the last whole directory is looked at instead
        (b"warning: could not open directory 'x/" + b"d" * 4000 + b"/eee", ["x/" + "d" * 4000]),
        (b"warning: other things\n", []),
    ],
    ids=["none", "denied", "spaces", "cut-short", "other"],
)
def test_the_directories_git_could_not_open_are_read_from_its_warnings(
    stderr: bytes, dirs: list[str]
) -> None:
    assert unreadable_dirs(stderr) == dirs


def test_a_local_path_longer_than_path_max_is_reported_and_the_rest_still_commits(
    repo: Path, daemon_factory: Factory
) -> None:
    limit = os.pathconf(repo, "PC_PATH_MAX")
    d = daemon_factory(repo).start()
    deep = make_deep_file(repo, limit // 200 + 2, b"deep\n")
    assert len(os.fsencode(repo / deep)) > limit
    write(repo / "other.txt", "other\n")
    wait_until(committed(repo, "other.txt", b"other\n"))
    sync = annexsync("-C", str(repo), "sync", timeout=60)  # a whole-tree scan meets it too
    assert sync.returncode == 0, sync.stderr
    write(repo / "later.txt", "later\n")
    wait_until(committed(repo, "later.txt", b"later\n"))

    status = d.status()
    too_long = {p: why for p, why in status["skipped"].items() if "too long" in why}
    assert len(too_long) == 1, status["skipped"]
    [(where, why)] = too_long.items()
    assert deep.startswith(where) and where.endswith("/")
    assert why == "not committed: cannot read the directory: File name too long"
    assert status["watch"]["mode"] == "inotify"
    assert set(head_files(repo)) == {"other.txt", "later.txt"}
    log = d.stderr()
    assert len(lines_with(log, "cannot read the directory: File name too long")) == 1
    assert "Traceback" not in log and "RuntimeWarning" not in log
    assert len(log) < 100_000, "the log is flooded"


# --- a 2 GiB file -----------------------------------------------------------------------------


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_2_gib_file_is_reported_not_committed_and_everything_else_syncs_in_bounded_memory(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    da, db = daemon_factory(a).start(), daemon_factory(b).start()
    size = 2 << 30
    with open(a / "big.bin", "wb") as big:
        big.truncate(size)  # sparse: the disk holds none of it, every read sees 2 GiB
    write(a / "small.txt", "small\n")
    wait_until(lambda: (b / "small.txt").exists(), timeout=30)
    sync = annexsync("-C", str(a), "sync", timeout=120)
    assert sync.returncode == 0, sync.stderr
    # a peer's small file at the same path: the big one stays, the peer's version is kept
    write(b / "big.bin", "beta's\n")
    wait_until(lambda: "big.bin" in head_files(a), timeout=60)
    settle(da, db)
    write(a / "after.txt", "after\n")
    wait_until(lambda: (b / "after.txt").exists(), timeout=30)
    settle(da, db)

    assert os.path.getsize(a / "big.bin") == size
    assert head_files(a)["big.bin"] == b"beta's\n"  # the peer's version, from history
    for here in (a, b):  # never hashed into an object either (that alone takes seconds)
        sizes = git(here, "cat-file", "--batch-all-objects", "--batch-check=%(objectsize)")
        assert max(int(n) for n in sizes.split()) < 1 << 20
    status = da.status()
    assert status["large"] == {"big.bin": size}
    assert (
        f"large:     big.bin ({size} bytes) is over annexsync.largefiles"
        in annexsync("-C", str(a), "status").stdout
    )
    log = da.stderr()
    assert len(lines_with(log, "not committing big.bin: larger than annexsync.largefiles")) == 1
    assert "Traceback" not in log
    assert da.proc is not None
    assert peak_rss(da.proc.pid) < 200 << 20, "the daemon read the big file into memory"


# --- names a peer sends that this filesystem cannot hold --------------------------------------


def test_a_name_too_long_from_a_peer_is_reported_and_neither_loses_files_nor_wedges_syncing(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    write(a / "keep.txt", "keep\n")
    commit_all(a)
    da, db = daemon_factory(a).start(), daemon_factory(b).start()
    wait_until(lambda: (b / "keep.txt").exists(), timeout=30)
    settle(da, db)

    # a third machine, whose filesystem takes longer names, commits with plain git
    carol = tmp_path / "carol"
    git(tmp_path, "clone", "-q", str(b), str(carol))
    long_name, long_dir = "L" * 300 + ".txt", "D" * 300 + "/inside.txt"
    for path, content in ((long_name, "long\n"), (long_dir, "inside\n")):
        oid = subprocess.run(
            ["git", "-C", str(carol), "hash-object", "-w", "--stdin"],
            input=content, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        git(carol, "update-index", "--add", "--cacheinfo", f"100644,{oid},{path}")
    write(carol / "normal.txt", "normal\n")
    git(carol, "add", "normal.txt")
    git(carol, "commit", "-q", "-m", "names too long for ext4")
    git(carol, "push", "-q", str(b), "HEAD:refs/remotes/carol/synced/main")

    for here in (b, a):
        wait_until(lambda here=here: (here / "normal.txt").exists(), timeout=30)
    settle(da, db)
    write(a / "after.txt", "after\n")  # syncing goes on both ways
    wait_until(lambda: (b / "after.txt").exists(), timeout=30)
    write(b / "reply.txt", "reply\n")
    wait_until(lambda: (a / "reply.txt").exists(), timeout=30)
    settle(da, db)

    for here, d in ((a, da), (b, db)):
        files = head_files(here)
        assert files[long_name] == b"long\n" and files[long_dir] == b"inside\n"
        assert {"keep.txt", "normal.txt", "after.txt", "reply.txt"} <= set(files)
        on_disk = sorted(os.listdir(here))
        assert on_disk == [".git", "after.txt", "keep.txt", "normal.txt", "reply.txt"]
        skipped = d.status()["skipped"]
        assert skipped[long_name] == "in the commit but not written here: File name too long"
        assert skipped[long_dir] == "in the commit but not written here: File name too long"
        log = d.stderr()
        assert len(lines_with(log, "cannot write " + long_name)) == 1, log
        assert "File name too long" in lines_with(log, "cannot write " + long_name)[0]
        assert "Traceback" not in log
        deletions = git(here, "log", "--diff-filter=D", "--name-only", "--format=")
        assert long_name not in deletions and long_dir not in deletions
    assert git(a, "rev-parse", "HEAD") == git(b, "rev-parse", "HEAD")

    # a restart does not take the missing files for deletions either
    da.stop()
    da.start()
    write(a / "last.txt", "last\n")
    wait_until(committed(a, "last.txt", b"last\n"))
    settle(da)
    assert long_name in head_files(a) and long_name in da.status()["skipped"]


# --- names that are not UTF-8 -----------------------------------------------------------------

CAFE = b"caf\xe9.txt"  # Latin-1, as an old system or a zip file names it


def listing(repo: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(repo))) - {b".git"}


def tree_names(repo: Path, rev: str = "HEAD") -> set[bytes]:
    """Every path of ``rev``'s tree as the bytes git stores."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", rev],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return {name for name in out.split(b"\0") if name}


def test_a_name_that_is_not_utf8_is_committed_and_synced_byte_for_byte_as_git_does(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    git(b, "remote", "add", "alpha", str(a))
    da, db = daemon_factory(a).start(), daemon_factory(b).start()
    raw_a = os.fsencode(a)
    (a / "good.txt").write_text("good\n")
    with open(os.path.join(raw_a, CAFE), "wb") as f:
        f.write(b"latin-1 name\n")
    os.mkdir(os.path.join(raw_a, b"dir\xff"))
    with open(os.path.join(raw_a, b"dir\xff/inner.txt"), "wb") as f:
        f.write(b"inner\n")

    inner_b = os.path.join(os.fsencode(b), b"dir\xff/inner.txt")
    wait_until(lambda: CAFE in listing(b) and os.path.exists(inner_b), timeout=30)
    settle(da, db)

    assert tree_names(a) == tree_names(b) == {b"good.txt", CAFE, b"dir\xff/inner.txt"}
    with open(os.path.join(os.fsencode(b), CAFE), "rb") as f:
        assert f.read() == b"latin-1 name\n"
    # plain git, given the same files, has nothing to add: it is the tree git would commit
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", str(a), str(mirror))
    assert git(mirror, "status", "--porcelain") == ""
    assert git(a, "status", "--porcelain") == "" and git(b, "status", "--porcelain") == ""
    messages = git(a, "log", "--format=%B")
    assert 'A "caf\\351.txt"' in messages, messages  # quoted as git quotes it
    assert "Traceback" not in da.stderr() + db.stderr()
    for command in ("status", "log"):
        shown = annexsync("-C", str(a), command)
        assert shown.returncode == 0 and "internal error" not in shown.stderr, shown.stderr

    # renamed and removed like any other name
    os.rename(os.path.join(raw_a, CAFE), os.path.join(raw_a, b"cafe.txt"))
    wait_until(lambda: b"cafe.txt" in listing(b) and CAFE not in listing(b), timeout=30)
    settle(da, db)
    assert tree_names(b) == {b"good.txt", b"cafe.txt", b"dir\xff/inner.txt"}
    fsck = subprocess.run(["git", "-C", str(b), "fsck", "--strict"], capture_output=True)
    assert fsck.returncode == 0, fsck.stderr


def test_a_name_that_is_not_utf8_from_a_plain_git_peer_is_checked_out_byte_for_byte(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    a = new_node(tmp_path, "alpha")
    write(a / "keep.txt", "keep\n")
    commit_all(a)
    da = daemon_factory(a).start()
    carol = tmp_path / "carol"
    git(tmp_path, "clone", "-q", str(a), str(carol))
    with open(os.path.join(os.fsencode(carol), CAFE), "wb") as f:
        f.write(b"from carol\n")
    git(carol, "add", "-A")
    git(carol, "commit", "-q", "-m", "a Latin-1 name")
    git(carol, "push", "-q", str(a), "HEAD:refs/remotes/carol/synced/main")

    wait_until(lambda: CAFE in listing(a), timeout=30)
    settle(da)
    assert listing(a) == {b"keep.txt", CAFE}
    with open(os.path.join(os.fsencode(a), CAFE), "rb") as f:
        assert f.read() == b"from carol\n"
    assert tree_names(a) == {b"keep.txt", CAFE}
    assert git(a, "status", "--porcelain") == ""

    with open(os.path.join(os.fsencode(a), CAFE), "ab") as f:  # edited here, committed
        f.write(b"and alpha\n")
    wait_until(lambda: head_blob(a, CAFE) == b"from carol\nand alpha\n", timeout=30)
    assert "Traceback" not in da.stderr()


def head_blob(repo: Path, path: bytes) -> bytes | None:
    r = pygit2.Repository(str(repo))
    try:
        return r[r.head.peel(pygit2.Commit).tree[os.fsdecode(path)].id].data
    except KeyError:
        return None


# --- a remote that turns into a different repository ------------------------------------------


@pytest.mark.parametrize(
    ("joined", "related", "refused"),
    [(False, False, False), (False, True, False), (True, True, False), (True, False, True)],
)
def test_only_a_joined_ref_whose_history_turned_unrelated_is_refused(
    joined: bool, related: bool, refused: bool
) -> None:
    problem = unrelated_problem("refs/remotes/hub/main", "main", joined, related)
    assert (problem is not None) == refused
    if problem is not None:
        assert "\n" not in problem
        assert problem.endswith("git merge --allow-unrelated-histories refs/remotes/hub/main")


PEER_ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}


def test_a_push_to_a_non_bare_peer_does_not_make_its_own_branch_count_as_joined(
    tmp_path: Path,
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    write(a / "a.txt", "a\n")
    assert annexsync("-C", str(a), "sync").returncode == 0  # reaches beta's synced ref only
    write(b / "b.txt", "b\n")
    commit_all(b, "beta's own start")  # beta's branch: a history of its own, first seen now

    result = annexsync("-C", str(a), "sync")
    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stdout + result.stderr
    assert set(head_files(a)) == {"a.txt", "b.txt"}


def test_an_ssh_remote_that_now_leads_to_an_unrelated_repository_is_refused_until_accepted(
    tmp_path: Path,
    sshd_factory: Callable[..., SSHServer],
    ssh_home: ClientHome,
    daemon_factory: Factory,
) -> None:
    server = sshd_factory(PEER_ENV)
    ssh_home.known_hosts.write_text(ssh_home.known_hosts.read_text() + server.known_hosts_line())
    hub, other = tmp_path / "hub.git", tmp_path / "other.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    stranger = new_node(tmp_path, "stranger")  # an unrelated repository, with its own files
    write(stranger / "theirs.txt", "theirs\n")
    commit_all(stranger, "their own history")
    git(tmp_path, "clone", "-q", "--bare", str(stranger), str(other))
    a = new_node(tmp_path, "alpha")
    git(a, "remote", "add", "hub", f"ssh://root@127.0.0.1:{server.port}{hub}")
    d = daemon_factory(a).start()
    write(a / "mine.txt", "mine\n")
    wait_until(lambda: git(hub, "rev-parse", "main", check=False).strip() == head(a), timeout=30)
    settle(d)
    ours, theirs = head(a), git(other, "rev-parse", "main").strip()

    git(a, "remote", "set-url", "hub", f"ssh://root@127.0.0.1:{server.port}{other}")
    sync = annexsync("-C", str(a), "sync", timeout=60)

    assert sync.returncode != 0
    refusal = "shares no history with main any more"
    lines = [line for line in (sync.stdout + sync.stderr).splitlines() if refusal in line]
    assert len(lines) == 1, sync.stdout + sync.stderr
    assert "git merge --allow-unrelated-histories refs/remotes/hub/main" in lines[0]
    assert head(a) == ours and sorted(os.listdir(a)) == [".git", "mine.txt"]
    assert git(other, "rev-parse", "main").strip() == theirs  # nothing pushed into it either
    status = annexsync("-C", str(a), "status").stdout
    assert f"not merged: refs/remotes/hub/main: refused: refs/remotes/hub/main {refusal}" in status
    assert len(lines_with(d.stderr(), refusal)) == 1
    write(a / "still.txt", "still committing\n")
    wait_until(committed(a, "still.txt", b"still committing\n"))
    wait_until(lambda: git(a, "status", "--porcelain") == "")  # the index written too

    # accepting it, as the line says
    git(a, "merge", "-q", "--allow-unrelated-histories", "-m", "join", "refs/remotes/hub/main")
    wait_until(
        lambda: git(other, "rev-parse", "main").strip() == head(a) and (a / "theirs.txt").exists(),
        timeout=30,
    )
    assert annexsync("-C", str(a), "sync", timeout=60).returncode == 0
    assert {"mine.txt", "still.txt", "theirs.txt"} <= set(head_files(a))
    assert "Traceback" not in d.stderr()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()


# --- earlier issues' cases that had no test yet -----------------------------------------------


@pytest.mark.parametrize("running", [False, True], ids=["alone", "through-the-assistant"])
@pytest.mark.parametrize("command", ["sync", "push", "fetch"])
def test_an_unknown_remote_name_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, daemon_factory: Factory, command: str, running: bool
) -> None:
    a, b = new_node(tmp_path, "alpha"), new_node(tmp_path, "beta")
    git(a, "remote", "add", "beta", str(b))
    write(a / "a.txt", "a\n")
    commit_all(a)
    if running:
        d = daemon_factory(a).start()
        wait_until(lambda: git(b, "for-each-ref", "refs/remotes") != "", timeout=30)
        settle(d)
    before = {ref: git(b, "for-each-ref", ref) for ref in ("refs/heads", "refs/remotes")}

    proc = annexsync("-C", str(a), command, "beta", "nosuch", timeout=60)

    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("annexsync: error: no such remote: nosuch")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert {ref: git(b, "for-each-ref", ref) for ref in before} == before  # nothing went out


def test_a_bad_remote_setting_written_while_running_is_one_line_and_syncing_goes_on(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    a, hub = new_node(tmp_path, "alpha"), tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    git(a, "remote", "add", "hub", str(hub))
    d = daemon_factory(a).start()

    def on_hub(name: str) -> bool:
        return bool(git(hub, "ls-tree", "main", name, check=False))

    write(a / "first.txt", "1\n")
    wait_until(lambda: on_hub("first.txt"), timeout=30)

    git(a, "config", "remote.hub.annexsync-push", "perhaps")
    wait_until(lambda: lines_with(d.stderr(), "the remotes were not reloaded"), timeout=10)
    write(a / "second.txt", "2\n")  # the settings it had still hold
    wait_until(lambda: on_hub("second.txt"), timeout=30)

    [line] = lines_with(d.stderr(), "the remotes were not reloaded")
    assert "remote.hub.annexsync-push" in line and "perhaps" in line
    git(a, "config", "remote.hub.annexsync-push", "false")  # a good value is taken up
    wait_until(lambda: lines_with(d.stderr(), "remote hub changed"), timeout=10)
    write(a / "third.txt", "3\n")
    wait_until(committed(a, "third.txt", b"3\n"))
    settle(d)
    assert not on_hub("third.txt")
    assert "Traceback" not in d.stderr()

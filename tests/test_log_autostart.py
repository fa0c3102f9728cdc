"""`annexsync log` (tail and follow of the rotated daemon log) and the autostart list
(`init --autostart`, `assistant --autostart`, `assistant --stop --autostart`)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, annexsync, git, head_files, wait_until
from test_lifecycle import pid_alive, state

from assistant.autostart import autostart_file, parse_autostart, with_added
from assistant.daemon.lifecycle import running_pid
from assistant.logview import last_lines

Factory = Callable[[Path], Daemon]
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ ([a-z_.]+): ")


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    return path


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG_CONFIG_HOME for the command lines run by the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    return home / "xdg"


@pytest.fixture
def started() -> Iterator[list[int]]:
    """PIDs of detached assistants the test started; each is stopped afterwards by its PID."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for pid in pids:
        with contextlib.suppress(AssertionError):
            wait_until(lambda pid=pid: not pid_alive(pid), timeout=30)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def printed_pids(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"started \(pid (\d+)\)", text)]


# ---- the plain decisions ----


def test_autostart_file_follows_xdg_config_home() -> None:
    assert autostart_file({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path("/x/annexsync/autostart")
    assert autostart_file({"HOME": "/h"}) == Path("/h/.config/annexsync/autostart")
    # a relative XDG_CONFIG_HOME is invalid by the specification and ignored
    assert autostart_file({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/h/.config/annexsync/autostart"
    )


def test_parse_autostart_skips_comments_and_blanks_and_resolves_paths() -> None:
    text = "# mine\n\n/srv/notes\n  /srv/photos/  \n~/docs\nrel/dir\n/srv/notes\n   # indented\n"
    assert parse_autostart(text, home=Path("/home/u")) == [
        Path("/srv/notes"),
        Path("/srv/photos"),
        Path("/home/u/docs"),
        Path("/home/u/rel/dir"),
    ]


def test_with_added_is_idempotent_and_keeps_the_file_well_formed() -> None:
    first = with_added("", Path("/srv/notes"))
    assert first is not None and first.startswith("#") and first.endswith("\n/srv/notes\n")
    assert with_added(first, Path("/srv/notes")) is None
    assert with_added(first, Path("/srv/notes/")) is None
    assert with_added("/srv/a", Path("/srv/b")) == "/srv/a\n/srv/b\n"


def test_last_lines_reaches_across_files() -> None:
    assert last_lines([b"a\nb\n", b"c\nd"], 3) == [b"b\n", b"c\n", b"d\n"]
    assert last_lines([b"a\n", b""], 5) == [b"a\n"]
    assert last_lines([b"a\n"], 0) == []


# ---- annexsync log ----


def test_log_of_a_repository_whose_assistant_never_ran(repo: Path) -> None:
    for args in ((), ("-f",)):
        proc = annexsync("-C", str(repo), "log", *args, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("\n") == 1 and "no assistant has run" in proc.stdout
        assert proc.stderr == ""


def test_log_outside_a_repository_is_one_line(tmp_path: Path) -> None:
    proc = annexsync("-C", str(tmp_path), "log")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "not a git repository" in proc.stderr


def test_log_shows_the_last_lines_named_by_actor(repo: Path, daemon: Daemon) -> None:
    (repo / "hello.txt").write_text("hi\n")
    wait_until(lambda: "hello.txt" in head_files(repo))
    log = state(repo) / "daemon.log"
    wait_until(lambda: "Add hello.txt" in log.read_text())
    assert daemon.stop() == 0
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    for line in lines:
        match = LINE.match(line)
        assert match, line
        assert not match.group(1).startswith("annexsync."), line
    assert any(LINE.match(line).group(1) == "assistant" for line in lines)  # type: ignore[union-attr]

    proc = annexsync("-C", str(repo), "log", "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == lines[-2:]
    default = annexsync("-C", str(repo), "log")
    assert default.stdout.splitlines() == lines[-50:]


def test_log_n_reaches_into_rotated_files(repo: Path) -> None:
    st = state(repo)
    st.mkdir(parents=True)
    (st / "daemon.log.2").write_text("".join(f"oldest {i}\n" for i in range(3)))
    (st / "daemon.log.1").write_text("".join(f"old {i}\n" for i in range(3)))
    (st / "daemon.log").write_text("new 0\nnew 1\n")
    proc = annexsync("-C", str(repo), "log", "-n", "6")
    assert proc.stdout.splitlines() == ["oldest 2", "old 0", "old 1", "old 2", "new 0", "new 1"]
    everything = annexsync("-C", str(repo), "log", "-n", "1000")
    assert len(everything.stdout.splitlines()) == 8
    bad = annexsync("-C", str(repo), "log", "-n", "-1")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1


class Follower:
    """A running ``annexsync log -f`` whose output is collected as it comes."""

    def __init__(self, repo: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "-C", str(repo), "log", "-f", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            self.out += chunk

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def end(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_log_follow_prints_new_lines_of_a_real_assistant_and_ends_on_sigterm(
    repo: Path, daemon: Daemon
) -> None:
    follower = Follower(repo, "-n", "1")
    try:
        wait_until(lambda: follower.text().count("\n") >= 1, timeout=20)
        (repo / "followed.txt").write_text("x\n")
        wait_until(lambda: "Add followed.txt" in follower.text(), timeout=20)
        assert follower.end(signal.SIGTERM) == 0
        assert follower.proc.stderr is not None and follower.proc.stderr.read() == b""
    finally:
        follower.kill()


def test_log_follow_survives_rotation_and_ends_on_ctrl_c(repo: Path) -> None:
    st = state(repo)
    st.mkdir(parents=True)
    log = st / "daemon.log"
    log.write_text("before 0\nbefore 1\n")
    follower = Follower(repo, "-n", "1")
    try:
        wait_until(lambda: follower.text() == "before 1\n", timeout=20)
        with log.open("a") as f:
            f.write("appended\n")
        wait_until(lambda: follower.text().endswith("appended\n"))
        # rotate as RotatingFileHandler does: the last line reaches the old file, then a
        # new file takes its name
        with log.open("a") as f:
            f.write("last of the old file\n")
        log.rename(st / "daemon.log.1")
        log.write_text("first of the new file\n")
        wait_until(lambda: follower.text().endswith("first of the new file\n"))
        with log.open("a") as f:
            f.write("second of the new file\n")
        wait_until(lambda: follower.text().endswith("second of the new file\n"))
        assert follower.text() == (
            "before 1\nappended\nlast of the old file\n"
            "first of the new file\nsecond of the new file\n"
        )
        assert follower.end(signal.SIGINT) == 0
        assert follower.proc.stderr is not None and follower.proc.stderr.read() == b""
    finally:
        follower.kill()


# ---- init --autostart ----


def test_init_autostart_records_the_absolute_path_once(
    tmp_path: Path, config_home: Path, repo: Path
) -> None:
    file = config_home / "annexsync" / "autostart"
    for _ in range(2):
        proc = annexsync("-C", repo.name, "init", "--autostart", cwd=repo.parent)
        assert proc.returncode == 0, proc.stderr
    assert "already in" in proc.stdout and str(file) in proc.stdout
    entries = [line for line in file.read_text().splitlines() if not line.startswith("#")]
    assert entries == [str(repo.resolve())]
    other = make_repo(tmp_path / "other")
    assert annexsync("-C", str(other), "init", "--autostart").returncode == 0
    assert parse_autostart(file.read_text()) == [repo.resolve(), other.resolve()]


def run_init(repo: Path, stdin: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", "-C", str(repo), "init", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_never_asks_without_a_terminal(config_home: Path, repo: Path) -> None:
    proc = run_init(repo, subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "at login?" not in proc.stdout
    assert not (config_home / "annexsync" / "autostart").exists()


@pytest.mark.parametrize(("answer", "wanted"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_init_asks_on_a_terminal(config_home: Path, repo: Path, answer: str, wanted: bool) -> None:
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode())
        proc = run_init(repo, slave)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert "Start an assistant for this repository at login? [y/N]" in proc.stdout
    file = config_home / "annexsync" / "autostart"
    assert file.exists() == wanted
    if wanted:
        assert parse_autostart(file.read_text()) == [repo.resolve()]


def test_init_does_not_ask_when_told(config_home: Path, repo: Path) -> None:
    master, slave = os.openpty()
    try:
        proc = run_init(repo, slave, "--no-autostart")
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert "at login?" not in proc.stdout
    assert not (config_home / "annexsync" / "autostart").exists()


# ---- assistant --autostart ----


def test_autostart_with_no_file_says_so(config_home: Path) -> None:
    proc = annexsync("assistant", "--autostart")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and "no repository listed" in proc.stdout


def test_autostart_starts_and_stops_every_listed_assistant(
    tmp_path: Path, config_home: Path, daemon_factory: Factory, started: list[int]
) -> None:
    one = make_repo(tmp_path / "one")
    two = make_repo(tmp_path / "two")
    running = daemon_factory(make_repo(tmp_path / "running")).start()
    assert running.proc is not None
    plain = tmp_path / "plain"
    plain.mkdir()
    file = config_home / "annexsync" / "autostart"
    file.parent.mkdir(parents=True)
    file.write_text(f"# at login\n\n{one}\n{plain}\n{tmp_path / 'gone'}\n  {two}\n{running.repo}\n")

    proc = annexsync("assistant", "--autostart")
    started.extend(printed_pids(proc.stdout))
    assert proc.returncode == 1
    assert len(started) == 2, proc.stdout
    for repo, pid in zip((one, two), started, strict=True):
        assert running_pid(state(repo)) == pid and pid_alive(pid)
    out = proc.stdout.splitlines()
    assert out[:2] == [f"{one}: assistant started (pid {started[0]})",
                       f"{two}: assistant started (pid {started[1]})"]  # fmt: skip
    assert out[2] == f"{running.repo}: already running (pid {running.proc.pid})"
    err = proc.stderr.splitlines()
    assert len(err) == 2 and "Traceback" not in proc.stderr
    assert err[0].startswith(f"{plain}: error: ") and "not a git repository" in err[0]
    assert err[1].startswith(f"{tmp_path / 'gone'}: error: ")

    # the started assistants work: a save is committed
    (one / "note.txt").write_text("at login\n")
    wait_until(lambda: "note.txt" in head_files(one), timeout=20)

    stop = annexsync("assistant", "--stop", "--autostart")
    assert stop.returncode == 1 and len(stop.stderr.splitlines()) == 2
    assert f"{one}: assistant stopped (pid {started[0]})" in stop.stdout
    assert f"{two}: assistant stopped (pid {started[1]})" in stop.stdout
    assert f"{running.repo}: assistant stopped (pid {running.proc.pid})" in stop.stdout
    for pid in started:  # the lock is let go just before the process ends
        wait_until(lambda pid=pid: not pid_alive(pid))
    assert running.proc.wait(timeout=10) == 0
    again = annexsync("assistant", "--stop", "--autostart")
    assert f"{one}: not running" in again.stdout


def test_autostart_all_well_exits_zero_and_reports_those_already_running(
    tmp_path: Path, config_home: Path, started: list[int]
) -> None:
    repo = make_repo(tmp_path / "notes")
    init = annexsync("-C", str(repo), "init", "--autostart")
    assert init.returncode == 0, init.stderr
    first = annexsync("assistant", "--autostart")
    started.extend(printed_pids(first.stdout))
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{repo}: assistant started (pid {started[0]})\n"
    second = annexsync("assistant", "--autostart")
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"{repo}: already running (pid {started[0]})\n"
    assert annexsync("assistant", "--autostart", "--foreground").returncode != 0
    stop = annexsync("assistant", "--autostart", "--stop")
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: not pid_alive(started[0]))

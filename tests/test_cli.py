"""The command line: the bad-input catalogue, init, -C, status and sync without an assistant.

Every refusal is one line on stderr ("annexsync: error: ..."), a non-zero exit, no traceback,
and leaves the repository as it was. Most cases run the real command as a subprocess; the
long tables of refused values run ``main`` in-process to stay fast.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from conftest import annexsync, commit_count, git, head_files

from assistant import __version__
from assistant.cli import main
from assistant.names import default_name, name_problem

# --- helpers ----------------------------------------------------------------------------


def assert_refused(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A clean refusal: non-zero exit, one 'annexsync: error:' line, no traceback."""
    return assert_refused_output(proc.returncode, proc.stderr, *fragments)


def assert_refused_output(code: int, stderr: str, *fragments: str) -> str:
    assert code != 0, "the command must fail"
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    line = lines[0]
    assert line.startswith("annexsync: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in-process: (exit status, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def config_value(repo: Path, key: str) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(repo), "config", "--get", key], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def tree_snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``path`` with its size and mode, to prove nothing moved."""
    out: dict[str, tuple[int, int]] = {}
    for item in sorted(path.rglob("*")):
        st = item.lstat()
        out[str(item.relative_to(path))] = (st.st_size if item.is_file() else 0, st.st_mode)
    return out


READ_COMMANDS = [
    pytest.param(["status"], id="status"),
    pytest.param(["sync"], id="sync"),
    pytest.param(["init"], id="init"),
    pytest.param(["assistant", "--foreground"], id="assistant"),
]


# --- where annexsync refuses to run -----------------------------------------------------


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_outside_a_repository_every_command_refuses(tmp_path: Path, command: list[str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("x\n")
    proc = annexsync("-C", str(plain), *command, timeout=20)
    assert_refused(proc, "not a git repository", str(plain))
    assert sorted(p.name for p in plain.iterdir()) == ["file.txt"], "nothing was created"


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_bare_repository_is_refused(tmp_path: Path, command: list[str]) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    before = tree_snapshot(bare)
    proc = annexsync("-C", str(bare), *command, timeout=20)
    assert_refused(proc, "bare repository", "working tree")
    assert tree_snapshot(bare) == before, "nothing was written into the bare repository"
    assert config_value(bare, "annexsync.uuid") is None


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    proc = annexsync("-C", str(tmp_path / "nowhere"), "status")
    assert_refused(proc, "no such directory", "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_assistant_stop_outside_a_repository_is_refused(tmp_path: Path) -> None:
    assert_refused(annexsync("-C", str(tmp_path), "assistant", "--stop"), "not a git repository")


# --- an unborn branch is an ordinary place to start -------------------------------------


def test_first_commit_on_an_unborn_branch_simply_works(repo: Path) -> None:
    (repo / "notes.md").write_text("first\n")
    (repo / "img").mkdir()
    (repo / "img" / "a.png").write_bytes(b"\x89PNG")
    proc = annexsync("-C", str(repo), "sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("committed ")
    assert head_files(repo) == {"notes.md": b"first\n", "img/a.png": b"\x89PNG"}
    assert commit_count(repo) == 1
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    message = git(repo, "log", "-1", "--format=%B")
    name = config_value(repo, "annexsync.name")
    assert f"Annexsync-Node: {name}" in message
    assert git(repo, "status", "--porcelain") == "", "the index agrees with the new commit"


def test_status_on_an_unborn_branch_says_there_are_no_commits(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "status")
    assert proc.returncode == 0, proc.stderr
    assert "no commits yet" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_sync_on_an_empty_unborn_branch_commits_nothing(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nothing to commit"
    assert pygit2.Repository(str(repo)).head_is_unborn


# --- an unwritable .git ------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_mounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless a read-only bind mount works inside a private mount namespace."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("unshare and mount are needed to make .git read-only for root")
    probe = tmp_path_factory.mktemp("mountprobe")
    script = (
        f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} {probe} "
        f"&& ! touch {probe}/x 2>/dev/null"
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.strip()}")


def run_with_readonly(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line with ``path`` read-only (a bind mount in a private namespace)."""
    target = shlex.quote(str(path))
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "assistant", *args])
    script = (
        f"mount --bind {target} {target} && mount -o remount,bind,ro {target} {target} "
        f"&& exec {command}"
    )
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [["status"], ["sync"], ["init", "--name", "x"]], ids=["status", "sync", "init"]
)
def test_unwritable_git_directory_is_refused(
    private_mounts: None, repo: Path, command: list[str]
) -> None:
    (repo / "notes.md").write_text("x\n")
    proc = run_with_readonly(repo / ".git", "-C", str(repo), *command)
    assert_refused(proc, str(repo / ".git"), "read-only filesystem")
    assert config_value(repo, "annexsync.uuid") is None
    assert not (repo / ".git" / "annexsync").exists()
    assert commit_count(repo) == 0


# --- bad config values -------------------------------------------------------------------

BAD_CONFIG = [
    pytest.param({"annexsync.delay": "fast"}, "annexsync.delay", id="delay-word"),
    pytest.param({"annexsync.maxbatch": "0"}, "annexsync.maxbatch", id="maxbatch-zero"),
    pytest.param({"annexsync.largefiles": "huge"}, "annexsync.largefiles", id="largefiles-word"),
    pytest.param({"annexsync.massdelete": "lots"}, "annexsync.massdelete", id="massdelete-word"),
    pytest.param(
        {"annexsync.delay": "50ms", "annexsync.maxdelay": "10ms"},
        "annexsync.maxdelay",
        id="maxdelay-below-delay",
    ),
]


def _set_config(repo: Path, values: dict[str, str]) -> None:
    for key, value in values.items():
        git(repo, "config", key, value)


@pytest.mark.parametrize(("values", "key"), BAD_CONFIG)
def test_sync_refuses_bad_config_and_commits_nothing(
    capsys: pytest.CaptureFixture[str], repo: Path, values: dict[str, str], key: str
) -> None:
    _set_config(repo, values)
    (repo / "notes.md").write_text("x\n")
    code, out, err = run_main(capsys, "-C", str(repo), "sync")
    assert_refused_output(code, err, "bad value for", key)
    assert out == ""
    assert commit_count(repo) == 0
    assert git(repo, "ls-files") == "", "the index is untouched"


@pytest.mark.parametrize(("values", "key"), BAD_CONFIG)
def test_assistant_refuses_bad_config_before_starting(
    repo: Path, values: dict[str, str], key: str
) -> None:
    _set_config(repo, values)
    (repo / "notes.md").write_text("x\n")
    proc = annexsync("-C", str(repo), "assistant", "--foreground", timeout=20)
    assert_refused(proc, "bad value for", key)
    state = repo / ".git" / "annexsync"
    assert not (state / "assistant.pid").exists()
    assert not (state / "control.sock").exists()
    assert commit_count(repo) == 0


def test_detached_assistant_refuses_bad_config_without_spawning(repo: Path) -> None:
    git(repo, "config", "annexsync.delay", "fast")
    proc = annexsync("-C", str(repo), "assistant", timeout=20)
    assert_refused(proc, "annexsync.delay", "fast")
    assert not (repo / ".git" / "annexsync" / "assistant.pid").exists()


def test_bad_config_error_is_one_clean_line_from_the_real_command(repo: Path) -> None:
    git(repo, "config", "annexsync.maxbatch", "0")
    line = assert_refused(annexsync("-C", str(repo), "sync"), "annexsync.maxbatch", "'0'")
    assert "at least 1" in line


# --- node names ----------------------------------------------------------------------------

INVALID_NAMES = [
    pytest.param("my laptop", "only letters", id="space"),
    pytest.param("a..b", "'..'", id="double-dot"),
    pytest.param("a/b", "only letters", id="slash"),
    pytest.param("-laptop", "start with a letter or digit", id="leading-dash"),
    pytest.param("main.lock", ".lock", id="dot-lock"),
    pytest.param("$(x)", "only letters", id="command-substitution"),
    pytest.param("", "empty", id="empty"),
    pytest.param("x" * 65, "longer than", id="too-long"),
]


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES)
def test_invalid_name_is_refused_and_recorded_name_kept(
    capsys: pytest.CaptureFixture[str], repo: Path, name: str, reason: str
) -> None:
    code, _, err = run_main(capsys, "-C", str(repo), "init", "--name", "good-name")
    assert code == 0, err
    uuid = config_value(repo, "annexsync.uuid")
    code, out, err = run_main(capsys, "-C", str(repo), "init", f"--name={name}")
    line = assert_refused_output(code, err, "invalid node name", reason)
    assert repr(name) in line
    assert out == ""
    assert config_value(repo, "annexsync.name") == "good-name"
    assert config_value(repo, "annexsync.uuid") == uuid


def test_invalid_name_in_a_fresh_repository_writes_nothing(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "init", "--name", "bad name")
    assert_refused(proc, "invalid node name", "'bad name'")
    assert config_value(repo, "annexsync.uuid") is None
    assert config_value(repo, "annexsync.name") is None
    assert not (repo / ".git" / "annexsync").exists()


def test_name_with_a_leading_dash_after_the_option_is_refused(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "init", "--name=-rf")
    assert_refused(proc, "invalid node name", "'-rf'")
    assert config_value(repo, "annexsync.name") is None


def test_invalid_name_recorded_by_hand_is_reported_by_every_command(repo: Path) -> None:
    git(repo, "config", "annexsync.name", "bad name")
    proc = annexsync("-C", str(repo), "status")
    assert_refused(proc, "invalid node name", "'bad name'")
    fixed = annexsync("-C", str(repo), "init", "--name", "good")
    assert fixed.returncode == 0, fixed.stderr
    assert config_value(repo, "annexsync.name") == "good"


# --- init ------------------------------------------------------------------------------


def test_init_records_uuid_name_and_private_state_directory(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "init")
    assert proc.returncode == 0, proc.stderr
    uuid = config_value(repo, "annexsync.uuid")
    name = config_value(repo, "annexsync.name")
    assert uuid and len(uuid) == 36
    assert name and name_problem(name) is None
    assert uuid in proc.stdout and name in proc.stdout and str(repo) in proc.stdout
    state = repo / ".git" / "annexsync"
    assert state.is_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_init_is_idempotent(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    first = run_main(capsys, "-C", str(repo), "init")
    uuid, name = config_value(repo, "annexsync.uuid"), config_value(repo, "annexsync.name")
    second = run_main(capsys, "-C", str(repo), "init")
    assert first[0] == second[0] == 0
    assert first[1] == second[1], "the same node is reported twice"
    assert config_value(repo, "annexsync.uuid") == uuid
    assert config_value(repo, "annexsync.name") == name
    assert git(repo, "config", "--get-all", "annexsync.uuid").count("\n") == 1


def test_default_name_is_readable_and_names_the_repository(tmp_path: Path) -> None:
    path = tmp_path / "My Notes"
    path.mkdir()
    git(path, "init", "-q")
    proc = annexsync("-C", str(path), "init")
    assert proc.returncode == 0, proc.stderr
    name = config_value(path, "annexsync.name")
    assert name == default_name(socket.gethostname(), "My Notes")
    assert "My-Notes" in name
    assert name_problem(name) is None


def test_explicit_name_replaces_the_recorded_one_and_keeps_the_uuid(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    run_main(capsys, "-C", str(repo), "init")
    uuid = config_value(repo, "annexsync.uuid")
    code, out, _ = run_main(capsys, "-C", str(repo), "init", "--name", "desk")
    assert code == 0
    assert "desk" in out
    assert config_value(repo, "annexsync.name") == "desk"
    run_main(capsys, "-C", str(repo), "init")
    assert config_value(repo, "annexsync.name") == "desk", "a plain init keeps the name"
    assert config_value(repo, "annexsync.uuid") == uuid


def test_other_commands_initialise_a_repository_implicitly(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "status")
    assert proc.returncode == 0, proc.stderr
    uuid = config_value(repo, "annexsync.uuid")
    assert uuid is not None
    assert config_value(repo, "annexsync.name") is not None
    assert (repo / ".git" / "annexsync").is_dir()
    assert uuid in proc.stdout


# --- -C ----------------------------------------------------------------------------------


def _node_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[0]


def test_dash_c_is_relative_and_repeatable_like_git(tmp_path: Path) -> None:
    repo = tmp_path / "a" / "b" / "notes"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    expected = _node_line(annexsync("-C", str(repo), "status"))
    assert _node_line(annexsync("-C", "a", "-C", "b", "-C", "notes", "status", cwd=tmp_path)) == (
        expected
    )
    assert _node_line(annexsync("-C", "a/b", "-C", "", "-C", "notes", "status", cwd=tmp_path)) == (
        expected
    )
    assert _node_line(annexsync("-C", "/nonexistent", "-C", str(repo), "status")) == expected


def test_dash_c_into_a_subdirectory_finds_the_repository(repo: Path) -> None:
    (repo / "docs" / "deep").mkdir(parents=True)
    (repo / "docs" / "deep" / "x.md").write_text("x\n")
    proc = annexsync("-C", "docs/deep", "sync", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert head_files(repo) == {"docs/deep/x.md": b"x\n"}


def test_dash_c_after_the_command_continues_from_the_earlier_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = tmp_path / "outer" / "notes"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    code, out, err = run_main(capsys, "-C", str(tmp_path / "outer"), "status", "-C", "notes")
    assert code == 0, err
    assert config_value(repo, "annexsync.uuid") in out
    code, out, err = run_main(capsys, "status", "-C", str(repo), "--json")
    assert code == 0, err
    assert json.loads(out)["root"] == str(repo)


# --- status and sync without an assistant -------------------------------------------------


def test_status_without_an_assistant_says_so_and_lists_uncommitted_paths(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "b.txt").write_text("b\n")
    proc = annexsync("-C", str(repo), "status")
    assert proc.returncode == 0, proc.stderr
    assert "not running" in proc.stdout
    assert "uncommitted: 2 paths" in proc.stdout
    listed = [line.strip() for line in proc.stdout.splitlines()]
    assert "a.txt" in listed
    assert "sub/b.txt" in listed


def test_status_json_is_machine_readable(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    (repo / "b.txt").write_text("b\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "user commit")
    (repo / "a.txt").write_text("changed\n")
    code, out, err = run_main(capsys, "-C", str(repo), "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["running"] is False
    assert status["pending"] == ["a.txt", "b.txt"]
    assert status["pending_count"] == 2
    assert status["uuid"] == config_value(repo, "annexsync.uuid")
    assert status["node"] == config_value(repo, "annexsync.name")
    assert status["root"] == str(repo)
    assert status["held"] == []
    assert status["paused"] is None


def test_sync_with_nothing_to_commit_says_so(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "user commit")
    proc = annexsync("-C", str(repo), "sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nothing to commit"
    assert commit_count(repo) == 1


def test_sync_commits_then_has_nothing_more_to_commit(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    (repo / "a.txt").write_text("a\n")
    code, out, err = run_main(capsys, "-C", str(repo), "sync", "--json")
    assert code == 0, err
    reply = json.loads(out)
    assert reply["ok"] is True
    assert reply["summary"] == "Add a.txt"
    assert git(repo, "rev-parse", "HEAD").strip() == reply["commit"]
    code, out, err = run_main(capsys, "-C", str(repo), "sync")
    assert (code, out.strip()) == (0, "nothing to commit"), err


def test_assistant_stop_with_none_running_fails_clearly(repo: Path) -> None:
    proc = annexsync("-C", str(repo), "assistant", "--stop")
    assert_refused(proc, "no assistant is running")
    assert proc.stdout == ""


def test_version_prints_the_package_version() -> None:
    proc = annexsync("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"annexsync {__version__}"


def test_missing_command_is_a_usage_error_not_a_traceback() -> None:
    proc = annexsync()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "annexsync: error:" in proc.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "annexsync"
    if not script.exists():
        pytest.skip("the annexsync console script is not installed next to this python")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == f"annexsync {__version__}"


def test_bad_config_in_a_new_repository_is_refused_before_anything_is_written(repo: Path) -> None:
    git(repo, "config", "annexsync.delay", "fast")
    assert_refused(annexsync("-C", str(repo), "sync"), "annexsync.delay")
    assert git(repo, "config", "--get", "annexsync.uuid", check=False) == ""
    assert not (repo / ".git" / "annexsync").exists()

"""A first end-to-end check: a write under a running assistant becomes a commit."""

from pathlib import Path

from conftest import Daemon, head_files, wait_until


def test_written_file_is_committed_by_running_assistant(repo: Path, daemon: Daemon) -> None:
    (repo / "note.md").write_text("hello\n")
    wait_until(lambda: head_files(repo).get("note.md") == b"hello\n")

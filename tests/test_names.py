"""Node names: what is accepted as a single ref component, and how defaults are made valid."""

import subprocess

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from assistant.names import MAX_NAME_LENGTH, default_name, name_problem, sanitize_name


@pytest.mark.parametrize(
    "name",
    ["laptop", "a", "7", "work-laptop", "host_2.notes", "A-b_C.d-9", "x" * MAX_NAME_LENGTH],
    ids=["word", "one-letter", "one-digit", "dash", "dot-underscore", "mixed", "max-length"],
)
def test_valid_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_NAME_LENGTH + 1), "longer than"),
        ("my laptop", "only letters"),
        ("a/b", "only letters"),
        ("-laptop", "start with a letter or digit"),
        (".hidden", "start with a letter or digit"),
        ("_x", "start with a letter or digit"),
        ("a..b", "'..'"),
        ("main.lock", ".lock"),
        ("trailing.", "ends with"),
        ("$(x)", "only letters"),
        ("a;rm", "only letters"),
        ("a`b`", "only letters"),
        ("a@{1}", "only letters"),
        ("a~1", "only letters"),
        ("a^", "only letters"),
        ("a:b", "only letters"),
        ("a?b", "only letters"),
        ("a*", "only letters"),
        ("a[b", "only letters"),
        ("a\\b", "only letters"),
        ("tab\there", "only letters"),
        ("new\nline", "only letters"),
        ("caf\u00e9", "only letters"),
    ],
    ids=[
        "empty",
        "too-long",
        "space",
        "slash",
        "leading-dash",
        "leading-dot",
        "leading-underscore",
        "double-dot",
        "dot-lock",
        "trailing-dot",
        "command-substitution",
        "semicolon",
        "backticks",
        "reflog-syntax",
        "tilde",
        "caret",
        "colon",
        "question-mark",
        "star",
        "bracket",
        "backslash",
        "tab",
        "newline",
        "non-ascii",
    ],
)
def test_invalid_names_are_refused_with_a_reason(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("laptop", "laptop"),
        ("my laptop", "my-laptop"),
        ("a  /  b", "a-b"),
        ("..hidden..", "hidden"),
        ("a...b", "a.b"),
        ("--x--", "x"),
        ("main.lock", "main"),
        ("a.lock.lock", "a"),
        ("$(rm -rf /)", "rm--rf"),
        ("caf\u00e9 notes", "caf-notes"),
        ("", "node"),
        ("...", "node"),
        (".lock", "lock"),
        ("\u65e5\u672c", "node"),
    ],
    ids=[
        "already-valid",
        "space",
        "slash-and-spaces",
        "dots-around",
        "dot-run",
        "dashes-around",
        "lock-suffix",
        "repeated-lock-suffix",
        "shell-syntax",
        "non-ascii",
        "empty",
        "only-dots",
        "only-lock",
        "only-non-ascii",
    ],
)
def test_sanitize_name_turns_text_into_a_readable_valid_name(raw: str, expected: str) -> None:
    assert sanitize_name(raw) == expected


def test_sanitize_name_keeps_a_long_name_valid_when_cut_at_a_lock_suffix() -> None:
    raw = "a" * (MAX_NAME_LENGTH - 5) + ".lock" + "tail"
    name = sanitize_name(raw)
    assert name_problem(name) is None


@given(st.text())
def test_sanitize_name_always_yields_an_accepted_name(raw: str) -> None:
    assert name_problem(sanitize_name(raw)) is None


@given(st.text(alphabet="abc.-_/ lock", max_size=80))
def test_sanitize_name_yields_an_accepted_name_from_ref_like_text(raw: str) -> None:
    assert name_problem(sanitize_name(raw)) is None


@given(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,40}[A-Za-z0-9])?", fullmatch=True))
def test_sanitize_name_leaves_a_valid_name_unchanged(name: str) -> None:
    assert name_problem(name) is None
    assert sanitize_name(name) == name


@settings(max_examples=50)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
def test_every_accepted_name_is_a_valid_git_ref_component(name: str) -> None:
    assume(name_problem(name) is None)
    proc = subprocess.run(
        ["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True, check=False
    )
    assert proc.returncode == 0, name


@pytest.mark.parametrize(
    ("hostname", "repo_dir", "expected"),
    [
        ("laptop", "notes", "laptop-notes"),
        ("laptop.example.com", "notes", "laptop-notes"),
        ("laptop", "my notes", "laptop-my-notes"),
        ("laptop", ".dotfiles", "laptop-.dotfiles"),
        ("", "notes", "notes"),
        ("laptop", "", "laptop"),
        ("laptop", "x" * 100, ("laptop-" + "x" * 100)[:MAX_NAME_LENGTH]),
    ],
    ids=["plain", "fqdn", "space-in-dir", "dot-dir", "no-host", "no-dir", "long-dir"],
)
def test_default_name_is_short_host_plus_repo_directory(
    hostname: str, repo_dir: str, expected: str
) -> None:
    name = default_name(hostname, repo_dir)
    assert name == expected
    assert name_problem(name) is None


@given(st.text(max_size=80), st.text(max_size=80))
def test_default_name_is_always_accepted(hostname: str, repo_dir: str) -> None:
    assert name_problem(default_name(hostname, repo_dir)) is None

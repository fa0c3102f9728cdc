"""Pure rules for node names: each must be usable as one component of a git ref name."""

import re

_ALLOWED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 64


def name_problem(name: str) -> str | None:
    """Return why ``name`` is not a valid node name, or None when it is."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if not _ALLOWED.match(name):
        return (
            "it must start with a letter or digit and contain only letters, digits, "
            "'.', '_' and '-'"
        )
    if ".." in name:
        return "it contains '..'"
    if name.endswith(".lock") or name.endswith("."):
        return "it ends with '.lock' or '.'"
    return None


def sanitize_name(raw: str) -> str:
    """Turn arbitrary text into a valid node name (used for the default name)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    name = re.sub(r"\.{2,}", ".", name)
    name = name.strip(".-_")
    name = name[:MAX_NAME_LENGTH].rstrip(".-_")
    while name.endswith(".lock"):
        name = name[: -len(".lock")].rstrip(".-_")
    return name or "node"


def default_name(hostname: str, repo_dir: str) -> str:
    """A readable default node name: the short host name plus the repository's directory."""
    short_host = hostname.split(".", 1)[0]
    return sanitize_name(f"{short_host}-{repo_dir}")


def remote_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a peer's remote name, or None. The same rule as node names: one
    ref component, so ``refs/remotes/<remote>/`` can never reach into another remote's or a
    node's refs (a remote ``a/synced`` would pass its branches off as node ``a``'s pushes)."""
    return name_problem(name)


# What git's check-ref-format refuses anywhere in a ref name, and what a shell would read as
# syntax: a branch name from a peer carrying either is never written here.
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")
_SHELL_SYNTAX = frozenset("$`;|&<>()'\"!{}#")


def branch_name_problem(branch: str) -> str | None:
    """Why a peer's branch name (the part after ``refs/heads/``) is refused here, or None:
    what ``git check-ref-format --branch`` refuses, ``HEAD``, and shell syntax."""
    if not branch:
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in branch):
        return "it contains a control character"
    if any(c in _REF_FORBIDDEN for c in branch):
        return "it contains a space or one of ~^:?*[\\"
    if any(c in _SHELL_SYNTAX for c in branch):
        return "it contains shell syntax"
    if ".." in branch:
        return "it contains '..'"
    parts = branch.split("/")
    if any(not part for part in parts):
        return "it has an empty path component"
    if any(part.startswith(".") or part.endswith(".lock") for part in parts):
        return "a component starts with '.' or ends with '.lock'"
    if branch.endswith(".") or branch.startswith("-"):
        return "it ends with '.' or starts with '-'"
    if branch in ("HEAD", "@"):
        return f"{branch!r} is not a branch"
    return None

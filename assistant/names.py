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

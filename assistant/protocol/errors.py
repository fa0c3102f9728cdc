"""Turn a failed git service's exit status and stderr into one clear sentence."""

from __future__ import annotations

from assistant.transport.base import ServiceExit

_NO_REPO = ("does not appear to be a git repository", "not a git repository")
_NO_GIT = ("command not found", "not found", "No such file or directory")


def explain_service_failure(service: str, path: str, where: str, exit: ServiceExit) -> str:
    """Why ``service`` on ``path`` at ``where`` failed, from what it printed."""
    text = exit.stderr.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lowered = text.lower()
    if "no space left on device" in lowered or "disk quota exceeded" in lowered:
        return f"the disk is full on {where} (while writing to {path})"
    if any(marker in text for marker in _NO_REPO):
        return f"{path} on {where} is not a git repository (or does not exist)"
    if exit.status == 127 or (service in text and any(m in text for m in _NO_GIT)):
        return (
            f"git is not installed on {where}, or {service} is not in the PATH of a "
            "non-interactive login there"
        )
    if "unable to create temporary object directory" in lowered:
        # receive-pack's quarantine directory: the repository is not writable for this user
        return (
            f"permission denied on {where}: {path} is not writable for this user "
            "(git could not create a temporary object directory in it)"
        )
    if "permission denied" in lowered or "insufficient permission" in lowered:
        detail = next((ln for ln in lines if "ermission" in ln), lines[-1] if lines else "")
        return f"permission denied on {where}: {_clean(detail)}"
    if lines:
        return f"{service} failed on {where}: {_clean(lines[-1])}"
    return f"{service} on {where} exited with status {exit.status} and no message"


def _clean(line: str) -> str:
    for prefix in ("fatal: ", "error: ", "remote: "):
        line = line.removeprefix(prefix)
    return line

"""Reads the nodes' repositories into plain data: working trees, head trees, the final
history. Runs inside the cluster's mount namespace (libgit2 cannot open a repository through
``/proc/<pid>/root``): ``RepoReader`` starts ``python -m soak.repostate`` there and asks it
questions as JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pygit2

Tree = dict[str, str]
TREE_MODE = 0o040000
BRANCH = "refs/heads/main"


def scratch(name: str) -> bool:
    """Files that are never committed: our editors' temporary files and the checkout's."""
    return name.endswith("~") or name.startswith(".annexsync-tmp-")


def worktree(root: Path) -> Tree:
    """Every file of a working tree (outside .git, scratch files left out): path -> blob."""
    out: Tree = {}
    for directory, dirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d != ".git"]
            rel = ""
        for name in files:
            if scratch(name):
                continue
            path = os.path.join(directory, name)
            try:
                data = Path(path).read_bytes()
            except OSError:
                continue
            out[f"{rel}/{name}" if rel else name] = str(pygit2.hash(data))
    return out


def tree_entries(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> Tree:
    out: Tree = {}
    stack = [(prefix, tree)]
    while stack:
        base, current = stack.pop()
        for entry in current:
            if entry.filemode == TREE_MODE:
                stack.append((f"{base}{entry.name}/", repo[entry.id]))
            else:
                out[f"{base}{entry.name}"] = str(entry.id)
    return out


def _open(path: str) -> pygit2.Repository:
    return pygit2.Repository(path)


def state(repos: dict[str, str]) -> dict[str, Any]:
    """Per node: its head, its commit count, and how its working tree differs from it."""
    out: dict[str, Any] = {}
    for node, path in repos.items():
        repo = _open(path)
        if repo.head_is_unborn:
            out[node] = {"head": "", "count": 0, "differs": ["(unborn)"]}
            continue
        commit = repo.head.peel(pygit2.Commit)
        committed = tree_entries(repo, commit.tree)
        disk = worktree(Path(path))
        differs = sorted(
            p for p in committed.keys() | disk.keys() if committed.get(p) != disk.get(p)
        )
        count = sum(1 for _ in repo.walk(commit.id, pygit2.enums.SortMode.NONE))
        out[node] = {"head": str(commit.id), "count": count, "differs": differs[:10]}
    return out


def marker_lines(data: bytes) -> bytes:
    """The lines of ``data`` that begin with ``<`` or ``>``: all a conflict-marker scan needs."""
    return b"\n".join(line for line in data.split(b"\n") if line[:1] in (b"<", b">"))


def history(path: str, reflogs: dict[str, str]) -> dict[str, Any]:
    """The history of ``path``'s head as plain data (see records.History), and each node's
    branch reflog: (old, new) pairs, oldest first, and where the branch is now."""
    repo = _open(path)
    head = repo.head.peel(pygit2.Commit)
    commits: dict[str, Any] = {}
    for commit in repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL):
        parents = [str(p) for p in commit.parent_ids]
        if not commit.parents:
            new = set(tree_entries(repo, commit.tree).items())
        else:
            new = None
            for parent in commit.parents:
                diff = repo.diff(parent.tree, commit.tree)
                added = {
                    (d.new_file.path, str(d.new_file.id))
                    for d in diff.deltas
                    if d.status != pygit2.enums.DeltaStatus.DELETED
                }
                new = added if new is None else new & added
        commits[str(commit.id)] = {
            "parents": parents,
            "new": sorted(new or ()),
            "merge": len(parents) > 1,
        }
    tree = tree_entries(repo, head.tree)
    scan = set(tree.values())
    for info in commits.values():
        if info["merge"]:
            scan |= {blob for _path, blob in info["new"]}
    contents = {blob: marker_lines(repo[blob].data).decode("latin-1") for blob in scan}
    branch_logs: dict[str, Any] = {}
    for node, other in reflogs.items():
        r = _open(other)
        try:
            entries = [(str(e.oid_old), str(e.oid_new)) for e in r.references[BRANCH].log()]
        except (KeyError, pygit2.GitError):
            entries = []
        current = "" if r.head_is_unborn else str(r.head.target)
        branch_logs[node] = {"entries": entries[::-1], "current": current}  # oldest first
    return {"head": str(head.id), "commits": commits, "tree": tree, "reflogs": branch_logs,
            "contents": contents}  # fmt: skip


def serve() -> None:
    """Answer one JSON request per line on stdin with one JSON line on stdout."""
    handlers = {
        "state": lambda r: state(r["repos"]),
        "history": lambda r: history(r["path"], r["reflogs"]),
    }
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": handlers[request["cmd"]](request)}
        except Exception as exc:  # the asking side reports it with the request
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class RepoReader:
    """The reader process inside the mount namespace, and the questions we ask it."""

    def __init__(self, command: list[str], tests_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir), str(tests_dir.parent)])}
        self.proc = subprocess.Popen(
            [*command, sys.executable, "-m", "soak.repostate"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, **request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the repository reader exited ({self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{request['cmd']}: {reply['error']}")
        return reply["ok"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    serve()

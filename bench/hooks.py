"""Wall time of annexsync's git hooks, and what they add to the git commands that run them.

Each hook is run as git runs it (its path, its arguments, its input, from the top of the
working tree, or with GIT_DIR=. in a bare hub) and timed from spawn to exit, in every case
that matters: no assistant, a running assistant, a chained user hook, a stale socket, an
assistant that accepts the request but never answers, and the post-receive record in a hub.
Floors for comparison: sh, a bare interpreter, and an interpreter importing the package.
Then whole git commands with and without the hooks: `git commit`, and `git push` to a hub.

    python bench/hooks.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _common as c

from assistant.daemon.control import socket_path

ZERO = "0" * 40


@dataclass
class Case:
    """One timed row: ``run`` is timed, ``setup`` (untimed) runs before each call."""

    label: str
    run: Callable[[], object]
    setup: Callable[[], object] = lambda: None
    samples: list[float] = field(default_factory=list)


def measure(cases: list[Case], runs: int, warmup: int = 3) -> None:
    """Time every case ``runs`` times, round-robin, so the machine's swings in speed (large
    on a shared VM) fall on all cases alike; the first ``warmup`` rounds are not kept."""
    for round_ in range(warmup + runs):
        for case in cases:
            case.setup()
            started = time.perf_counter()
            case.run()
            if round_ >= warmup:
                case.samples.append(time.perf_counter() - started)


def row(case: Case) -> list[object]:
    samples = case.samples
    return [
        case.label,
        c.ms(c.percentile(samples, 50)),
        c.ms(c.percentile(samples, 90)),
        c.ms(max(samples)),
        len(samples),
    ]


def hook_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or "CONFIG" in k}


def run_hook(
    repo: Path, name: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> Callable[[], None]:
    """A call that runs one installed hook the way git does and checks it exited 0."""
    hook = repo / ".git" / "hooks" / name if (repo / ".git").is_dir() else repo / "hooks" / name

    def call() -> None:
        proc = subprocess.run(
            [str(hook), *args],
            cwd=repo,
            input=stdin,
            env=env or hook_env(),
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0 or proc.stderr:
            raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr!r}")

    return call


def command(*argv: str, cwd: Path | None = None) -> Callable[[], None]:
    def call() -> None:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)

    return call


@contextlib.contextmanager
def silent_listener(path: Path) -> Iterator[None]:
    """A unix socket that takes connections into its backlog and never answers: an assistant
    whose loop is stuck."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen(1024)
        yield
    finally:
        server.close()
        path.unlink(missing_ok=True)


def wait_background_syncs(state: Path, timeout: float = 120.0) -> None:
    """Until no background sync is wanted or running (its lock is free)."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (state / "hooksync.pending").exists():
            fd = os.open(state / "hooksync.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.05)
    raise RuntimeError("background syncs still running")


def annexsync(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "assistant", *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 runs per row")
    parser.add_argument("--runs", type=int, default=50, help="runs per row (default 50)")
    args = parser.parse_args()
    runs = 10 if args.quick else args.runs
    c.setup_environment()
    print(c.code_note())
    print(c.machine_note())
    with c.temp_dir("hooks") as tmp:
        logs = {name: tmp / f"logs-{name}" for name in ("live", "chained")}
        for directory in logs.values():
            directory.mkdir()
        hub, hooked_hub = tmp / "hub.git", tmp / "hooked-hub.git"
        for bare in (hub, hooked_hub):
            c.git(tmp, "init", "-q", "--bare", str(bare))
        annexsync("-C", str(hooked_hub), "hooks", "install")
        # One repository per situation, so the cases can be interleaved.
        plain, idle, stale, stuck, live, chained, syncing = (
            make_node(tmp / name, hooks=name != "plain")
            for name in ("plain", "idle", "stale", "stuck", "live", "chained", "syncing")
        )
        for node in (plain, idle):
            for bare in (hub, hooked_hub):
                push(node, bare)()
        head = c.git(idle, "rev-parse", "HEAD").strip()
        receive = f"{ZERO} {head} refs/heads/bench\n".encode()
        bare_env = {**hook_env(), "GIT_DIR": "."}
        user = chained / ".git" / "hooks" / "post-commit.annexsync-orig"
        user.write_text("#!/bin/sh\nexit 0\n")
        user.chmod(0o755)
        py = sys.executable

        cases = [
            Case("floor: sh -c :", command("sh", "-c", ":")),
            Case("floor: python -I -S -c pass", command(py, "-I", "-S", "-c", "pass")),
            Case(
                "floor: python importing assistant.daemon.control",
                command(py, "-c", "import assistant.daemon.control"),
            ),
            Case("post-commit, no assistant", run_hook(idle, "post-commit")),
            Case("post-checkout, no assistant", run_hook(idle, "post-checkout", head, head, "1")),
            Case("post-commit, stale socket file", run_hook(stale, "post-commit")),
            Case("post-commit, assistant never answers", run_hook(stuck, "post-commit")),
            Case(
                "post-receive in a hub (records 1 update)",
                run_hook(hooked_hub, "post-receive", stdin=receive, env=bare_env),
            ),
            Case("post-commit, assistant running", run_hook(live, "post-commit")),
            Case("post-merge, assistant running", run_hook(live, "post-merge", "0")),
            Case(
                "post-checkout, assistant running", run_hook(live, "post-checkout", head, head, "1")
            ),
            Case(
                "post-commit + a user hook (sh), assistant running",
                run_hook(chained, "post-commit"),
            ),
            Case("git commit --allow-empty, no hooks", git_commit(plain)),
            Case("git commit --allow-empty, hooks, no assistant", git_commit(idle)),
            Case("git commit --allow-empty, hooks, assistant running", git_commit(live)),
            Case("git push of 1 commit to a hub, no hook", push(plain, hub), new_commit(plain)),
            Case(
                "git push of 1 commit to a hub whose post-receive records it",
                push(idle, hooked_hub),
                new_commit(idle),
            ),
        ]
        stale_file(socket_path(stale / ".git" / "annexsync"))
        with (
            silent_listener(socket_path(stuck / ".git" / "annexsync")),
            c.Daemon(live, logs["live"]),
            c.Daemon(chained, logs["chained"]),
        ):
            measure(cases, runs)

        # The background sync runs after the hook returns, and competes for the CPU with
        # whatever is timed next: measured on its own, waiting for each sync to finish.
        c.git(syncing, "config", "annexsync.hooksync", "true")
        c.git(syncing, "remote", "add", "hub", str(tmp / "sync-hub.git"))
        c.git(tmp, "init", "-q", "--bare", str(tmp / "sync-hub.git"))
        state = syncing / ".git" / "annexsync"
        sync_case = Case(
            "post-commit, no assistant, hooksync on (returns)",
            run_hook(syncing, "post-commit"),
            setup=lambda: wait_background_syncs(state),
        )
        measure([sync_case], min(runs, 10), warmup=1)
        wait_background_syncs(state)
        cases.append(sync_case)
    print()
    print(c.table(["case", "p50 ms", "p90 ms", "max ms", "runs"], [row(case) for case in cases]))
    print()
    print(c.machine_note())


def make_node(path: Path, hooks: bool) -> Path:
    """A 20-file annexsync repository, with the hooks installed or not."""
    c.make_small_repo(path, 20)
    annexsync("-C", str(path), "init", "--name", path.name)
    if hooks:
        annexsync("-C", str(path), "hooks", "install")
    return path


def git_commit(repo: Path) -> Callable[[], None]:
    return command("git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "bench")


def push(repo: Path, hub: Path) -> Callable[[], None]:
    """Push ``repo``'s branch to a branch named after it in ``hub``."""
    return command("git", "-C", str(repo), "push", "-q", str(hub), f"HEAD:refs/heads/{repo.name}")


def new_commit(repo: Path) -> Callable[[], None]:
    """Make a commit with plumbing (no hook runs), for the next push to send."""

    def make() -> None:
        tree = c.git(repo, "rev-parse", "HEAD^{tree}").strip()
        sha = c.git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "bench").strip()
        c.git(repo, "update-ref", "HEAD", sha)

    return make


def stale_file(path: Path) -> None:
    """The socket file an assistant that died leaves behind: connecting is refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


if __name__ == "__main__":
    main()

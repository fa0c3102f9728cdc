"""Push and fetch of a one-file commit: annexsync over its cached SSH connection, against
`git push`/`git fetch` over a fresh ssh connection, over OpenSSH ControlMaster, and over a
local file:// path. A real OpenSSH sshd on 127.0.0.1 serves the far side.

    python bench/push_fetch.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import code_note, machine_note, ms, percentile, setup_environment, table, temp_dir
from sshd import Keys, SSHServer, sshd_unavailable

from assistant.protocol.fetch import fetch
from assistant.protocol.push import RefUpdate, push
from assistant.remotes import SSHLocation
from assistant.transport.ssh import SSHPool, SSHTransport

BRANCH = "refs/heads/main"


def commit_one_file(repo: pygit2.Repository, n: int) -> str:
    """A new commit on main changing one small file (no working tree involved)."""
    parent = repo.head.peel(pygit2.Commit) if not repo.head_is_unborn else None
    builder = repo.TreeBuilder(parent.tree) if parent else repo.TreeBuilder()
    builder.insert("note.txt", repo.create_blob(f"edit {n}\n".encode()), pygit2.GIT_FILEMODE_BLOB)
    sig = pygit2.Signature("Bench", "bench@example.com")
    oid = repo.create_commit(
        BRANCH, sig, sig, f"edit {n}", builder.write(), [parent.id] if parent else []
    )
    return str(oid)


def client_home(root: Path, server: SSHServer, keys: Keys) -> Path:
    """A HOME with .ssh/config naming the server 'peer' and a known_hosts holding its key."""
    home = root / "client-home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "known_hosts").write_text(server.known_hosts_line())
    (ssh / "config").write_text(
        "Host peer\n"
        "  HostName 127.0.0.1\n"
        f"  Port {server.port}\n"
        "  User root\n"
        f"  IdentityFile {keys.client_key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
    )
    return home


def git(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.decode().strip()}")


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def bench_cached(
    repo: pygit2.Repository,
    peer_path: str,
    runs: int,
    fetch_repo: pygit2.Repository,
    peer_repo: pygit2.Repository,
) -> tuple[list[float], list[float], int]:
    """Push and fetch over one pooled asyncssh connection (opened by a warm-up operation)."""
    pool = SSHPool()
    transport = SSHTransport(pool, SSHLocation("peer", peer_path))
    pushes, fetches = [], []
    try:
        for n in range(runs + 1):
            new = commit_one_file(repo, 10_000 + n)
            start = time.perf_counter()
            channel = await transport.open("git-receive-pack", peer_path)
            update = RefUpdate("refs/heads/push-cached", new, True)
            result = await push(channel, repo, [update], "peer", peer_path)
            elapsed = time.perf_counter() - start
            assert result.ok and result.refs[0].status == "ok", result
            if n:
                pushes.append(elapsed)
        for n in range(runs + 1):
            commit_one_file(peer_repo, 20_000 + n)
            start = time.perf_counter()
            channel = await transport.open("git-upload-pack", peer_path)
            got = await fetch(
                channel,
                fetch_repo,
                lambda ref: "refs/remotes/peer/main" if ref == BRANCH else None,
                "peer",
                peer_path,
            )
            elapsed = time.perf_counter() - start
            assert got.updated, got
            if n:
                fetches.append(elapsed)
        return pushes, fetches, pool.open_connections()
    finally:
        await pool.close()


def bench_git(
    repo_dir: Path,
    fetch_dir: Path,
    peer_repo: pygit2.Repository,
    url: str,
    env: dict[str, str],
    runs: int,
    label: int,
) -> tuple[list[float], list[float]]:
    """git push / git fetch of one new commit each, ``runs`` times after a warm-up."""
    repo = pygit2.Repository(str(repo_dir))
    pushes, fetches = [], []
    for n in range(runs + 1):
        commit_one_file(repo, label + n)
        t = timed(lambda: git("push", "-q", url, f"main:push-{label}", env=env, cwd=repo_dir))
        if n:
            pushes.append(t)
    for n in range(runs + 1):
        commit_one_file(peer_repo, label + 5000 + n)
        t = timed(
            lambda: git("fetch", "-q", url, "main:refs/remotes/peer/main", env=env, cwd=fetch_dir)
        )
        if n:
            fetches.append(t)
    return pushes, fetches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 runs instead of 50")
    parser.add_argument("--runs", type=int, help="operations per method (default 50)")
    args = parser.parse_args()
    runs = args.runs or (10 if args.quick else 50)
    reason = sshd_unavailable()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    setup_environment()
    print(code_note())
    print(machine_note())
    with temp_dir("annexsync-bench-push-") as root:
        keys = Keys.create(root / "keys")
        server = SSHServer(root / "server", keys).start()
        try:
            home = client_home(root, server, keys)
            os.environ["HOME"] = str(home)  # asyncssh follows $HOME
            ssh_config = home / ".ssh" / "config"
            peer = server.home / "peer.git"
            git("init", "-q", "--bare", str(peer))
            peer_repo = pygit2.Repository(str(peer))
            source = root / "source"
            git("init", "-q", str(source))
            repo = pygit2.Repository(str(source))
            commit_one_file(repo, 0)
            git("push", "-q", str(peer), "main:main", cwd=source)
            fetch_dir = root / "fetcher"
            git("clone", "-q", str(peer), str(fetch_dir))
            fetch_repo = pygit2.Repository(str(fetch_dir))

            results: dict[str, tuple[list[float], list[float]]] = {}
            cached_push, cached_fetch, connections = asyncio.run(
                bench_cached(repo, str(peer), runs, fetch_repo, peer_repo)
            )
            results["annexsync, cached connection"] = (cached_push, cached_fetch)
            base_env = dict(os.environ)
            fresh = {**base_env, "GIT_SSH_COMMAND": f"ssh -F {ssh_config}"}
            results["git, fresh ssh connection"] = bench_git(
                source, fetch_dir, peer_repo, f"peer:{peer}", fresh, runs, 30_000
            )
            control_dir = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))  # sun_path is short
            control = control_dir / "%C"
            master = {
                **base_env,
                "GIT_SSH_COMMAND": f"ssh -F {ssh_config} -o ControlMaster=auto "
                f"-o ControlPath={control} -o ControlPersist=120",
            }
            results["git, OpenSSH ControlMaster"] = bench_git(
                source, fetch_dir, peer_repo, f"peer:{peer}", master, runs, 40_000
            )
            subprocess.run(
                [
                    "ssh",
                    "-F",
                    str(ssh_config),
                    "-o",
                    f"ControlPath={control}",
                    "-O",
                    "exit",
                    "peer",
                ],
                capture_output=True,
                check=False,
            )
            results["git, local file://"] = bench_git(
                source, fetch_dir, peer_repo, f"file://{peer}", base_env, runs, 50_000
            )
            logins = server.accepted()
        finally:
            server.stop()
    rows = []
    for name, (pushes, fetches) in results.items():
        rows.append(
            [
                name,
                ms(percentile(pushes, 50)),
                ms(percentile(pushes, 90)),
                ms(percentile(fetches, 50)),
                ms(percentile(fetches, 90)),
            ]
        )
    print(f"\none-file commit, {runs} operations each (after one warm-up), sshd on 127.0.0.1")
    print(table(["method", "push p50", "push p90", "fetch p50", "fetch p90"], rows))
    cached_p, cached_f = (percentile(v, 50) for v in results["annexsync, cached connection"])
    local_p, local_f = (percentile(v, 50) for v in results["git, local file://"])
    fresh_p, fresh_f = (percentile(v, 50) for v in results["git, fresh ssh connection"])
    print(f"\ncached push / local push:   {cached_p / local_p:.2f}x  (target <= 1.5x)")
    print(f"fresh push / cached push:   {fresh_p / cached_p:.1f}x  (target >= 8x)")
    print(f"cached fetch / local fetch: {cached_f / local_f:.2f}x")
    print(f"fresh fetch / cached fetch: {fresh_f / cached_f:.1f}x")
    print(
        f"annexsync used {connections} open connection(s); sshd accepted {logins} logins "
        "in all (git over fresh ssh logs in once per operation)"
    )
    print(machine_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Nodes that cannot reach each other, linked by a bare hub on a path: pushes are fast-forwards
of the hub's branch, a refused push (the hub moved on) is fetched, merged and pushed again, and
the other node picks the change up by polling, since a hub tells nobody about changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, annexsync, commit_count, git, head_files, wait_until


def node(tmp_path: Path, name: str, hub: Path) -> Path:
    path = tmp_path / name
    path.mkdir()
    git(path, "init", "-q")
    assert annexsync("-C", str(path), "init", "--name", name).returncode == 0
    git(path, "remote", "add", "hub", str(hub))
    git(path, "config", "annexsync.poll", "1s")
    return path


def hub_repo(tmp_path: Path) -> Path:
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "-q", "--bare", str(hub))
    return hub


def hub_head(hub: Path) -> str:
    return git(hub, "rev-parse", "--verify", "-q", "main", check=False).strip()


def head(path: Path) -> str:
    return git(path, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()


def test_a_change_reaches_the_other_node_through_a_polled_hub(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    hub = hub_repo(tmp_path)
    a, b = node(tmp_path, "alpha", hub), node(tmp_path, "beta", hub)
    da, db = daemon_factory(a).start(), daemon_factory(b).start()

    (a / "from-alpha.txt").write_text("via the hub\n")
    wait_until(lambda: head_files(b).get("from-alpha.txt") == b"via the hub\n", timeout=30)
    (b / "from-beta.txt").write_text("back again\n")
    wait_until(lambda: (a / "from-beta.txt").exists(), timeout=30)

    wait_until(lambda: head(a) == head(b) == git(hub, "rev-parse", "main").strip(), timeout=30)
    assert git(hub, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
    peer = da.status()["peers"][0]
    assert peer["remote"] == "hub" and peer["state"] == "connected"
    assert peer["polling"] == 1.0
    assert "polled every 1s" in annexsync("-C", str(b), "status").stdout
    assert db.status()["pending_count"] == 0


def test_nodes_racing_to_push_to_a_hub_converge_keeping_every_edit(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    hub = hub_repo(tmp_path)
    a, b = node(tmp_path, "alpha", hub), node(tmp_path, "beta", hub)
    daemon_factory(a).start()
    daemon_factory(b).start()

    for i in range(5):
        (a / f"a{i}.txt").write_text(f"alpha {i}\n")
        (b / f"b{i}.txt").write_text(f"beta {i}\n")
        time.sleep(0.05)

    expected = {f"a{i}.txt": f"alpha {i}\n".encode() for i in range(5)}
    expected |= {f"b{i}.txt": f"beta {i}\n".encode() for i in range(5)}
    wait_until(lambda: head(a) == head(b) == hub_head(hub) != "", timeout=60)
    assert head_files(a) == expected
    counts = (commit_count(a), commit_count(b))
    time.sleep(2.5)  # more than two poll intervals: nothing new is made
    assert (commit_count(a), commit_count(b)) == counts
    assert head(a) == head(b) == hub_head(hub)


def test_a_refused_push_is_retried_even_when_a_poll_succeeds_in_between(
    tmp_path: Path, daemon_factory: Callable[[Path], Daemon]
) -> None:
    """The hub refuses one push (its hook says no once). Polls (every second) then succeed, but
    the push they do not include is still owed: it goes out with the next attempt, long before
    the 30 s backoff would have retried it."""
    hub = hub_repo(tmp_path)
    flag = tmp_path / "refuse-once"
    hook = hub / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\nif [ -e "{flag}" ]; then rm "{flag}"; echo busy >&2; exit 1; fi\n')
    hook.chmod(0o755)
    a = node(tmp_path, "alpha", hub)
    git(a, "config", "annexsync.retrydelay", "30s")
    git(a, "config", "annexsync.retrymax", "30s")
    da = daemon_factory(a).start()
    (a / "first.txt").write_text("first\n")
    wait_until(lambda: hub_head(hub) == head(a) != "", timeout=30)

    flag.touch()
    (a / "second.txt").write_text("second\n")
    wait_until(lambda: not flag.exists(), timeout=10)  # the refusal happened
    wait_until(lambda: hub_head(hub) == head(a), timeout=10)
    assert head_files(hub)["second.txt"] == b"second\n"
    peer = da.status()["peers"][0]
    assert peer["last_error"] is not None and "busy" in peer["last_error"]
    wait_until(lambda: not da.status()["peers"][0]["pending_push"], timeout=10)

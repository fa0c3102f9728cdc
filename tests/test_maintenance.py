"""Packs written by bursts do not pile up: git gc --auto consolidates them."""

from pathlib import Path

import pygit2
from conftest import git

from assistant.autocommit import AutoCommitter
from assistant.config import Settings
from assistant.maintenance import gc_auto
from assistant.node import ensure_initialised
from assistant.objects import PACK_FROM, store_blobs


def test_many_small_packs_from_bursts_are_consolidated(repo: Path) -> None:
    r = pygit2.Repository(str(repo))
    ac = AutoCommitter(r, ensure_initialised(r), Settings())
    ac.git_settle = 0.0
    git(repo, "config", "gc.autoPackLimit", "10")
    for burst in range(12):
        for i in range(PACK_FROM):
            (repo / f"b{burst}").mkdir(exist_ok=True)
            (repo / f"b{burst}" / f"f{i}.txt").write_text(f"burst {burst} file {i}\n")
        assert ac.commit_paths([f"b{burst}"]).commit is not None
    packs = repo / ".git" / "objects" / "pack"
    assert len(list(packs.glob("*.pack"))) == 12

    gc_auto(r.path)

    assert len(list(packs.glob("*.pack"))) == 1
    assert git(repo, "fsck", "--strict") == ""
    assert len(list(r.walk(r.head.target))) == 12


def test_a_few_packs_are_left_alone(repo: Path) -> None:
    r = pygit2.Repository(str(repo))
    store_blobs(r, [f"file {i}\n".encode() for i in range(PACK_FROM)])
    packs = repo / ".git" / "objects" / "pack"
    before = sorted(p.name for p in packs.glob("*.pack"))

    gc_auto(r.path)

    assert sorted(p.name for p in packs.glob("*.pack")) == before

"""What is never committed: editor and OS temp files, and git's own ignore rules."""

from pathlib import Path

import pygit2
import pytest
from conftest import git

from assistant.config import read_settings
from assistant.ignore import IgnoreRules, is_vim_probe

TEMP_NAMES = {
    "vim-swap": ".notes.md.swp",
    "vim-swap-second": ".notes.md.swo",
    "vim-swap-last": ".notes.md.swa",
    "vim-probe": "4913",
    "vim-probe-next": "5036",
    "backup-tilde": "notes.md~",
    "emacs-autosave": "#notes.md#",
    "emacs-lock": ".#notes.md",
    "kate-swap": ".notes.md.kate-swp",
    "gtk-atomic-save": ".goutputstream-ABC123",
    "libreoffice-lock": ".~lock.report.odt#",
    "office-owner": "~$report.docx",
    "jetbrains-tmp": "Main.java___jb_tmp___",
    "jetbrains-old": "Main.java___jb_old___",
    "macos-ds-store": ".DS_Store",
    "macos-appledouble": "._photo.jpg",
    "fuse-hidden": ".fuse_hidden0000001a00000001",
    "nfs-silly-rename": ".nfs000000000123abcd00000001",
    "windows-thumbs": "Thumbs.db",
    "windows-desktop-ini": "desktop.ini",
    "syncthing-tmp": ".syncthing.notes.md.tmp",
    "syncthing-tmp-win": "~syncthing~notes.md.tmp",
    "chrome-download": "movie.mkv.crdownload",
}

KEPT_NAMES = {
    "plain": "notes.md",
    "dotfile": ".bashrc",
    "swp-without-dot": "notes.swp",
    "swap-out-of-range": ".notes.md.swq",
    "tilde-first": "~notes.md",
    "hash-first-only": "#notes.md",
    "hash-last-only": "notes.md#",
    "near-probe": "4914",
    "probe-with-suffix": "4913.txt",
    "short-number": "491",
    "other-number": "12345",
    "year": "2024",
    "ds-store-lowercase": ".ds_store",
    "thumbs-lowercase": "thumbs.db",
    "gitignore": ".gitignore",
    "unicode": "caf\u00e9 \u65e5\u672c.txt",
}


@pytest.fixture
def rules(repo: Path) -> IgnoreRules:
    return IgnoreRules(pygit2.Repository(str(repo)))


@pytest.mark.parametrize("name", TEMP_NAMES.values(), ids=TEMP_NAMES.keys())
def test_builtin_temp_names_are_never_committed(rules: IgnoreRules, name: str) -> None:
    assert rules.is_temp_name(name)
    assert rules.is_ignored(name)
    assert rules.is_ignored(f"deep/dir/{name}")


@pytest.mark.parametrize("name", KEPT_NAMES.values(), ids=KEPT_NAMES.keys())
def test_ordinary_names_are_committed(rules: IgnoreRules, name: str) -> None:
    assert not rules.is_temp_name(name)
    assert not rules.is_ignored(name)
    assert not rules.is_ignored(f"sub/{name}")


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("4913", True),
        (str(4913 + 123), True),
        (str(4913 + 123 * 99), True),
        (str(4913 + 123 * 100), False),
        ("4912", False),
        ("4914", False),
        ("100", False),
        ("49a3", False),
        ("", False),
    ],
    ids=["first", "second", "last-tried", "beyond-tries", "below", "off-step", "short", "hex", "e"],
)
def test_vim_write_probe_names(name: str, probe: bool) -> None:
    assert is_vim_probe(name) is probe


def test_git_directory_itself_is_ignored(rules: IgnoreRules) -> None:
    assert rules.is_ignored(".git", is_dir=True)
    assert rules.is_ignored("sub/.git", is_dir=True)


def test_gitignore_rules_are_honoured(repo: Path) -> None:
    (repo / ".gitignore").write_text("*.log\n!keep.log\nbuild/\n/top-only.txt\n")
    (repo / "docs").mkdir()
    (repo / "docs" / ".gitignore").write_text("draft-*\n")
    rules = IgnoreRules(pygit2.Repository(str(repo)))
    assert rules.is_ignored("debug.log")
    assert rules.is_ignored("sub/debug.log")
    assert not rules.is_ignored("keep.log")
    assert rules.is_ignored("build", is_dir=True)
    assert rules.is_ignored("build/out.o")
    assert not rules.is_ignored("build"), "'build/' matches only a directory"
    assert rules.is_ignored("top-only.txt")
    assert not rules.is_ignored("sub/top-only.txt")
    assert rules.is_ignored("docs/draft-1.md")
    assert not rules.is_ignored("draft-1.md"), "a nested .gitignore applies below it only"
    assert not rules.is_ignored("notes.md")


def test_info_exclude_is_honoured(repo: Path) -> None:
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("secret.txt\nprivate/\n")
    rules = IgnoreRules(pygit2.Repository(str(repo)))
    assert rules.is_ignored("secret.txt")
    assert rules.is_ignored("private", is_dir=True)
    assert rules.is_ignored("private/key")
    assert not rules.is_ignored("public.txt")


def test_core_excludes_file_is_honoured(repo: Path, tmp_path: Path) -> None:
    excludes = tmp_path / "global-ignore"
    excludes.write_text("*.pyc\n__pycache__/\n")
    git(repo, "config", "core.excludesFile", str(excludes))
    rules = IgnoreRules(pygit2.Repository(str(repo)))
    assert rules.is_ignored("mod.pyc")
    assert rules.is_ignored("pkg/__pycache__", is_dir=True)
    assert not rules.is_ignored("mod.py")
    proc = git(repo, "check-ignore", "mod.pyc", check=False)
    assert proc.strip() == "mod.pyc", "git itself agrees"


def test_annexsync_ignore_extends_the_builtin_names(repo: Path) -> None:
    git(repo, "config", "--add", "annexsync.ignore", "*.bak")
    git(repo, "config", "--add", "annexsync.ignore", "cache/*")
    git(repo, "config", "--add", "annexsync.ignore", "scratch")
    repository = pygit2.Repository(str(repo))
    rules = IgnoreRules(repository, read_settings(repository.config).ignore)
    assert rules.is_temp_name("x.bak")
    assert rules.is_ignored("x.bak")
    assert rules.is_ignored("deep/x.bak")
    assert rules.is_ignored("cache/blob")
    assert rules.is_ignored("cache/a/b")
    assert not rules.is_ignored("other/cache/blob"), "a pattern with '/' is from the root"
    assert rules.is_ignored("scratch")
    assert rules.is_ignored("sub/scratch")
    assert not rules.is_ignored("x.bak.txt")
    assert not rules.is_ignored("notes.md")
    assert rules.is_ignored(".notes.md.swp"), "the built-in names still apply"


def test_odd_paths_do_not_raise(rules: IgnoreRules) -> None:
    for path in ["sp ace/a b", "caf\u00e9", "a\tb", "[x]", "!bang", "#hash", "a\\b"]:
        assert rules.is_ignored(path) in (True, False)

"""The ``annexsync`` command line: every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pygit2

from assistant import __version__
from assistant.autocommit import AutoCommitter, CommitResult
from assistant.changes import quote_path
from assistant.config import Settings, read_settings
from assistant.daemon import lifecycle
from assistant.daemon.control import request, socket_path
from assistant.errors import AnnexsyncError, NotRunningError, UsageError
from assistant.gitrepo import open_worktree, state_dir, worktree_root
from assistant.integrate import read_held_merges
from assistant.node import NodeIdentity, ensure_initialised
from assistant.peerstate import format_duration
from assistant.progressview import bars_on
from assistant.remotes import Remote

EXIT_HELD = 3
LOCAL_STATUS_EVERY = 2.0  # seconds between rescans in a live view with no assistant


def _add_chdir(parser: argparse.ArgumentParser, default: Any, dest: str = "chdir") -> None:
    parser.add_argument(
        "-C",
        dest=dest,
        action="append",
        metavar="PATH",
        default=default,
        help="run as if started in PATH (like git -C)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annexsync",
        description="Keep a git working tree replicated between machines.",
    )
    parser.add_argument("--version", action="version", version=f"annexsync {__version__}")
    _add_chdir(parser, [])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    init = commands.add_parser("init", help="record this node's uuid and name")
    init.add_argument("--name", help="node name (a single ref component)")
    init.add_argument("--hooks", action="store_true", help="also install the git hooks")
    login = init.add_mutually_exclusive_group()
    login.add_argument(
        "--autostart",
        action="store_true",
        default=None,
        help="start an assistant for this repository at login (see 'assistant --autostart')",
    )
    login.add_argument(
        "--no-autostart",
        dest="autostart",
        action="store_false",
        help="do not ask whether to start it at login",
    )
    init.set_defaults(func=cmd_init)

    hooks = commands.add_parser("hooks", help="install, remove or show annexsync's git hooks")
    hooks.add_argument("action", choices=("install", "uninstall", "status"))
    hooks.set_defaults(func=cmd_hooks)

    assistant = commands.add_parser("assistant", help="run the daemon that commits and syncs")
    mode = assistant.add_mutually_exclusive_group()
    mode.add_argument("--foreground", action="store_true", help="do not detach")
    mode.add_argument("--stop", action="store_true", help="stop the running assistant")
    assistant.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    assistant.add_argument(
        "--autostart",
        action="store_true",
        help="start (with --stop: stop) the assistant of every repository in the autostart file",
    )
    assistant.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    assistant.set_defaults(func=cmd_assistant)

    log = commands.add_parser("log", help="show the assistant's log")
    log.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    log.add_argument(
        "-n", "--lines", type=int, default=50, metavar="N", help="show the last N lines (50)"
    )
    log.set_defaults(func=cmd_log)

    status = commands.add_parser("status", help="show what the assistant is doing")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="a live view, redrawn until Ctrl-C")
    status.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="how often --watch redraws (default 0.5)",
    )
    status.set_defaults(func=cmd_status)

    sync = commands.add_parser(
        "sync", help="commit pending changes, fetch from peers, merge, push to peers"
    )
    sync.add_argument(
        "remotes",
        nargs="*",
        metavar="REMOTE",
        help="remotes to sync with (default: every sync-enabled remote)",
    )
    sync.add_argument(
        "--allow-deletions",
        action="store_true",
        help="commit deletions held by the mass-deletion guard",
    )
    sync.add_argument("--json", action="store_true", help="machine-readable output")
    sync.set_defaults(func=cmd_sync)

    for action in ("push", "fetch"):
        verb = "push to" if action == "push" else "fetch from"
        sub = commands.add_parser(action, help=f"{verb} peers (the repository's git remotes)")
        sub.add_argument(
            "remotes",
            nargs="*",
            metavar="REMOTE",
            help="remotes to use (default: every sync-enabled remote)",
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(func=cmd_push if action == "push" else cmd_fetch)

    notify = commands.add_parser(
        "notify-changes",
        help="print a line whenever a branch of the repository at PATH changes (for peers)",
    )
    notify.add_argument("path", metavar="PATH", help="a bare or non-bare repository")
    notify.set_defaults(func=cmd_notify_changes)

    serve = commands.add_parser(
        "serve",
        help="the forced command of a restricted ssh key (see docs/security.md)",
    )
    serve.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="PATH",
        help="a repository the key may use (repeatable)",
    )
    serve.add_argument(
        "--hub",
        action="append",
        default=[],
        metavar="PATH",
        help="a repository whose branches the key may fast-forward (repeatable)",
    )
    serve.add_argument("--peer", required=True, metavar="NAME", help="the node using the key")
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser(
        "demo", help="watch throwaway repositories on this machine sync live (a guided tour)"
    )
    demo.add_argument(
        "--nodes", type=int, default=3, metavar="N", help="how many nodes: 2 or 3 (3)"
    )
    demo.add_argument(
        "--dir", metavar="PATH", help="create the repositories here (a new or empty directory)"
    )
    demo.add_argument("--keep", action="store_true", help="leave the repositories on exit")
    demo.add_argument(
        "--tour-only", action="store_true", help="exit after the tour instead of staying live"
    )
    demo.set_defaults(func=cmd_demo)

    for sub in commands.choices.values():
        # A separate dest: a subcommand's -C would otherwise replace the ones given before it.
        _add_chdir(sub, argparse.SUPPRESS, dest="chdir_after")
    return parser


def resolve_dir(chdirs: list[str]) -> Path:
    """Apply each -C in turn, relative to the previous one, as git does."""
    path = Path.cwd()
    for item in chdirs:
        path = path / item if item else path
    return path


def _cli_logging() -> None:
    """Warnings from the library (a variant kept, a file skipped) as 'annexsync: ...' lines;
    the daemon replaces this with its own log."""
    logger = logging.getLogger("annexsync")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("annexsync: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    _cli_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        chdirs = args.chdir + getattr(args, "chdir_after", [])
        return int(args.func(args, resolve_dir(chdirs)))
    except AnnexsyncError as exc:
        print(f"annexsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:
        if os.environ.get("ANNEXSYNC_DEBUG"):
            raise
        print(f"annexsync: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 70


def _open(path: Path, name: str | None = None) -> tuple[pygit2.Repository, NodeIdentity, Settings]:
    """Open the repository, validate its settings, then initialise it if needed: a refusal
    leaves nothing written."""
    repo = open_worktree(path)
    settings = read_settings(repo.config)
    identity = ensure_initialised(repo, name)
    return repo, identity, settings


def cmd_init(args: argparse.Namespace, path: Path) -> int:
    repo, identity, _settings = _open(path, args.name)
    root = worktree_root(repo)
    print(f"annexsync node {identity.name} ({identity.uuid}) in {root}")
    code = _hooks_change(repo, "install") if args.hooks else 0
    wanted = args.autostart
    if wanted is None and sys.stdin.isatty():
        wanted = _ask("Start an assistant for this repository at login? [y/N] ")
    if wanted:
        from assistant.autostart import add_to_autostart, autostart_file

        file = autostart_file()
        try:
            added = add_to_autostart(root, file)
        except OSError as exc:
            raise AnnexsyncError(f"{file}: cannot add this repository: {exc}") from None
        print(f"{'added to' if added else 'already in'} {file}: the assistant starts at login")
    return code


def _ask(question: str) -> bool:
    """A yes/no question on the terminal; anything but y/yes (or end of input) is no."""
    try:
        answer = input(question)
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_hooks(args: argparse.Namespace, path: Path) -> int:
    """Install, uninstall or show the git hooks (docs/hooks.md); bare repositories too."""
    from assistant import hooks

    repo = hooks.open_repository(path)
    if args.action == "status":
        print("\n".join(hooks.status_lines(hooks.status(repo))))
        return 0
    return _hooks_change(repo, args.action)


def _hooks_change(repo: pygit2.Repository, action: str) -> int:
    from assistant import hooks

    report = hooks.install(repo) if action == "install" else hooks.uninstall(repo)
    for line, problem in hooks.report_lines(report):
        print(line, file=sys.stderr if problem else sys.stdout)
    return 0 if report.ok else 1


def cmd_assistant(args: argparse.Namespace, path: Path) -> int:
    if args.autostart:
        if args.foreground:
            raise AnnexsyncError("--autostart and --foreground do not go together")
        return _autostart_all(stop=args.stop, verbose=args.verbose)
    if args.stop:
        repo = open_worktree(path)
        pid = lifecycle.stop_running(state_dir(repo))
        print(f"assistant stopped (pid {pid})")
        return 0
    try:
        repo, identity, settings = _open(path)
    except AnnexsyncError as exc:
        lifecycle.report_ready(args.ready_fd, str(exc))
        raise
    state = state_dir(repo)
    if not args.foreground:
        pid = lifecycle.running_pid(state)
        if pid is not None:
            raise lifecycle.AlreadyRunningError(
                f"an assistant is already running for this repository (pid {pid}); "
                "stop it with 'annexsync assistant --stop'"
            )
        pid = _start_detached(repo, args.verbose)
        print(f"assistant started (pid {pid}); log: {state / lifecycle.LOG_NAME}")
        return 0
    lock = lifecycle.InstanceLock(state)
    try:
        lock.acquire()
    except AnnexsyncError as exc:
        lifecycle.report_ready(args.ready_fd, str(exc))
        raise
    try:
        lifecycle.setup_logging(
            state, identity.name, to_stderr=args.ready_fd is None, verbose=args.verbose
        )
        from assistant.daemon.app import Assistant

        daemon = Assistant(repo, identity, settings)
        asyncio.run(daemon.run(on_ready=lambda: lifecycle.report_ready(args.ready_fd)))
    except Exception as exc:
        lifecycle.report_ready(args.ready_fd, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        lock.release()
    return 1 if daemon.fatal else 0


def _start_detached(repo: pygit2.Repository, verbose: bool) -> int:
    """Start a background assistant for ``repo`` and return its pid once it is ready."""
    return lifecycle.spawn_detached(worktree_root(repo), ["--verbose"] if verbose else [])


def _autostart_one(path: Path, stop: bool, verbose: bool) -> tuple[bool, str]:
    """Start (or stop) one listed repository's assistant: whether it went well, and why."""
    try:
        if stop:
            repo = open_worktree(path)
            try:
                return True, f"assistant stopped (pid {lifecycle.stop_running(state_dir(repo))})"
            except NotRunningError:
                return True, "not running"
        repo, _identity, _settings = _open(path)
        pid = lifecycle.running_pid(state_dir(repo))
        if pid is not None:
            return True, f"already running (pid {pid})"
        return True, f"assistant started (pid {_start_detached(repo, verbose)})"
    except (AnnexsyncError, OSError) as exc:
        return False, f"error: {exc}"


def _autostart_all(stop: bool, verbose: bool) -> int:
    """One line per repository in the autostart file; non-zero when any of them failed."""
    from assistant.autostart import autostart_file, read_autostart

    file = autostart_file()
    try:
        paths = read_autostart(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnexsyncError(f"{file}: cannot read: {exc}") from None
    if not paths:
        print(f"no repository listed in {file}; add one with 'annexsync init --autostart'")
        return 0
    failed = False
    for path in paths:
        ok, line = _autostart_one(path, stop, verbose)
        failed |= not ok
        print(f"{path}: {line}", file=sys.stdout if ok else sys.stderr, flush=True)
    return 1 if failed else 0


def cmd_log(args: argparse.Namespace, path: Path) -> int:
    """Print the assistant's log, or follow it until Ctrl-C or SIGTERM (exit 0 either way)."""
    from assistant import logview

    if args.lines < 0:
        raise AnnexsyncError(f"-n takes a number of lines, not {args.lines}")
    state = state_dir(open_worktree(path))
    if not logview.log_files(state):
        print("no assistant has run in this repository yet (start one with 'annexsync assistant')")
        return 0
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        if data:
            out.write(data)
            out.flush()

    if not args.follow:
        for line in logview.tail(state, args.lines):
            out.write(line)
        out.flush()
        return 0
    with logview.stop_on_signals() as stop:
        logview.follow(state, args.lines, write, stop)
    return 0


def _local_status(
    repo: pygit2.Repository, identity: NodeIdentity, settings: Settings
) -> dict[str, Any]:
    from assistant.daemon.app import head_info

    committer = AutoCommitter(repo, identity, settings)
    committer.git_settle = 0.0  # a pause lasting a moment is not news to report
    changed = committer.scan_candidates()
    blocked = committer.blocked_reason()
    return {
        "running": False,
        "node": identity.name,
        "uuid": identity.uuid,
        "root": str(worktree_root(repo)),
        **head_info(repo),
        "pending": changed[:200],
        "pending_count": len(changed),
        "writing": [],
        "held": [],
        "large": {},
        "nested": [],
        "skipped": dict(sorted(committer.skipped.items())),
        "paused": blocked[0] if blocked else None,
        "held_merges": read_held_merges(state_dir(repo)),
        "peers": [],
    }


def cmd_status(args: argparse.Namespace, path: Path) -> int:
    repo, identity, settings = _open(path)
    if args.watch:
        return _watch_status(args, repo, identity, settings)
    reply = request(socket_path(state_dir(repo)), {"cmd": "status"})
    status = reply if reply and reply.get("ok") else _local_status(repo, identity, settings)
    status.pop("ok", None)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _watch_status(
    args: argparse.Namespace, repo: pygit2.Repository, identity: NodeIdentity, settings: Settings
) -> int:
    """The live view until Ctrl-C or SIGTERM (exit 0). With no assistant running it shows
    what is uncommitted, rescanned at most every LOCAL_STATUS_EVERY seconds, and waits."""
    from assistant import logview, watchview

    if args.json:
        raise UsageError("--watch draws a view for people; use --json without it")
    if not 0.05 <= args.interval <= 3600:
        raise UsageError(f"--interval takes 0.05 to 3600 seconds, not {args.interval:g}")
    sock = socket_path(state_dir(repo))
    local: tuple[float, dict[str, Any]] | None = None

    def poll() -> dict[str, Any]:
        nonlocal local
        reply = request(sock, {"cmd": "status"}, timeout=5.0)
        if reply and reply.get("ok"):
            local = None
            return reply
        now = time.monotonic()
        if local is None or now - local[0] >= LOCAL_STATUS_EVERY:
            local = (now, _local_status(repo, identity, settings))
        return local[1]

    with logview.stop_on_signals() as stop:
        watchview.watch(poll, args.interval, sys.stdout, stop.is_set, stop.wait)
    return 0


def format_status(status: dict[str, Any]) -> str:
    """The human-readable status report."""
    lines = [f"node:      {status['node']} ({status['uuid']})"]
    if status.get("running"):
        watch = status.get("watch", {})
        how = (
            f"watching {watch.get('directories')} directories with inotify"
            if watch.get("mode") == "inotify"
            else f"rescanning ({watch.get('message')})"
        )
        lines.append(f"assistant: running (pid {status['pid']}), {how}")
    else:
        lines.append("assistant: not running (start it with 'annexsync assistant')")
    head = status.get("last_commit")
    where = status.get("branch") or "(detached HEAD)"
    if head:
        lines.append(f"branch:    {where} at {head['id'][:10]} {head['summary']}")
    else:
        lines.append(f"branch:    {where} (no commits yet)")
    if status.get("paused"):
        lines.append(f"paused:    {status['paused']}")
    count = status.get("pending_count", 0)
    label = "pending" if status.get("running") else "uncommitted"
    lines.append(
        f"{label + ':':<10} {count} path{'s' if count != 1 else ''}"
        + (f" ({len(status['writing'])} open for writing)" if status.get("writing") else "")
    )
    for path in status.get("pending", [])[:10]:
        lines.append(f"           {path}")
    if count > 10:
        lines.append(f"           ... and {count - 10} more")
    held = status.get("held", [])
    if held:
        lines.append(
            f"held:      {len(held)} deletions held by the mass-deletion guard; "
            "commit them with 'annexsync sync --allow-deletions' or restore the files"
        )
        lines.extend(f"           {p}" for p in held[:10])
    for peer in status.get("peers", []):
        how = ""
        if peer.get("listening"):
            how = "; told of changes at once"
        elif peer.get("polling"):
            how = f"; polled every {format_duration(peer['polling'])}"
        elif peer.get("listener_summary"):
            how = f"; change stream {peer['listener_summary']}"
        lines.append(f"peer:      {peer['remote']}: {peer.get('summary', peer.get('state'))}{how}")
    for ref, why in status.get("held_merges", {}).items():
        lines.append(f"not merged: {ref}: {why}")
    for path, size in status.get("large", {}).items():
        lines.append(f"large:     {path} ({size} bytes) is over annexsync.largefiles")
    for path in status.get("nested", []):
        lines.append(f"nested:    {path}/ is a git repository of its own and is not committed")
    skipped = status.get("skipped", {})
    for path, why in list(skipped.items())[:10]:
        lines.append(f"skipped:   {quote_path(path)}: {why}")
    if len(skipped) > 10:
        lines.append(f"           ... and {len(skipped) - 10} more (annexsync status --json)")
    return "\n".join(lines)


def cmd_sync(args: argparse.Namespace, path: Path) -> int:
    repo, identity, settings = _open(path)
    from assistant.remotes import read_remotes, select_remotes

    remotes = select_remotes(read_remotes(repo, worktree_root(repo)), args.remotes, "sync")
    reply = request(
        socket_path(state_dir(repo)),
        {
            "cmd": "sync",
            "allow_deletions": args.allow_deletions,
            "remotes": [r.name for r in remotes],
        },
        timeout=3600,
    )
    if reply is None:
        reply = _sync_here(repo, identity, settings, remotes, args.allow_deletions)
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    if reply.get("error"):
        raise AnnexsyncError(f"cannot commit now: {reply['error']}")
    report = reply.get("sync")
    if not args.json:
        if reply.get("commit"):
            print(f"committed {reply['commit'][:10]} {reply['summary']}")
        else:
            print("nothing to commit")
        merge = report["merge"] if report else None
        if report and (
            report["remotes"]
            or merge["kind"] != "up-to-date"
            or merge["paused"]
            or merge["held_back"]
        ):
            print(report["merge_line"])
            for remote in report["remotes"]:
                print(remote["line"], file=sys.stdout if remote["ok"] else sys.stderr)
    if report and not report["ok"]:
        return 1
    if reply.get("held"):
        print(
            f"annexsync: {len(reply['held'])} deletions are held by the mass-deletion guard; "
            "run 'annexsync sync --allow-deletions' to commit them",
            file=sys.stderr,
        )
        return EXIT_HELD
    return 0


def _sync_here(
    repo: pygit2.Repository,
    identity: NodeIdentity,
    settings: Settings,
    remotes: list[Remote],
    allow_deletions: bool,
) -> dict[str, Any]:
    """The sync without a running assistant, holding its lock meanwhile."""
    committer = AutoCommitter(repo, identity, settings)
    lock = lifecycle.InstanceLock(state_dir(repo))
    try:
        lock.acquire()
    except lifecycle.AlreadyRunningError:
        raise AnnexsyncError("the running assistant did not answer; try again") from None
    try:
        committer.locks.clear_stale()
        committer.repair_index()
        result = commit_waiting(committer, allow_deletions)
        committer.sync_index()
        reply: dict[str, Any] = {
            "error": result.blocked,
            "commit": result.commit,
            "summary": committer.last_summary if result.commit else None,
            "held": sorted(committer.held),
            "sync": None,
        }
        if not result.blocked:  # with no remote, still merge what peers pushed here
            from assistant.syncing import sync_with

            with bars_on(sys.stderr):
                report = asyncio.run(
                    sync_with(repo, identity, committer, remotes, settings.resolvemerge)
                )
            reply["sync"] = report.as_dict()
    finally:
        lock.release()
    reply["ok"] = reply["error"] is None and (reply["sync"] is None or reply["sync"]["ok"])
    return reply


def commit_waiting(
    committer: AutoCommitter, allow_deletions: bool, patience: float = 10.0
) -> CommitResult:
    """Commit every pending change, waiting out a short block (a git lock, git at work)."""
    give_up = time.monotonic() + patience
    while True:
        result = committer.commit_paths(committer.scan_candidates(), allow_deletions)
        if not (result.blocked and result.retry_soon) or time.monotonic() >= give_up:
            return result
        time.sleep(0.05)


def _transfer(args: argparse.Namespace, path: Path, action: str) -> int:
    repo, identity, _settings = _open(path)
    from assistant.peers import run_all
    from assistant.remotes import read_remotes, select_remotes

    remotes = select_remotes(
        read_remotes(repo, worktree_root(repo)),
        args.remotes,
        "push" if action == "push" else "pull",
    )
    if not remotes:
        raise AnnexsyncError(
            f"no remote to {action}: add one with 'git remote add NAME URL' "
            "(remotes with annexsync-sync or annexsync-"
            f"{'push' if action == 'push' else 'pull'} set to false are left out)"
        )
    with bars_on(sys.stderr):
        outcomes = asyncio.run(run_all(action, repo, identity, remotes))
    if args.json:
        print(json.dumps([o.__dict__ for o in outcomes], indent=2, sort_keys=True))
    else:
        for outcome in outcomes:
            print(outcome.line(), file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_push(args: argparse.Namespace, path: Path) -> int:
    return _transfer(args, path, "push")


def cmd_fetch(args: argparse.Namespace, path: Path) -> int:
    return _transfer(args, path, "fetch")


def cmd_notify_changes(args: argparse.Namespace, path: Path) -> int:
    """Stream ref changes of PATH (relative to -C) until the peer closes the channel."""
    from assistant.notify import notify_changes

    return notify_changes(path / args.path)


def cmd_serve(args: argparse.Namespace, path: Path) -> int:
    """Carry out the client's SSH_ORIGINAL_COMMAND if the key may (docs/security.md)."""
    from assistant.serve import serve

    return serve(args.repo, args.hub, args.peer)


def cmd_demo(args: argparse.Namespace, path: Path) -> int:
    """Two or three repositories here, synced live by assistants in this process."""
    from assistant.demo import run_demo

    directory = path / args.dir if args.dir is not None else None
    return run_demo(args.nodes, directory, args.keep, args.tour_only)

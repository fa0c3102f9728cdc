"""``annexsync demo``: two or three throwaway repositories on this machine, synced live by
assistants running on one event loop in this process (what it shows is in ``demotour``).

The nodes form a full mesh: each has every other node as a path remote named after it, as
machines that can all reach each other would, so every change is one push away from every
node. Each assistant logs to its own repository's ``.git/annexsync/daemon.log``; the terminal
gets only the demo's own lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import logging.handlers
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TextIO

import pygit2

from assistant.config import read_settings
from assistant.daemon import lifecycle
from assistant.daemon.app import Assistant
from assistant.demotour import (
    LIVE_POLL,
    STEP_DEADLINE,
    Node,
    Tour,
    TourFailed,
    live_intro,
    watch_activity,
)
from assistant.errors import AnnexsyncError, UsageError
from assistant.node import ensure_initialised

NAMES = ("laptop", "desktop", "server")
BRANCH = "main"
STOP_PATIENCE = 15.0
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(node)s %(actor)s: %(message)s"

NODE: contextvars.ContextVar[str] = contextvars.ContextVar("annexsync_demo_node", default="")


# --- pure helpers --------------------------------------------------------------------------
def node_names(count: int) -> list[str]:
    """The demo's node names for ``--nodes count``."""
    if count not in (2, 3):
        raise UsageError(f"--nodes takes 2 or 3, not {count}")
    return list(NAMES[:count])


def wiring(names: list[str]) -> dict[str, list[str]]:
    """Full mesh: each node's remotes are all the other nodes, each named after its node."""
    return {name: [peer for peer in names if peer != name] for name in names}


# --- the repositories ---------------------------------------------------------------------
def prepare_dir(given: Path | None) -> tuple[Path, bool]:
    """The directory the repositories go in, and whether the demo created it (a new or an
    empty existing one; anything else is refused)."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="annexsync-demo-")), True
    path = Path(os.path.abspath(given))
    try:
        if path.exists():
            if not path.is_dir():
                raise UsageError(f"--dir {path}: not a directory")
            if any(path.iterdir()):
                raise UsageError(f"--dir {path}: not empty; give a new or an empty directory")
            return path, False
        path.mkdir(parents=True)
    except OSError as exc:
        raise UsageError(f"--dir {path}: {exc.strerror or exc}") from None
    return path, True


def create_nodes(base: Path, names: list[str]) -> list[Node]:
    """A git repository per node with its identity (as ``annexsync init --name``) and its
    path remotes."""
    nodes = []
    for name, peers in wiring(names).items():
        root = base / name
        repo = pygit2.init_repository(str(root), bare=False, initial_head=BRANCH)
        identity = ensure_initialised(repo, name)
        for peer in peers:
            repo.remotes.create(peer, str(base / peer))
        nodes.append(Node(name, root, identity))
    return nodes


def remove(directory: Path, created: bool) -> None:
    """The directory if the demo made it, else what the demo put in it (it was empty)."""
    for path in [directory] if created else list(directory.iterdir()):
        shutil.rmtree(path, ignore_errors=True)


# --- logging -------------------------------------------------------------------------------
class NodeLogs(logging.Handler):
    """Each record into the daemon.log of the node whose assistant logged it (known from the
    context its task or worker thread runs in); one from no node's context goes to all."""

    def __init__(self, nodes: list[Node]) -> None:
        super().__init__()
        formatter = logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S")
        self.files: dict[str, logging.Handler] = {}
        for node in nodes:
            handler = logging.handlers.RotatingFileHandler(  # as the daemon's own log
                node.log,
                maxBytes=lifecycle.LOG_BYTES,
                backupCount=lifecycle.LOG_BACKUPS,
                errors="backslashreplace",
            )
            handler.setFormatter(formatter)
            self.files[node.name] = handler

    def emit(self, record: logging.LogRecord) -> None:
        node = NODE.get()
        record.node = node or "demo"
        record.actor = record.name.removeprefix("annexsync.")
        for name, handler in self.files.items():
            if not node or name == node:
                handler.handle(record)

    def close(self) -> None:
        for handler in self.files.values():
            handler.close()
        super().close()


@contextlib.contextmanager
def node_logs(nodes: list[Node]) -> Iterator[None]:
    """For as long as the demo runs, route the assistants' logs, APScheduler's and any other
    library's warnings (watchdog's among them) to the nodes' daemon.log files, not the
    terminal; then put the previous handlers back."""
    handler = NodeLogs(nodes)
    saved = []
    levels = {"annexsync": logging.INFO, "apscheduler": logging.WARNING, "": logging.WARNING}
    for name, level in levels.items():
        logger = logging.getLogger(name)  # "" is the root logger
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = not name
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


# --- running the assistants ----------------------------------------------------------------
class Nodes:
    """One Assistant per node, all on the running loop. Each Assistant.run puts its own
    SIGINT/SIGTERM handler in place (the last one wins), so the demo takes the signals back
    once they have started and stops them all itself."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.stop_requested = asyncio.Event()
        self.assistants: dict[str, Assistant] = {}
        for node in nodes:
            repo = pygit2.Repository(str(node.root))
            self.assistants[node.name] = Assistant(repo, node.identity, read_settings(repo.config))
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def take_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)

    async def start(self) -> bool:
        """Start every assistant; False if the demo was stopped first."""
        self.take_signals()
        for name, assistant in self.assistants.items():
            context = contextvars.copy_context()
            context.run(NODE.set, name)
            self.tasks[name] = asyncio.create_task(
                assistant.run(), name=f"assistant {name}", context=context
            )
        started = await self.until_stopped(
            asyncio.gather(*(a.started.wait() for a in self.assistants.values()))
        )
        self.take_signals()
        return started

    async def ready(self) -> None:
        """Wait until every node has synced with each peer once and nothing holds a commit
        back (git's own writes at creation settle for a moment), so that the tour times the
        steady state, not the start-up."""
        deadline = time.monotonic() + STEP_DEADLINE
        while True:
            waiting = [name for name, a in self.assistants.items() if not await _idle(a)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TourFailed(
                    f"{', '.join(waiting)} did not get ready within {STEP_DEADLINE:g} s "
                    f"(see {self.nodes[waiting[0]].log})"
                )
            await asyncio.sleep(LIVE_POLL)

    async def until_stopped(self, work: Awaitable[object]) -> bool:
        """Run ``work`` until it is done (True), or until the user stops the demo (False);
        an assistant that stops on its own ends the demo too, with its error if it failed."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait(
                {task, stopper, *self.tasks.values()}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for name, assistant in self.tasks.items():
            if assistant.done():
                error = None if assistant.cancelled() else assistant.exception()
                if error is not None:
                    raise TourFailed(f"the assistant on {name} failed: {_reason(error)}")
                raise TourFailed(f"the assistant on {name} stopped, and with it the demo")
        if self.stop_requested.is_set():
            return False
        task.result()
        return True

    async def stop(self) -> None:
        for name, assistant in self.assistants.items():
            if assistant.stop_event is not None:
                assistant.stop()
            elif name in self.tasks:
                self.tasks[name].cancel()
        tasks = list(self.tasks.values())
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=STOP_PATIENCE)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _idle(assistant: Assistant) -> bool:
    status = await assistant.status()
    if status["pending_count"] or any(p["state"] != "connected" for p in status["peers"]):
        return False
    return await assistant.worker.run(assistant.committer.blocked_reason) is None


def _reason(error: BaseException) -> str:
    if isinstance(error, AnnexsyncError):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def run_nodes(nodes: list[Node], tour_only: bool, out: TextIO) -> int:
    """Start the assistants, run the tour, then (unless ``tour_only``) stay live until the
    demo is stopped; the exit status."""
    running = Nodes(nodes)
    try:
        if await running.start() and await running.until_stopped(running.ready()):
            print(
                f"{len(nodes)} assistants running in this process (pid {os.getpid()})",
                file=out,
                flush=True,
            )
            if await running.until_stopped(Tour(nodes, out).run()) and not tour_only:
                print("\n".join(live_intro(nodes)), file=out, flush=True)
                await running.until_stopped(watch_activity(nodes, out))
        return 0
    except TourFailed as exc:
        print(f"annexsync: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping the assistants…", file=out, flush=True)
        await running.stop()


def run_demo(count: int, given: Path | None, keep: bool, tour_only: bool) -> int:
    """The whole demo: set up, run, and remove the repositories unless ``keep`` (or a step
    failed: its logs are then worth a look); the exit status."""
    names = node_names(count)
    directory, created = prepare_dir(given)
    locks: list[lifecycle.InstanceLock] = []
    code: int | None = None
    try:
        nodes = create_nodes(directory, names)
        print(f"annexsync demo: {len(nodes)} nodes in {directory}, each a peer of the others")
        for node, peers in zip(nodes, wiring(names).values(), strict=True):
            print(f"  {node.name:<8} {node.root}  (remotes: {', '.join(peers)})")
            locks.append(lifecycle.InstanceLock(node.state))
            locks[-1].acquire()
        with node_logs(nodes):
            code = asyncio.run(run_nodes(nodes, tour_only, sys.stdout))
        return code
    finally:
        for lock in locks:
            lock.release()
        if keep or code:
            print(f"the repositories are kept in {directory}", flush=True)
        else:
            remove(directory, created)
            print(f"removed {directory}" if created else f"emptied {directory}", flush=True)

"""``annexsync status --watch``: the assistant's status drawn as a live terminal view (peers and
their state, work in progress with bars, held changes, recent activity).

:func:`render` turns one status reply into a rich renderable and touches nothing else, so the
view is tested on data alone; :func:`watch` is the loop that polls and redraws.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from assistant.peerstate import format_duration
from assistant.textsafe import printable

RECENT = 12  # activity lines shown
PENDING_SHOWN = 5
STATE_STYLE = {
    "connected": "green",
    "syncing": "cyan",
    "retrying": "yellow",
    "offline": "red",
    "absent": "dim",
    "disabled": "dim",
}
KIND_STYLE = {
    "variant": "yellow",
    "held": "yellow",
    "peer-lost": "red",
    "peer-back": "green",
}


def plain(text: object) -> str:
    """``text`` as one printable line: names in status come from peers and from files, and
    must not move the cursor, change colours or reorder what is shown around them."""
    return printable(text)


def ago(when: float | None, now: float | None, tz: tzinfo | None = None) -> str:
    """``12s ago``; with no ``now``, the clock time (a frame that does not age by itself)."""
    if when is None:
        return "never"
    if now is None:
        return f"at {clock(when, tz)}"
    seconds = max(0.0, now - when)
    return "just now" if seconds < 1 else f"{format_duration(seconds)} ago"


def clock(when: float, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(when, tz).strftime("%H:%M:%S")


def _header(status: dict[str, Any], now: float | None, tz: tzinfo | None) -> Text:
    text = Text()
    text.append("annexsync ", style="bold")
    text.append(plain(status.get("node", "?")), style="bold cyan")
    text.append(f"  {plain(status.get('root', ''))}\n")
    if status.get("running"):
        watch = status.get("watch") or {}
        how = (
            f"watching {watch.get('directories')} directories"
            if watch.get("mode") == "inotify"
            else f"rescanning ({plain(watch.get('message'))})"
        )
        text.append("assistant running", style="green")
        text.append(f" (pid {status.get('pid')}), {how}\n")
    else:
        text.append("assistant not running", style="red")
        text.append(" (start it with 'annexsync assistant'; this view waits for it)\n")
    head = status.get("last_commit")
    branch = plain(status.get("branch") or "(detached HEAD)")
    if head:
        text.append(f"branch {branch} at {head['id'][:10]} ")
        text.append(plain(head.get("summary", "")), style="bold")
        text.append(f" ({ago(head.get('time'), now, tz)})")
    else:
        text.append(f"branch {branch} (no commits yet)")
    if status.get("paused"):
        text.append("\npaused: ", style="yellow")
        text.append(plain(status["paused"]))
    return text


def _peers(status: dict[str, Any], now: float | None, tz: tzinfo | None) -> RenderableType:
    peers = status.get("peers") or []
    if not peers:
        return Text("no peers (add one with 'git remote add')", style="dim")
    table = Table(title="Peers", title_justify="left", expand=False, box=None, padding=(0, 2))
    for column in ("peer", "state", "last sync", "changes", "push"):
        table.add_column(column, style="bold" if column == "peer" else None, no_wrap=True)
    for peer in peers:
        state = str(peer.get("state", "?"))
        if peer.get("listening"):
            how = "streamed"
        elif peer.get("polling"):
            how = f"polled every {format_duration(peer['polling'])}"
        else:
            how = plain(peer.get("listener_summary") or "-")
        table.add_row(
            plain(peer.get("remote", "?")),
            Text(plain(peer.get("summary") or state), style=STATE_STYLE.get(state, "")),
            ago(peer.get("last_success"), now, tz),
            how,
            Text("pending", style="yellow") if peer.get("pending_push") else Text("-"),
        )
        if peer.get("last_error") and state in ("offline", "retrying"):
            table.add_row("", Text(f"└ {plain(peer['last_error'])}", style="dim"), "", "", "")
    return table


def work_table(running: list[dict[str, Any]], now: float) -> RenderableType | None:
    """A bar for each piece of work in progress (a status reply's ``progress``)."""
    if not running:
        return None
    table = Table(title="Working", title_justify="left", box=None, padding=(0, 2))
    table.add_column("what", no_wrap=True)
    table.add_column("bar", width=30)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for item in running:
        done, total = int(item.get("done") or 0), item.get("total")
        unit = plain(item.get("unit", ""))
        label = plain(item.get("label", ""))
        if item.get("stage"):
            label += f" ({plain(item['stage']).lower()})"
        bar = ProgressBar(total=float(total) if total else None, completed=done, width=30)
        count = f"{done:,}/{total:,} {unit}" if total else f"{done:,} {unit}"
        elapsed = format_duration(max(0.0, now - float(item.get("started", now))))
        table.add_row(label, bar, count, elapsed)
    return table


def _changes(status: dict[str, Any]) -> RenderableType | None:
    lines: list[Text] = []
    count = int(status.get("pending_count") or 0)
    if count:
        label = "pending" if status.get("running") else "uncommitted"
        writing = status.get("writing") or []
        line = Text(f"{count} path{'s' if count != 1 else ''} {label}")
        if writing:
            line.append(f" ({len(writing)} open for writing)")
        shown = [plain(p) for p in (status.get("pending") or [])[:PENDING_SHOWN]]
        if shown:
            line.append(": " + ", ".join(shown) + (", ..." if count > len(shown) else ""))
        lines.append(line)
    held = status.get("held") or []
    if held:
        line = Text(f"{len(held)} deletions held by the mass-deletion guard", style="yellow")
        line.append(
            "; commit them with 'annexsync sync --allow-deletions' or restore the files: ",
            style="",
        )
        line.append(", ".join(plain(p) for p in held[:PENDING_SHOWN]))
        lines.append(line)
    for ref, why in (status.get("held_merges") or {}).items():
        lines.append(Text(f"not merged: {plain(ref)}: {plain(why)}", style="yellow"))
    for path, why in (status.get("skipped") or {}).items():
        lines.append(Text(f"skipped: {plain(path)}: {plain(why)}", style="yellow"))
    for path, size in (status.get("large") or {}).items():
        lines.append(Text(f"not committed: {plain(path)} ({size:,} bytes) is over largefiles"))
    if not lines:
        return None
    return Group(Text("Changes", style="italic"), *lines)


def _recent(status: dict[str, Any], tz: tzinfo | None) -> RenderableType:
    events = (status.get("activity") or [])[-RECENT:]
    if not events:
        return Text("no activity yet", style="dim")
    table = Table(title="Recent", title_justify="left", box=None, padding=(0, 2), show_header=False)
    table.add_column("time", style="dim", no_wrap=True)
    table.add_column("what")
    for event in events:
        table.add_row(
            clock(float(event.get("time", 0)), tz),
            Text(plain(event.get("text", "")), style=KIND_STYLE.get(event.get("kind", ""), "")),
        )
    return table


def render(
    status: dict[str, Any], now: float, tz: tzinfo | None = None, relative: bool = True
) -> RenderableType:
    """One frame of the live view for the status reply ``status``, as of ``now``; times are
    shown as ``12s ago``, or with ``relative`` off as clock times."""
    since = now if relative else None
    parts: list[RenderableType] = [_header(status, since, tz), Text(""), _peers(status, since, tz)]
    for part in (work_table(status.get("progress") or [], now), _changes(status)):
        if part is not None:
            parts += [Text(""), part]
    if status.get("running"):
        parts += [Text(""), _recent(status, tz)]
    return Group(*parts)


def frame_text(
    status: dict[str, Any],
    now: float,
    width: int = 100,
    tz: tzinfo | None = None,
    relative: bool = True,
) -> str:
    """A frame as plain text (no colours, no cursor moves), for a non-terminal output."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(render(status, now, tz, relative))
    return buffer.getvalue().rstrip("\n")


def watch(
    poll: Callable[[], dict[str, Any]],
    interval: float,
    out: TextIO,
    stop: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Redraw the view from ``poll()`` every ``interval`` seconds until ``stop()``. On a
    terminal the frame is redrawn in place; elsewhere a frame is printed when it changes."""
    console = Console(file=out)
    if not console.is_terminal:
        last = ""
        while not stop():
            text = frame_text(poll(), time.time(), relative=False)
            if text != last:
                out.write(text + "\n")
                out.flush()
                last = text
            sleep(interval)
        return
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while not stop():
            live.update(render(poll(), time.time()), refresh=True)
            sleep(interval)

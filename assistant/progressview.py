"""Progress bars for the one-shot commands (``sync``, ``push``, ``fetch``): long work is drawn
on the terminal while it runs and wiped when it ends, as git does; nothing is drawn when the
output is not a terminal, and rich is not even imported then."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from assistant.activity import Activity, reporting_to

REDRAW = 0.1  # seconds between frames
SHOW_AFTER = 0.3  # work that ends sooner is never drawn (no flicker for a quick sync)


@contextlib.contextmanager
def bars_on(out: TextIO) -> Iterator[None]:
    """Report the progress of work inside the block as bars on ``out`` if it is a terminal."""
    feed = Activity()
    with reporting_to(feed):
        if not out.isatty():
            yield
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        from assistant.watchview import work_table

        stop = threading.Event()
        with Live(console=Console(file=out), auto_refresh=False, transient=True) as live:

            def draw() -> None:
                while not stop.wait(REDRAW):
                    now = time.time()
                    shown = [p for p in feed.running() if now - p["started"] >= SHOW_AFTER]
                    live.update(work_table(shown, now) or Text(""), refresh=True)

            drawer = threading.Thread(target=draw, name="annexsync-progress", daemon=True)
            drawer.start()
            try:
                yield
            finally:
                stop.set()
                drawer.join()

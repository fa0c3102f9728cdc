"""``within``: a time limit on an await that never swallows a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the result when the awaited work finishes at the
moment its task is cancelled, dropping the cancellation: the task then carries on and never
ends (an assistant that does not exit on SIGTERM). ``asyncio.timeout`` does not have that flaw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, raising TimeoutError after ``seconds`` (None: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable

"""``within`` keeps a cancellation that arrives as the awaited work completes (Python 3.11's
``asyncio.wait_for`` drops it, and the task never ends)."""

from __future__ import annotations

import asyncio

import pytest

from assistant.timeouts import within


def test_a_cancellation_arriving_as_the_work_completes_still_ends_the_task() -> None:
    async def scenario() -> bool:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def waiter() -> None:
            await within(done, 10)
            await asyncio.sleep(3600)  # where a swallowed cancellation would leave the task

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        done.set_result(1)
        task.cancel()
        await asyncio.wait([task], timeout=2)
        return task.cancelled()

    assert asyncio.run(scenario())


def test_the_limit_raises_timeout_error() -> None:
    async def scenario() -> None:
        await within(asyncio.sleep(10), 0.01)

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())

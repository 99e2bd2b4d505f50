"""asyncio helpers the loops of the node and the tower share."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass (None: no limit); whether it is set.

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11, a cancellation that arrives in the loop
    turn where the event is set is swallowed there (wait_for returns the event's result), so a loop built on
    it runs on after its task was cancelled and whoever awaits the task waits for good."""
    if timeout is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True

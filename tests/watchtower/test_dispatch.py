"""The dispatcher's queue: earliest window end first, each channel once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from statechannel.watchtower.dispatch import DeadlineQueue, Dispatcher, Prepared
from statechannel.watchtower.records import Dispute
from statechannel.watchtower.sender import Settled


def test_earliest_deadline_first_ties_in_arrival_order() -> None:
    q = DeadlineQueue()
    q.push(b"late", 300)
    q.push(b"early", 100)
    q.push(b"tie-1", 200)
    q.push(b"tie-2", 200)
    assert len(q) == 4 and b"early" in q
    assert q.pop(2) == [(b"early", 100), (b"tie-1", 200)]
    assert q.pop(10) == [(b"tie-2", 200), (b"late", 300)]
    assert q.pop(1) == [] and len(q) == 0


def test_a_channel_pushed_again_is_queued_once_at_its_new_deadline() -> None:
    q = DeadlineQueue()
    q.push(b"a", 500)
    q.push(b"b", 400)
    q.push(b"a", 100)  # the record moved: a new window end
    q.push(b"a", 100)
    assert len(q) == 2
    assert q.pop(5) == [(b"a", 100), (b"b", 400)]


class _Idle:
    """A sender with nothing to report and an answerer that wants what is in flight: the dispatcher only waits."""

    def poll(self) -> list[Settled]:
        return []

    def still_wanted(self, p: Prepared) -> bool:
        return True


def test_stopping_the_dispatcher_is_not_lost_to_a_wake_that_comes_at_the_same_time() -> None:
    """A retry's timer sets the dispatcher's wake in the same loop turn as the tower stops it. On Python 3.11
    `asyncio.wait_for` then returns the wake and swallows the cancellation, so the loop ran on and `stop`
    waited for good (the tower's shutdown step timed out, a test's tower took 60 s to stop)."""

    async def scenario() -> None:
        idle = _Idle()

        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        d = Dispatcher(idle, idle, run, poll_interval=30)  # type: ignore[arg-type]
        d._flight[1] = Prepared(b"\x01" * 32, b"\x02" * 20, b"", 5, Dispute(1, 100, b"\x00" * 32, 1, b"\x00" * 32, 0))
        d.start()
        for _ in range(5):
            await asyncio.sleep(0)  # the loop is in its wait, with a timeout (something is in flight)
        d._wake.set()
        stopping = asyncio.ensure_future(d.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)  # (asyncio.wait does not cancel it at the end)
        assert done == {stopping}, "the dispatcher ran on after it was cancelled"
        assert d._task is not None and d._task.cancelled()

    asyncio.run(scenario())

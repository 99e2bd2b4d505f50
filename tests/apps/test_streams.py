"""Streams, metering, the receiver's watch and recurring payments, on two real nodes.

Time is a manual clock, so what is owed can be checked to the unit; payments
still travel the real path (machine, store, link, peer)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from statechannel.apps.streams import Recurring, Stream, StreamStatus, StreamWatch
from statechannel.core.errors import LocalError
from statechannel.core.types import ETH
from statechannel.node.node import Node
from tests.node.test_node import World, open_funded, run


class Clock:
    def __init__(self, start: int = 1_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


async def until(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def received(node: Node, cid: bytes) -> int:
    return sum(p.amount for p in node.payments(cid, limit=10_000) if p.direction == "in")


def test_stream_pays_exactly_by_running_time_and_cap(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**6, 0)
        clock = Clock()
        stream = Stream(a, cid, ETH, rate_per_s=1000, cap=700, tick_ms=5, clock=clock)
        watch = StreamWatch(b, cid, ETH, rate_per_s=1000, grace=50, clock=clock)
        stream.start()
        clock.now += 250
        await until(lambda: stream.progress().paid == 250)
        stream.pause()
        clock.now += 10_000  # paused time is not paid
        await asyncio.sleep(0.05)
        assert stream.progress().paid == 250 and stream.progress().owed == 250
        assert watch.report().lagging  # the receiver sees the payer fall behind the agreed rate
        stream.resume()
        clock.now += 100
        await until(lambda: stream.progress().paid == 350)
        await stream.meter(units=3, price_per_unit=7)  # metered service on top
        assert stream.progress().paid == 371
        clock.now += 1_000  # would owe 1,371: the cap stops it at 700
        await until(lambda: stream.progress().status is StreamStatus.COMPLETED)
        assert stream.progress().paid == 700
        await until(lambda: received(b, cid) == 700)
        assert watch.received == 700
        await watch.close()
        with pytest.raises(LocalError):
            stream.start()

    run(tmp_path, scenario)


def test_stop_settles_up_and_a_dry_channel_fails_the_stream(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 1000, 0)
        clock = Clock()
        stream = Stream(a, cid, ETH, rate_per_s=100, cap=10**9, tick_ms=10_000, clock=clock)
        stream.start()
        clock.now += 1_234  # owes 123 before its next tick
        progress = await stream.stop()
        assert (progress.status, progress.paid) == (StreamStatus.STOPPED, 123)
        thirsty = Stream(a, cid, ETH, rate_per_s=10**6, cap=10**9, tick_ms=5, clock=clock)
        thirsty.start()
        clock.now += 1_000  # owes 1,000,000; only 877 are left
        await until(lambda: thirsty.progress().status is StreamStatus.FAILED)
        assert "insufficient" in thirsty.progress().reason
        await thirsty.stop()

    run(tmp_path, scenario)


def test_recurring_survives_restart_and_never_pays_twice(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**6, 0)
        clock = Clock()
        book = tmp_path / "recurring.json"
        rec = Recurring(a, book, clock=clock)
        rec.add(cid, ETH, amount=5, period_ms=1000, count=6)
        clock.now += 3_500
        assert await rec.run_due() == 3
        stale_copy = tmp_path / "stale.json"
        shutil.copy(book, stale_copy)
        # "restart": a new scheduler from the file, two more periods later
        clock.now += 2_000
        again = Recurring(a, book, clock=clock)
        assert await again.run_due() == 2
        # a crash that lost the last save: the schedule file is older than the payments
        shutil.copy(stale_copy, book)
        replay = Recurring(a, book, clock=clock)
        assert await replay.run_due() == 0  # the node's history says they were paid
        clock.now += 1_000
        assert await replay.run_due() == 1  # the sixth and last
        assert replay.schedules == {}
        await until(lambda: received(b, cid) == 30)

    run(tmp_path, scenario)


def test_bad_stream_parameters_are_refused(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 1000, 0)
        for rate, cap in ((0, 10), (10, 0), (-1, 10)):
            with pytest.raises(LocalError):
                Stream(a, cid, ETH, rate_per_s=rate, cap=cap)
        with pytest.raises(LocalError):
            Recurring(a, tmp_path / "r.json").add(cid, ETH, amount=5, period_ms=0)

    run(tmp_path, scenario)

"""Issue 13, part 3: streams and schedules survive a restart without a lump backlog, and end, with an
event, on a channel that closes. Before: streams lived only in memory (gone after a restart, `stream stop`
failed), a schedule paid up to ten missed occurrences at once, and `recurring add` was accepted on a closed
channel and retried for good."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from statechannel.api.streams import StreamService
from statechannel.apps.streams import Recurring, Stream, StreamStatus
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError, Reason
from statechannel.core.types import ETH
from statechannel.node.node import Node, NodeEvent
from tests.apps.test_streams import Clock, until
from tests.node.test_node import World, open_funded, run


def test_a_stream_resumes_after_a_restart_at_its_rate_with_no_lump(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**9, 0)
        data = tmp_path / "a"
        data.mkdir()
        svc = StreamService(a, data)
        svc.start()
        stream = Stream(a, cid, ETH, rate_per_s=1000, cap=10**6, tick_ms=5)
        svc.add(stream)
        stream.start()
        await until(lambda: stream.progress().paid >= 20)
        await svc.close()  # the node stops
        paid = stream.progress().paid

        clock = Clock()  # a restart much later: an hour of downtime must owe nothing
        saved = json.loads((data / "streams.json").read_text())[stream.stream_id]
        assert saved["status"] == "running"
        back = Stream.restore(a, saved, clock)
        assert back.progress().status is StreamStatus.RUNNING
        assert back.owed() <= paid  # nothing for the time down
        clock.now += 1000
        assert paid < back.owed() <= paid + 1000  # one second later: one second's worth, at the rate
        await back.stop()

        again = StreamService(a, data)  # and the service brings it back by itself
        again.start()
        assert list(again.streams) == [stream.stream_id]
        progress = await again.streams[stream.stream_id].stop()  # `stream stop` works after the restart
        assert progress.status is StreamStatus.STOPPED
        await again.close()

    run(tmp_path, scenario)


def test_a_schedule_pays_no_more_than_its_catch_up_after_an_outage(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**6, 0)
        clock = Clock()
        rec = Recurring(a, tmp_path / "r.json", clock=clock)
        rec.add(cid, ETH, amount=5, period_ms=1000, catch_up=1)
        clock.now += 10_500  # ten periods down
        assert await rec.run_due() == 1  # one occurrence, the other nine skipped
        clock.now += 1000
        assert await rec.run_due() == 1

    run(tmp_path, scenario)


def test_streams_and_schedules_end_with_an_event_when_the_channel_closes(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**6, 0)
        seen: list[NodeEvent] = []

        async def listen() -> None:
            async for ev in a.subscribe():
                seen.append(ev)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0)
        clock = Clock()
        rec = Recurring(a, tmp_path / "r.json", clock=clock)
        rec.add(cid, ETH, amount=5, period_ms=1000)
        stream = Stream(a, cid, ETH, rate_per_s=1000, cap=10**6, tick_ms=5)
        stream.start()
        await until(lambda: stream.progress().paid > 0)
        await a.close(cid)
        await a.wait_for(cid, Phase.CLOSED)
        await until(lambda: stream.progress().status is StreamStatus.FAILED)
        clock.now += 1000
        assert await rec.run_due() == 0 and rec.schedules == {}
        await until(lambda: {"stream_stopped", "recurring_stopped"} <= {e.kind for e in seen})
        with pytest.raises(LocalError) as refused:
            rec.add(cid, ETH, amount=5, period_ms=1000)
        assert refused.value.reason is Reason.WRONG_PHASE
        listener.cancel()

    run(tmp_path, scenario)

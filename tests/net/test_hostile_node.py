"""A hostile peer flooding a real Node over real TCP: every frame it sends is refused, it never reads the
answers, and the node's memory for it stays bounded (the flood waits on the node, not the other way round)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.types import ETH
from statechannel.node.node import MAX_BACKLOG
from tests.api.harness import ETHER, World, eventually, key, run
from tests.hostile_frames import Hostile
from tests.net.helpers import raw_handshake

FLOOD = 5000
QUICK = 30.0


async def open_and_pay(w: World) -> bytes:
    await w.transports[0].connect(w.b.address, "127.0.0.1", w.b_listen)  # type: ignore[attr-defined]
    cid = await w.a.open_channel(w.b.address, {ETH: (ETHER, 0)}, challenge_period=600)
    await w.a.wait_for(cid, Phase.OPEN, QUICK)
    await w.b.wait_for(cid, Phase.OPEN, QUICK)
    for _ in range(3):
        await w.a.pay(cid, ETH, 1000)
    await eventually(lambda: w.b.channels[cid].latest == w.a.channels[cid].latest)
    return cid


@pytest.mark.parametrize("flood", ["proposals", "open requests"])
def test_a_flood_from_a_peer_that_never_reads_holds_bounded_memory_and_changes_nothing(
    tmp_path: Path, flood: str
) -> None:
    async def scenario(w: World) -> None:
        cid = await open_and_pay(w)
        victim = w.b
        before = victim.channels[cid]
        latest = before.latest
        assert latest is not None and latest.sig_a is not None and latest.sig_b is not None
        sync = m.Sync(m.WireState.of(latest.state), latest.sig_a.to_bytes(), latest.sig_b.to_bytes())
        hostile = Hostile(victim.domain, key("a"), sync)
        if flood == "proposals":  # each refused (stale), answered with a Reject
            frames = [hostile.conflicting()] * FLOOD
            reason = "stale_version"
        else:  # past the unfunded bound, each refused and answered with a Reject
            frames = [hostile.open_request(victim.address, nonce) for nonce in range(FLOOD)]
            reason = "too_many_unfunded"
        await w.transports[0].close()  # the honest transport of A goes quiet; "A" is now the raw client below
        await eventually(lambda: not victim.transport.connected(w.a.address))
        ka = key("a")
        client = await raw_handshake(w.b_listen, ka, ka.address, victim.address)
        client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await eventually(lambda: victim.transport.connected(ka.address))
        baseline = len(asyncio.all_tasks())
        for frame in frames:
            client.send_frame(frame)  # never drained, never read: the kernel and the node set the pace
        peak = baseline
        for _ in range(300):  # three seconds: long enough for the node to read everything it is willing to
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0.01)
        assert peak - baseline <= MAX_BACKLOG + 64, f"{peak - baseline} tasks for one peer's flood"
        assert victim.channels[cid].latest == latest and victim.channels[cid].signed_upto == before.signed_upto
        assert victim.refusals[(ka.address, reason)] >= 1
        client.writer.transport.abort()
        await eventually(lambda: victim._backlog[cid] == 0, QUICK)  # the rest is worked off once it hangs up
        assert victim.channels[cid].latest == latest
        unfunded = [c for c in victim.channels.values() if c.peer_address == ka.address and c.channel_id != cid]
        assert len(unfunded) <= victim.max_unfunded_per_peer

    run(tmp_path, scenario, tcp=True, timeout=120)

"""A tower in process on the embedded EVM: it answers a stale close with the newer state it holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statechannel.chain.embedded import EmbeddedChain
from statechannel.watchtower.records import TowerStatus, WatchedChannel
from tests.watchtower.helpers import (
    closes,
    deploy,
    eth_state,
    eventually,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)


def test_stale_close_is_challenged_and_settles_by_the_newer_state(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "embedded")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)
    old = sign(s.adj.domain, eth_state(cid, 2, 100), s.a, s.b)
    new = sign(s.adj.domain, eth_state(cid, 5, 700), s.a, s.b)

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            created, _ = await register(tower, params, s.b)
            assert created
            await push(tower, new, s.b)
            s.adj.close(s.a, params, old.state, old.sig_a, old.sig_b)
            await eventually("the challenge", lambda: any(e.version == 5 for e in closes(s, cid)))
            await eventually("the tower to see it", lambda: _recorded(tower.store.get(cid)) == 5)
            ch = tower.store.get(cid)
            assert ch is not None and ch.status is TowerStatus.CHALLENGED
            assert ch.dispute is not None and ch.dispute.version == 5 and ch.version == 5

    asyncio.run(asyncio.wait_for(scenario(), 60))
    events = closes(s, cid)
    assert [(e.version, e.challenge) for e in events] == [(2, False), (5, True)]


def _recorded(ch: WatchedChannel | None) -> int | None:
    return None if ch is None or ch.dispute is None else ch.dispute.version

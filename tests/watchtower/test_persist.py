"""A tower keeps answering a dispute while its window is open, whatever went wrong with earlier tries.

Each test fails on the code before its fix (the dispatcher gave up after five failed sends; an unexplained
revert made the tower drop its best state for a worse one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statechannel.chain.base import ChainError, TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.watchtower.sender import OnSent, PlainSender, Settled
from statechannel.watchtower.service import UNEXPLAINED_TRIES
from tests.watchtower.helpers import (
    Delegating,
    Setup,
    close_with,
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


class Down(Delegating):
    """The tower's node refuses the first `failures` broadcasts (an outage longer than the old retries)."""

    def __init__(self, s: Setup, failures: int) -> None:
        super().__init__(PlainSender(s.chain, s.tower_key))
        self.failures = failures
        self.refused = 0

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        if self.refused < self.failures:
            self.refused += 1
            raise ChainError("connection refused (the node is down)")
        return self.inner.submit(to, data, on_sent=on_sent)


def test_a_node_outage_longer_than_the_retries_does_not_make_the_tower_give_up(tmp_path: Path) -> None:
    """B closes with v1 while the tower's node refuses broadcasts twelve times in a row. The dispute is touched
    by no further event, so a dispatcher that stops retrying never answers it and B's v1 settles."""
    s = deploy(EmbeddedChain(), "persist outage")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    v1, v5 = (sign(s.adj.domain, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 5))

    async def scenario() -> None:
        sender = Down(s, 12)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = (0.01, 0.05)
            await register(tower, params, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("the challenge with v5", lambda: [e.version for e in closes(s, cid)] == [1, 5], 20)
            assert sender.refused == 12
            await eventually("its receipt", lambda: tower.challenges[cid].outcome == "mined")

    asyncio.run(asyncio.wait_for(scenario(), 60))


class OutOfGasOnce(Delegating):
    """The first challenge is mined and fails with no reason (out of gas: the estimate was taken on another
    state), as the RPC sender reports it: its replay on the block before passes, so the reason is empty."""

    def __init__(self, s: Setup) -> None:
        self._plain = PlainSender(s.chain, s.tower_key)
        super().__init__(self._plain)
        self.failed: list[bytes] = []

    def fail(self, data: bytes) -> int:
        """Mined, and failed with no reason: what the dispatcher's poll will report."""
        self.failed.append(data)
        ticket = 10**9 + len(self.failed)
        self._plain._done.append(Settled(ticket, None, TransactionReverted("")))
        return ticket

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        return self._plain.submit(to, data, on_sent=on_sent) if self.failed else self.fail(data)


def test_an_unexplained_revert_does_not_make_the_tower_answer_with_a_worse_state(tmp_path: Path) -> None:
    """The tower holds v3 (A has 3,000) and v5 (A has 5,000); B closes with v1. The tower's first challenge
    with v5 fails with no reason. Nothing says v5 is unusable: it is sent again, and v3 is never recorded
    (a tower that takes an empty reason as a verdict on the state records v3, and B keeps 2,000 if the window
    ends before the tower's second round)."""
    s = deploy(EmbeddedChain(), "persist unexplained")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    v1, v3, v5 = (sign(s.adj.domain, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 3, 5))

    async def scenario() -> None:
        sender = OutOfGasOnce(s)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = (0.01, 0.05)
            await register(tower, params, s.a)
            await push(tower, v3, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("a challenge on chain", lambda: len(closes(s, cid)) >= 2, 20)
            await asyncio.sleep(0.3)  # a worse state, if sent, would be on chain by now
            assert [e.version for e in closes(s, cid)] == [1, 5]
            assert len(sender.failed) == 1

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_state_that_keeps_failing_without_a_reason_gives_way_to_the_next(tmp_path: Path) -> None:
    """An empty reason is not a verdict, but it is not a promise either: a state whose challenge fails
    without a reason every time must not hold up the tower's other states for the whole window."""
    s = deploy(EmbeddedChain(), "persist always")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    v1, v3, v5 = (sign(s.adj.domain, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 3, 5))

    class AlwaysForV5(OutOfGasOnce):
        def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
            if v5.sig_a.r.to_bytes(32, "big") in data:
                return self.fail(data)
            return self._plain.submit(to, data, on_sent=on_sent)

    async def scenario() -> None:
        sender = AlwaysForV5(s)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = (0.01, 0.05)
            await register(tower, params, s.a)
            await push(tower, v3, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("the challenge with v3", lambda: [e.version for e in closes(s, cid)] == [1, 3], 20)
            assert len(sender.failed) == UNEXPLAINED_TRIES

    asyncio.run(asyncio.wait_for(scenario(), 60))

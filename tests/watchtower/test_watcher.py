"""The tower's chain side: events handled once, catch-up after a restart, reorgs, fee-bumped replacements."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import ChainError
from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.rpc import RpcChain
from statechannel.store.base import Checkpoint
from statechannel.watchtower.chainwatch import ChainWatch
from statechannel.watchtower.records import TowerStatus, WatchedChannel
from statechannel.watchtower.sender import BumpingSender, Call, OnSent, PlainSender, Sender, SentTx
from statechannel.watchtower.service import Tower
from tests.anvil import Anvil
from tests.watchtower.helpers import (
    Delegating,
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


class CountingSender(Delegating):
    """Every transaction the tower sends, counted, and every version of it handed to the chain."""

    def __init__(self, inner: Sender) -> None:
        super().__init__(inner)
        self.sent = 0
        self.versions: list[SentTx] = []
        self.batches: list[int] = []
        """The size of each `submit_many` (the dispatcher sends a turn's challenges together)."""

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        self.sent += 1
        return self.inner.submit(to, data, on_sent=self._seen(on_sent))

    def submit_many(self, calls: Sequence[Call]) -> list[int | ChainError]:
        self.sent += len(calls)
        self.batches.append(len(calls))
        return self.inner.submit_many([replace(c, on_sent=self._seen(c.on_sent)) for c in calls])

    def _seen(self, on_sent: OnSent | None) -> OnSent:
        def seen(tx: SentTx) -> None:
            self.versions.append(tx)
            if on_sent is not None:
                on_sent(tx)

        return seen


def test_events_handled_twice_change_nothing_and_send_nothing(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "idempotent")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)
    start = s.chain.block().number
    sender = CountingSender(PlainSender(s.chain, s.tower_key))

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            await register(tower, params, s.b)
            await push(tower, sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b), s.b)
            close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
            await eventually("the challenge", lambda: len(closes(s, cid)) == 2)
            await eventually("the tower to record it", lambda: _recorded(tower.store.get(cid)) == 5)
            await asyncio.sleep(0.2)
            assert sender.sent == 1
            row = tower.store.get(cid)
            events = s.adj.events(start)
            assert await tower.handle(events) == set()
            assert await tower.handle(events[::-1]) == set()  # older positions never overwrite newer ones
            await asyncio.sleep(0.2)
            assert tower.store.get(cid) == row and sender.sent == 1
            await tower.store.save_checkpoint(Checkpoint(start, s.chain.block(start).hash))
        # a restart from a checkpoint before it all re-reads the same events: still nothing to do
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            await eventually("the catch-up", lambda: tower.head == s.chain.block().number)
            await asyncio.sleep(0.3)
            assert tower.store.get(cid) == row and sender.sent == 1

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_restarted_tower_catches_up_and_challenges(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "catch-up")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            await register(tower, params, s.b)
            await push(tower, sign(s.adj.domain, eth_state(cid, 4, 10), s.a, s.b), s.b)
        close_with(s, params, sign(s.adj.domain, eth_state(cid, 3, 0), s.a, s.b))
        s.chain.mine(5)
        async with running_tower(s, tmp_path / "t.db") as tower:
            await eventually("the challenge", lambda: [e.version for e in closes(s, cid)] == [3, 4])
            await eventually("the tower to record it", lambda: _recorded(tower.store.get(cid)) == 4)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def _recorded(ch: WatchedChannel | None) -> int | None:
    return None if ch is None or ch.dispute is None else ch.dispute.version


@contextmanager
def snapshot(rpc: RpcChain) -> Iterator[str]:
    snap = rpc._rpc("evm_snapshot", [])
    try:
        yield str(snap)
    finally:
        rpc._rpc("evm_setAutomine", [True])


@pytest.mark.anvil
def test_reorg_undoing_a_close_is_noticed_and_the_close_answered_again(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "reorg")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)
    stale = sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b)
    sender = CountingSender(BumpingSender(rpc, s.tower_key, bump_after=2.0))

    async def scenario(snap: str) -> None:
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await register(tower, params, s.b)
            await push(tower, sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b), s.b)
            fork = s.chain.block().number
            close_with(s, params, stale)
            await eventually("the first challenge", lambda: _recorded(tower.store.get(cid)) == 5)
            rpc._rpc("evm_revert", [snap])  # the blocks holding the close and the challenge are gone
            assert s.chain.block().number == fork
            s.chain.mine(1)
            await eventually("the reorg to be noticed", lambda: _status(tower, cid) is TowerStatus.WATCHING)
            fresh = Adjudicator(RpcChain(anvil.url), s.adj.address)  # a client whose nonces predate nothing
            fresh.close(s.a, params, stale.state, stale.sig_a, stale.sig_b)  # the same stale close, new branch
            await eventually("the second challenge", lambda: _recorded(tower.store.get(cid)) == 5)
            assert sender.sent == 2
            assert [e.version for e in closes(s, cid)] == [2, 5]

    with snapshot(rpc) as snap:
        asyncio.run(asyncio.wait_for(scenario(snap), 90))


def _status(tower: Tower, cid: bytes) -> TowerStatus | None:
    ch = tower.store.get(cid)
    return None if ch is None else ch.status


@pytest.mark.anvil
def test_unmined_challenge_is_replaced_with_higher_fees(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "fee bump")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)

    async def scenario() -> None:
        sender = CountingSender(BumpingSender(rpc, s.tower_key, bump_after=0.5))
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await register(tower, params, s.b)
            await push(tower, sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b), s.b)
        close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
        rpc._rpc("evm_setAutomine", [False])  # from here on nothing is mined until the test says so
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await eventually("a replacement", lambda: len(sender.versions) >= 2)
            first, second = sender.versions[:2]
            assert first.nonce == second.nonce and sender.sent == 1
            assert second.max_fee * 8 >= first.max_fee * 9 and second.priority_fee * 8 >= first.priority_fee * 9
            rpc.mine(1)
            await eventually("the challenge to be mined", lambda: tower.challenges[cid].outcome == "mined")
            mined = [e for e in closes(s, cid) if e.challenge]
            assert len(mined) == 1 and mined[0].version == 5
            assert mined[0].origin.tx_hash == sender.versions[-1].tx_hash != first.tx_hash
            assert rpc._rpc("eth_getTransactionReceipt", ["0x" + first.tx_hash.hex()]) is None
            assert tower.challenges[cid].tx_hashes == tuple(v.tx_hash for v in sender.versions)

    with snapshot(rpc):
        asyncio.run(asyncio.wait_for(scenario(), 90))


def test_a_challenge_someone_else_made_first_is_not_retried(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "front-run")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)
    newer = sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b)

    class FrontRun(CountingSender):
        """Another tower's challenge with the same state lands just before ours."""

        def submit_many(self, calls: Sequence[Call]) -> list[int | ChainError]:
            s.adj.challenge(s.b, params, newer.state, newer.sig_a, newer.sig_b)
            return super().submit_many(calls)

    sender = FrontRun(PlainSender(s.chain, s.tower_key))

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            await register(tower, params, s.b)
            await push(tower, newer, s.b)
            close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
            await eventually(
                "the attempt", lambda: cid in tower.challenges and tower.challenges[cid].outcome != "pending"
            )
            attempt = tower.challenges[cid]
            # the other challenge recorded the same version first
            assert (attempt.outcome, attempt.reason) == ("reverted", "stale version")
            await eventually("the tower to see the other challenge", lambda: _recorded(tower.store.get(cid)) == 5)
            s.chain.mine(3)
            await asyncio.sleep(0.3)
            assert sender.sent == 1 and [e.version for e in closes(s, cid)] == [2, 5]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_channel_registered_during_its_dispute_is_found_by_the_commitment_and_answered(tmp_path: Path) -> None:
    """The chain keeps only a hash of the recorded (state, version, window end): the tower finds the event
    whose values hash to it (the challenge, not the close it replaced) and quotes it back."""
    s = deploy(EmbeddedChain(), "late registration")
    params = open_channel(s, 1, period=500)
    cid = s.adj.channel_id(params)
    close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
    [closed] = closes(s, cid)
    third = sign(s.adj.domain, eth_state(cid, 3, 5), s.a, s.b)
    s.adj.challenge(s.a, params, third.state, third.sig_a, third.sig_b)
    s.chain.mine(3)
    status, found = ChainWatch(s.chain, s.adj).find_dispute(cid, params.challenge_period)
    assert status is TowerStatus.CHALLENGED and found is not None
    assert (found.version, found.finalizes_at) == (3, closed.finalizes_at)
    assert found.record.commitment == s.adj.dispute(cid)

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            created, row = await register(tower, params, s.b)
            assert created and row.status is TowerStatus.CHALLENGED and row.dispute == found
            await push(tower, sign(s.adj.domain, eth_state(cid, 6, 40), s.a, s.b), s.b)
            await eventually("the challenge", lambda: [e.version for e in closes(s, cid)] == [2, 3, 6])
            await eventually("the tower to record it", lambda: _recorded(tower.store.get(cid)) == 6)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_dispute_whose_window_ended_long_ago_is_not_looked_for(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "old dispute")
    params = open_channel(s, 1, period=100)
    cid = s.adj.channel_id(params)
    close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
    watch = ChainWatch(s.chain, s.adj)
    assert watch.find_dispute(cid, 100)[1] is not None
    s.chain.advance_time(150)
    s.chain.mine(2)
    assert watch.find_dispute(cid, 100) == (TowerStatus.CHALLENGED, None)  # no challenge could win now

"""Audit of the reworked tower (issue 10) as a hostile counterparty: each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from statechannel.chain.base import Chain, TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.eip712 import withdrawal_digest
from statechannel.core.io import SignedState
from statechannel.core.types import ETH, ChannelParams, Withdrawal
from statechannel.watchtower.dispatch import LOUD_AFTER_TRIES
from statechannel.watchtower.sender import OnSent, PlainSender, Settled
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from statechannel.watchtower.storage import Quotas
from tests.watchtower.helpers import (
    ETHER,
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
from tests.watchtower.test_displacement import NoDryRun, _challenge_selector


class Blanked(Delegating):
    """The real chain's sender, with a hook run just before each submission (the counterparty's transaction
    ordered first in the same block) and, for a submission the hook raced, the revert reason the RPC sender
    gives: the empty string, since it replays the transaction on the block before, where it succeeds."""

    def __init__(self, s: Setup) -> None:
        super().__init__(PlainSender(s.chain, s.tower_key))
        self._raced: set[int] = set()

    def before(self) -> bool:
        """Act ahead of the tower's transaction; whether it did."""
        return False

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        raced = self.before()
        ticket = self.inner.submit(to, data, on_sent=on_sent)
        if raced:
            self._raced.add(ticket)
        return ticket

    def poll(self) -> list[Settled]:
        out = []
        for done in self.inner.poll():
            raced = done.ticket in self._raced and isinstance(done.error, TransactionReverted)
            out.append(replace(done, error=TransactionReverted("")) if raced else done)
        return out


class RacedOnce(Blanked):
    """The counterparty's own challenge lands just before the tower's first one, in the same block."""

    def __init__(self, s: Setup, params: ChannelParams, recorded: SignedState, theirs: SignedState) -> None:
        super().__init__(s)
        self._s, self._params, self._recorded, self._theirs = s, params, recorded, theirs
        self.raced = False

    def before(self) -> bool:
        if self.raced:
            return False
        self.raced = True
        s, t = self._s, self._theirs
        s.adj.challenge(s.b, self._params, t.state, t.sig_a, t.sig_b)
        return True


def test_audit_tower_a_challenge_lost_to_a_race_is_not_marked_unusable_for_good(tmp_path: Path) -> None:
    """B closes with v1 and, in the block where the tower's challenge with A's v5 lands, challenges with its own
    v2 first: the tower's challenge reverts for a reason about the record, not about v5. v5 must be tried again
    against the new record; marking it unusable leaves B's v2 to settle."""
    s = deploy(EmbeddedChain(), "audit race")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1, v2, v5 = (sign(d, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 2, 5))

    async def scenario() -> None:
        sender = RacedOnce(s, params, v1, v2)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            await register(tower, params, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("B's racing challenge", lambda: sender.raced and len(closes(s, cid)) >= 2)
            await eventually("the challenge with v5", lambda: [e.version for e in closes(s, cid)] == [1, 2, 5], 15)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_audit_tower_a_counterpartys_unconfirmed_challenge_does_not_stall_the_tower(tmp_path: Path) -> None:
    """A tower that waits for confirmations quotes the record it has confirmed. B closes with v1 and at once
    challenges with its own stale v2: every challenge quoting v1 now reverts ("recorded state does not match"),
    and B, with a challenge a block, keeps the confirmed record one step behind until the window ends. The
    tower must answer the record the chain holds now, which it can read."""
    s = deploy(EmbeddedChain(), "audit unconfirmed")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1, v2, v5 = (sign(d, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 2, 5))

    async def scenario() -> None:
        store = SqliteTowerStore(tmp_path / "t.db", s.chain.chain_id, s.adj.address)
        plain = PlainSender(s.chain, s.tower_key)
        tower = Tower(s.chain, s.adj.address, s.tower_key, store, plain, confirmations=1, poll_interval=0.02)
        await tower.start()
        try:
            await register(tower, params, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            s.adj.challenge(s.b, params, v2.state, v2.sig_a, v2.sig_b)
            # the close is confirmed now, B's challenge is not: no block is mined until the tower sends one
            await eventually("the challenge with v5", lambda: [e.version for e in closes(s, cid)] == [1, 2, 5], 15)
        finally:
            await tower.stop()
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_audit_tower_the_counterpartys_unusable_states_do_not_use_up_the_send_attempts(tmp_path: Path) -> None:
    """With dry runs unavailable, B holds LOUD_AFTER_TRIES higher versions that overdraw it: each is sent and reverts.
    A revert on chain is not a failed attempt (the dispatcher retries only failures to get mined), so A's
    usable v5 is still sent after them."""
    s = deploy(EmbeddedChain(), "audit attempts")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1 = sign(d, eth_state(cid, 1, 0), s.a, s.b)
    v5 = sign(d, eth_state(cid, 5, ETHER // 2), s.a, s.b)  # A's usable state
    theirs = [sign(d, eth_state(cid, v, -(ETHER * 9 // 10)), s.a, s.b) for v in range(6, 6 + LOUD_AFTER_TRIES)]
    w = Withdrawal(cid, 1, ETH, ETHER // 2, 1, s.chain.block().timestamp + 3600)
    wd = withdrawal_digest(d, w)
    s.adj.withdraw(s.b, params, w, s.a.sign_digest(wd), s.b.sign_digest(wd))  # B's states now overdraw B

    async def scenario() -> None:
        blind = NoDryRun(s.chain, _challenge_selector(s))  # type: ignore[arg-type]
        store = SqliteTowerStore(tmp_path / "t.db", s.chain.chain_id, s.adj.address)
        tower = Tower(
            blind,  # type: ignore[arg-type]
            s.adj.address,
            s.tower_key,
            store,
            PlainSender(s.chain, s.tower_key),
            poll_interval=0.02,
            quotas=Quotas(states=LOUD_AFTER_TRIES),
        )
        await tower.start()
        try:
            await register(tower, params, s.a)
            await push(tower, v5, s.a)
            for t in theirs:
                await push(tower, t, s.b)
            close_with(s, params, v1)
            await eventually("the challenge with v5", lambda: [e.version for e in closes(s, cid)] == [1, 5], 20)
        finally:
            await tower.stop()
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


class FrontRun(Blanked):
    """The counterparty gets its own next stale version ordered first in every block the tower's challenge goes
    into (a higher priority fee), and a block takes 12 s. The tower's challenge quotes the record B's replaced."""

    def __init__(self, s: Setup, params: ChannelParams, theirs: list[SignedState]) -> None:
        super().__init__(s)
        self._s, self._params, self._theirs = s, params, list(theirs)
        self.rounds = 0

    def before(self) -> bool:
        s = self._s
        rec = s.adj.recorded(s.adj.channel_id(self._params))
        s.chain.advance_time(12)  # the block both transactions go into
        if rec is None or not self._theirs or s.chain.block().timestamp + 3 >= rec.finalizes_at:
            return False
        self.rounds += 1
        t = self._theirs.pop(0)
        s.adj.challenge(s.b, self._params, t.state, t.sig_a, t.sig_b)
        return True


def test_audit_tower_a_counterparty_front_running_every_block_cannot_run_out_the_window(
    tmp_path: Path, chain: Chain
) -> None:
    """B closes with v1 and, holding v2..v49 both-signed, gets its next stale version recorded just ahead of
    every challenge the tower sends. The tower's challenge with A's v50 names no record (the contract compares
    versions, docs/decisions/0009), so it lands over whichever of B's versions is current."""
    s = deploy(chain, "audit front-run")
    params = open_channel(s, 1, period=60)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1 = sign(d, eth_state(cid, 1, 0), s.a, s.b)
    v50 = sign(d, eth_state(cid, 50, 5000), s.a, s.b)
    theirs = [sign(d, eth_state(cid, v, v), s.a, s.b) for v in range(2, 50)]

    async def scenario() -> None:
        sender = FrontRun(s, params, theirs)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            await register(tower, params, s.a)
            await push(tower, v50, s.a)
            close_with(s, params, v1)
            await eventually("the challenge with v50", lambda: 50 in [e.version for e in closes(s, cid)], 10)
            assert sender.rounds >= 1  # B did move the record ahead of the tower's challenge

    asyncio.run(asyncio.wait_for(scenario(), 60))

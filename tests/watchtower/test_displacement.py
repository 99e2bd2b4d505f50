"""Issue 10, attack 2: the counterparty displaces the state that would win a challenge.

The sequence of the issue, on the adjudicator in the embedded EVM, with raw keys standing in for the two
nodes. Decision 0007 makes it unreachable between two honest nodes (only A proposes, and no withdrawal is
signed that would leave a state either side signed overdrawn: `core.withdrawals.payable` checks every
refused proposal too). But a tower serves many clients, runs no channel machine and cannot tell what an
honest node would have signed: any both-signed state that overdraws on chain is one a counterparty can
push, so the tower must not let it displace a client's usable one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statechannel.chain.base import ChainError
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.eip712 import withdrawal_digest
from statechannel.core.types import ETH, ChannelParams, Withdrawal
from statechannel.watchtower.sender import PlainSender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from tests.watchtower.helpers import (
    ETHER,
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


def test_attack_10_2_counterparty_cannot_displace_the_usable_state(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "displace")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1 = sign(d, eth_state(cid, 1, 0), s.a, s.b)
    v2 = sign(d, eth_state(cid, 2, ETHER // 2), s.a, s.b)  # B is owed half an ether
    v3 = sign(d, eth_state(cid, 3, -(ETHER * 9 // 10)), s.a, s.b)  # B proposed paying 0.9; A refused it

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            await register(tower, params, s.b)
            await push(tower, v2, s.b)  # B protects itself
            # B withdraws 0.5 of its 1 ether: v3 (B pays 0.9) now overdraws B on chain
            w = Withdrawal(cid, 1, ETH, ETHER // 2, 1, s.chain.block().timestamp + 3600)
            wd = withdrawal_digest(d, w)
            s.adj.withdraw(s.b, params, w, s.a.sign_digest(wd), s.b.sign_digest(wd))
            # A countersigns B's refused v3 and pushes it as itself; B's v2 stays B's, and B may push it again
            _, receipt, _ = await push(tower, v3, s.a)
            assert receipt.version == 3
            row, receipt, _ = await push(tower, v2, s.b)
            assert receipt.version == 2 and row.of_client(1) == [v2] and row.of_client(0) == [v3]
            close_with(s, params, v1)  # A closes stale
            await eventually("the challenge with v2", lambda: [e.version for e in closes(s, cid)] == [1, 2])
            assert tower.candidates(cid) == [v2]  # v3 failed its dry run and is never tried again
            await eventually("the outcome", lambda: tower.challenges[cid].outcome == "mined")
            assert tower.challenges[cid].version == 2
        finalizes_at = closes(s, cid)[0].finalizes_at
        s.chain.advance_time(finalizes_at - s.chain.block().timestamp + 1)
        before = s.chain.balance(s.b.address)
        s.adj.settle(s.a, params, v2.state, finalizes_at)
        assert s.chain.balance(s.b.address) - before == ETHER // 2 + ETHER // 2  # its remaining 0.5 and the 0.5 owed

    asyncio.run(asyncio.wait_for(scenario(), 60))


class NoDryRun:
    """The real chain, except that eth_call of `challenge` fails (a node that does not answer it): the tower
    must send blind, and fall back when the mined challenge reverts."""

    def __init__(self, chain: EmbeddedChain, selector: bytes) -> None:
        self._chain, self._selector = chain, selector

    def __getattr__(self, name: str) -> object:
        return getattr(self._chain, name)

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes:
        if data[:4] == self._selector:
            raise ChainError("eth_call is not available")
        return self._chain.call(to, data, sender)


def test_a_challenge_that_reverts_on_chain_falls_back_to_the_next_state(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "displace blind")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1 = sign(d, eth_state(cid, 1, 0), s.a, s.b)
    v2 = sign(d, eth_state(cid, 2, ETHER // 2), s.a, s.b)
    v3 = sign(d, eth_state(cid, 3, -(ETHER * 9 // 10)), s.a, s.b)
    w = Withdrawal(cid, 1, ETH, ETHER // 2, 1, s.chain.block().timestamp + 3600)
    wd = withdrawal_digest(d, w)
    s.adj.withdraw(s.b, params, w, s.a.sign_digest(wd), s.b.sign_digest(wd))

    async def scenario() -> None:
        blind = NoDryRun(s.chain, _challenge_selector(s))  # type: ignore[arg-type]
        store = SqliteTowerStore(tmp_path / "t.db", s.chain.chain_id, s.adj.address)
        tower = Tower(blind, s.adj.address, s.tower_key, store, PlainSender(s.chain, s.tower_key), poll_interval=0.02)  # type: ignore[arg-type]
        await tower.start()
        try:
            await register(tower, params, s.b)
            await push(tower, v2, s.b)
            await push(tower, v3, s.a)
            close_with(s, params, v1)
            await eventually("the challenge with v2", lambda: [e.version for e in closes(s, cid)] == [1, 2])
            assert tower.candidates(cid) == [v2]
            assert "transfer exceeds funds of B" in tower.unusable[cid].values()
        finally:
            await tower.stop()
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def _challenge_selector(s: Setup) -> bytes:
    v = sign(s.adj.domain, eth_state(b"\x01" * 32, 1, 0), s.a, s.b)
    params = ChannelParams(s.a.address, s.b.address, 600, 0)
    return s.adj.abi.encode_call("challenge", params.as_abi(), v.state.as_abi(), v.sig_a.as_abi(), v.sig_b.as_abi())[:4]

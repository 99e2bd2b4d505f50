"""Issue 10, attack 1: a flood of disputes must not make the tower late for an honest one.

The attacker owns 48 channels (both keys, nothing deposited), has the tower watch them with version 2,
and closes each with version 1 just before a victim's channel (60 s window) is closed with a stale
state. A tower that answers first come, first served, a few transactions at a time and each waited
on until mined, reaches the victim after the window (`challenge window is over`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_account import Account

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.io import SignedState
from statechannel.core.types import ChannelParams, to_checksum
from statechannel.watchtower.sender import BumpingSender, PlainSender
from statechannel.watchtower.service import Tower
from tests.anvil import Anvil
from tests.rpcproxy import RpcProxy
from tests.watchtower.helpers import (
    ETHER,
    Setup,
    closes,
    deploy,
    eth_state,
    eventually,
    key,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)
from tests.watchtower.test_watcher import CountingSender, snapshot

HOSTILE = 48
WINDOW = 60
BLOCK_TIME = 12


@dataclass(frozen=True)
class Flood:
    x: PrivateKey
    y: PrivateKey
    channels: tuple[ChannelParams, ...]
    pushed: tuple[SignedState, ...]
    """Version 2 of each: what the tower holds."""
    closing: tuple[SignedState, ...]
    """Version 1 of each: what the attacker closes with."""


def hostile_channels(s: Setup, n: int, period: int, deposit: int = 0) -> Flood:
    """`n` channels between two keys of the attacker, opened with `deposit` wei each (none by default)."""
    x, y = key("flood attacker x"), key("flood attacker y")
    for k in (x, y):
        s.chain.fund(k.address, 100 * ETHER)
    channels, pushed, closing = [], [], []
    for i in range(n):
        params = ChannelParams(x.address, y.address, period, 1000 + i)
        s.adj.open(x, params, deposit)
        cid = s.adj.channel_id(params)
        channels.append(params)
        pushed.append(sign(s.adj.domain, eth_state(cid, 2, 0), x, y))
        closing.append(sign(s.adj.domain, eth_state(cid, 1, 0), x, y))
    return Flood(x, y, tuple(channels), tuple(pushed), tuple(closing))


async def watch_all(
    tower: Tower, flood: Flood, victim: ChannelParams, victim_state: SignedState, victim_key: PrivateKey
) -> None:
    """The attacker registers and pushes as a party of each of its channels; the victim as a party of its own."""
    for params, state in zip(flood.channels, flood.pushed, strict=True):
        await register(tower, params, flood.x)
        await push(tower, state, flood.x)
    await register(tower, victim, victim_key)
    await push(tower, victim_state, victim_key)


def test_attack_10_1_a_flood_of_disputes_does_not_make_the_tower_late_embedded(tmp_path: Path) -> None:
    """On the embedded EVM with one transaction per block and a block every 12 s: every challenge the
    tower spends on the flood costs the victim 12 s of its 60."""
    chain = EmbeddedChain()
    s = deploy(chain, "flood embedded")
    victim = open_channel(s, 1, period=WINDOW)
    vcid = s.adj.channel_id(victim)
    latest = sign(s.adj.domain, eth_state(vcid, 5, 700), s.a, s.b)
    stale = sign(s.adj.domain, eth_state(vcid, 2, 100), s.a, s.b)
    flood = hostile_channels(s, HOSTILE, period=10 * WINDOW)
    db = tmp_path / "t.db"
    sender = CountingSender(PlainSender(chain, s.tower_key))

    async def scenario() -> None:
        async with running_tower(s, db) as tower:
            await watch_all(tower, flood, victim, latest, s.b)
        for params, state in zip(flood.channels, flood.closing, strict=True):
            s.adj.close(flood.x, params, state.state, state.sig_a, state.sig_b)
        chain.block_time = BLOCK_TIME
        async with running_tower(s, db, sender=sender) as tower:
            # the tower has taken the flood in; now the victim's channel is closed stale
            await eventually("the tower to take the flood in", lambda: tower.head >= s.chain.block().number)
            await asyncio.sleep(0.1)
            s.adj.close(s.b, victim, stale.state, stale.sig_a, stale.sig_b)
            await eventually(
                "the victim's challenge to end",
                lambda: vcid in tower.challenges and tower.challenges[vcid].outcome != "pending",
                timeout=120,
            )
            attempt = tower.challenges[vcid]
            assert (attempt.outcome, attempt.reason) == ("mined", "")

    asyncio.run(asyncio.wait_for(scenario(), 180))
    [closed, challenged] = closes(s, vcid)
    assert challenged.challenge and challenged.version == 5
    assert s.chain.block(challenged.origin.block_number).timestamp < closed.finalizes_at
    # nothing was spent on channels that hold nothing
    assert all(len(closes(s, s.adj.channel_id(p))) == 1 for p in flood.channels)


def _send_raw(rpc: RpcChain, k: PrivateKey, to: bytes, data: bytes, nonce: int) -> None:
    base = int(rpc._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    tx = {
        "type": 2,
        "chainId": rpc.chain_id,
        "nonce": nonce,
        "gas": 300_000,
        "maxFeePerGas": 4 * base + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "to": to_checksum(to),
        "value": 0,
        "data": data,
    }
    raw = bytes(Account.sign_transaction(tx, k.secret).raw_transaction)
    rpc._rpc("eth_sendRawTransaction", ["0x" + raw.hex()])


def _close_call(adj: Adjudicator, params: ChannelParams, signed: SignedState) -> bytes:
    return adj.abi.encode_call(
        "close", params.as_abi(), signed.state.as_abi(), signed.sig_a.as_abi(), signed.sig_b.as_abi()
    )


@pytest.mark.anvil
def test_attack_10_1_a_flood_of_disputes_does_not_make_the_tower_late_anvil(tmp_path: Path, anvil: Anvil) -> None:
    """On anvil with a mempool: blocks every 12 s of chain time (mined by the test), the attacker's 48
    closes in one block and the victim's stale close in the next."""
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "flood anvil")
    victim = open_channel(s, 1, period=WINDOW)
    vcid = s.adj.channel_id(victim)
    latest = sign(s.adj.domain, eth_state(vcid, 5, 700), s.a, s.b)
    stale = sign(s.adj.domain, eth_state(vcid, 2, 100), s.a, s.b)
    flood = hostile_channels(s, HOSTILE, period=WINDOW)
    sender = CountingSender(BumpingSender(rpc, s.tower_key, bump_after=2.0))

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await watch_all(tower, flood, victim, latest, s.b)
            await flood_then_stale_close(s, rpc, flood, victim, stale, 1.0, tower)

    with snapshot(rpc):
        asyncio.run(asyncio.wait_for(scenario(), 120))
    assert_answered_in_window(s, rpc, vcid)
    assert all(len(closes(s, s.adj.channel_id(p))) == 1 for p in flood.channels)


@pytest.mark.anvil
def test_attack_10_1_a_funded_flood_through_a_remote_node_does_not_make_the_tower_late_anvil(
    tmp_path: Path, anvil: Anvil
) -> None:
    """The funded flood: 1 wei in each of the attacker's 40 channels, so the tower must answer all of them
    (earliest window end first) and the victim's close comes a block later. The tower talks to its node
    with 40 ms per request (a remote node), blocks come every 0.5 s of wall time (the window is 5 blocks).
    Sending one challenge at a time (a dry run and a broadcast each) cost 80 ms a challenge, 3.2 s for the
    flood, and the victim's challenge landed after its window; the flood now goes out in one batch of dry
    runs and one of broadcasts."""
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "funded flood anvil")
    victim = open_channel(s, 1, period=WINDOW)
    vcid = s.adj.channel_id(victim)
    latest = sign(s.adj.domain, eth_state(vcid, 5, 700), s.a, s.b)
    stale = sign(s.adj.domain, eth_state(vcid, 2, 100), s.a, s.b)
    flood = hostile_channels(s, 40, period=WINDOW, deposit=1)

    with RpcProxy(anvil.url, 1) as proxy:
        remote = RpcChain(proxy.url)
        tower_side = replace(s, chain=remote)
        sender = CountingSender(BumpingSender(remote, s.tower_key, bump_after=2.0))

        async def scenario() -> None:
            async with running_tower(tower_side, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
                await watch_all(tower, flood, victim, latest, s.b)
                proxy.holds["*"] = 0.04
                await flood_then_stale_close(s, rpc, flood, victim, stale, 0.5)

        with snapshot(rpc):
            asyncio.run(asyncio.wait_for(scenario(), 120))
    assert_answered_in_window(s, rpc, vcid)
    answered = [p for p in flood.channels if len(closes(s, s.adj.channel_id(p))) == 2]
    assert len(answered) == 40, "the flood's channels hold 1 wei each: the tower answers them too"
    assert max(sender.batches) > 1, "the flood went out one challenge at a time"


def _mine_next(rpc: RpcChain) -> None:
    rpc._rpc("evm_mine", [rpc.block().timestamp + BLOCK_TIME])


async def flood_then_stale_close(
    s: Setup,
    rpc: RpcChain,
    flood: Flood,
    victim: ChannelParams,
    stale: SignedState,
    block_wall: float,
    tower: Tower | None = None,
) -> None:
    """With automine off: the attacker's closes in one block, the victim's stale close in the next (once
    `tower`, if given, has read the flood's block), then a block of 12 s every `block_wall` s of wall time
    until two blocks past the victim's window."""
    rpc._rpc("evm_setAutomine", [False])
    nonce = int(rpc._rpc("eth_getTransactionCount", [to_checksum(flood.x.address), "pending"]), 16)
    for i, (params, state) in enumerate(zip(flood.channels, flood.closing, strict=True)):
        _send_raw(rpc, flood.x, s.adj.address, _close_call(s.adj, params, state), nonce + i)
    _mine_next(rpc)
    if tower is not None:
        await eventually("the tower to see the flood", lambda: tower.head >= rpc.block().number)
    await asyncio.sleep(block_wall)
    b_nonce = int(rpc._rpc("eth_getTransactionCount", [to_checksum(s.b.address), "pending"]), 16)
    _send_raw(rpc, s.b, s.adj.address, _close_call(s.adj, victim, stale), b_nonce)
    _mine_next(rpc)
    [closed] = closes(s, s.adj.channel_id(victim))
    while rpc.block().timestamp < closed.finalizes_at + 2 * BLOCK_TIME:
        await asyncio.sleep(block_wall)
        _mine_next(rpc)


def assert_answered_in_window(s: Setup, rpc: RpcChain, vcid: bytes) -> None:
    [closed, *answers] = closes(s, vcid)
    assert [a.version for a in answers] == [5], "the victim's stale close was not answered in its window"
    assert rpc.block(answers[0].origin.block_number).timestamp < closed.finalizes_at

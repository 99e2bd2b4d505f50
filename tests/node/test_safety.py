"""The attacks of issue 9 against a real node on the embedded chain: its store, its chain watcher, and a
counterparty that is either another node or a raw peer speaking the wire protocol by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from statechannel.chain.adjudicator import Adjudicator, Status, Token
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import SendMessage, SubmitTxClose
from statechannel.core.machine import Terms, open_channel
from statechannel.core.types import ETH, ChannelParams, State
from statechannel.gasreport import parties
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node, NodeEvent
from statechannel.store.sqlite import SqliteStore
from tests.terms import TEST_TERMS

T = TypeVar("T")
ETHER = 10**18


class World:
    def __init__(self, tmp: Path) -> None:
        self.chain = EmbeddedChain()
        p = parties(self.chain, "safety")
        self.deployer = p.deployer
        self.adj, _ = Adjudicator.deploy(self.chain, p.deployer)
        self.token = Token.deploy(self.chain, p.deployer)
        self.keys = (p.a, p.b)
        for key in self.keys:
            self.token.mint(p.deployer, key.address, 10**6)
        self.tmp = tmp
        self.nodes: list[Node] = []
        self.link = MemoryTransport.pair(*self.keys)

    async def node(self, i: int, terms: Terms = TEST_TERMS, **kw: object) -> Node:
        key = self.keys[i]
        store = SqliteStore(self.tmp / f"{'ab'[i]}{len(self.nodes)}.db")
        node = Node(
            key, ChainIO(self.chain, self.adj.address, key), store, self.link[i], poll_interval=0.02, terms=terms
        )
        for name, value in kw.items():
            setattr(node, name, value)
        await node.start()
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
            await node.store.close()
            node.chainio.close()


def run(tmp: Path, scenario: Callable[[World], Awaitable[T]], timeout: float = 120) -> T:
    async def main() -> T:
        world = World(tmp)
        try:
            return await asyncio.wait_for(scenario(world), timeout)
        finally:
            await world.stop()

    return asyncio.run(main())


async def chain_of(node: Node, fn: Callable[[], T]) -> T:
    return await node.chainio.run(fn)


async def until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RawPeer:
    """B by hand: whatever the node sends, kept; frames sent as B pleases."""

    def __init__(self, world: World, index: int = 1) -> None:
        self.key = world.keys[index]
        self.transport = world.link[index]
        self.inbox: list[m.Message] = []

        async def on_frame(peer: bytes, frame: bytes) -> None:
            self.inbox.append(m.decode(frame))

        async def on_connect(peer: bytes) -> None:
            return None

        self.transport.set_handlers(on_frame, on_connect)

    async def send(self, to: bytes, msg: m.Message) -> None:
        await self.transport.send(to, m.encode(msg))


def test_attack_2_tokens_wait_for_the_countersignature_even_if_the_peer_opens_first(tmp_path: Path) -> None:
    """B never answers A's request and opens the channel on chain itself: A's node deposits nothing.
    When B does countersign, A funds the channel by deposit (its `open` would revert)."""

    async def scenario(w: World) -> None:
        a = await w.node(0)
        b = RawPeer(w)
        cid = await a.open_channel(b.key.address, {ETH: (ETHER, 0), w.token.address: (1000, 0)}, challenge_period=60)
        await until("the open request", lambda: any(isinstance(x, m.OpenRequest) for x in b.inbox))
        request = next(x for x in b.inbox if isinstance(x, m.OpenRequest))
        params = ChannelParams(request.a, request.b, request.challenge_period, m.from_u256(request.nonce))
        await chain_of(a, lambda: w.adj.open(b.key, params, 0))  # B front-runs, with nothing in
        await until("A sees it opened", lambda: a.channel(cid).opened)
        await asyncio.sleep(0.3)  # several polls: nothing may follow
        assert await chain_of(a, lambda: w.adj.token_funds(cid, w.token.address)) == (0, 0)
        assert (await chain_of(a, lambda: w.adj.channel(cid))).funded_a == 0
        assert a.channel(cid).phase is Phase.OPENING
        # now B countersigns the pre-fund state: A deposits all it agreed, by deposit
        prefund = State(cid, 0, a.channel(cid).assets, (0, 0))
        sig = b.key.sign_digest(a.channel(cid).digest(prefund))
        await b.send(a.address, m.Accept(cid, 0, sig.to_bytes()))
        await until("A's deposits", lambda: a.channel(cid).funded == ((ETHER, 0), (1000, 0)), 30)
        assert a.channel(cid).phase is Phase.FUNDING

    run(tmp_path, scenario)


def test_attack_3_a_channel_outside_the_terms_is_refused_with_the_reason(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a = await w.node(0, terms=Terms(1, 2**32 - 1))  # an opener that offers anything
        b = await w.node(1, terms=Terms())  # the defaults: one hour to two weeks
        for period in (1, 2**32 - 1):
            cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=period)
            await a.wait_for(cid, Phase.CLOSED)
            assert cid not in b.channels
        with pytest.raises(LocalError) as own:
            await b.open_channel(a.address, {ETH: (0, 0)}, challenge_period=60)
        assert own.value.reason is Reason.CHALLENGE_PERIOD

    run(tmp_path, scenario)


def test_attack_7_unfunded_channels_per_peer_are_bounded_and_expire(tmp_path: Path) -> None:
    """Requests cost the peer nothing: past the bound they are refused, and unfunded ones expire."""

    async def scenario(w: World) -> None:
        b = await w.node(1, max_unfunded_per_peer=3)
        a = RawPeer(w, 0)

        async def request(nonce: int) -> m.Message:
            params = ChannelParams(a.key.address, b.address, 60, nonce)
            _, effects = open_channel(params, b.domain, (ETH,), ((ETHER, 0),), a.key)
            msg = next(e.message for e in effects if isinstance(e, SendMessage))
            count = len(a.inbox)
            await a.send(b.address, msg)
            await until("an answer", lambda: len(a.inbox) > count)
            return a.inbox[-1]

        answers = [await request(n) for n in range(1, 6)]
        assert [type(x).__name__ for x in answers] == ["Accept"] * 3 + ["Reject"] * 2
        assert isinstance(answers[-1], m.Reject) and answers[-1].reason == Reason.TOO_MANY_UNFUNDED
        assert len(b.channels) == 3
        b.unfunded_ttl = 0.0  # they expire: abandoned, and the peer may ask again
        await until("abandoned", lambda: all(ch.phase is Phase.CLOSED for ch in b.channels.values()))
        assert isinstance(await request(99), m.Accept)

    run(tmp_path, scenario)


def test_attack_5_only_own_funds_are_withdrawn_and_the_contract_pays_them(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b = await w.node(0), await w.node(1)
        cid = await a.open_channel(b.address, {ETH: (2 * ETHER, 0)}, challenge_period=60)
        await b.wait_for(cid, Phase.OPEN)
        await a.wait_for(cid, Phase.OPEN)
        await b.deposit(cid, ETH, ETHER)
        await until("B's deposit", lambda: a.channel(cid).funded[0] == (2 * ETHER, ETHER))
        await a.pay(cid, ETH, ETHER // 2)
        with pytest.raises(LocalError) as too_much:  # B holds 1.5, but funded only 1
            await b.withdraw(cid, ETH, ETHER + 1)
        assert too_much.value.reason is Reason.INSUFFICIENT_FUNDS
        before = await chain_of(b, lambda: w.chain.balance(b.address))
        await b.withdraw(cid, ETH, ETHER)
        await until("the withdrawal on chain", lambda: a.channel(cid).funded[0] == (2 * ETHER, 0), 30)
        await until("B clears it", lambda: not b.channel(cid).withdrawals)
        after = await chain_of(b, lambda: w.chain.balance(b.address))
        assert ETHER - ETHER // 100 < after - before <= ETHER
        latest = b.channel(cid).latest
        assert latest is not None
        assert b.channel(cid).balances(latest.state) == ((2 * ETHER - ETHER // 2, ETHER // 2),)

    run(tmp_path, scenario)


def test_attack_6_an_old_state_settled_while_away_is_an_alert_not_a_payment(tmp_path: Path) -> None:
    """B's node was offline (and its tower dead) while A closed with an old state and settled: on its
    return B reports what the chain paid, raises the loss, and never shows its latest as paid."""

    async def scenario(w: World) -> None:
        a, b = await w.node(0), await w.node(1)
        cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=60)
        await b.wait_for(cid, Phase.OPEN)
        await a.wait_for(cid, Phase.OPEN)
        stale = a.channel(cid).latest
        assert stale is not None
        await a.pay(cid, ETH, 6 * ETHER // 10)
        await b.idle(cid)
        await b.stop()
        await a.submit(cid, SubmitTxClose(stale))
        await chain_of(a, lambda: w.chain.advance_time(61))
        await until("A settles", lambda: a.channel(cid).phase is Phase.CLOSED, 30)
        assert (await chain_of(a, lambda: w.adj.channel(cid))).status is Status.CONCLUDED
        events: list[NodeEvent] = []
        assert isinstance(b.store, SqliteStore)
        back = Node(b.key, b.chainio, SqliteStore(b.store.path), w.link[1], poll_interval=0.02, terms=TEST_TERMS)
        w.nodes.append(back)

        async def listen() -> None:
            async for event in back.subscribe():
                events.append(event)

        task = asyncio.create_task(listen())
        await asyncio.sleep(0)
        await back.start()
        await until("B sees the conclusion", lambda: back.channel(cid).phase is Phase.CLOSED, 30)
        outcome = back.channel(cid).outcome
        assert outcome is not None
        assert outcome.version == stale.state.version and outcome.loss and not outcome.challenged
        assert outcome.paid == ((ETHER, 0),), "what the chain paid, read from the close's calldata"
        await until("the alert", lambda: any(e.kind == "alert" for e in events))
        concluded = next(e for e in events if e.kind == "concluded")
        assert concluded.data["loss"] is True and concluded.data["paid"] == [[str(ETHER), "0"]]
        task.cancel()

    run(tmp_path, scenario)


def test_agreement_after_a_unilateral_close_concludes_at_once(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b = await w.node(0), await w.node(1)
        cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=10_000)
        await b.wait_for(cid, Phase.OPEN)
        await a.wait_for(cid, Phase.OPEN)
        await a.pay(cid, ETH, 1234)
        await b.close(cid, cooperative=False)
        await a.wait_for(cid, Phase.DISPUTE)
        await b.wait_for(cid, Phase.DISPUTE)
        await b.close(cid)  # both agree: no need to wait out 10,000 s
        await a.wait_for(cid, Phase.CLOSED)
        await b.wait_for(cid, Phase.CLOSED)
        info = await chain_of(a, lambda: w.adj.channel(cid))
        assert info.status is Status.CONCLUDED
        outcome = b.channel(cid).outcome
        assert outcome is not None and outcome.paid == ((ETHER - 1234, 1234),) and not outcome.loss

    run(tmp_path, scenario)

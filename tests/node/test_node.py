"""Two real nodes in one process: the embedded chain, real stores, the in-memory link."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError
from statechannel.core.types import ETH
from statechannel.gasreport import parties
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore
from tests.terms import TEST_TERMS

T = TypeVar("T")
ETHER = 10**18


class World:
    def __init__(self, tmp: Path) -> None:
        self.chain = EmbeddedChain()
        p = parties(self.chain, "node")
        self.adj, _ = Adjudicator.deploy(self.chain, p.deployer)
        self.keys = (p.a, p.b)
        self.tmp = tmp
        self.nodes: list[Node] = []

    async def start(self) -> tuple[Node, Node]:
        ta, tb = MemoryTransport.pair(*self.keys)
        for key, transport, name in ((self.keys[0], ta, "a"), (self.keys[1], tb, "b")):
            store = SqliteStore(self.tmp / f"{name}.db")
            node = Node(
                key, ChainIO(self.chain, self.adj.address, key), store, transport, poll_interval=0.02, terms=TEST_TERMS
            )
            await node.start()
            self.nodes.append(node)
        return self.nodes[0], self.nodes[1]

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
            await node.store.close()
            node.chainio.close()


def run(tmp: Path, scenario: Callable[[World, Node, Node], Awaitable[T]], timeout: float = 120) -> T:
    async def main() -> T:
        world = World(tmp)
        a, b = await world.start()
        try:
            return await asyncio.wait_for(scenario(world, a, b), timeout)
        finally:
            await world.stop()

    return asyncio.run(main())


async def on_chain(node: Node, fn: Callable[[], T]) -> T:
    """Read or drive the embedded chain on the node's chain thread: eth-tester is not thread-safe."""
    return await node.chainio.run(fn)


async def open_funded(world: World, a: Node, b: Node, deposit_a: int, deposit_b: int) -> bytes:
    cid = await a.open_channel(b.address, {ETH: (deposit_a, 0)}, challenge_period=60)
    await a.wait_for(cid, Phase.OPEN)
    await b.wait_for(cid, Phase.OPEN)
    if deposit_b:
        await b.deposit(cid, ETH, deposit_b)
        while b.channel(cid).funded[0][1] < deposit_b or a.channel(cid).funded[0][1] < deposit_b:
            await asyncio.sleep(0.02)
    return cid


def test_open_pay_both_ways_and_close_cooperatively(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        a0, b0 = world.chain.balance(a.address), world.chain.balance(b.address)
        cid = await open_funded(world, a, b, 5 * ETHER, 3 * ETHER)
        results = await asyncio.gather(*(a.pay(cid, ETH, 1000) for _ in range(300)))
        assert {r.status for r in results} == {"sent"}
        await asyncio.gather(*(b.pay(cid, ETH, 700) for _ in range(200)))
        # both directions at once: simultaneous proposals resolve by the tie-break
        mixed = [a.pay_nowait(cid, ETH, 3) for _ in range(50)] + [b.pay_nowait(cid, ETH, 2) for _ in range(50)]
        await asyncio.gather(*mixed)
        await a.idle(cid)
        await b.idle(cid)
        la, lb = a.channel(cid).latest, b.channel(cid).latest
        assert la is not None and la == lb
        expected_t = 300 * 1000 - 200 * 700 + 50 * 3 - 50 * 2
        assert la.state.transfers == (expected_t,)
        with pytest.raises(LocalError):
            await a.pay(cid, ETH, 10 * ETHER)
        await a.close(cid)
        await a.wait_for(cid, Phase.CLOSED)
        await b.wait_for(cid, Phase.CLOSED)
        assert (await on_chain(a, lambda: world.adj.channel(cid))).status is Status.CONCLUDED
        fees_a = a0 - await on_chain(a, lambda: world.chain.balance(a.address)) - expected_t
        fees_b = b0 - await on_chain(a, lambda: world.chain.balance(b.address)) + expected_t
        # what moved is exactly the net transfer; the rest is gas, well under 0.01 ether each
        assert 0 < fees_a < ETHER // 100 and 0 < fees_b < ETHER // 100
        sent = [p for p in a.payments(cid, limit=1000) if p.direction == "out"]
        assert len(sent) == 350 and {p.status for p in sent} == {"sent"}

    run(tmp_path, scenario)


def test_restart_loses_nothing(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        await asyncio.gather(*(a.pay(cid, ETH, 5) for _ in range(100)))
        # restart A from its store: same channel, same latest, and it keeps working
        await a.stop()
        store = SqliteStore(world.tmp / "a.db")
        latest = a.channel(cid).latest
        await a.store.close()
        transport = a.transport
        revived = Node(a.key, a.chainio, store, transport, poll_interval=0.02, terms=TEST_TERMS)
        await revived.start()
        world.nodes[0] = revived
        assert revived.channel(cid).latest == latest
        await transport.disconnect()  # type: ignore[attr-defined]
        await transport.reconnect()  # type: ignore[attr-defined]
        await asyncio.gather(*(revived.pay(cid, ETH, 5) for _ in range(100)))
        await revived.idle(cid)
        await b.idle(cid)
        final = b.channel(cid).latest
        assert final is not None and final.state.transfers == (1000,)

    run(tmp_path, scenario)


def test_stale_close_is_challenged_by_the_online_peer(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        stale = a.channel(cid).latest
        await asyncio.gather(*(a.pay(cid, ETH, 1000) for _ in range(10)))
        await b.idle(cid)
        assert stale is not None
        # A cheats: closes with the post-fund state (it paid nothing there)
        from statechannel.core.io import SubmitTxClose

        await a.submit(cid, SubmitTxClose(stale))
        await b.wait_for(cid, Phase.DISPUTE)
        latest = b.channel(cid).latest
        assert latest is not None
        while (await on_chain(b, lambda: _recorded(world.adj, cid))) != latest.state.version:
            await asyncio.sleep(0.02)
        await on_chain(b, lambda: world.chain.advance_time(61))
        await b.wait_for(cid, Phase.CLOSED)
        assert (await on_chain(b, lambda: world.adj.channel(cid))).status is Status.CONCLUDED

    run(tmp_path, scenario)


def _recorded(adj: Adjudicator, cid: bytes) -> int:
    recorded = adj.recorded(cid)
    return recorded.version if recorded is not None else -1

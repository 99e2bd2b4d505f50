"""Two real nodes in one process on one embedded chain, holding ether and the test token.

Real SqliteStores, the in-memory link (or TCP), the adjudicator and TestToken on the EVM. The channel is
opened with ether, then both deposit the token with Node.deposit, as a user would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from eth_hash.auto import keccak
from fastapi import FastAPI

from statechannel.api.app import create_app
from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import ETH
from statechannel.net.base import Transport
from statechannel.net.memory import MemoryTransport
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore
from tests.api.harness import LockedChain
from tests.terms import TEST_TERMS

T = TypeVar("T")
ETHER = 10**18
TOKENS = 10**24
TIMEOUT = 120.0
API_TOKEN = "cd" * 32


def key(name: str) -> PrivateKey:
    return PrivateKey(keccak(f"statechannel trading test {name}".encode()))


@dataclass
class World:
    chain: LockedChain
    adjudicator: Adjudicator
    token: Token
    a: Node
    b: Node


@asynccontextmanager
async def world(tmp: Path, tcp: bool = False) -> AsyncIterator[World]:
    chain = LockedChain()
    ka, kb, deployer = key("a"), key("b"), key("deployer")
    for k in (ka, kb, deployer):
        chain.fund(k.address, 100 * ETHER)
    adjudicator, _ = Adjudicator.deploy(chain, deployer)
    token = Token.deploy(chain, deployer)
    for k in (ka, kb):
        token.mint(deployer, k.address, TOKENS)
    transports: tuple[Transport, Transport] = (
        (TcpTransport(ka), TcpTransport(kb)) if tcp else MemoryTransport.pair(ka, kb)
    )
    async with AsyncExitStack() as stack:
        nodes = []
        for k, transport, name in ((ka, transports[0], "a"), (kb, transports[1], "b")):
            store = SqliteStore(tmp / f"{name}.db")
            chainio = ChainIO(chain, adjudicator.address, k)
            node = Node(k, chainio, store, transport, poll_interval=0.02, terms=TEST_TERMS)
            stack.push_async_callback(_stop, node, transport, store, chainio)
            await node.start()
            nodes.append(node)
        if isinstance(transports[0], TcpTransport) and isinstance(transports[1], TcpTransport):
            port = await transports[1].start()
            await transports[0].start()
            await transports[0].connect(kb.address, "127.0.0.1", port)
        yield World(chain, adjudicator, token, nodes[0], nodes[1])


async def _stop(node: Node, transport: Transport, store: SqliteStore, chainio: ChainIO) -> None:
    await node.stop()
    await transport.close()
    await store.close()
    chainio.close()


def run(tmp: Path, scenario: Callable[[World], Awaitable[T]], tcp: bool = False, timeout: float = TIMEOUT) -> T:
    """A plain sync test around one bounded asyncio.run."""

    async def main() -> T:
        async with world(tmp, tcp) as w:
            return await asyncio.wait_for(scenario(w), timeout)

    return asyncio.run(main())


async def eventually(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def open_two_assets(
    w: World, eth: tuple[int, int] = (5 * ETHER, 3 * ETHER), tokens: tuple[int, int] = (10**21, 10**21)
) -> bytes:
    """A opens with its ether; then B deposits ether and both deposit the token, and both see it all."""
    a, b = w.a, w.b
    cid = await a.open_channel(b.address, {ETH: (eth[0], 0), w.token.address: (0, 0)}, challenge_period=60)
    await a.wait_for(cid, Phase.OPEN)
    await b.wait_for(cid, Phase.OPEN)
    await a.deposit(cid, w.token.address, tokens[0])
    await b.deposit(cid, w.token.address, tokens[1])
    await b.deposit(cid, ETH, eth[1])
    want = {ETH: eth, w.token.address: tokens}

    def funded(node: Node) -> bool:
        ch = node.channel(cid)
        return all(ch.funded[ch.assets.index(asset)] == pair for asset, pair in want.items())

    await eventually(lambda: funded(a) and funded(b))
    return cid


def app_of(node: Node, token: str = API_TOKEN) -> FastAPI:
    """The node's API as create_app builds it (the trading routes are part of it)."""
    return create_app(node, token)

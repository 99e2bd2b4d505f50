"""Two real nodes in one process on one embedded chain, node A wrapped in its HTTP API.

Nothing is mocked: the API drives a real Node with a real SqliteStore, linked to its peer in memory or
over real TCP, settling on the embedded EVM."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from eth_hash.auto import keccak
from fastapi import FastAPI

from statechannel.api.app import create_app
from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import Block, Log, Receipt, TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.crypto import PrivateKey
from statechannel.net.base import Transport
from statechannel.net.memory import MemoryTransport
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore
from tests.terms import TEST_TERMS

T = TypeVar("T")
TOKEN = "ab" * 32
ETHER = 10**18
TIMEOUT = 60.0


class LockedChain:
    """The embedded EVM is not thread-safe, and each node's ChainIO reads it from its own thread."""

    def __init__(self) -> None:
        self._chain = EmbeddedChain()
        self._lock = threading.Lock()
        self.chain_id = self._chain.chain_id

    def send_transaction(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None
    ) -> Receipt:
        with self._lock:
            return self._chain.send_transaction(key, to, data, value, gas)

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes:
        with self._lock:
            return self._chain.call(to, data, sender)

    def call_many(self, calls: Sequence[tuple[bytes, bytes]]) -> list[bytes | TransactionReverted]:
        with self._lock:
            return self._chain.call_many(calls)

    def get_logs(self, address: bytes, from_block: int, to_block: int) -> list[Log]:
        with self._lock:
            return self._chain.get_logs(address, from_block, to_block)

    def nudge(self, key: PrivateKey) -> None:
        with self._lock:
            self._chain.nudge(key)

    def resend_lost(self, key: PrivateKey) -> None:
        with self._lock:
            self._chain.resend_lost(key)

    def pending(self, address: bytes) -> int:
        with self._lock:
            return self._chain.pending(address)

    def transaction(self, tx_hash: bytes) -> tuple[bytes | None, bytes]:
        with self._lock:
            return self._chain.transaction(tx_hash)

    def block(self, number: int | None = None) -> Block:
        with self._lock:
            return self._chain.block(number)

    def balance(self, address: bytes) -> int:
        with self._lock:
            return self._chain.balance(address)

    def fund(self, address: bytes, wei: int) -> None:
        with self._lock:
            self._chain.fund(address, wei)

    def advance_time(self, seconds: int) -> None:
        with self._lock:
            self._chain.advance_time(seconds)

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self._chain.mine(blocks)


def key(name: str) -> PrivateKey:
    return PrivateKey(keccak(f"statechannel api test {name}".encode()))


@dataclass
class World:
    chain: LockedChain
    adjudicator: Adjudicator
    a: Node
    b: Node
    app_a: FastAPI
    app_b: FastAPI
    api_a: httpx.AsyncClient
    api_b: httpx.AsyncClient
    transports: tuple[Transport, Transport]
    b_listen: int = 0


def client(app: FastAPI, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://node.test", headers=headers, timeout=TIMEOUT
    )


@asynccontextmanager
async def world(tmp: Path, tcp: bool = False, history: int = 100_000) -> AsyncIterator[World]:
    chain = LockedChain()
    ka, kb, deployer = key("a"), key("b"), key("deployer")
    for k in (ka, kb, deployer):
        chain.fund(k.address, 100 * ETHER)
    adjudicator, _ = Adjudicator.deploy(chain, deployer)
    transports: tuple[Transport, Transport] = (
        (TcpTransport(ka), TcpTransport(kb)) if tcp else MemoryTransport.pair(ka, kb)
    )
    async with AsyncExitStack() as stack:
        nodes = []
        for k, transport, name in ((ka, transports[0], "a"), (kb, transports[1], "b")):
            store = SqliteStore(tmp / f"{name}.db", max_payments=history)
            chainio = ChainIO(chain, adjudicator.address, k)
            node = Node(k, chainio, store, transport, poll_interval=0.02, terms=TEST_TERMS)
            stack.push_async_callback(_stop, node, transport, store, chainio)
            await node.start()
            nodes.append(node)
        b_listen = await transports[1].start() if isinstance(transports[1], TcpTransport) else 0
        if isinstance(transports[0], TcpTransport):
            await transports[0].start()
        apps = [create_app(n, TOKEN) for n in nodes]
        for app in apps:  # serve as uvicorn would: with the lifespan, which starts the event buffer
            await stack.enter_async_context(app.router.lifespan_context(app))
        api_a = await stack.enter_async_context(client(apps[0]))
        api_b = await stack.enter_async_context(client(apps[1]))
        yield World(chain, adjudicator, nodes[0], nodes[1], apps[0], apps[1], api_a, api_b, transports, b_listen)


async def _stop(node: Node, transport: Transport, store: SqliteStore, chainio: ChainIO) -> None:
    await node.stop()
    await transport.close()
    await store.close()
    chainio.close()


def run(
    tmp: Path,
    scenario: Callable[[World], Awaitable[T]],
    tcp: bool = False,
    timeout: float = TIMEOUT,
    history: int = 100_000,
) -> T:
    """Each test is a plain sync test around one bounded asyncio.run (no pytest-asyncio)."""

    async def main() -> T:
        async with world(tmp, tcp, history) as w:
            return await asyncio.wait_for(scenario(w), timeout)

    return asyncio.run(main())


async def eventually(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """For state with no event to wait on (the peer's view, the chain): poll, bounded."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def error(response: httpx.Response) -> tuple[int, str]:
    """(status, reason) of an error answer, checking the documented shape on the way."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"reason", "detail"}, body
    assert isinstance(body["error"]["detail"], str) and body["error"]["detail"]
    return response.status_code, body["error"]["reason"]


async def sse(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """A bounded read of the event stream (`limit`/`timeout` end it), parsed from the raw wire format."""
    import json

    response = await api.get("/events", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            data = json.loads(fields["data"])
            assert data["kind"] == fields["event"]
            events.append({"id": int(fields["id"]), **data})
    return events

"""Trades per second on one channel: two nodes in this process, a channel of ether and the test token,
one maker quote, and a stream of takes. Each take is its own fill at the quote's exact price; takes made
together share swap updates (up to MAX_TAKES to one), so `updates_per_trade` is reported beside the rate.

    python bench/trading.py --json [--quick] [--transport tcp|memory] [--store sqlite|memory]

Both nodes share one process, so one core's worth of Python: figures are a floor for two processes.

- take round trip: one take, unloaded, from take() to the fill (the maker's countersignature);
- trades/s: a taker keeping `--window` takes outstanding (it takes again as each fill arrives);
  `--window 1` is one take per update, no batching at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.channel import Phase
from statechannel.core.types import ETH
from statechannel.gasreport import parties
from statechannel.net.base import Transport
from statechannel.net.memory import MemoryTransport
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.node.swapdesk import Fill
from statechannel.store.memory import MemoryStore
from statechannel.store.sqlite import SqliteStore

ETHER = 10**18
TOKENS = 10**24


async def setup(tmp: Path, transport: str, store: str) -> tuple[Node, Node, bytes, bytes]:
    chain = EmbeddedChain()
    p = parties(chain, "bench")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    token = Token.deploy(chain, p.deployer)
    for key in (p.a, p.b):
        token.mint(p.deployer, key.address, TOKENS)
    links: tuple[Transport, Transport] = (
        (TcpTransport(p.a), TcpTransport(p.b)) if transport == "tcp" else MemoryTransport.pair(p.a, p.b)
    )
    nodes = []
    for key, link, name in ((p.a, links[0], "a"), (p.b, links[1], "b")):
        db = SqliteStore(tmp / f"{name}.db") if store == "sqlite" else MemoryStore()
        node = Node(key, ChainIO(chain, adj.address, key), db, link, poll_interval=0.02)
        await node.start()
        nodes.append(node)
    a, b = nodes
    if isinstance(links[0], TcpTransport) and isinstance(links[1], TcpTransport):
        port = await links[1].start()
        await links[0].start()
        await links[0].connect(b.address, "127.0.0.1", port)
    cid = await a.open_channel(b.address, {ETH: (10 * ETHER, 0), token.address: (0, 0)}, challenge_period=3600)
    await a.wait_for(cid, Phase.OPEN)
    await b.wait_for(cid, Phase.OPEN)
    await a.deposit(cid, token.address, TOKENS // 2)
    await b.deposit(cid, ETH, 10 * ETHER)
    deadline = time.monotonic() + 30
    while any(pair != (10 * ETHER, 10 * ETHER) for pair in (a.channel(cid).funded[0], b.channel(cid).funded[0])) or (
        b.channel(cid).funded[1][0] < TOKENS // 2
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the deposits were not seen")
        await asyncio.sleep(0.02)
    return a, b, cid, token.address


async def main(quick: bool, transport: str, store: str, window: int) -> dict[str, Any]:
    n_rt, n_trades = (100, 2_000) if quick else (500, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        a, b, cid, token = await setup(Path(tmp), transport, store)
        try:
            # A makes: sells the token at 3 wei each; B takes 1 unit at a time
            sq = await a.send_quote(
                cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=3, size=10**9, ttl_ms=3_600_000
            )
            deadline = time.monotonic() + 10
            while not b.quotes(cid):
                if time.monotonic() > deadline:
                    raise TimeoutError("the quote did not arrive")
                await asyncio.sleep(0.005)
            qid = sq.quote.quote_id
            samples = []
            for _ in range(n_rt):
                t = time.perf_counter()
                await b.take(cid, qid, 1)
                samples.append((time.perf_counter() - t) * 1000)
            samples.sort()
            v0 = b.channel(cid).latest.state.version  # type: ignore[union-attr]
            in_flight: deque[asyncio.Future[Fill]] = deque()
            t = time.perf_counter()
            for _ in range(n_trades):
                if len(in_flight) >= window:
                    await in_flight.popleft()
                in_flight.append(b.take(cid, qid, 1))
            await asyncio.gather(*in_flight)
            dt = time.perf_counter() - t
            v1 = b.channel(cid).latest.state.version  # type: ignore[union-attr]
            return {
                "setup": f"two nodes in one process, {transport} transport, {store} store, ether + ERC-20 channel",
                "window": window,
                "take_round_trip_p50_ms": round(statistics.median(samples), 3),
                "take_round_trip_p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
                "trades": n_trades,
                "trades_per_s": round(n_trades / dt),
                "updates_per_trade": round((v1 - v0) / n_trades, 3),
            }
        finally:
            for node in (a, b):
                await node.stop()
                await node.transport.close()
                await node.store.close()
                node.chainio.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--transport", choices=["tcp", "memory"], default="tcp")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--window", type=int, default=2048, help="takes outstanding at once")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick, args.transport, args.store, args.window))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28} {v}" for k, v in result.items()))

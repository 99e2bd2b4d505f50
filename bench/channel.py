"""Off-chain speed of one channel: two nodes, real TCP on 127.0.0.1 (Noise),
durable SQLite stores (WAL, fsync), the embedded chain for funding.

    python bench/channel.py --json [--quick] [--store sqlite|memory]

Both nodes run in this one process, so they share one core's worth of Python:
figures are a floor for two separate processes on two cores.

- round trip: one payment, unloaded, from pay() to the peer's countersignature; A (the leader)
  proposes its payment, B (the follower) asks A to propose one (decision 0007), so both are measured;
- updates/s: one payment per update, up to 64 updates in flight (A's, then B's);
- payments/s (`coalesced_payments_per_s`): a burst of small payments, one `pay_nowait` (one future,
  one history row per side) each, coalesced into updates (<= 512 each);
- batch payments/s (`batch_payments_per_s`): payments made with the batch API (`pay_batch_nowait`,
  default history: one future and one history row per side per batch), batches of `BATCH_SIZE` equal
  payments, each batch queued in its own loop turn with up to 64 outstanding (so each tends to ride
  its own update, as in updates/s; `batch_updates` says how many it took).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.channel import Phase
from statechannel.core.types import ETH
from statechannel.gasreport import parties
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.memory import MemoryStore
from statechannel.store.sqlite import SqliteStore

ETHER = 10**18


async def setup(tmp: Path, store: str = "sqlite") -> tuple[Node, Node, bytes]:
    chain = EmbeddedChain()
    p = parties(chain, "bench")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    nodes = []
    for key, name in ((p.a, "a"), (p.b, "b")):
        transport = TcpTransport(key)
        db = SqliteStore(tmp / f"{name}.db") if store == "sqlite" else MemoryStore()
        node = Node(key, ChainIO(chain, adj.address, key), db, transport, poll_interval=0.02)
        await node.start()
        nodes.append(node)
    a, b = nodes
    port = await b.transport.start()  # type: ignore[attr-defined]
    await a.transport.start()  # type: ignore[attr-defined]
    await a.transport.connect(b.address, "127.0.0.1", port)  # type: ignore[attr-defined]
    cid = await a.open_channel(b.address, {ETH: (10 * ETHER, 0)}, challenge_period=3600)
    await a.wait_for(cid, Phase.OPEN)
    await b.wait_for(cid, Phase.OPEN)
    return a, b, cid


async def round_trips(a: Node, cid: bytes, n: int, prefix: str = "") -> dict[str, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await a.pay(cid, ETH, 1)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        f"{prefix}round_trip_p50_ms": round(statistics.median(samples), 3),
        f"{prefix}round_trip_p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
    }


async def updates(a: Node, cid: bytes, n: int, prefix: str = "") -> dict[str, float]:
    """Each payment is queued in its own loop turn, so each becomes its own update."""
    v0 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    in_flight: list[asyncio.Future[Any]] = []
    t = time.perf_counter()
    for _ in range(n):
        if len(in_flight) >= 64:
            await in_flight.pop(0)
        in_flight.append(a.pay_nowait(cid, ETH, 1))
        await asyncio.sleep(0)
    await asyncio.gather(*in_flight)
    dt = time.perf_counter() - t
    v1 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    return {f"{prefix}updates_per_s": round((v1 - v0) / dt), f"{prefix}payments_per_update": round(n / (v1 - v0), 2)}


async def burst(a: Node, cid: bytes, n: int) -> dict[str, float]:
    v0 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    t = time.perf_counter()
    await asyncio.gather(*(a.pay_nowait(cid, ETH, 1) for _ in range(n)))
    dt = time.perf_counter() - t
    v1 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    return {"coalesced_payments_per_s": round(n / dt), "coalesced_updates": v1 - v0}


BATCH_SIZE = 512
"""Payments per batch: the size of the coalesced figure's updates, so the two compare per update."""


async def batches(a: Node, cid: bytes, n: int, size: int = BATCH_SIZE) -> dict[str, float]:
    """`n` payments of 1 in batches of `size` through the batch API, up to 64 batches outstanding."""
    v0 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    in_flight: list[asyncio.Future[Any]] = []
    made = 0
    t = time.perf_counter()
    for _ in range(n // size):
        if len(in_flight) >= 64:
            made += (await in_flight.pop(0)).count
        in_flight.append(a.pay_batch_nowait(cid, ETH, each=1, count=size))
        await asyncio.sleep(0)
    made += sum(r.count for r in await asyncio.gather(*in_flight))
    dt = time.perf_counter() - t
    v1 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
    return {"batch_payments_per_s": round(made / dt), "batch_size": size, "batch_updates": v1 - v0}


async def main(quick: bool, store: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b, cid = await setup(Path(tmp), store)
        try:
            durable = "SQLite WAL fsync" if store == "sqlite" else "in-memory store (nothing durable)"
            out: dict[str, Any] = {"setup": f"two nodes in one process, TCP+Noise on 127.0.0.1, {durable}"}
            out |= await round_trips(a, cid, 200 if quick else 1000)
            out |= await updates(a, cid, 2000 if quick else 10_000)
            out |= await burst(a, cid, 20_000 if quick else 100_000)
            out |= await batches(a, cid, 200_000 if quick else 1_000_000)
            out |= await round_trips(b, cid, 200 if quick else 1000, "follower_")  # B pays back what it got
            out |= await updates(b, cid, 2000 if quick else 10_000, "follower_")
            if isinstance(a.store, SqliteStore):
                stats = a.store.stats()
                out["store_saves_per_commit_a"] = round(stats["saves"] / max(1, stats["commits"]), 2)
            return out
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
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick, args.store))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28} {v}" for k, v in result.items()))

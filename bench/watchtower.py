"""Watchtower at scale: pushes per second (HTTP and store), bytes and memory per watched channel, and the
time from a stale close to the challenge being mined, with 10k, 100k and 1M channels in the store.

python bench/watchtower.py --json          (about 5 minutes on 2 cores)
python bench/watchtower.py --quick --json  (1k and 10k channels)

The store is filled directly (the channels need not exist on chain); the pushed states are real
both-signed states of filler channels, checked by the tower as any push is. The close-to-challenge
time is measured on the embedded EVM, which mines each transaction at once, so it is the tower's own
reaction time: its poll interval plus the work of deciding and sending. Memory per channel is the
RSS of a fresh tower process over the filled store minus that over an empty one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import state_digest
from statechannel.core.io import SignedState
from statechannel.core.tower import ClientAuth, authorize, push_request, register_request
from statechannel.core.types import ETH, ChannelParams, Domain, State, to_checksum
from statechannel.watchtower.errors import TowerError
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.records import HeldState, WatchedChannel
from statechannel.watchtower.sender import PlainSender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from statechannel.watchtower.storage import Quotas

PERIOD = 3600
FILL_CHUNK = 50_000
POLL_INTERVAL = 0.5
"""The tower's default: fast enough to act in the block after a close on any real chain."""
REACTION_POLL_INTERVAL = 0.1
HTTP_CONCURRENCY = 32
CLOSE_TRIALS = 5
A = PrivateKey(keccak(b"bench tower A"))
B = PrivateKey(keccak(b"bench tower B"))
DEPLOYER = PrivateKey(keccak(b"bench tower deployer"))
TOWER = PrivateKey(keccak(b"bench tower key"))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def channel_id(domain: Domain, nonce: int) -> bytes:
    """abi.encode of static types is their 32-byte words: the id without eth-abi's per-call cost."""
    words = (domain.chain_id.to_bytes(32, "big"), bytes(12) + domain.adjudicator, bytes(12) + A.address)
    return keccak(b"".join((*words, bytes(12) + B.address, PERIOD.to_bytes(32, "big"), nonce.to_bytes(32, "big"))))


UNLIMITED = Quotas(channels=2**40, bytes=2**60)


def as_b(tower: Tower, cid: bytes, request: bytes) -> ClientAuth:
    """B's signature on a request to `tower` (what every node adds to each registration and push)."""
    return authorize(B, tower.domain, tower.address, cid, request, int(time.time()))


def signed(domain: Domain, cid: bytes, version: int) -> SignedState:
    state = State(cid, version, (ETH,), (version * 1000,))
    digest = state_digest(domain, state)
    return SignedState(state, A.sign_digest(digest), B.sign_digest(digest))


async def fill(store: SqliteTowerStore, domain: Domain, n: int) -> float:
    """n channels, each holding a both-signed state (one signature pair reused: the store checks none)."""
    template = signed(domain, bytes(32), 1)
    started = time.perf_counter()
    for lo in range(0, n, FILL_CHUNK):
        rows = []
        for nonce in range(lo, min(n, lo + FILL_CHUNK)):
            cid = channel_id(domain, nonce)
            state = State(cid, 1 + nonce % 1000, (ETH,), (nonce,))
            rows.append(
                WatchedChannel(
                    cid,
                    ChannelParams(A.address, B.address, PERIOD, nonce),
                    states=(HeldState(1, SignedState(state, template.sig_a, template.sig_b)),),
                )
            )
        await store.bulk_register(rows)
    return time.perf_counter() - started


def file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def store_puts(store: SqliteTowerStore, domain: Domain, n: int, count: int) -> float:
    """Concurrent pushes straight into the store (group commit), each a new version of one channel."""
    template = signed(domain, bytes(32), 1)
    states = [
        SignedState(State(channel_id(domain, i * 7919 % n), 5000 + i, (ETH,), (i,)), template.sig_a, template.sig_b)
        for i in range(count)
    ]
    started = time.perf_counter()
    for lo in range(0, count, 1000):
        await asyncio.gather(*(store.put_state(s, 1, B.address, UNLIMITED) for s in states[lo : lo + 1000]))
    return count / (time.perf_counter() - started)


def auth_fields(auth: ClientAuth) -> dict[str, Any]:
    return {
        "client": to_checksum(auth.client),
        "timestamp": auth.timestamp,
        "auth": "0x" + auth.signature.to_bytes().hex(),
    }


async def http_pushes(tower: Tower, domain: Domain, n: int, count: int) -> float:
    """Real both-signed states through the HTTP API in process: parsing, two signature checks, the
    store's commit and the signed receipt, HTTP_CONCURRENCY requests in flight."""
    bodies = []
    for i in range(count):
        s = signed(domain, channel_id(domain, (i * 104729 + 1) % n), 100_000 + i)
        bodies.append(
            {
                "channel_id": "0x" + s.state.channel_id.hex(),
                "version": s.state.version,
                "is_final": False,
                "assets": ["0x" + ETH.hex()],
                "transfers": [str(s.state.transfers[0])],
                "app_data": "0x" + s.state.app_data.hex(),
                "sig_a": "0x" + s.sig_a.to_bytes().hex(),
                "sig_b": "0x" + s.sig_b.to_bytes().hex(),
                **auth_fields(as_b(tower, s.state.channel_id, push_request(s))),
            }
        )
    transport = httpx.ASGITransport(app=create_tower_app(tower))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            r = await client.post("/states", json=queue.get_nowait())
            if r.status_code != 200:
                raise RuntimeError(f"push refused: {r.text}")

    async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(HTTP_CONCURRENCY)))
        return count / (time.perf_counter() - started)


async def close_to_challenge(tower: Tower, chain: EmbeddedChain, adj: Adjudicator, trial: int) -> float:
    """Seconds from a stale close being mined to the tower's challenge being mined."""
    params = ChannelParams(A.address, B.address, PERIOD, 10**12 + trial)
    cid = adj.channel_id(params)
    await asyncio.to_thread(adj.open, A, params, 10**18)
    await tower.register(params, as_b(tower, cid, register_request(params)))
    new = signed(adj.domain, cid, 5)
    await tower.push(new, as_b(tower, cid, push_request(new)))
    old = signed(adj.domain, cid, 2)
    await asyncio.to_thread(adj.close, A, params, old.state, old.sig_a, old.sig_b)
    closed = time.perf_counter()
    deadline = closed + 30
    while (attempt := tower.challenges.get(cid)) is None or attempt.outcome != "mined":
        if time.perf_counter() > deadline:
            raise RuntimeError("the tower did not challenge within 30 s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - closed


def deployed() -> tuple[EmbeddedChain, Adjudicator]:
    """A fresh chain with the adjudicator at the same address every time (the deployer's first tx)."""
    chain = EmbeddedChain()
    for k in (A, DEPLOYER, TOWER):
        chain.fund(k.address, 10**21)
    adj, _ = Adjudicator.deploy(chain, DEPLOYER)
    return chain, adj


async def probe(path: Path) -> int:
    """RSS of a tower process that has started over the store at `path` and served a few pushes."""
    chain, adj = deployed()
    store = SqliteTowerStore(path, chain.chain_id, adj.address)
    tower = Tower(chain, adj.address, TOWER, store, PlainSender(chain, TOWER), poll_interval=0.05, quotas=UNLIMITED)
    await tower.start()
    n = max(store.count(), 1)
    for i in range(100):
        with contextlib.suppress(TowerError):  # the empty store knows no channel
            s = signed(adj.domain, channel_id(adj.domain, i % n), 10**6 + i)
            await tower.push(s, as_b(tower, s.state.channel_id, push_request(s)))
    await asyncio.sleep(0.5)
    await tower.stop()
    gc.collect()
    used = rss()
    await store.close()
    return used


def rss_of_tower_over(path: Path) -> int:
    """In a fresh process, so nothing this benchmark built (millions of rows' objects) is counted."""
    done = subprocess.run(
        [sys.executable, __file__, "--probe", str(path)], capture_output=True, text=True, check=True, timeout=300
    )
    return int(done.stdout.strip())


async def scale(n: int, pushes: int, workdir: Path) -> dict[str, Any]:
    chain, adj = deployed()
    path, empty = workdir / f"tower-{n}.db", workdir / f"empty-{n}.db"
    await SqliteTowerStore(empty, chain.chain_id, adj.address).close()
    store = SqliteTowerStore(path, chain.chain_id, adj.address)
    fill_s = await fill(store, adj.domain, n)
    size = await asyncio.to_thread(file_bytes, path)
    tower = Tower(
        chain, adj.address, TOWER, store, PlainSender(chain, TOWER), poll_interval=POLL_INTERVAL, quotas=UNLIMITED
    )
    await tower.start()
    try:
        puts = await store_puts(store, adj.domain, n, pushes)
        http = await http_pushes(tower, adj.domain, n, pushes)
        tower.poll_interval = REACTION_POLL_INTERVAL
        reactions = [await close_to_challenge(tower, chain, adj, t) for t in range(CLOSE_TRIALS)]
    finally:
        await tower.stop()
        await store.close()
    full_rss, empty_rss = rss_of_tower_over(path), rss_of_tower_over(empty)
    path.unlink()
    return {
        "channels": n,
        "fill_s": round(fill_s, 2),
        "bytes_per_channel": round(size / n, 1),
        "memory_bytes_per_channel": round(max(full_rss - empty_rss, 0) / n, 1),
        "tower_rss_mb": {"empty_store": round(empty_rss / 2**20, 1), "full_store": round(full_rss / 2**20, 1)},
        "store_pushes_per_s": round(puts),
        "http_pushes_per_s": round(http),
        "stale_close_to_challenge_ms": {
            "median": round(statistics.median(reactions) * 1000, 1),
            "max": round(max(reactions) * 1000, 1),
            "poll_interval_ms": REACTION_POLL_INTERVAL * 1000,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--quick", action="store_true", help="1k and 10k channels")
    parser.add_argument("--probe", metavar="DB", help=argparse.SUPPRESS)  # internal: measure a tower's RSS
    args = parser.parse_args()
    if args.probe:
        print(asyncio.run(probe(Path(args.probe))))
        return
    sizes = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    pushes = 1_000 if args.quick else 5_000
    results = []
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp:
        for n in sizes:
            results.append(asyncio.run(scale(n, pushes, Path(tmp))))
            if not args.json:
                print(json.dumps(results[-1]))
    report = {"quick": args.quick, "pushes_per_measure": pushes, "scales": results}
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

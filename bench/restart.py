"""How long a node takes to restart with many channels in its SQLite store.

    python bench/restart.py --json [--quick] [--channels 10000,100000] [--peers N] [--in-flight 0.1] [--dir DIR]

For each size, a store is filled with realistic channels: open, funded in ether and a token, a latest
state signed by both, positions and quote fills from trades both ways, and a share (`--in-flight`) with
one to four proposals of the node's in flight (payments and takes). Template channels are driven to that
point with the real machine (open, accept, chain inputs, payments, quotes and takes, both sides, every
message through the wire codec); each stored channel is a template rebuilt for its own peer and nonce
(so its own channel id) and signed again: every state, proposal and quote signature in the store is
genuine. Half the channels have the node as A, half as B; by default every channel has its own peer.

Each measurement then runs in a fresh process (as a restart does), on the closed store:

- load: `SqliteStore(path)` + `load_channels()`, then `decode_channel` on every blob (and the decode once
  more with the garbage collector off, `decode_gc_off_s`, to show the collector's share);
- node: `Node(...)` with a real `ChainIO` on the embedded chain + `await node.start()`
  (`construct_and_start_s`), and until its chain watcher has finished its first poll (`ready_s`); the
  chain itself is set up first and not timed (a restarted node finds its chain running). No watchtowers;
  the transport is not listening. Then what the node costs once up: `on_connect_scan_ms`, what one peer
  connecting costs (here a peer with no channel: the scan alone), and `idle_loop_cpu_share`, the event
  loop's CPU while the node sits idle; `gc_*` is the collector's work in each phase (cProfile cannot
  see it: it bills a collection to whatever function was running).

Peak RSS is `ru_maxrss` of that process, with its value before the measurement beside it (imports, and
for the node the embedded chain). The store was just written, so its pages are in the OS cache: a cold
start also reads the file from disk. Imports (about 2 s, any size) are not timed. The machine's other
load shows in every figure: compare runs made side by side.
`--profile` prints a cProfile of the node's restart (to stderr) for each size."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase, Proposal
from statechannel.core.crypto import PrivateKey, recover
from statechannel.core.hashing import keccak
from statechannel.core.io import (
    ActionPay,
    ActionTake,
    ChainFunded,
    ChainOpened,
    Effect,
    Input,
    Payment,
    SendMessage,
    SignedState,
)
from statechannel.core.machine import accept_open, check_invariants, open_channel, receive, transition
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.quotes import Quote, Swap, quote_signer, sign_quote
from statechannel.core.swaps import make_quote
from statechannel.core.types import ETH, ChannelParams, Domain
from statechannel.gasreport import parties
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore

ETHER = 10**18
NOW_MS = 1_700_000_000_000
DAY_MS = 86_400_000
MAX_DEPTH = 4
SAVES_PER_COMMIT = 2_000
IDLE_S = 3.0
"""How long the node is watched idle once ready: the event loop's CPU then is what it costs to do nothing."""
CHECKED = 256
"""Stored channels checked in full (decode, invariants, every signature) while the store is written."""


# ------------------------------------------------------------------ the chain (each process its own)


def chain_setup() -> tuple[EmbeddedChain, bytes, bytes, PrivateKey]:
    """A fresh embedded chain with the adjudicator and a token: the same addresses in every process."""
    chain = EmbeddedChain()
    p = parties(chain, "bench")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    token = Token.deploy(chain, p.deployer)
    return chain, adj.address, token.address, p.a


# ------------------------------------------------------------------ template channels, by the machine


class _Link:
    """Two parties of one channel over an in-memory link, every message through the wire codec."""

    def __init__(self, keys: tuple[PrivateKey, PrivateKey], domain: Domain, assets: tuple[bytes, ...]) -> None:
        self.keys = keys
        self.queues: tuple[deque[m.Message], deque[m.Message]] = (deque(), deque())  # messages *to* party i
        deposits = tuple((100 * ETHER, 100 * ETHER) for _ in assets)
        params = ChannelParams(keys[0].address, keys[1].address, 3600, 1)
        a, effects = open_channel(params, domain, assets, deposits, keys[0])
        request = next(e.message for e in effects if isinstance(e, SendMessage))
        assert isinstance(request, m.OpenRequest)
        b, effects = accept_open(request, domain, keys[1])
        self.channels = [a, b]
        self._send(1, effects)
        self.deliver_all()
        for i in (0, 1):
            self.feed(i, ChainOpened())
        for asset, pair in zip(assets, deposits, strict=True):
            for who in (0, 1):
                for i in (0, 1):
                    self.feed(i, ChainFunded(asset, who, pair[who]))
        self.deliver_all()
        assert all(ch.phase is Phase.OPEN for ch in self.channels)

    def _send(self, sender: int, effects: tuple[Effect, ...]) -> None:
        for e in effects:
            if isinstance(e, SendMessage):
                self.queues[1 - sender].append(m.decode(m.encode(e.message)))

    def feed(self, i: int, inp: Input) -> None:
        self.channels[i], effects = transition(self.channels[i], inp, self.keys[i])
        self._send(i, effects)

    def deliver_all(self) -> None:
        while any(self.queues):
            to = 0 if self.queues[0] else 1
            self.channels[to], effects = receive(self.channels[to], self.queues[to].popleft(), self.keys[to], NOW_MS)
            self._send(to, effects)

    def quote(self, maker: int, quote_id: int, token: bytes, maker_sells: bool) -> tuple[Quote, Any]:
        return make_quote(
            self.channels[maker], self.keys[maker], quote_id, token, ETH, maker_sells, 1, 3, 10**21, NOW_MS + DAY_MS
        )


def templates(domain: Domain, node: PrivateKey, token: bytes) -> dict[tuple[int, int], Channel]:
    """(node's side, proposals in flight) -> the node's channel: payments both ways in both assets, takes
    of each side's quotes (so positions on both sides, and quote fills on the maker's), then 0..MAX_DEPTH
    updates of the node's sent and not yet answered."""
    peer = PrivateKey(keccak(b"bench restart template peer"))
    out: dict[tuple[int, int], Channel] = {}
    for me in (0, 1):
        keys = (node, peer) if me == 0 else (peer, node)
        link = _Link(keys, domain, (ETH, token))
        them = 1 - me
        for n in range(1, 4):
            link.feed(me, ActionPay(tuple(Payment(f"out-{n}-{k}", ETH, 10**15 * n + k) for k in range(3))))
            link.feed(them, ActionPay((Payment(f"in-{n}", token, 7 * 10**16 * n),)))
            link.deliver_all()
        q, sig = link.quote(them, 1, token, maker_sells=True)  # the node buys the token
        link.feed(me, ActionTake((Swap(q, sig, 4 * 10**17, "take-1"), Swap(q, sig, 10**17, "take-2")), NOW_MS))
        link.deliver_all()
        q, sig = link.quote(me, 1, token, maker_sells=False)  # the node's quote, taken by the peer
        link.feed(them, ActionTake((Swap(q, sig, 2 * 10**17, "take-3"),), NOW_MS))
        link.deliver_all()
        ch = link.channels[me]
        assert ch.positions and ch.fills and not ch.pending, "the template lacks trades"
        out[me, 0] = ch
        q, sig = link.quote(them, 2, token, maker_sells=False)  # the node sells the token, in flight
        steps: list[Input] = [
            ActionPay(tuple(Payment(f"fly-{k}", ETH, 10**14 + k) for k in range(5))),
            ActionTake((Swap(q, sig, 3 * 10**16, "take-fly"),), NOW_MS),
            ActionPay((Payment("fly-token", token, 10**15),)),
            ActionPay((Payment("fly-last", ETH, 10**14),)),
        ]
        for depth, step in enumerate(steps[:MAX_DEPTH], start=1):
            link.feed(me, step)  # sent, never delivered: still in flight at the restart
            out[me, depth] = link.channels[me]
    return out


# ------------------------------------------------------------------ derived channels, signed again


def derive(template: Channel, node: PrivateKey, peer: PrivateKey, nonce: int) -> Channel:
    """The template as a channel of its own: new parameters (peer, nonce), so a new channel id in every
    state and quote, and every signature made again by the key it belongs to."""
    me, domain = template.me, template.domain
    keys = (node, peer) if me == 0 else (peer, node)
    params = replace(template.params, a=keys[0].address, b=keys[1].address, nonce=nonce)
    cid = params.channel_id(domain.chain_id, domain.adjudicator)
    assert template.latest is not None
    state = replace(template.latest.state, channel_id=cid)
    digest = template.digest(state)
    latest = SignedState(state, keys[0].sign_digest(digest), keys[1].sign_digest(digest))
    quotes: dict[Quote, tuple[Quote, Any]] = {}
    pending = []
    for p in template.pending:
        swaps = []
        for s in p.swaps:
            if s.quote not in quotes:  # the peer's quote, the node taking it
                q = replace(s.quote, channel_id=cid)
                quotes[s.quote] = (q, sign_quote(domain, q, peer))
            q, sig = quotes[s.quote]
            swaps.append(replace(s, quote=q, quote_sig=sig, take_id=f"{s.take_id}-{nonce}"))
        st = replace(p.state, channel_id=cid)
        pays = tuple(replace(x, payment_id=f"{x.payment_id}-{nonce}") for x in p.payments)
        pending.append(Proposal(st, node.sign_digest(template.digest(st)), p.kind, p.pid, p.base, pays, tuple(swaps)))
    return replace(template, params=params, latest=latest, pending=tuple(pending), _cid=cid)


def check(ch: Channel, blob: bytes, node: PrivateKey) -> None:
    """A stored channel is whole: it decodes to itself, keeps the machine's invariants, and every
    signature in it is by the key it should be."""
    assert decode_channel(blob) == ch and encode_channel(decode_channel(blob)) == blob
    check_invariants(ch)
    assert ch.latest is not None
    ch.check_signed(ch.latest)
    for p in ch.pending:
        assert recover(ch.digest(p.state), p.sig) == node.address
        for s in p.swaps:
            assert quote_signer(ch.domain, s.quote, s.quote_sig) == ch.peer_address
            assert s.quote.channel_id == ch.channel_id == p.state.channel_id


def channels(n: int, peers: int, in_flight: float, domain: Domain, node: PrivateKey, token: bytes) -> Iterator[Channel]:
    shapes = templates(domain, node, token)
    rng = random.Random(n)  # noqa: S311 (a reproducible mix of shapes, no secret)
    keys: dict[int, PrivateKey] = {}
    for i in range(n):
        j = i % peers
        peer = keys.get(j)
        if peer is None:
            peer = PrivateKey(keccak(f"bench restart peer {j}".encode()))
            if peers < n:  # a peer with several channels: keep its key
                keys[j] = peer
        depth = rng.randint(1, MAX_DEPTH) if rng.random() < in_flight else 0
        yield derive(shapes[rng.randint(0, 1), depth], node, peer, i + 1)


async def fill(path: Path, n: int, peers: int, in_flight: float) -> dict[str, Any]:
    chain, adjudicator, token, node = chain_setup()
    domain = Domain(chain.chain_id, adjudicator)
    store = SqliteStore(path)
    start = time.perf_counter()
    every = max(n // CHECKED, 1)
    depths = [0] * (MAX_DEPTH + 1)
    batch: list[Any] = []
    for i, ch in enumerate(channels(n, peers, in_flight, domain, node, token)):
        blob = encode_channel(ch)
        if i % every == 0:
            check(ch, blob, node)
        depths[len(ch.pending)] += 1
        batch.append(store.save(ch.channel_id, blob))
        if len(batch) >= SAVES_PER_COMMIT:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    stats = store.stats()
    await store.close()
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "commits": stats["commits"],
        "channels_by_in_flight": depths,
    }


# ------------------------------------------------------------------ measurements, each in a fresh process


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def rss_mb() -> float | None:
    """Resident now (Linux), to set beside the peak: what stays once the blobs are dropped."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)


def measure_load(path: Path) -> dict[str, Any]:
    """The store's part and the codec's part of a restart, apart; then the decode again with the cyclic
    garbage collector off, to show its share (a decode allocates some 30 tracked objects per channel)."""
    before = peak_rss_mb()
    t0 = time.perf_counter()
    store = SqliteStore(path)
    t1 = time.perf_counter()
    blobs = store.load_channels()
    t2 = time.perf_counter()
    decoded = [decode_channel(blob) for blob in blobs.values()]
    t3 = time.perf_counter()
    peak = peak_rss_mb()
    asyncio.run(store.close())
    n = len(decoded)
    del decoded
    gc.collect()
    gc.disable()
    t4 = time.perf_counter()
    again = [decode_channel(blob) for blob in blobs.values()]
    t5 = time.perf_counter()
    gc.enable()
    assert len(again) == n
    return {
        "open_s": round(t1 - t0, 4),
        "load_channels_s": round(t2 - t1, 3),
        "decode_s": round(t3 - t2, 3),
        "decode_us_per_channel": round((t3 - t2) / max(n, 1) * 1e6, 1),
        "decode_gc_off_s": round(t5 - t4, 3),
        "blob_bytes_mean": round(sum(map(len, blobs.values())) / max(n, 1)),
        "peak_rss_mb": peak,
        "rss_before_mb": before,
    }


class GcClock:
    """The cyclic garbage collector's work, which cProfile cannot see (it bills the collection to
    whatever Python function was running when it started): full (oldest generation) collections and
    seconds spent in all of them."""

    def __init__(self) -> None:
        self.full, self.seconds, self._start = 0, 0.0, 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._start
        self.full += info["generation"] == 2

    def take(self) -> dict[str, float]:
        out = {"full_collections": self.full, "seconds": round(self.seconds, 3)}
        self.full, self.seconds = 0, 0.0
        return out


async def measure_node(path: Path, profile: bool) -> dict[str, Any]:
    chain, adjudicator, _, key = chain_setup()
    transport = TcpTransport(key)
    before = peak_rss_mb()
    profiler = cProfile.Profile() if profile else None
    load_s: list[float] = []
    collector = GcClock()
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    store = SqliteStore(path)
    load = store.load_channels

    def timed_load() -> dict[bytes, bytes]:
        t = time.perf_counter()
        try:
            return load()
        finally:
            load_s.append(time.perf_counter() - t)

    store.load_channels = timed_load  # type: ignore[method-assign]
    node = Node(key, ChainIO(chain, adjudicator, key), store, transport)
    await node.start()
    t1 = time.perf_counter()
    while node.chain_head == 0:  # the watcher's first poll: the chain read from the checkpoint (none yet)
        await asyncio.sleep(0.0005)
        if time.perf_counter() - t1 > 60:
            raise TimeoutError("the node's chain watcher never finished a poll")
    t2 = time.perf_counter()
    gc_start = collector.take()
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
        print(out.getvalue(), file=sys.stderr)
    stranger = PrivateKey(keccak(b"bench restart stranger")).address
    t = time.perf_counter()
    await node._on_connect(stranger)  # what the transport calls on every connect
    scan = time.perf_counter() - t
    cpu, wall = time.thread_time(), time.perf_counter()  # this thread runs the loop; the chain has its own
    await asyncio.sleep(IDLE_S)
    idle = (time.thread_time() - cpu) / (time.perf_counter() - wall)
    gc_idle = collector.take()
    result = {
        "channels": len(node.channels),
        "construct_and_start_s": round(t1 - t0, 3),
        "of_which_load_channels_s": round(load_s[0], 3),
        "ready_s": round(t2 - t0, 3),
        "gc_until_ready": gc_start,
        "on_connect_scan_ms": round(scan * 1000, 2),
        "idle_loop_cpu_share": round(idle, 3),
        f"gc_idle_{IDLE_S:g}s": gc_idle,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(),
    }
    await node.stop()
    await store.close()
    node.chainio.close()
    return result


def child(mode: str, path: Path, *extra: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; its JSON answer. Linux carries `ru_maxrss` over an exec (a new
    process starts at its parent's peak), so even the filling runs in a child: this process holds no
    channels, and its peak (imports only) stays below every child's own."""
    cmd = [sys.executable, __file__, "--child", mode, "--db", str(path), *extra]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def files_mb(path: Path) -> dict[str, float]:
    sizes = {p.name.removeprefix(path.name) or "db": p.stat().st_size for p in path.parent.glob(path.name + "*")}
    return {f"{k.lstrip('-')}_mb": round(v / 2**20, 1) for k, v in sorted(sizes.items())}


def run(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    path = tmp / f"restart-{n}.db"
    peers = min(args.peers or n, n)
    filled = child("fill", path, "--channels", str(n), "--peers", str(peers), "--in-flight", str(args.in_flight))
    disk = files_mb(path)
    out: dict[str, Any] = {
        "channels": n,
        "peers": peers,
        "disk": disk | {"bytes_per_channel": round(disk["db_mb"] * 2**20 / n)},
        "fill": filled,
        "load": child("load", path),
        "node": child("node", path, *(["--profile"] if args.profile else [])),
    }
    path.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 channels")
    parser.add_argument("--channels", default="10000,100000", help="store sizes, comma separated")
    parser.add_argument("--peers", type=int, default=0, help="distinct peers (default: one per channel)")
    parser.add_argument("--in-flight", type=float, default=0.1, help="share of channels with proposals in flight")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the stores (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile the node's restart, to stderr")
    parser.add_argument("--child", choices=("fill", "load", "node"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "fill":
        print(json.dumps(asyncio.run(fill(args.db, int(args.channels), args.peers, args.in_flight))))
        return
    if args.child:
        result = measure_load(args.db) if args.child == "load" else asyncio.run(measure_node(args.db, args.profile))
        print(json.dumps(result))
        return
    sizes = [1_000, 10_000] if args.quick else [int(x) for x in args.channels.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        report = {
            "setup": "fresh process per measurement; SQLite WAL; embedded chain; page cache warm",
            "in_flight_share": args.in_flight,
            "runs": [run(n, args, Path(tmp)) for n in sizes],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for r in report["runs"]:
        print(f"{r['channels']:>8} channels  {r['disk']['db_mb']:>7} MB on disk")
        for part in ("load", "node"):
            print("\n".join(f"  {part}.{k:28} {v}" for k, v in r[part].items()))


if __name__ == "__main__":
    main()

"""Off-chain speed of one channel between two processes, as a deployment runs it: party B is the real
daemon (`statechannel node start`, its own process and core), party A an in-process `Node` here, over TCP
+ Noise on 127.0.0.1, each with a durable SQLite store (WAL, fsync), both on a real anvil node.

    python bench/twoproc.py --json [--quick] [--window 2048] [--no-trades]

The definitions are bench/channel.py's (its functions are reused) and bench/trading.py's:

- round trip: one payment A -> B, unloaded, from pay() to B's countersignature;
- updates/s: one payment per update, up to 64 updates in flight;
- payments/s: a burst of small payments, coalesced into updates (<= 512 each), one future and one
  history row per side per payment (`pay_nowait`);
- batch payments/s: the batch API (`pay_batch_nowait`, default history: one future and one history row
  per side per batch), batches of 512 payments, up to 64 outstanding (bench/channel.py `batches`);
- trades: B's daemon makes a quote through its HTTP API (sells the token at 3 wei each), A takes one
  unit at a time: the take round trip unloaded, then trades/s with `--window` takes outstanding
  (takes made together share swap updates, so `updates_per_trade` is reported beside the rate).

`*_cpu_pct` is the CPU each process used during a phase, in percent of one core (100 = one core busy):
A is this process, B the daemon, anvil the chain (which idles once the channel is funded). Both nodes
poll the chain every 0.2 s, the daemon's default. `updates_cpu_us_per_update` is each side's CPU per
update in that phase (A also by thread: the loop thread and the store writer).

The floor, measured in the same run with the project's own code (core/crypto.py, core/eip712.py) on
the channel's own latest state: one state digest + one sign + one recover, the ECDSA work each side
must do per update. `floor_ratio` = updates/s x the per-side floor time (1.0 would be a node doing
nothing but that work on one core). `round_trip_breakdown` takes one unloaded round trip apart:
A's loop turns, callbacks and thread hand-offs (counted on A's loop only during that phase, so the
counting costs the other phases nothing), each side's store transactions (each one fsync in the
default mode) and their time, the crypto floor of both sides, the codec (encode + decode of the
propose and the accept), and what remains (node, machine, transport, scheduling, the kernel).

`--durability process-crash-safe` runs both sides with WAL synchronous=NORMAL (not power-cut safe);
`--durability both` runs the payment phases in both modes in one run: a second daemon with that mode
and a second A store, rounds interleaved, medians and the ratio reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from channel import batches, burst, round_trips, updates  # bench/channel.py: the same definitions
from statechannel.api.client import ApiClient
from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.chain.rpc import RpcChain
from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey, recover
from statechannel.core.types import ETH, to_checksum
from statechannel.gasreport import parties
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.keys import write_keystore
from statechannel.node.node import Node
from statechannel.node.swapdesk import Fill
from statechannel.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tests.anvil import Anvil  # noqa: E402 (the anvil the test suite starts, started the same way)
from tests.cli.helpers import node_command  # noqa: E402 (the daemon command line the tests use)

ETHER = 10**18
TOKENS = 10**24
PASSWORD = "twoproc bench"  # noqa: S105 (a throwaway keystore in a temporary directory)
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.2  # the daemon's (DaemonConfig.poll_interval), so both sides poll anvil alike
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ party B: the daemon


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    info: dict[str, Any]
    token: str

    @property
    def port(self) -> int:
        return int(self.info["listen"].rpartition(":")[2])

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM (the daemon shuts down in order), then SIGKILL if it does not within the timeout."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_daemon(key: PrivateKey, rpc: str, adjudicator: bytes, tmp: Path, durability: str = "fsync") -> Daemon:
    """`statechannel node start` in its own process, as tests/cli/helpers.py starts it; its log goes to a
    file (a pipe nobody reads would fill up and stall it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    keystore, data_dir, log = tmp / "b-keystore.json", tmp / "b", tmp / "b.log"
    write_keystore(keystore, key, PASSWORD, scrypt_n=2**10)  # a cheap KDF: the bench measures the node
    command = node_command(
        keystore,
        data_dir,
        rpc,
        "--adjudicator",
        to_checksum(adjudicator),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--durability",
        durability,
    )
    env = {**os.environ, "STATECHANNEL_PASSWORD": PASSWORD}
    with log.open("wb") as err:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    daemon = Daemon(proc, log, {}, "")
    node_json = data_dir / "node.json"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while not node_json.exists():
            if proc.poll() is not None:
                why = f"the daemon exited with {proc.returncode} before it was ready"
                raise RuntimeError(f"{why}:\n{daemon.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not write node.json in time:\n{daemon.log_tail()}")
            time.sleep(0.05)
        daemon.info = json.loads(node_json.read_text())
        daemon.token = (data_dir / "api-token").read_text().strip()
    except BaseException:
        daemon.stop()
        raise
    return daemon


# ------------------------------------------------------------------ CPU per process


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def _threads_cpu() -> dict[str, float]:
    """CPU seconds of this process's loop thread and of its other threads (the store writer, the chain pool;
    Python before 3.14 does not name OS threads, so they are told apart only where the name is set)."""
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            who = (
                "a_store_writer"
                if name.startswith("store-writer")
                else "a_main"
                if task.name == str(os.getpid())
                else "a_other"
            )
            out[who] = out.get(who, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return out


@dataclass
class Cpu:
    daemon: int
    anvil: int

    def sample(self) -> tuple[float, float, float, float]:
        return time.perf_counter(), time.process_time(), _proc_cpu(self.daemon), _proc_cpu(self.anvil)

    async def measure(
        self, name: str, run: Callable[[], Awaitable[dict[str, Any]]], versions: Callable[[], int] | None = None
    ) -> dict[str, Any]:
        before, threads, v0 = self.sample(), _threads_cpu(), versions() if versions else 0
        out = await run()
        wall, *used = (after - start for after, start in zip(self.sample(), before, strict=True))
        out[f"{name}_cpu_pct"] = {who: round(100 * u / wall) for who, u in zip(("a", "b", "anvil"), used, strict=True)}
        if versions is not None and (n := versions() - v0) > 0:
            per = {"a": used[0], "b": used[1]} | {k: v - threads.get(k, 0.0) for k, v in _threads_cpu().items()}
            out[f"{name}_cpu_us_per_update"] = {k: round(1e6 * v / n) for k, v in per.items()}
        return out


# ------------------------------------------------------------------ setup


@dataclass
class Setup:
    a: Node
    api: ApiClient
    cid: bytes
    token: bytes | None


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def open_channel(a: Node, api: ApiClient, b_address: bytes, port: int, token: bytes | None) -> bytes:
    """A dials B, opens a channel with 10 ether (and the token, which B funds through its API)."""
    await a.transport.connect(b_address, "127.0.0.1", port)  # type: ignore[attr-defined]
    deposits = {ETH: (10 * ETHER, 0)} | ({token: (0, 0)} if token is not None else {})
    cid = await a.open_channel(b_address, deposits, challenge_period=3600)
    await a.wait_for(cid, Phase.OPEN)
    path = f"/channels/0x{cid.hex()}"
    deadline = time.monotonic() + 30
    while (await asyncio.to_thread(api.get, path))["phase"] != str(Phase.OPEN):
        if time.monotonic() > deadline:
            raise TimeoutError("B's daemon did not see the channel open")
        await asyncio.sleep(0.05)
    if token is not None:
        body = {"asset": to_checksum(token), "amount": str(TOKENS // 2)}
        await asyncio.to_thread(api.post, f"{path}/deposit", body)
        index = a.channel(cid).assets.index(token)
        await wait_until(lambda: a.channel(cid).funded[index][1] >= TOKENS // 2, "A did not see B's token deposit")
    return cid


# ------------------------------------------------------------------ trades (bench/trading.py's definitions)


async def make_quote(s: Setup) -> int:
    """B's daemon sells the token at 3 wei each, through its HTTP API; the id once A holds the quote."""
    assert s.token is not None
    body = {
        "side": "sell",
        "base": to_checksum(s.token),
        "quote": "eth",
        "base_unit": "1",
        "quote_unit": "3",
        "size": str(10**9),
        "ttl_ms": 3_600_000,
    }
    made = await asyncio.to_thread(s.api.post, f"/channels/0x{s.cid.hex()}/quotes", body)
    qid = int(made["quote_id"])
    await wait_until(lambda: any(q.quote.quote_id == qid for q in s.a.quotes(s.cid)), "the quote did not arrive", 10)
    return qid


async def take_round_trips(s: Setup, qid: int, n: int) -> dict[str, Any]:
    """One take of 1 unit, unloaded, from take() to the fill (B's countersignature)."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await s.a.take(s.cid, qid, 1)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "take_round_trip_p50_ms": round(statistics.median(samples), 3),
        "take_round_trip_p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
    }


async def trades(s: Setup, qid: int, n: int, window: int) -> dict[str, Any]:
    """Takes of 1 unit, `window` outstanding (A takes again as each fill arrives)."""
    v0 = s.a.channel(s.cid).latest.state.version  # type: ignore[union-attr]
    in_flight: deque[asyncio.Future[Fill]] = deque()
    t = time.perf_counter()
    for _ in range(n):
        if len(in_flight) >= window:
            await in_flight.popleft()
        in_flight.append(s.a.take(s.cid, qid, 1))
    await asyncio.gather(*in_flight)
    dt = time.perf_counter() - t
    v1 = s.a.channel(s.cid).latest.state.version  # type: ignore[union-attr]
    return {
        "trades": n,
        "trades_window": window,
        "trades_per_s": round(n / dt),
        "updates_per_trade": round((v1 - v0) / n, 3),
    }


# ------------------------------------------------------------------ the floor and one round trip taken apart


def _per_call_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Median over rounds of the mean time of one call, in microseconds."""
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(per)


def floor(a: Node, cid: bytes, key: PrivateKey, n: int) -> dict[str, Any]:
    """One side's ECDSA work per update (digest + sign + recover), and the codec of one update."""
    ch = a.channel(cid)
    signed = ch.latest
    assert signed is not None
    state = signed.state
    digest = ch.digest(state)
    sig = key.sign_digest(digest)
    propose = m.Propose(m.WireState.of(state), sig.to_bytes(), 1, state.version - 1, [])
    accept = m.Accept(cid, state.version, sig.to_bytes())
    frames = (m.encode(propose), m.encode(accept))
    parts = {
        "digest_us": _per_call_us(lambda: ch.digest(state), n),
        "sign_us": _per_call_us(lambda: key.sign_digest(digest), n),
        "recover_us": _per_call_us(lambda: recover(digest, sig), n),
        "codec_us": _per_call_us(lambda: [m.decode(m.encode(x)) for x in (propose, accept)], n),
    }
    out: dict[str, Any] = {k: round(v, 1) for k, v in parts.items()}
    out["floor_us_per_side"] = round(parts["digest_us"] + parts["sign_us"] + parts["recover_us"], 1)
    out["frame_bytes"] = [len(f) for f in frames]
    return out


class LoopCounter:
    """Counts A's loop turns, callbacks scheduled and cross-thread hand-offs, only while installed
    (instance attributes shadowing the loop's methods; removed after, so other phases pay nothing)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.turns, self.callbacks, self.threadsafe = loop, 0, 0, 0

    def __enter__(self) -> LoopCounter:
        loop: Any = self.loop
        run_once, call_soon, threadsafe = loop._run_once, loop.call_soon, loop.call_soon_threadsafe

        def counted_run_once() -> None:
            self.turns += 1
            run_once()

        def counted_call_soon(*args: Any, **kwargs: Any) -> Any:
            self.callbacks += 1
            return call_soon(*args, **kwargs)

        def counted_threadsafe(*args: Any, **kwargs: Any) -> Any:
            self.threadsafe += 1
            return threadsafe(*args, **kwargs)

        loop._run_once, loop.call_soon, loop.call_soon_threadsafe = (
            counted_run_once,
            counted_call_soon,
            counted_threadsafe,
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        for name in ("_run_once", "call_soon", "call_soon_threadsafe"):
            with contextlib.suppress(AttributeError):
                delattr(self.loop, name)


def _b_commits(api: ApiClient) -> tuple[float, float]:
    """B's store transactions so far (count, seconds), from its /metrics."""
    text = api._http.get("/metrics").text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("statechannel_store_commit_seconds_sum", "statechannel_store_commit_seconds_count"):
            values[name.rpartition("_")[2]] = float(value)
    return values.get("count", 0.0), values.get("sum", 0.0)


async def breakdown(a: Node, api: ApiClient, cid: bytes, n: int, floor_us: float, codec_us: float) -> dict[str, Any]:
    """`n` unloaded round trips with A's loop counted and both stores' transactions timed; per round trip."""
    assert isinstance(a.store, SqliteStore)
    commits: list[float] = []
    previous = a.store.on_commit
    a.store.on_commit = lambda seconds, _saves, _ok: commits.append(seconds)
    saves0 = a.store.stats()["saves"]
    b0 = await asyncio.to_thread(_b_commits, api)
    samples = []
    try:
        with LoopCounter(asyncio.get_running_loop()) as counter:
            for _ in range(n):
                t = time.perf_counter()
                await a.pay(cid, ETH, 1)
                samples.append((time.perf_counter() - t) * 1e6)
    finally:
        a.store.on_commit = previous
    b1 = await asyncio.to_thread(_b_commits, api)
    saves = a.store.stats()["saves"] - saves0
    b_count, b_seconds = b1[0] - b0[0], b1[1] - b0[1]
    p50 = statistics.median(samples)
    a_fsync_us = 1e6 * statistics.median(commits) if commits else 0.0
    b_fsync_us = 1e6 * b_seconds / b_count if b_count else 0.0
    stores_us = a_fsync_us * len(commits) / n + b_fsync_us * b_count / n
    crypto_us = 2 * floor_us
    out = {
        "round_trip_p50_us": round(p50),
        "a_loop_turns": round(counter.turns / n, 1),
        "a_callbacks": round(counter.callbacks / n, 1),
        "a_thread_handoffs": round((counter.threadsafe + saves) / n, 1),
        "a_store_transactions": round(len(commits) / n, 2),
        "a_store_transaction_us": round(a_fsync_us),
        "b_store_transactions": round(b_count / n, 2),
        "b_store_transaction_us": round(b_fsync_us),
        "stores_us": round(stores_us),
        "crypto_floor_both_sides_us": round(crypto_us),
        "codec_us": round(codec_us),
        "rest_us": round(p50 - stores_us - crypto_us - codec_us),
    }
    out["stores_share"] = round(stores_us / p50, 2)
    return out


# ------------------------------------------------------------------ the run


@dataclass
class Processes:
    rpc: str
    anvil_pid: int
    adjudicator: bytes
    token: bytes | None
    pairs: dict[str, tuple[PrivateKey, Daemon]]  # durability mode -> A's key, B's daemon in that mode


@dataclass
class Side:
    a: Node
    api: ApiClient
    cid: bytes
    daemon: Daemon
    key: PrivateKey

    def version(self) -> int:
        return self.a.channel(self.cid).latest.state.version  # type: ignore[union-attr]


async def start_side(env: Processes, mode: str, tmp: Path) -> Side:
    key, daemon = env.pairs[mode]
    a = Node(
        key,
        ChainIO(RpcChain(env.rpc), env.adjudicator, key),
        SqliteStore(tmp / f"a-{mode}.db", durability=mode),
        TcpTransport(key),
        poll_interval=POLL_INTERVAL,
    )
    api = ApiClient(daemon.info["api"], daemon.token, timeout=120)
    await a.start()
    await a.transport.start()  # type: ignore[attr-defined]
    b_address = bytes.fromhex(daemon.info["address"][2:])
    cid = await open_channel(a, api, b_address, daemon.port, env.token if mode == "fsync" else None)
    return Side(a, api, cid, daemon, key)


async def stop_side(side: Side) -> None:
    side.api.close()
    await side.a.stop()
    await side.a.transport.close()
    await side.a.store.close()
    side.a.chainio.close()


def _median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rounds[0].items() if isinstance(v, int | float)]
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys}


async def payments(side: Side, cpu: Cpu, args: argparse.Namespace) -> dict[str, Any]:
    a, cid = side.a, side.cid
    out: dict[str, Any] = {}
    out |= await cpu.measure("round_trip", lambda: round_trips(a, cid, 200 if args.quick else 1000))
    out |= await cpu.measure("updates", lambda: updates(a, cid, 2000 if args.quick else 10_000), side.version)
    out |= await cpu.measure("burst", lambda: burst(a, cid, 20_000 if args.quick else 100_000))
    out |= await cpu.measure("batch", lambda: batches(a, cid, 200_000 if args.quick else 1_000_000), side.version)
    return out


async def measure(env: Processes, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    sides: dict[str, Side] = {}
    try:
        for mode in env.pairs:
            sides[mode] = await start_side(env, mode, tmp)
        main_mode = "fsync" if "fsync" in sides else next(iter(sides))
        side = sides[main_mode]
        a, cid = side.a, side.cid
        s = Setup(a, side.api, cid, env.token if main_mode == "fsync" else None)
        cpu = Cpu(side.daemon.proc.pid, env.anvil_pid)
        out: dict[str, Any] = {
            "setup": "A in this process, B the `statechannel node start` daemon (own process), TCP+Noise on "
            f"127.0.0.1, SQLite WAL, durability {main_mode}, anvil",
            "durability": main_mode,
            "cores": os.cpu_count(),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        }
        out |= await payments(side, cpu, args)
        fl = floor(a, cid, side.key, 500 if args.quick else 2000)
        out["floor"] = fl
        out["floor_ratio"] = round(out["updates_per_s"] * fl["floor_us_per_side"] / 1e6, 3)
        out["round_trip_breakdown"] = await breakdown(
            a, side.api, cid, 100 if args.quick else 300, fl["floor_us_per_side"], fl["codec_us"]
        )
        if len(sides) > 1:
            rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in sides}
            for _ in range(3 if args.quick else 5):
                for mode, other in sides.items():
                    o_cpu = Cpu(other.daemon.proc.pid, env.anvil_pid)
                    rounds[mode].append(await payments(other, o_cpu, argparse.Namespace(quick=True)))
            medians = {mode: _median_of(r) for mode, r in rounds.items()}
            out["durability_modes_interleaved"] = medians
            base, fast = medians["fsync"], medians["process-crash-safe"]
            out["process_crash_safe_over_fsync"] = {
                k: round(fast[k] / base[k], 2)
                for k in (
                    "updates_per_s",
                    "coalesced_payments_per_s",
                    "batch_payments_per_s",
                    "round_trip_p50_ms",
                    "round_trip_p99_ms",
                )
            }
        if s.token is not None and not args.no_trades:
            n_rt, n_trades = (100, 2_000) if args.quick else (500, 10_000)
            qid = await make_quote(s)
            out |= await cpu.measure("take_round_trip", lambda: take_round_trips(s, qid, n_rt))
            out |= await cpu.measure("trades", lambda: trades(s, qid, n_trades, args.window))
        stats = a.store.stats()
        out["store_saves_per_commit_a"] = round(stats["saves"] / max(1, stats["commits"]), 2)
        out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        # both sides agree: B holds the same both-signed version as A
        for one in sides.values():
            await one.a.idle(one.cid)
            view = await asyncio.to_thread(one.api.get, f"/channels/0x{one.cid.hex()}")
            if view["version"] != one.version():
                raise RuntimeError(f"B's daemon holds version {view['version']}, A holds {one.version()}")
        out["final_version"] = side.version()
        return out
    finally:
        for one in sides.values():
            await stop_side(one)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the daemon and anvil


@contextlib.contextmanager
def processes(tmp: Path, trade: bool, modes: tuple[str, ...]) -> Iterator[Processes]:
    """Anvil with the adjudicator (and the test token) deployed, and one B daemon per durability mode on
    it (each with its own keys); all stopped after."""
    anvil = Anvil()
    daemons: list[Daemon] = []
    try:
        chain = RpcChain(anvil.url)
        p = parties(chain, "twoproc")
        adj, _ = Adjudicator.deploy(chain, p.deployer)
        token: bytes | None = None
        if trade:
            tok = Token.deploy(chain, p.deployer)
            for k in (p.a, p.b):
                tok.mint(p.deployer, k.address, TOKENS)
            token = tok.address
        pairs: dict[str, tuple[PrivateKey, Daemon]] = {}
        for mode in modes:
            keys = p if mode == "fsync" else parties(chain, f"twoproc {mode}")
            daemons.append(start_daemon(keys.b, anvil.url, adj.address, tmp / mode, mode))
            pairs[mode] = (keys.a, daemons[-1])
        yield Processes(anvil.url, anvil.proc.pid, adj.address, token, pairs)
    finally:
        for daemon in daemons:
            daemon.stop()
        anvil.stop()


def main(args: argparse.Namespace) -> dict[str, Any]:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    modes = ("fsync", "process-crash-safe") if args.durability == "both" else (args.durability,)
    with (
        tempfile.TemporaryDirectory(prefix="twoproc-") as tmp,
        processes(Path(tmp), not args.no_trades, modes) as env,
    ):
        try:
            return asyncio.run(measure(env, Path(tmp), args))
        except Exception:
            for _, daemon in env.pairs.values():
                if tail := daemon.log_tail():
                    print(f"B's daemon log (last lines):\n{tail}", file=sys.stderr)
            raise


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--window", type=_positive, default=2048, help="takes outstanding at once")
    parser.add_argument("--no-trades", action="store_true", help="payments only")
    parser.add_argument(
        "--durability",
        choices=["fsync", "process-crash-safe", "both"],
        default="fsync",
        help="both: also run the payment phases against a process-crash-safe pair, rounds interleaved",
    )
    args = parser.parse_args()
    result = main(args)
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28} {v}" for k, v in result.items()))

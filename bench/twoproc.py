"""Off-chain speed of one channel between two processes, as a deployment runs it: party B is the real
daemon (`statechannel node start`, its own process and core), party A an in-process `Node` here, over TCP
+ Noise on 127.0.0.1, each with a durable SQLite store (WAL, fsync), both on a real anvil node.

    python bench/twoproc.py --json [--quick] [--window 2048] [--no-trades]

The definitions are bench/channel.py's (its functions are reused) and bench/trading.py's:

- round trip: one payment A -> B, unloaded, from pay() to B's countersignature;
- updates/s: one payment per update, up to 64 updates in flight;
- payments/s: a burst of small payments, coalesced into updates (<= 512 each);
- trades: B's daemon makes a quote through its HTTP API (sells the token at 3 wei each), A takes one
  unit at a time: the take round trip unloaded, then trades/s with `--window` takes outstanding
  (takes made together share swap updates, so `updates_per_trade` is reported beside the rate).

`*_cpu_pct` is the CPU each process used during a phase, in percent of one core (100 = one core busy):
A is this process, B the daemon, anvil the chain (which idles once the channel is funded). Both nodes
poll the chain every 0.2 s, the daemon's default.
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

from channel import burst, round_trips, updates  # bench/channel.py: the same definitions
from statechannel.api.client import ApiClient
from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.chain.rpc import RpcChain
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey
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


def start_daemon(key: PrivateKey, rpc: str, adjudicator: bytes, tmp: Path) -> Daemon:
    """`statechannel node start` in its own process, as tests/cli/helpers.py starts it; its log goes to a
    file (a pipe nobody reads would fill up and stall it)."""
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


@dataclass
class Cpu:
    daemon: int
    anvil: int

    def sample(self) -> tuple[float, float, float, float]:
        return time.perf_counter(), time.process_time(), _proc_cpu(self.daemon), _proc_cpu(self.anvil)

    async def measure(self, name: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        before = self.sample()
        out = await run()
        wall, *used = (after - start for after, start in zip(self.sample(), before, strict=True))
        out[f"{name}_cpu_pct"] = {who: round(100 * u / wall) for who, u in zip(("a", "b", "anvil"), used, strict=True)}
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


# ------------------------------------------------------------------ the run


@dataclass
class Processes:
    rpc: str
    anvil_pid: int
    adjudicator: bytes
    token: bytes | None
    key_a: PrivateKey
    daemon: Daemon


async def measure(env: Processes, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    key, daemon, token = env.key_a, env.daemon, env.token
    a = Node(
        key,
        ChainIO(RpcChain(env.rpc), env.adjudicator, key),
        SqliteStore(tmp / "a.db"),
        TcpTransport(key),
        poll_interval=POLL_INTERVAL,
    )
    api = ApiClient(daemon.info["api"], daemon.token, timeout=120)
    try:
        await a.start()
        await a.transport.start()  # type: ignore[attr-defined]
        b_address = bytes.fromhex(daemon.info["address"][2:])
        cid = await open_channel(a, api, b_address, daemon.port, token)
        s = Setup(a, api, cid, token)
        cpu = Cpu(daemon.proc.pid, env.anvil_pid)
        out: dict[str, Any] = {
            "setup": "A in this process, B the `statechannel node start` daemon (own process), TCP+Noise on "
            "127.0.0.1, SQLite WAL fsync, anvil",
            "cores": os.cpu_count(),
        }
        out |= await cpu.measure("round_trip", lambda: round_trips(a, cid, 200 if args.quick else 1000))
        out |= await cpu.measure("updates", lambda: updates(a, cid, 2000 if args.quick else 10_000))
        out |= await cpu.measure("burst", lambda: burst(a, cid, 20_000 if args.quick else 100_000))
        if token is not None:
            n_rt, n_trades = (100, 2_000) if args.quick else (500, 10_000)
            qid = await make_quote(s)
            out |= await cpu.measure("take_round_trip", lambda: take_round_trips(s, qid, n_rt))
            out |= await cpu.measure("trades", lambda: trades(s, qid, n_trades, args.window))
        stats = a.store.stats()
        out["store_saves_per_commit_a"] = round(stats["saves"] / max(1, stats["commits"]), 2)
        # both sides agree: B holds the same both-signed version as A
        await a.idle(cid)
        view = await asyncio.to_thread(api.get, f"/channels/0x{cid.hex()}")
        ours = a.channel(cid).latest.state.version  # type: ignore[union-attr]
        if view["version"] != ours:
            raise RuntimeError(f"B's daemon holds version {view['version']}, A holds {ours}")
        out["final_version"] = ours
        return out
    finally:
        api.close()
        await a.stop()
        await a.transport.close()
        await a.store.close()
        a.chainio.close()


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the daemon and anvil


@contextlib.contextmanager
def processes(tmp: Path, trade: bool) -> Iterator[Processes]:
    """Anvil with the adjudicator (and the test token) deployed, and B's daemon on it; both stopped after."""
    anvil = Anvil()
    daemon: Daemon | None = None
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
        daemon = start_daemon(p.b, anvil.url, adj.address, tmp)
        yield Processes(anvil.url, anvil.proc.pid, adj.address, token, p.a, daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        anvil.stop()


def main(args: argparse.Namespace) -> dict[str, Any]:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="twoproc-") as tmp,
        processes(Path(tmp), not args.no_trades) as env,
    ):
        try:
            return asyncio.run(measure(env, Path(tmp), args))
        except Exception:
            if tail := env.daemon.log_tail():
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
    args = parser.parse_args()
    result = main(args)
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28} {v}" for k, v in result.items()))

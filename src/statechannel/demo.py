"""`statechannel demo`: the whole product in under a minute, on the embedded chain.

Contracts and a token are deployed in process; two parties run real nodes
(encrypted TCP on 127.0.0.1, durable SQLite stores in a temporary directory).
Every final balance is checked against the expected one; a mismatch fails.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from statechannel.api.app import create_app
from statechannel.api.auth import load_or_create_token, token_path
from statechannel.api.events import EventHub
from statechannel.apps.streams import Stream, StreamStatus
from statechannel.chain.adjudicator import Adjudicator, Status, Token
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import StatechannelError
from statechannel.core.hashing import keccak
from statechannel.core.io import SignedState, SubmitTxClose
from statechannel.core.machine import Terms
from statechannel.core.observed import ChainObservedClose
from statechannel.core.types import ETH
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.node.towers import TowerClient
from statechannel.runtime import limit_recursion, signals_set
from statechannel.store.sqlite import SqliteStore
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.sender import PlainSender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore

limit_recursion()  # py-evm and eth-account, imported above, raised it: see runtime.SAFE_RECURSION_LIMIT

ETHER = 10**18
DEMO_TERMS = Terms(60, 3600)
"""The embedded chain's clock moves when the demo says so: a two-minute window is answered at once."""
TOKEN = 10**18  # the token has 18 decimals too


class DemoFailed(Exception):
    """A final balance differed from the expected one (or a step did not complete)."""


@dataclass
class Report:
    updates: int = 0
    payments: int = 0
    seconds: float = 0.0
    update_seconds: float = 0.0
    trades: int = 0
    trade_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    gas: dict[str, list[int]] = field(default_factory=dict)
    checks: list[tuple[str, int, int]] = field(default_factory=list)  # (what, expected, actual)
    acts: list[str] = field(default_factory=list)

    def check(self, what: str, expected: int, actual: int) -> None:
        self.checks.append((what, expected, actual))

    def as_json(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "updates": self.updates,
            "payments": self.payments,
            "updates_per_s": round(self.updates / self.update_seconds) if self.update_seconds else 0,
            "payments_per_s": round(self.payments / self.seconds) if self.seconds else 0,
            "trades": self.trades,
            "trades_per_s": round(self.trades / self.trade_seconds) if self.trade_seconds else 0,
            "latency_p50_ms": round(statistics.median(lat), 3) if lat else None,
            "latency_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 3) if lat else None,
            "gas": {k: v for k, v in self.gas.items()},
            "balances": [{"what": w, "expected": str(e), "actual": str(a), "ok": e == a} for w, e, a in self.checks],
            "acts": self.acts,
            "ok": all(e == a for _, e, a in self.checks),
        }


class Demo:
    def __init__(self, console: Console, quiet: bool, keep: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.keep = keep
        self.dashboard_url = ""
        self._dashboard: tuple[uvicorn.Server, asyncio.Task[None], EventHub] | None = None
        self.report = Report()
        self.tmp = tempfile.TemporaryDirectory(prefix="statechannel-demo-")
        self.chain = EmbeddedChain()
        names = ("deployer", "A", "B", "tower")
        self.keys = {name: PrivateKey(keccak(f"statechannel demo {name}".encode())) for name in names}
        for key in self.keys.values():
            self.chain.fund(key.address, 100 * ETHER)
        self.adj, _ = Adjudicator.deploy(self.chain, self.keys["deployer"])
        self.token = Token.deploy(self.chain, self.keys["deployer"], "Demo Dollar", "DDL")
        for who in ("A", "B"):
            self.token.mint(self.keys["deployer"], self.keys[who].address, 10_000 * TOKEN)
        self.nodes: dict[str, Node] = {}
        self.ports: dict[str, int] = {}
        self.tower: Tower | None = None
        self.tower_url = ""
        self._tower_server: tuple[uvicorn.Server, asyncio.Task[None]] | None = None

    def say(self, text: str) -> None:
        self.report.acts.append(text)
        if not self.quiet:
            self.console.print(f"[bold cyan]>[/] {text}")

    async def start_tower(self) -> None:
        """A real watchtower: its own key, store and HTTP API on 127.0.0.1."""
        key = self.keys["tower"]
        store = SqliteTowerStore(Path(self.tmp.name) / "tower.db", self.chain.chain_id, self.adj.address)
        self.tower = Tower(self.chain, self.adj.address, key, store, PlainSender(self.chain, key), poll_interval=0.05)
        await self.tower.start()
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(create_tower_app(self.tower), lifespan="off", log_config=None, access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await until(lambda: server.started, 10)
        self._tower_server = (server, task)
        self.tower_url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def start_dashboard(self) -> None:
        """Node A's HTTP API, dashboard included, on 127.0.0.1, for as long as the demo runs."""
        data_dir = Path(self.tmp.name) / "A"
        token = load_or_create_token(data_dir)
        app = create_app(self.nodes["A"], token, data_dir=data_dir)
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await until(lambda: server.started, 10)
        self._dashboard = (server, task, app.state.ctx.hub)
        self.dashboard_url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        self.console.print(
            f"[bold]dashboard[/] of node A: {self.dashboard_url}  (token: {token_path(data_dir)}); "
            f"watchtower: {self.tower_url}/",
            soft_wrap=True,
        )

    async def stop_dashboard(self) -> None:
        if self._dashboard is not None:
            server, task, hub = self._dashboard
            await hub.close()  # ends the event streams, or an open page would hold up the stop
            server.should_exit = True
            await task
            self._dashboard = None

    async def hold(self) -> None:
        """With --keep: leave nodes, tower and dashboard up until Ctrl-C or SIGTERM."""
        stop = asyncio.Event()
        self.console.print(
            f"[bold]--keep[/]: the dashboard stays up at {self.dashboard_url}; Ctrl-C to stop", soft_wrap=True
        )
        with signals_set(stop):
            await stop.wait()

    async def stop_tower(self) -> None:
        if self._tower_server is not None:
            server, task = self._tower_server
            server.should_exit = True
            await task
        if self.tower is not None:
            await self.tower.stop()
            await self.tower.store.close()

    async def start_node(self, who: str, port: int = 0) -> Node:
        key = self.keys[who]
        transport = TcpTransport(key, "127.0.0.1", port)
        store = SqliteStore(Path(self.tmp.name) / f"{who}.db")
        towers = TowerClient([self.tower_url], Path(self.tmp.name) / f"{who}-towers.db") if who == "B" else None
        chainio = ChainIO(self.chain, self.adj.address, key)
        node = Node(key, chainio, store, transport, poll_interval=0.02, towers=towers, terms=DEMO_TERMS)
        transport.set_keep(node.has_channels_with)
        await node.start()
        self.ports[who] = await transport.start()
        self.nodes[who] = node
        return node

    async def stop_node(self, who: str) -> None:
        node = self.nodes.pop(who)
        await node.stop()
        await node.transport.close()
        await node.store.close()
        self._collect_gas(node)
        node.chainio.close()

    def _collect_gas(self, node: Node) -> None:
        for what, gas in node.chainio.gas_used:
            self.report.gas.setdefault(what, []).append(gas)
        node.chainio.gas_used.clear()

    async def connect(self, a: str, b: str) -> None:
        transport = self.nodes[a].transport
        assert isinstance(transport, TcpTransport)
        await transport.connect(self.keys[b].address, "127.0.0.1", self.ports[b])

    async def on_chain(self, node: Node, fn: Callable[[], Any]) -> Any:
        return await node.chainio.run(fn)

    async def open_channel(self, a: Node, b: Node, eth: int, tokens: int, b_eth: int, b_tokens: int) -> bytes:
        deposits = {ETH: (eth, 0), self.token.address: (tokens, 0)}
        cid = await a.open_channel(b.address, deposits, challenge_period=120)
        await a.wait_for(cid, Phase.OPEN)
        await b.wait_for(cid, Phase.OPEN)
        await b.deposit(cid, ETH, b_eth)
        await b.deposit(cid, self.token.address, b_tokens)
        await until(lambda: a.channel(cid).funded == ((eth, b_eth), (tokens, b_tokens)) or False, 30)
        return cid

    # ------------------------------------------------------------ acts

    async def stream_act(self, a: Node, b: Node, cid: bytes) -> int:
        rate, seconds = 2_000_000_000_000, 3  # wei per second
        cap = rate * seconds
        stream = Stream(a, cid, ETH, rate_per_s=rate, cap=cap, tick_ms=20)
        self.say(f"A streams {rate:,} wei/s to B for {seconds} s (ticks of 20 ms, capped at {cap:,} wei)")
        stream.start()
        if self.quiet:
            await until(lambda: stream.progress().status is StreamStatus.COMPLETED, seconds + 30)
        else:
            columns = (TextColumn("stream"), BarColumn(), TextColumn("{task.fields[paid]} wei"), TimeElapsedColumn())
            with Progress(*columns, console=self.console, transient=True) as bar:
                task = bar.add_task("stream", total=cap, paid="0")
                while stream.progress().status is StreamStatus.RUNNING:
                    p = stream.progress()
                    bar.update(task, completed=p.paid, paid=f"{p.paid:,}")
                    await asyncio.sleep(0.05)
        p = stream.progress()
        if p.status is not StreamStatus.COMPLETED:
            raise DemoFailed(f"the stream ended {p.status}: {p.reason}")
        return p.paid

    async def payments_act(self, a: Node, b: Node, cid: bytes) -> tuple[int, int]:
        """Latency (one payment at a time), updates/s (one payment per update, pipelined),
        then payments/s both ways (queued payments coalesce into updates)."""
        for _ in range(200):
            t = time.perf_counter()
            await a.pay(cid, ETH, 1)
            self.report.latencies_ms.append((time.perf_counter() - t) * 1000)
        single = 2_000
        in_flight: list[asyncio.Future[Any]] = []
        v0 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
        t = time.perf_counter()
        for _ in range(single):
            if len(in_flight) >= 64:
                await in_flight.pop(0)
            in_flight.append(a.pay_nowait(cid, ETH, 1))
            await asyncio.sleep(0)  # each payment queued in its own turn becomes its own update
        await asyncio.gather(*in_flight)
        self.report.update_seconds = time.perf_counter() - t
        self.report.updates = a.channel(cid).latest.state.version - v0  # type: ignore[union-attr]
        n = 20_000
        t = time.perf_counter()
        futures = [a.pay_nowait(cid, ETH, 3) for _ in range(n)] + [b.pay_nowait(cid, ETH, 1) for _ in range(n)]
        await asyncio.gather(*futures)
        await a.idle(cid)
        self.report.seconds = time.perf_counter() - t
        self.report.payments = 2 * n
        self.say(
            f"{self.report.updates:,} updates at {self.report.updates / self.report.update_seconds:,.0f}/s; "
            f"then {2 * n:,} payments both ways at {2 * n / self.report.seconds:,.0f}/s, coalesced"
        )
        return 200 + single + 3 * n, n

    async def close_act(self, a: Node, b: Node, cid: bytes) -> None:
        await a.close(cid)
        await a.wait_for(cid, Phase.CLOSED, 60)
        await b.wait_for(cid, Phase.CLOSED, 60)
        info = await self.on_chain(a, lambda: self.adj.channel(cid))
        if info.status is not Status.CONCLUDED:
            raise DemoFailed("the cooperative close did not conclude on chain")

    async def trades_act(self, a: Node, b: Node, cid: bytes) -> tuple[int, int]:
        """B quotes: it sells ETH for DDL at 2,000 DDL per ETH; A takes 2,000 times at once (the takes share
        updates, each filled whole at the quote's price)."""
        base_unit, quote_unit, lot, takes = 10**14, TOKEN // 5, 10**14, 2_000  # 0.0001 ETH costs 0.2 DDL
        signed = await b.send_quote(
            cid, ETH, self.token.address, maker_sells=True, base_unit=base_unit, quote_unit=quote_unit, size=lot * takes
        )
        await until(lambda: any(q.quote.quote_id == signed.quote.quote_id for q in a.quotes(cid)), 10)
        t = time.perf_counter()
        fills = await asyncio.gather(*(a.take(cid, signed.quote.quote_id, lot) for _ in range(takes)))
        dt = time.perf_counter() - t
        eth, ddl = sum(f.base_amount for f in fills), sum(f.quote_amount for f in fills)
        updates = len({f.version for f in fills})
        self.report.trades, self.report.trade_seconds = takes, dt
        self.say(
            f"{takes:,} trades against B's signed quote in {dt:.2f} s ({takes / dt:,.0f}/s, {updates} updates): "
            f"A bought {eth:,} wei"
        )
        over = a.take(cid, signed.quote.quote_id, lot)  # the quote is used up: refused with a reason
        try:
            await over
            raise DemoFailed("a take beyond the quote's size was accepted")
        except StatechannelError as exc:
            self.say(f"one more take is refused: {exc.reason}")
        return eth, ddl

    async def tower_act(self, a: Node, b: Node, cid: bytes, stale: SignedState, expect_b: tuple[int, int]) -> None:
        """B goes offline; A closes with an old state; B's watchtower answers with B's latest.

        `expect_b`: B's ether and tokens as the demo's own bookkeeping of every flow says."""
        latest = b.channel(cid).latest
        assert latest is not None
        b_eth = await self.on_chain(a, lambda: self.chain.balance(b.address))
        b_tok = await self.on_chain(a, lambda: self.token.balance_of(b.address))
        await self.stop_node("B")  # flushes its latest state to the tower first
        self.say(f"B went offline; its tower holds version {latest.state.version}")
        await a.submit(cid, SubmitTxClose(stale))
        self.say(f"A closes with a stale state (version {stale.state.version})")
        await until_async(lambda: self._recorded_version(a, cid), latest.state.version, 30)
        challenged = await self.on_chain(a, lambda: self._challenge_gas(cid))
        self.report.gas.setdefault("Challenge (by the tower)", []).append(challenged)
        self.say(f"the watchtower challenged with version {latest.state.version}")
        await self.on_chain(a, lambda: self.chain.advance_time(121))
        await a.wait_for(cid, Phase.CLOSED, 60)
        self.say("after the window the channel settled by the newest state")
        b_eth_now = await self.on_chain(a, lambda: self.chain.balance(b.address))
        b_tok_now = await self.on_chain(a, lambda: self.token.balance_of(b.address))
        a_tok = await self.on_chain(a, lambda: self.token.balance_of(a.address))
        self.report.check("B's ether paid out, B offline", expect_b[0], b_eth_now - b_eth)
        self.report.check("B's tokens paid out, B offline", expect_b[1], b_tok_now - b_tok)
        self.report.check("A's tokens in the end", 10_000 * TOKEN - expect_b[1] + 2_000 * TOKEN, a_tok)

    def _recorded_version(self, a: Node, cid: bytes) -> int:
        recorded = self.adj.recorded(cid)
        return recorded.version if recorded is not None else -1

    def _challenge_gas(self, cid: bytes) -> int:
        for e in self.adj.events(0):
            if isinstance(e, ChainObservedClose) and e.challenge and e.channel_id == cid:
                return self._receipt_gas(e.origin.tx_hash)[0]
        raise DemoFailed("no challenge on chain")

    def _receipt_gas(self, tx_hash: bytes) -> tuple[int, int]:
        r = self.chain._tester.get_transaction_receipt("0x" + tx_hash.hex())
        return int(r["gas_used"]), int(r["gas_used"]) * int(r["effective_gas_price"])

    async def run(self) -> Report:
        await self.start_tower()
        a, b = await self.start_node("A"), await self.start_node("B")
        await self.connect("A", "B")
        try:
            await self.start_dashboard()
            self.say("deployed the adjudicator and a token; two nodes and a watchtower on 127.0.0.1")
            cid = await self.open_channel(a, b, 5 * ETHER, 5_000 * TOKEN, 2 * ETHER, 2_000 * TOKEN)
            stale = a.channel(cid).latest
            assert stale is not None
            self.say("opened an ETH + token channel: A 5 ETH + 5,000 DDL, B 2 ETH + 2,000 DDL")
            second = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=120)
            await a.wait_for(second, Phase.OPEN)
            streamed = await self.stream_act(a, b, cid)
            a_to_b, b_to_a = await self.payments_act(a, b, cid)
            eth, ddl = await self.trades_act(a, b, cid)
            await asyncio.gather(*(a.pay(second, ETH, 10**12) for _ in range(100)))
            expect_b = (2 * ETHER + streamed + a_to_b - b_to_a - eth, 2_000 * TOKEN + ddl)
            await self.tower_act(a, b, cid, stale, expect_b)
            b = await self.start_node("B", self.ports["B"])  # B comes back and resyncs
            await until(lambda: b.channel(second).latest == a.channel(second).latest, 30)
            b_eth0 = await self.on_chain(a, lambda: self.chain.balance(b.address))
            await self.close_act(a, b, second)
            b_gain = await self.on_chain(a, lambda: self.chain.balance(b.address)) - b_eth0
            self.report.check("B's ether from the cooperative close", 100 * 10**12, b_gain)
            self.say("B came back; the second channel closed cooperatively")
            held_eth = await self.on_chain(a, lambda: self.chain.balance(self.adj.address))
            held_tok = await self.on_chain(a, lambda: self.token.balance_of(self.adj.address))
            self.report.check("the adjudicator holds no ether", 0, held_eth)
            self.report.check("the adjudicator holds no tokens", 0, held_tok)
            if self.keep:
                await self.hold()
        finally:
            await self.stop_dashboard()
            for who in list(self.nodes):
                await self.stop_node(who)
            await self.stop_tower()
            self.tmp.cleanup()
        return self.report


async def until_async(read: Callable[[], int], want: int, timeout: float) -> None:
    """Wait until `read()` (a chain read, run off the event loop) returns `want`."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(read) != want:
        if time.monotonic() > deadline:
            raise DemoFailed(f"a step did not complete within {timeout} s")
        await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoFailed(f"a step did not complete within {timeout} s")
        await asyncio.sleep(0.02)


def render(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="statechannel demo")
    table.add_column("measure")
    table.add_column("value", justify="right")
    keys = ("updates", "updates_per_s", "payments", "payments_per_s", "trades", "trades_per_s")
    for key in (*keys, "latency_p50_ms", "latency_p99_ms"):
        table.add_row(
            key.replace("_", " "), f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key])
        )
    for step, gases in summary["gas"].items():
        table.add_row(f"gas: {step}", ", ".join(f"{g:,}" for g in gases))
    console.print(table)
    checks = Table(title="final balances")
    for col in ("what", "expected", "actual", ""):
        if col in ("expected", "actual"):  # the numbers the table exists to show: never folded or cut
            checks.add_column(col, justify="right", no_wrap=True, overflow="ignore")
        else:
            checks.add_column(col, overflow="fold")
    for row in summary["balances"]:
        mark = "[green]ok[/]" if row["ok"] else "[red]MISMATCH[/]"
        checks.add_row(row["what"], f"{int(row['expected']):,}", f"{int(row['actual']):,}", mark)
    console.print(checks)


async def run_demo(console: Console, quiet: bool = False, keep: bool = False) -> dict[str, Any]:
    limit_recursion()
    demo = Demo(console, quiet, keep)
    report = await demo.run()
    return report.as_json()


DemoRunner = Callable[[Console, bool], Awaitable[dict[str, Any]]]

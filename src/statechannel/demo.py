"""`statechannel demo`: the whole product in under a minute, on the embedded chain.

Contracts and a token are deployed in process; two parties run real nodes
(encrypted TCP on 127.0.0.1, durable SQLite stores in a temporary directory).
Every final balance is checked against the expected one; a mismatch fails.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from statechannel.apps.streams import Stream, StreamStatus
from statechannel.chain.adjudicator import Adjudicator, Status, Token
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import ETH
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore

ETHER = 10**18
TOKEN = 10**18  # the token has 18 decimals too


class DemoFailed(Exception):
    """A final balance differed from the expected one (or a step did not complete)."""


@dataclass
class Report:
    updates: int = 0
    payments: int = 0
    seconds: float = 0.0
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
            "updates_per_s": round(self.updates / self.seconds) if self.seconds else 0,
            "payments_per_s": round(self.payments / self.seconds) if self.seconds else 0,
            "latency_p50_ms": round(statistics.median(lat), 3) if lat else None,
            "latency_p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 3) if lat else None,
            "gas": {k: v for k, v in self.gas.items()},
            "balances": [{"what": w, "expected": str(e), "actual": str(a), "ok": e == a} for w, e, a in self.checks],
            "acts": self.acts,
            "ok": all(e == a for _, e, a in self.checks),
        }


class Demo:
    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.report = Report()
        self.tmp = tempfile.TemporaryDirectory(prefix="statechannel-demo-")
        self.chain = EmbeddedChain()
        self.keys = {name: PrivateKey(keccak(f"statechannel demo {name}".encode())) for name in ("deployer", "A", "B")}
        for key in self.keys.values():
            self.chain.fund(key.address, 100 * ETHER)
        self.adj, _ = Adjudicator.deploy(self.chain, self.keys["deployer"])
        self.token = Token.deploy(self.chain, self.keys["deployer"], "Demo Dollar", "DDL")
        for who in ("A", "B"):
            self.token.mint(self.keys["deployer"], self.keys[who].address, 10_000 * TOKEN)
        self.nodes: dict[str, Node] = {}
        self.ports: dict[str, int] = {}

    def say(self, text: str) -> None:
        self.report.acts.append(text)
        if not self.quiet:
            self.console.print(f"[bold cyan]>[/] {text}")

    async def start_node(self, who: str) -> Node:
        key = self.keys[who]
        transport = TcpTransport(key)
        store = SqliteStore(Path(self.tmp.name) / f"{who}.db")
        node = Node(key, ChainIO(self.chain, self.adj.address, key), store, transport, poll_interval=0.02)
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
        """Latency (one payment at a time), then throughput both ways (queued payments coalesce)."""
        for _ in range(200):
            t = time.perf_counter()
            await a.pay(cid, ETH, 1)
            self.report.latencies_ms.append((time.perf_counter() - t) * 1000)
        n = 20_000
        v0 = a.channel(cid).latest.state.version  # type: ignore[union-attr]
        t = time.perf_counter()
        futures = [a.pay_nowait(cid, ETH, 3) for _ in range(n)] + [b.pay_nowait(cid, ETH, 1) for _ in range(n)]
        await asyncio.gather(*futures)
        await a.idle(cid)
        self.report.seconds = time.perf_counter() - t
        self.report.updates = a.channel(cid).latest.state.version - v0  # type: ignore[union-attr]
        self.report.payments = 2 * n
        self.say(f"{2 * n:,} payments both ways in {self.report.seconds:.2f} s, in {self.report.updates} updates")
        return 200 + 3 * n, n

    async def close_act(self, a: Node, b: Node, cid: bytes) -> None:
        await a.close(cid)
        await a.wait_for(cid, Phase.CLOSED, 60)
        await b.wait_for(cid, Phase.CLOSED, 60)
        info = await self.on_chain(a, lambda: self.adj.channel(cid))
        if info.status is not Status.CONCLUDED:
            raise DemoFailed("the cooperative close did not conclude on chain")

    async def run(self) -> Report:
        a, b = await self.start_node("A"), await self.start_node("B")
        await self.connect("A", "B")
        try:
            self.say("deployed the adjudicator and a token; two nodes talk over encrypted TCP on 127.0.0.1")
            cid = await self.open_channel(a, b, 5 * ETHER, 5_000 * TOKEN, 2 * ETHER, 2_000 * TOKEN)
            self.say("opened an ETH + token channel: A 5 ETH + 5,000 DDL, B 2 ETH + 2,000 DDL")
            streamed = await self.stream_act(a, b, cid)
            a_to_b, b_to_a = await self.payments_act(a, b, cid)
            net = streamed + a_to_b - b_to_a
            a_eth0 = await self.on_chain(a, lambda: self.chain.balance(a.address))
            b_eth0 = await self.on_chain(a, lambda: self.chain.balance(b.address))
            await self.close_act(a, b, cid)
            self.say("closed cooperatively: one transaction paid out both assets")
            await self.check_close(a, b, cid, (a_eth0, b_eth0), (5 * ETHER - net, 2 * ETHER + net))
        finally:
            for who in list(self.nodes):
                await self.stop_node(who)
            self.tmp.cleanup()
        return self.report

    async def check_close(self, a: Node, b: Node, cid: bytes, before: tuple[int, int], payout: tuple[int, int]) -> None:
        """B submitted nothing at close, so its ether rose by exactly its payout; A also paid the close's gas."""
        a_now, b_now, fee = await self.on_chain(a, lambda: self._after_close(cid, a.address, b.address))
        self.report.check("A's ether paid out at close", payout[0], a_now - before[0] + fee)
        self.report.check("B's ether paid out at close", payout[1], b_now - before[1])
        a_tok = await self.on_chain(a, lambda: self.token.balance_of(a.address))
        b_tok = await self.on_chain(a, lambda: self.token.balance_of(b.address))
        self.report.check("A's tokens (none moved)", 10_000 * TOKEN, a_tok)
        self.report.check("B's tokens (none moved)", 10_000 * TOKEN, b_tok)
        held = await self.on_chain(a, lambda: self.chain.balance(self.adj.address))
        self.report.check("the adjudicator holds nothing", 0, held)

    def _after_close(self, cid: bytes, a: bytes, b: bytes) -> tuple[int, int, int]:
        from statechannel.core.observed import ChainObservedConcluded

        done = [e for e in self.adj.events(0) if isinstance(e, ChainObservedConcluded) and e.channel_id == cid]
        r = self.chain._tester.get_transaction_receipt("0x" + done[0].origin.tx_hash.hex())
        fee = int(r["gas_used"]) * int(r["effective_gas_price"])
        return self.chain.balance(a), self.chain.balance(b), fee


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
    for key in ("updates", "payments", "updates_per_s", "payments_per_s", "latency_p50_ms", "latency_p99_ms"):
        table.add_row(
            key.replace("_", " "), f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key])
        )
    for step, gases in summary["gas"].items():
        table.add_row(f"gas: {step}", ", ".join(f"{g:,}" for g in gases))
    console.print(table)
    checks = Table(title="final balances")
    for col in ("what", "expected", "actual", ""):
        checks.add_column(col, justify="right" if col in ("expected", "actual") else "left")
    for row in summary["balances"]:
        mark = "[green]ok[/]" if row["ok"] else "[red]MISMATCH[/]"
        checks.add_row(row["what"], f"{int(row['expected']):,}", f"{int(row['actual']):,}", mark)
    console.print(checks)


async def run_demo(console: Console, quiet: bool = False) -> dict[str, Any]:
    demo = Demo(console, quiet)
    report = await demo.run()
    return report.as_json()


DemoRunner = Callable[[Console, bool], Awaitable[dict[str, Any]]]

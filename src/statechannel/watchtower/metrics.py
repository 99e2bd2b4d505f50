"""The tower's Prometheus metrics and what its page shows, watched from outside the tower's code.

The tower is not changed for them: a sampler compares, a few times a second, what the tower already
exposes (its store's open disputes, its `challenges`) with what it saw last time; a wrapper around the
tower's `Sender` learns each challenge's gas from its receipt; a counter in front of the HTTP API counts
the receipts it issued. So a dispute and its challenge are timed to within one sampling interval, and
the time from close to challenge is measured in chain time (the close's block timestamp to the tower's
head when its challenge was first seen), the clock the challenge window runs on.

Served at `GET /metrics` with no token, like the rest of the tower's API (whose every write is checked by
signatures, not by who calls): bind the tower to loopback, or put it behind your scraper's network."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statechannel.chain.base import Receipt
from statechannel.watchtower.records import TowerStatus
from statechannel.watchtower.service import ChallengeAttempt, Tower
from statechannel.watchtower.storage import TowerStoreError

log = logging.getLogger(__name__)
NS = "statechannel_tower"
SAMPLE_INTERVAL = 0.25
KEEP = 10_000
"""Disputes, challenges and receipts remembered for the page and for timing; the oldest go first."""
RECENT = 200
"""Disputes and challenges listed on the page."""
DELAY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True, slots=True)
class DisputeSeen:
    channel_id: bytes
    version: int
    """The version the close (or a later challenge) recorded."""
    closed_at: int
    """Chain time of the close: the window's end less the channel's period."""
    finalizes_at: int
    seen_head: int


@dataclass(frozen=True, slots=True)
class GasSpent:
    gas_used: int
    fee: int
    block_number: int


class _Gauges(Collector):
    def __init__(self, metrics: TowerMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tower = self._m.tower
        watched = GaugeMetricFamily(f"{NS}_watched_channels", "Channels registered with this tower")
        with contextlib.suppress(TowerStoreError):
            watched.add_metric([], tower.store.count())
        yield watched
        open_disputes = GaugeMetricFamily(f"{NS}_open_disputes", "Channels whose close is recorded, not concluded")
        open_disputes.add_metric([], self._m.open_disputes)
        yield open_disputes
        latest = GaugeMetricFamily(
            f"{NS}_challenge_state", "Each channel's latest challenge, by where it stands", labels=["outcome"]
        )
        for outcome, n in Tally(a.outcome for a in list(tower.challenges.values())).items():
            latest.add_metric([outcome], n)
        yield latest
        head = GaugeMetricFamily(f"{NS}_head_block", "The newest block the tower has read")
        head.add_metric([], tower.head)
        yield head


class TowerMetrics:
    def __init__(self, tower: Tower) -> None:
        self.tower = tower
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.disputes = Counter(
            f"{NS}_disputes", "Closes (and challenges) recorded on chain for watched channels", registry=r
        )
        self.challenges = Counter(
            f"{NS}_challenges",
            "Challenges sent, by outcome (pending, mined, reverted, failed)",
            ["outcome"],
            registry=r,
        )
        self.close_to_challenge = Histogram(
            f"{NS}_close_to_challenge_chain_seconds",
            "Chain time from a stale close's block to the tower's head when its challenge went out",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.receipts = Counter(f"{NS}_receipts", "Signed receipts issued for pushed states", registry=r)
        self.refused = Counter(f"{NS}_refused_requests", "API requests refused, by status", ["status"], registry=r)
        self.challenge_gas = Counter(f"{NS}_challenge_gas", "Gas used by mined challenges", registry=r)
        self.open_disputes = 0
        self.disputes_seen = 0
        self.receipts_issued = 0
        self.recent_disputes: deque[DisputeSeen] = deque(maxlen=RECENT)
        self.gas: OrderedDict[bytes, GasSpent] = OrderedDict()
        self._disputes: OrderedDict[tuple[bytes, int, int], DisputeSeen] = OrderedDict()
        self._attempts: dict[bytes, ChallengeAttempt] = {}
        self._task: asyncio.Task[None] | None = None
        self.registry.register(_Gauges(self))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin sampling (idempotent); needs a running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tower-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def render(self) -> bytes:
        self.sample()  # a scrape sees the newest state, not the last sample's
        return generate_latest(self.registry)

    def watch_receipts(self) -> None:
        """Write down each mined challenge's gas, from the receipt the tower's dispatcher reports."""
        if self.note_receipt not in self.tower.receipt_hooks:
            self.tower.receipt_hooks.append(self.note_receipt)

    # ------------------------------------------------------------ observers

    def note_receipt(self, receipt: Receipt) -> None:
        self.gas[receipt.tx_hash] = GasSpent(receipt.gas_used, receipt.fee, receipt.block_number)
        self.challenge_gas.inc(receipt.gas_used)
        while len(self.gas) > KEEP:
            self.gas.popitem(last=False)

    def note_response(self, method: str, path: str, status: int) -> None:
        if method == "POST" and path == "/states" and status == 200:
            self.receipts.inc()
            self.receipts_issued += 1
        elif status >= 400:
            self.refused.labels(str(status)).inc()

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # the page must never take the tower down
                log.debug("tower metrics: sample failed", exc_info=True)
            await asyncio.sleep(SAMPLE_INTERVAL)

    def sample(self) -> None:
        tower = self.tower
        try:
            disputed = [ch for ch in tower.store.disputed() if ch.status is TowerStatus.CHALLENGED]
        except TowerStoreError:
            disputed = []
        self.open_disputes = len(disputed)
        for ch in disputed:
            d = ch.dispute
            if d is None:
                continue
            key = (ch.channel_id, d.block_number, d.log_index)
            if key not in self._disputes:
                seen = DisputeSeen(
                    ch.channel_id, d.version, d.finalizes_at - ch.params.challenge_period, d.finalizes_at, tower.head
                )
                self._disputes[key] = seen
                self.recent_disputes.append(seen)
                self.disputes.inc()
                self.disputes_seen += 1
                while len(self._disputes) > KEEP:
                    self._disputes.popitem(last=False)
        for cid, attempt in list(tower.challenges.items()):
            before = self._attempts.get(cid)
            if before == attempt:
                continue
            self._attempts[cid] = attempt
            fresh = before is None or (before.version, before.against) != (attempt.version, attempt.against)
            if fresh or before is None or before.outcome != attempt.outcome:
                self.challenges.labels(attempt.outcome).inc()
            if fresh:
                closed = self._closed_at(cid)
                if closed is not None:
                    self.close_to_challenge.observe(max(0, tower.now - closed))

    def _closed_at(self, cid: bytes) -> int | None:
        for seen in reversed(self.recent_disputes):
            if seen.channel_id == cid:
                return seen.closed_at
        ch = self.tower.store.get(cid)
        if ch is None or ch.dispute is None:
            return None
        return ch.dispute.finalizes_at - ch.params.challenge_period


class CountResponses:
    """ASGI middleware: tells `metrics` the status of every HTTP response (receipts are 200s to POST /states)."""

    def __init__(self, app: ASGIApp, metrics: TowerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.metrics.start()

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                with contextlib.suppress(Exception):
                    self.metrics.note_response(scope["method"], scope["path"], int(message["status"]))
            await send(message)

        await self.app(scope, receive, counted)

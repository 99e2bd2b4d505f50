"""The node's Prometheus metrics, served at `GET /metrics` behind the API's bearer token.

Counts come from where things happen, with no extra work on the hot path beyond a dict lookup: every
effect the node carries out (its `effect_hooks`), every transaction the store commits (`on_commit`, on
the writer thread) and every chain call (a `MeteredChain` around the backend). Gauges that are cheap to
read when asked (channels by phase) are computed at scrape time instead of being kept up to date.

Each node gets its own registry: tests and the demo run several nodes in one process."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.io import (
    Effect,
    NotifyFailed,
    NotifyFilled,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    SendMessage,
)
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore

log = logging.getLogger(__name__)
NS = "statechannel"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MAX_PENDING = 10_000
"""Proposals or requests awaiting an answer that are timed at once; past it the oldest are forgotten
(an answer that never comes must not grow memory)."""


class _Phases(Collector):
    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(f"{NS}_channels", "Channels this node holds, by phase", labels=["phase"])
        counts = dict.fromkeys((str(p) for p in Phase), 0)
        for ch in list(self._node.channels.values()):
            counts[str(ch.phase)] += 1
        for phase, n in counts.items():
            family.add_metric([phase], n)
        yield family


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.updates = Counter(
            f"{NS}_updates", "Fully signed payment updates, by who proposed them", ["direction"], registry=r
        )
        self.payments = Counter(f"{NS}_payments", "Payments this node made, by outcome", ["outcome"], registry=r)
        self.trades = Counter(f"{NS}_trades", "Takes of a quote filled, by this node's side", ["side"], registry=r)
        self.refusals = Counter(
            f"{NS}_refusals",
            "Refusals by reason; by=peer: the peer refused ours, by=us: we refused the peer's, by=local: this node "
            "refused a payment before proposing it",
            ["by", "reason"],
            registry=r,
        )
        self.round_trip = Histogram(
            f"{NS}_update_round_trip_seconds",
            "From sending a proposal (leader) or a payment request (follower) to holding the both-signed state",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.phase_changes = Counter(f"{NS}_phase_changes", "Channels entering a phase", ["phase"], registry=r)
        self.commit_seconds = Histogram(
            f"{NS}_store_commit_seconds",
            "Duration of one store transaction (group commit)",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.saves_per_commit = Histogram(
            f"{NS}_store_saves_per_commit", "Saves one store transaction carried", buckets=BATCH_BUCKETS, registry=r
        )
        self.commit_failures = Counter(f"{NS}_store_commit_failures", "Store transactions that failed", registry=r)
        self.chain_calls = Counter(f"{NS}_chain_calls", "Calls to the chain backend", ["method"], registry=r)
        self.chain_errors = Counter(
            f"{NS}_chain_errors", "Chain calls that failed: reverted or error", ["method", "kind"], registry=r
        )
        self.chain_seconds = Histogram(
            f"{NS}_chain_call_seconds", "Duration of chain calls", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        # children bound once: `labels()` takes a lock and a dict lookup on every call
        self._ours, self._theirs = self.updates.labels("ours"), self.updates.labels("theirs")
        self._sent, self._failed = self.payments.labels("sent"), self.payments.labels("failed")
        self._rtt_leader, self._rtt_follower = self.round_trip.labels("leader"), self.round_trip.labels("follower")
        self._proposed: dict[tuple[bytes, int], float] = {}
        self._requested: dict[bytes, deque[float]] = {}
        self._requests = 0

    # ------------------------------------------------------------ wiring

    def watch(self, node: Node) -> None:
        """Count what `node` does from now on (its chain calls are counted by a MeteredChain built with
        `observe_chain`, since the chain is wrapped before the node exists)."""
        node.effect_hooks.append(self.on_effect)
        node.refusal_hooks.append(self.on_local_refusal)
        if isinstance(node.store, SqliteStore):
            node.store.on_commit = self.on_commit
        self.registry.register(_Phases(node))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------ observers

    def observe_chain(self, method: str, seconds: float, outcome: str) -> None:
        self.chain_calls.labels(method).inc()
        self.chain_seconds.labels(method).observe(seconds)
        if outcome != "ok":
            self.chain_errors.labels(method, outcome).inc()

    def on_commit(self, seconds: float, saves: int, ok: bool) -> None:
        if not ok:
            self.commit_failures.inc()
            return
        self.commit_seconds.observe(seconds)
        self.saves_per_commit.observe(saves)

    def on_local_refusal(self, channel_id: bytes, reason: str) -> None:
        self.refusals.labels("local", reason).inc()
        self.payments.labels("refused").inc()

    def on_effect(self, channel_id: bytes, effect: Effect) -> None:
        try:
            self._effect(channel_id, effect, time.perf_counter())
        except Exception:  # a metric must never stop the node carrying out an effect
            log.debug("metrics: effect not counted", exc_info=True)

    def _effect(self, cid: bytes, effect: Effect, now: float) -> None:
        match effect:
            case SendMessage(message=m.Propose() as msg):
                self._remember((cid, msg.state.version), now)
            case SendMessage(message=m.PayRequest()):
                self._requested.setdefault(cid, deque(maxlen=MAX_PENDING)).append(now)
            case SendMessage(message=m.Reject() as msg):
                self.refusals.labels("us", str(msg.reason)).inc()
            case SendMessage(message=m.Refuse() as msg):
                self.refusals.labels("us", str(msg.reason)).inc()
            case NotifySent():
                self._ours.inc()
                self._sent.inc(sum(p.count for p in effect.payments))  # a batch counts its payments
                self._answered(cid, effect.version, now)
            case NotifyFailed():
                self._failed.inc(sum(p.count for p in effect.payments))
                self.refusals.labels("peer", effect.reason).inc()
                pending = self._requested.get(cid)
                if pending:
                    pending.popleft()
            case NotifyReceived():
                self._theirs.inc()
            case NotifyFilled():
                self.trades.labels("maker" if effect.maker else "taker").inc()
                if not effect.maker:
                    self._answered(cid, effect.version, now)
            case NotifyTakeFailed():
                self.refusals.labels("peer", effect.reason).inc()
            case NotifyPhase():
                self.phase_changes.labels(effect.phase).inc()

    def _remember(self, key: tuple[bytes, int], now: float) -> None:
        if len(self._proposed) >= MAX_PENDING:
            self._proposed.pop(next(iter(self._proposed)))
        self._proposed[key] = now

    def _answered(self, cid: bytes, version: int, now: float) -> None:
        sent = self._proposed.pop((cid, version), None)
        if sent is not None:
            self._rtt_leader.observe(now - sent)
            return
        pending = self._requested.get(cid)
        if pending:
            self._rtt_follower.observe(now - pending.popleft())


router = APIRouter()


@router.get("/metrics", tags=["node"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format. Behind the same bearer token as the rest of the API (Prometheus sends it
    with `authorization: {credentials_file: <data-dir>/api-token}`)."""
    registry: NodeMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

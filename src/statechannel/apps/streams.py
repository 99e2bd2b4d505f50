"""Payment streams on a channel, built only on the node's public API.

- `Stream`: pay `rate` smallest units per second in small ticks, up to a cap;
  start, pause, resume, stop. What is owed is exact integer arithmetic on
  elapsed milliseconds (paused time excluded); each tick pays the difference.
- `Stream.meter(units)`: pay per unit of metered service instead.
- `StreamWatch`: the receiver's view: what arrived against what the agreed
  rate says should have, so a service can cut off a payer that lags.
- `Recurring`: an amount every period, on a schedule kept in a file, so it
  survives restarts and catches up what fell due while the node was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError, Reason, StatechannelError
from statechannel.node.node import Node

log = logging.getLogger(__name__)
Clock = Callable[[], int]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class StreamStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"  # the cap is paid
    FAILED = "failed"  # a payment failed (e.g. the channel ran dry)


def _positive(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LocalError(Reason.BAD_AMOUNT, f"{what} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StreamProgress:
    stream_id: str
    status: StreamStatus
    rate_per_s: int
    cap: int
    paid: int
    owed: int
    """What the rate says is due by now (capped); paid lags it by at most one tick."""
    active_ms: int
    reason: str = ""


class Stream:
    """Pays `rate_per_s` per second of running time, in ticks of `tick_ms`, until `cap` is paid."""

    def __init__(
        self,
        node: Node,
        channel_id: bytes,
        asset: bytes,
        rate_per_s: int,
        cap: int,
        tick_ms: int = 100,
        clock: Clock = monotonic_ms,
        stream_id: str | None = None,
    ) -> None:
        self.node, self.channel_id, self.asset = node, channel_id, asset
        self.rate_per_s = _positive(rate_per_s, "rate")
        self.cap = _positive(cap, "cap")
        self.tick_ms = _positive(tick_ms, "tick")
        self.stream_id = stream_id or secrets.token_hex(6)
        self._clock = clock
        self._status = StreamStatus.PAUSED
        self._active_ms = 0  # running time before the current run
        self._run_start: int | None = None
        self._paid = 0
        self._reason = ""
        self._task: asyncio.Task[None] | None = None
        self._metered = 0
        self.on_change: Callable[[Stream], None] | None = None  # the service saves the stream there

    def record(self) -> dict[str, Any]:
        """What a restart needs: the terms, what was paid, and whether it was running."""
        return {
            "stream_id": self.stream_id,
            "channel_id": self.channel_id.hex(),
            "asset": self.asset.hex(),
            "rate_per_s": self.rate_per_s,
            "cap": self.cap,
            "tick_ms": self.tick_ms,
            "paid": self._paid,
            "status": self._status.value,
            "reason": self._reason,
        }

    @classmethod
    def restore(cls, node: Node, rec: dict[str, Any], clock: Clock = monotonic_ms) -> Stream:
        """A stream as saved; running time is counted as exactly what was paid (the rest of the outage owes
        nothing), so a running one resumes at its rate from now, never with a lump for the time down."""
        st = cls(
            node,
            bytes.fromhex(rec["channel_id"]),
            bytes.fromhex(rec["asset"]),
            int(rec["rate_per_s"]),
            int(rec["cap"]),
            int(rec["tick_ms"]),
            clock,
            str(rec["stream_id"]),
        )
        st._paid = int(rec["paid"])
        st._active_ms = st._paid * 1000 // st.rate_per_s
        st._status = StreamStatus(rec["status"])
        st._reason = str(rec.get("reason", ""))
        if st._status is StreamStatus.RUNNING:
            st._status = StreamStatus.PAUSED
            st.start()
        return st

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # control
    def start(self) -> None:
        if self._status in (StreamStatus.STOPPED, StreamStatus.COMPLETED, StreamStatus.FAILED):
            raise LocalError(Reason.WRONG_PHASE, f"stream {self.stream_id} is {self._status}")
        if self._status is StreamStatus.RUNNING:
            return
        self._status, self._run_start = StreamStatus.RUNNING, self._clock()
        self._task = asyncio.create_task(self._run())
        self._changed()

    resume = start

    def pause(self) -> None:
        if self._status is StreamStatus.RUNNING:
            self._freeze()
            self._status = StreamStatus.PAUSED
            self._changed()

    async def stop(self) -> StreamProgress:
        """Stop and pay what is owed up to now (so a stopped stream is square)."""
        if self._status is StreamStatus.RUNNING:
            self._freeze()
        if self._status in (StreamStatus.RUNNING, StreamStatus.PAUSED):
            self._status = StreamStatus.STOPPED
            try:
                await self._settle_up()
            finally:
                self._changed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.progress()

    def _freeze(self) -> None:
        assert self._run_start is not None
        self._active_ms += self._clock() - self._run_start
        self._run_start = None

    # accounting
    def active_ms(self) -> int:
        running = self._clock() - self._run_start if self._run_start is not None else 0
        return self._active_ms + running

    def owed(self) -> int:
        by_time = self.rate_per_s * self.active_ms() // 1000
        return min(self.cap, by_time + self._metered)

    def progress(self) -> StreamProgress:
        return StreamProgress(
            self.stream_id,
            self._status,
            self.rate_per_s,
            self.cap,
            self._paid,
            self.owed(),
            self.active_ms(),
            self._reason,
        )

    async def meter(self, units: int, price_per_unit: int) -> None:
        """Metered service: owe `units * price_per_unit` more (within the cap) and pay it now."""
        self._metered += _positive(units, "units") * _positive(price_per_unit, "price")
        await self._settle_up()

    async def _settle_up(self) -> None:
        due = self.owed() - self._paid
        if due <= 0:
            return
        try:
            await self.node.pay(self.channel_id, self.asset, due)
        except StatechannelError as exc:
            self._status, self._reason = StreamStatus.FAILED, str(exc)
            self._changed()
            raise
        self._paid += due
        if self._paid >= self.cap:
            self._status = StreamStatus.COMPLETED
        self._changed()

    async def _run(self) -> None:
        while self._status is StreamStatus.RUNNING:
            try:
                await self._settle_up()
            except StatechannelError as exc:
                log.warning("stream %s stopped: %s", self.stream_id, exc)
                self.node.notify("stream_stopped", self.channel_id, {"stream_id": self.stream_id, "reason": str(exc)})
                return
            if self._status is not StreamStatus.RUNNING:
                return
            await asyncio.sleep(self.tick_ms / 1000)


@dataclass(frozen=True, slots=True)
class WatchReport:
    received: int
    expected: int
    behind: int
    lagging: bool


class StreamWatch:
    """The receiver's side: counts what arrives on a channel and compares it with
    the agreed rate. `lagging` once the payer is more than `grace` behind."""

    def __init__(
        self, node: Node, channel_id: bytes, asset: bytes, rate_per_s: int, grace: int, clock: Clock = monotonic_ms
    ) -> None:
        self.node, self.channel_id, self.asset = node, channel_id, asset
        self.rate_per_s = _positive(rate_per_s, "rate")
        self.grace = grace
        self._clock = clock
        self._start = clock()
        self.received = 0
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        cid, asset_key = "0x" + self.channel_id.hex(), self.asset
        async for event in self.node.subscribe():
            if event.kind != "received" or event.channel_id != cid:
                continue
            for asset_text, amount in event.data["amounts"].items():
                if bytes.fromhex(asset_text[2:]) == asset_key:
                    self.received += int(amount)

    def report(self) -> WatchReport:
        expected = self.rate_per_s * (self._clock() - self._start) // 1000
        behind = max(0, expected - self.received)
        return WatchReport(self.received, expected, behind, behind > self.grace)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass(frozen=True, slots=True)
class Schedule:
    schedule_id: str
    channel_id: str
    asset: str
    amount: int
    period_ms: int
    next_due_ms: int
    remaining: int | None  # None: until cancelled
    paid_count: int = 0
    last_error: str = ""
    catch_up: int | None = None
    """Occurrences paid at most after an outage (the rest are skipped); None: the scheduler's default."""


class Recurring:
    """Recurring payments, kept in `path` (written atomically after every change).

    On start it pays every occurrence that fell due while the node was down (at
    most `catch_up` per schedule, so a long outage cannot drain a channel)."""

    def __init__(self, node: Node, path: Path, clock: Clock = wall_ms, catch_up: int = 10) -> None:
        self.node, self.path, self._clock, self.catch_up = node, path, clock, catch_up
        self.schedules: dict[str, Schedule] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            self.schedules = {k: Schedule(**v) for k, v in raw.items()}
        self._task: asyncio.Task[None] | None = None

    def add(
        self,
        channel_id: bytes,
        asset: bytes,
        amount: int,
        period_ms: int,
        count: int | None = None,
        catch_up: int | None = None,
    ) -> Schedule:
        _positive(amount, "amount")
        _positive(period_ms, "period")
        if count is not None:
            _positive(count, "count")
        if catch_up is not None:
            _positive(catch_up, "catch-up")
        phase = self.node.channel(channel_id).phase
        if phase is not Phase.OPEN:
            raise LocalError(Reason.WRONG_PHASE, f"the channel is {phase}: recurring payments need an open one")
        s = Schedule(
            secrets.token_hex(6),
            channel_id.hex(),
            asset.hex(),
            amount,
            period_ms,
            self._clock() + period_ms,
            count,
            catch_up=catch_up,
        )
        self.schedules[s.schedule_id] = s
        self._save()
        return s

    def cancel(self, schedule_id: str) -> None:
        if self.schedules.pop(schedule_id, None) is None:
            raise LocalError(Reason.BAD_PARAMS, f"no schedule {schedule_id}")
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in self.schedules.items()}))
        os.replace(tmp, self.path)

    def _already_paid(self, channel_id: bytes, payment_id: str) -> bool:
        """Did an earlier run (perhaps before a crash) pay or start paying this occurrence?"""
        return any(
            p.payment_id == payment_id and p.status in ("pending", "sent")
            for p in self.node.payments(channel_id, limit=10_000)
        )

    async def run_due(self) -> int:
        """Pay every occurrence due now; returns how many were paid.

        Each occurrence has a fixed payment id, and the node's durable payment
        history is consulted before paying it: a crash between paying and saving
        the schedule can neither lose an occurrence nor pay it twice."""
        paid = 0
        now = self._clock()
        for original in list(self.schedules.values()):
            s, missed = original, 0
            if self._ended(s):
                continue
            allowance = self.catch_up if s.catch_up is None else s.catch_up
            while s.next_due_ms <= now and (s.remaining is None or s.remaining > 0) and missed < allowance:
                missed += 1
                cid, asset = bytes.fromhex(s.channel_id), bytes.fromhex(s.asset)
                pid = f"rec:{s.schedule_id}:{s.next_due_ms}"
                error = ""
                if not self._already_paid(cid, pid):
                    try:
                        await self.node.pay(cid, asset, s.amount, payment_id=pid)
                        paid += 1
                    except StatechannelError as exc:
                        error = str(exc)
                if error:
                    s = replace(s, last_error=error, next_due_ms=s.next_due_ms + s.period_ms)
                else:
                    remaining = None if s.remaining is None else s.remaining - 1
                    s = replace(
                        s, next_due_ms=s.next_due_ms + s.period_ms, remaining=remaining, paid_count=s.paid_count + 1
                    )
                self.schedules[s.schedule_id] = s
                self._save()
            if s.next_due_ms <= now:  # beyond the catch-up bound: skip ahead
                skipped = (now - s.next_due_ms) // s.period_ms + 1
                s = replace(s, next_due_ms=s.next_due_ms + skipped * s.period_ms)
                self.schedules[s.schedule_id] = s
                self._save()
            if s.remaining == 0:
                del self.schedules[s.schedule_id]
                self._save()
        return paid

    def _ended(self, s: Schedule) -> bool:
        """A schedule on a channel that is closing or closed can never pay again: dropped, with an event."""
        cid = bytes.fromhex(s.channel_id)
        ch = self.node.channels.get(cid)
        if ch is not None and ch.phase in (Phase.OPEN, Phase.FUNDING):
            return False
        why = "the channel is gone" if ch is None else f"the channel is {ch.phase}"
        del self.schedules[s.schedule_id]
        self._save()
        log.info("recurring payment %s stopped: %s", s.schedule_id, why)
        self.node.notify("recurring_stopped", cid, {"schedule_id": s.schedule_id, "reason": why})
        return True

    def start(self, poll_ms: int = 200) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.run_due()
                except Exception:
                    log.exception("recurring payments")
                await asyncio.sleep(poll_ms / 1000)

        self._task = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.schedules.values()]

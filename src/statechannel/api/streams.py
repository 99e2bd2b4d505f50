"""HTTP routes for payment streams, the receiver's watch and recurring payments.

The service lives in `app.state.streams`; the daemon creates it with the data
directory, so recurring schedules are kept beside the node's database."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from statechannel.api.models import Amount, Asset, PositiveAmount, asset_bytes
from statechannel.apps.streams import (
    Recurring,
    Schedule,
    Stream,
    StreamProgress,
    StreamStatus,
    StreamWatch,
    WatchReport,
)
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError, Reason
from statechannel.node.node import Node

log = logging.getLogger(__name__)
ChannelIdText = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="0x-hex channel id")]
StreamId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,32}$")]


SAVE_EVERY_S = 1.0
"""A running stream's progress is saved at most this often (and at every start, pause, stop and end)."""


class StreamService:
    """Streams and schedules of one node, kept in its data directory (`streams.json`, `recurring.json`) so
    they survive a restart: a running stream resumes at its rate, the time down owing nothing."""

    def __init__(self, node: Node, data_dir: Path) -> None:
        self.node = node
        self.streams: dict[str, Stream] = {}
        self.watches: dict[str, StreamWatch] = {}
        self.recurring = Recurring(node, data_dir / "recurring.json")
        self._path = data_dir / "streams.json"
        self._saved_at = 0.0
        self._closing = False

    def start(self) -> None:
        self.recurring.start()
        try:
            saved = json.loads(self._path.read_text()) if self._path.exists() else {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._path, exc)
            saved = {}
        for rec in saved.values():
            try:
                self.add(Stream.restore(self.node, rec))
            except (LocalError, KeyError, ValueError, TypeError) as exc:
                log.warning("stream %s not restored: %s", rec.get("stream_id"), exc)

    def add(self, stream: Stream) -> None:
        self.streams[stream.stream_id] = stream
        stream.on_change = self._changed
        self._save()

    def _changed(self, stream: Stream) -> None:
        running = stream.progress().status is StreamStatus.RUNNING
        if not self._closing and (not running or time.monotonic() - self._saved_at >= SAVE_EVERY_S):
            self._save()

    def _save(self) -> None:
        self._saved_at = time.monotonic()
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: st.record() for k, st in self.streams.items()}))
        os.replace(tmp, self._path)

    async def close(self) -> None:
        self._save()  # running ones saved as running: they resume after the restart
        self._closing = True
        for stream in self.streams.values():
            stream.pause()
        for watch in self.watches.values():
            await watch.close()
        await self.recurring.close()

    def stream(self, stream_id: str) -> Stream:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise LocalError(Reason.BAD_PARAMS, f"no stream {stream_id}") from None


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StartStream(_Body):
    channel_id: ChannelIdText
    asset: Asset = "eth"
    rate_per_s: PositiveAmount
    cap: PositiveAmount
    tick_ms: int = Field(100, ge=5, le=60_000, strict=True)


class Meter(_Body):
    units: int = Field(ge=1, strict=True)
    price_per_unit: PositiveAmount


class StartWatch(_Body):
    channel_id: ChannelIdText
    asset: Asset = "eth"
    rate_per_s: PositiveAmount
    grace: Amount = "0"


class AddRecurring(_Body):
    channel_id: ChannelIdText
    asset: Asset = "eth"
    amount: PositiveAmount
    period_ms: int = Field(ge=100, strict=True)
    count: int | None = Field(None, ge=1, strict=True)
    catch_up: int = Field(
        1, ge=1, le=1000, strict=True, description="Occurrences paid at most after the node was down (rest skipped)."
    )


class StreamView(BaseModel):
    stream_id: str
    status: str
    rate_per_s: str
    cap: str
    paid: str
    owed: str
    active_ms: int
    reason: str

    @classmethod
    def of(cls, p: StreamProgress) -> StreamView:
        return cls(
            stream_id=p.stream_id,
            status=p.status.value,
            rate_per_s=str(p.rate_per_s),
            cap=str(p.cap),
            paid=str(p.paid),
            owed=str(p.owed),
            active_ms=p.active_ms,
            reason=p.reason,
        )


class WatchView(BaseModel):
    watch_id: str
    received: str
    expected: str
    behind: str
    lagging: bool

    @classmethod
    def of(cls, watch_id: str, r: WatchReport) -> WatchView:
        return cls(
            watch_id=watch_id,
            received=str(r.received),
            expected=str(r.expected),
            behind=str(r.behind),
            lagging=r.lagging,
        )


class ScheduleView(BaseModel):
    schedule_id: str
    channel_id: str
    asset: str
    amount: str
    period_ms: int
    next_due_ms: int
    remaining: int | None
    paid_count: int
    last_error: str
    catch_up: int | None


router = APIRouter(tags=["streams"])


def _svc(request: Request) -> StreamService:
    svc = getattr(request.app.state, "streams", None)
    if svc is None:
        raise LocalError(Reason.BAD_PARAMS, "streams are not enabled on this node")
    assert isinstance(svc, StreamService)
    return svc


@router.post("/streams", status_code=201)
async def start_stream(request: Request, body: StartStream) -> StreamView:
    """Start paying `rate_per_s` per second, in ticks, until `cap` is paid."""
    svc = _svc(request)
    cid = bytes.fromhex(body.channel_id[2:])
    svc.node.channel(cid)  # 404 for an unknown channel
    phase = svc.node.channel(cid).phase
    if phase is not Phase.OPEN:
        raise LocalError(Reason.WRONG_PHASE, f"the channel is {phase}: a stream needs an open one")
    stream = Stream(svc.node, cid, asset_bytes(body.asset), int(body.rate_per_s), int(body.cap), body.tick_ms)
    svc.add(stream)
    stream.start()
    return StreamView.of(stream.progress())


@router.get("/streams")
async def list_streams(request: Request) -> list[StreamView]:
    return [StreamView.of(s.progress()) for s in _svc(request).streams.values()]


@router.get("/streams/{stream_id}")
async def get_stream(request: Request, stream_id: StreamId) -> StreamView:
    return StreamView.of(_svc(request).stream(stream_id).progress())


@router.post("/streams/{stream_id}/pause")
async def pause_stream(request: Request, stream_id: StreamId) -> StreamView:
    stream = _svc(request).stream(stream_id)
    stream.pause()
    return StreamView.of(stream.progress())


@router.post("/streams/{stream_id}/resume")
async def resume_stream(request: Request, stream_id: StreamId) -> StreamView:
    stream = _svc(request).stream(stream_id)
    stream.resume()
    return StreamView.of(stream.progress())


@router.post("/streams/{stream_id}/stop")
async def stop_stream(request: Request, stream_id: StreamId) -> StreamView:
    """Stop, paying what is owed up to now."""
    return StreamView.of(await _svc(request).stream(stream_id).stop())


@router.post("/streams/{stream_id}/meter")
async def meter_stream(request: Request, stream_id: StreamId, body: Meter) -> StreamView:
    """Metered service: pay `units * price_per_unit` now (within the stream's cap)."""
    stream = _svc(request).stream(stream_id)
    await stream.meter(body.units, int(body.price_per_unit))
    return StreamView.of(stream.progress())


@router.post("/watches", status_code=201)
async def start_watch(request: Request, body: StartWatch) -> WatchView:
    """As a receiver: track incoming payments against an agreed rate."""
    svc = _svc(request)
    cid = bytes.fromhex(body.channel_id[2:])
    svc.node.channel(cid)
    watch = StreamWatch(svc.node, cid, asset_bytes(body.asset), int(body.rate_per_s), int(body.grace))
    watch_id = f"w{len(svc.watches) + 1}"
    svc.watches[watch_id] = watch
    return WatchView.of(watch_id, watch.report())


@router.get("/watches/{watch_id}")
async def get_watch(request: Request, watch_id: Annotated[str, PathParam(pattern=r"^w[0-9]{1,9}$")]) -> WatchView:
    watch = _svc(request).watches.get(watch_id)
    if watch is None:
        raise LocalError(Reason.BAD_PARAMS, f"no watch {watch_id}")
    return WatchView.of(watch_id, watch.report())


@router.post("/recurring", status_code=201)
async def add_recurring(request: Request, body: AddRecurring) -> ScheduleView:
    """Pay `amount` every `period_ms` (`count` times, or until cancelled); kept across restarts."""
    svc = _svc(request)
    cid = bytes.fromhex(body.channel_id[2:])
    s = svc.recurring.add(cid, asset_bytes(body.asset), int(body.amount), body.period_ms, body.count, body.catch_up)
    return _schedule_view(s)


@router.get("/recurring")
async def list_recurring(request: Request) -> list[ScheduleView]:
    return [_schedule_view(s) for s in _svc(request).recurring.schedules.values()]


@router.delete("/recurring/{schedule_id}", status_code=204)
async def cancel_recurring(request: Request, schedule_id: StreamId) -> None:
    _svc(request).recurring.cancel(schedule_id)


def _schedule_view(s: Schedule) -> ScheduleView:
    d = asdict(s)
    return ScheduleView(**{**d, "channel_id": "0x" + s.channel_id, "amount": str(s.amount)})

"""The endpoints: a thin, typed skin over `Node`, so scripts and the CLI never import the node.

Handlers validate and translate; every decision about channels stays in the node. Failures a client can
act on are told apart before the node is asked: a peer that is not connected is a 503 now, not a payment
left waiting for a reconnect that may never come."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

import statechannel
from statechannel.api.errors import ApiError, Code
from statechannel.api.events import EventHub
from statechannel.api.models import (
    CHANNEL_ID_PATTERN,
    AbandonView,
    AssetAmountRequest,
    ChannelView,
    CloseRequest,
    ConnectRequest,
    EventView,
    NodeInfo,
    OpenChannelRequest,
    PayBatchView,
    PaymentView,
    PayRequest,
    PeerView,
    SettleRequest,
    TermsView,
    asset_bytes,
)
from statechannel.core.channel import Channel, Phase
from statechannel.core.errors import Reason, StatechannelError
from statechannel.core.types import address_from_hex, to_checksum
from statechannel.node.node import Node
from statechannel.store.base import PaymentRecord

CHAIN_READ_TIMEOUT = 3.0
VERDICT_WAIT = 30.0
"""Seconds a unilateral close waits for its transaction's verdict before answering 202 (still pending)."""


@dataclass(frozen=True, slots=True)
class ApiContext:
    node: Node
    hub: EventHub
    peer_listen: str | None

    def view(self, ch: Channel) -> ChannelView:
        towers = self.node.towers
        protection = towers.protection(ch.channel_id) if towers is not None else ()
        errors = towers.receipt_errors(ch.channel_id) if towers is not None else ()
        return ChannelView.of(ch, self.node.transport.connected(ch.peer_address), protection, errors)

    def require_peer(self, ch: Channel, doing: str) -> None:
        if not self.node.transport.connected(ch.peer_address):
            peer = to_checksum(ch.peer_address)
            raise ApiError(503, Code.PEER_UNREACHABLE, f"cannot {doing}: peer {peer} is not connected")

    async def settle(self, channel_id: bytes, phase: Phase, wait: float) -> Channel:
        """The channel once it reaches `phase`, or as far as it got within `wait` seconds."""
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await self.node.wait_for(channel_id, phase, timeout=wait)
        return self.node.channel(channel_id)


def _context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]
ChannelId = Annotated[str, Path(pattern=CHANNEL_ID_PATTERN, description="0x-hex channel id (32 bytes).")]
ChannelFilter = Annotated[str | None, Query(pattern=CHANNEL_ID_PATTERN, description="Only this channel.")]


@runtime_checkable
class Dialer(Protocol):
    """What `POST /peers` needs of the node's transport; the in-memory test transport lacks it."""

    async def connect(self, peer: bytes, host: str, port: int, timeout: float = 10.0) -> None: ...


def _cid(text: str) -> bytes:
    return bytes.fromhex(text[2:])


router = APIRouter()


@router.get("/node", tags=["node"])
async def node_info(ctx: Ctx) -> NodeInfo:
    """Who this node is, where peers reach it, what it holds."""
    node = ctx.node
    wei: int | None = None
    with contextlib.suppress(Exception):  # the node still answers when its chain does not
        wei = await asyncio.wait_for(
            node.chainio.run(lambda: node.chainio.chain.balance(node.address)), CHAIN_READ_TIMEOUT
        )
    return NodeInfo(
        address=to_checksum(node.address),
        chain_id=node.domain.chain_id,
        adjudicator=to_checksum(node.domain.adjudicator),
        chain_head=node.chain_head,
        eth_balance=None if wei is None else str(wei),
        peer_listen=ctx.peer_listen,
        channels=NodeInfo.count_phases(list(node.channels.values())),
        terms=TermsView(
            min_challenge_period=node.terms.min_challenge_period,
            max_challenge_period=node.terms.max_challenge_period,
            max_unfunded_per_peer=node.max_unfunded_per_peer,
        ),
        version=statechannel.__version__,
    )


@router.post("/peers", tags=["peers"])
async def connect_peer(ctx: Ctx, body: ConnectRequest) -> PeerView:
    """Dial a peer and keep the connection up (redialling after drops)."""
    transport = ctx.node.transport
    if not isinstance(transport, Dialer):
        raise ApiError(400, Code.UNSUPPORTED, "this node's transport cannot dial peers")
    peer = address_from_hex(body.address)
    await transport.connect(peer, body.host, body.port, timeout=body.timeout)
    if ctx.node.peer_book is not None:
        ctx.node.peer_book.remember(peer, body.host, body.port)
    connected = ctx.node.transport.connected(peer)
    count = sum(1 for ch in ctx.node.channels.values() if ch.peer_address == peer)
    return PeerView(address=body.address, connected=connected, host=body.host, port=body.port, channels=count)


@router.get("/peers", tags=["peers"])
async def list_peers(ctx: Ctx) -> list[PeerView]:
    """Every peer the node dials (its peer book) or holds a channel with, and whether it is connected."""
    node = ctx.node
    book = node.peer_book.known() if node.peer_book is not None else {}
    counts = Counter(ch.peer_address for ch in node.channels.values())
    views = []
    for peer in sorted(set(book) | set(counts)):
        host, port = book.get(peer, (None, None))
        connected = node.transport.connected(peer)
        views.append(
            PeerView(address=to_checksum(peer), connected=connected, host=host, port=port, channels=counts[peer])
        )
    return views


@runtime_checkable
class Hangup(Protocol):
    """What `DELETE /peers/{address}` needs of the node's transport."""

    async def hang_up(self, peer: bytes) -> bool: ...


@router.delete("/peers/{address}", tags=["peers"])
async def disconnect_peer(ctx: Ctx, address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")]) -> PeerView:
    """Stop dialling a peer, forget where it listens, and drop its connection. It may still dial this node
    (its channels resync then); its channels are unchanged."""
    transport = ctx.node.transport
    if not isinstance(transport, Hangup):
        raise ApiError(400, Code.UNSUPPORTED, "this node's transport cannot hang up on peers")
    peer = address_from_hex(address)
    forgot = ctx.node.peer_book.forget(peer) if ctx.node.peer_book is not None else False
    dropped = await transport.hang_up(peer)
    if not (forgot or dropped):
        raise ApiError(404, Code.NOT_FOUND, f"no peer {address} is dialled or connected")
    count = sum(1 for ch in ctx.node.channels.values() if ch.peer_address == peer)
    return PeerView(
        address=to_checksum(peer), connected=transport.connected(peer), host=None, port=None, channels=count
    )


@router.get("/channels", tags=["channels"])
async def list_channels(ctx: Ctx, phase: Annotated[Phase | None, Query()] = None) -> list[ChannelView]:
    return [ctx.view(ch) for ch in ctx.node.channels.values() if phase is None or ch.phase is phase]


@router.post("/channels", status_code=201, tags=["channels"])
async def open_channel(ctx: Ctx, body: OpenChannelRequest) -> ChannelView:
    """Propose a channel to a connected peer; with `wait`, answer once it is open (or the wait ends)."""
    peer = address_from_hex(body.peer)
    if not ctx.node.transport.connected(peer):
        raise ApiError(503, Code.PEER_UNREACHABLE, f"peer {body.peer} is not connected; POST /peers first")
    since = ctx.node.txlog.last
    cid = await ctx.node.open_channel(peer, body.deposit_pairs(), body.challenge_period)
    return ctx.view(await ctx.node.wait_or_fail(cid, Phase.OPEN, body.wait, since))


@router.get("/channels/{channel_id}", tags=["channels"])
async def get_channel(ctx: Ctx, channel_id: ChannelId) -> ChannelView:
    return ctx.view(ctx.node.channel(_cid(channel_id)))


@router.post("/channels/{channel_id}/deposit", tags=["channels"])
async def deposit(ctx: Ctx, channel_id: ChannelId, body: AssetAmountRequest) -> ChannelView:
    """Deposit into the channel on chain; answers once the transaction is mined (the balance follows
    when the node's chain watcher sees it)."""
    cid = _cid(channel_id)
    ch = ctx.node.channel(cid)
    if ch.phase not in (Phase.FUNDING, Phase.OPEN):
        raise ApiError(409, Reason.WRONG_PHASE, f"deposits go into a funding or open channel; this one is {ch.phase}")
    await ctx.node.deposit(cid, asset_bytes(body.asset), int(body.amount))
    return ctx.view(ctx.node.channel(cid))


@router.post("/channels/{channel_id}/withdraw", status_code=202, tags=["channels"])
async def withdraw(ctx: Ctx, channel_id: ChannelId, body: AssetAmountRequest) -> ChannelView:
    """Ask the peer to co-sign a withdrawal; the node submits it once signed (follow the channel)."""
    cid = _cid(channel_id)
    ch = ctx.node.channel(cid)
    if ch.phase is Phase.OPEN:
        ctx.require_peer(ch, "withdraw")
    await ctx.node.withdraw(cid, asset_bytes(body.asset), int(body.amount))
    return ctx.view(ctx.node.channel(cid))


@router.post("/channels/{channel_id}/close", status_code=202, tags=["channels"])
async def close_channel(ctx: Ctx, channel_id: ChannelId, body: CloseRequest) -> ChannelView:
    """Close cooperatively (both sign a final state) or unilaterally (on chain, then the challenge window);
    with `wait`, answer once it is closed (or the wait ends)."""
    cid = _cid(channel_id)
    ch = ctx.node.channel(cid)
    if not body.unilateral and ch.phase is Phase.OPEN:
        ctx.require_peer(ch, "close cooperatively (a unilateral close needs no peer)")
    since = ctx.node.txlog.last
    await ctx.node.close(cid, cooperative=not body.unilateral)
    if body.unilateral:  # its transaction's verdict first: a revert is the answer, at once
        ch = await ctx.node.wait_or_fail(cid, Phase.CLOSED, max(body.wait, VERDICT_WAIT), since, steps=("Close",))
        if ch.phase is Phase.CLOSED or body.wait <= 0:
            return ctx.view(ch)
    return ctx.view(await ctx.node.wait_or_fail(cid, Phase.CLOSED, body.wait, since))


@router.post("/channels/{channel_id}/settle", tags=["channels"])
async def settle_channel(ctx: Ctx, channel_id: ChannelId, body: SettleRequest) -> ChannelView:
    """Settle a channel in dispute whose challenge window is over (the node does it by itself too); answers
    once it is closed (or the wait ends), or at once with the reason it cannot be settled."""
    cid = _cid(channel_id)
    since = ctx.node.txlog.last
    await ctx.node.settle(cid)
    return ctx.view(await ctx.node.wait_or_fail(cid, Phase.CLOSED, body.wait, since))


@router.post("/channels/{channel_id}/abandon", tags=["channels"])
async def abandon_channel(ctx: Ctx, channel_id: ChannelId) -> AbandonView:
    """Give up a channel that cannot open (its open or a deposit failed, or the peer never answered).
    Never on chain: it is forgotten. Open on chain: it is closed with the pre-fund state, which returns
    every deposit after the challenge period (follow it with `GET /channels/{id}`)."""
    cid = _cid(channel_id)
    since = ctx.node.txlog.last
    done = await ctx.node.abandon(cid)
    ch = ctx.node.channel(cid)
    if ch.phase is not Phase.CLOSED:  # a close with the pre-fund state: its verdict is the answer
        ch = await ctx.node.wait_or_fail(cid, Phase.CLOSED, VERDICT_WAIT, since, steps=("Close",))
    return AbandonView(channel=ctx.view(ch), action=done)


@router.post(
    "/channels/{channel_id}/payments",
    tags=["payments"],
    responses={202: {"model": PaymentView, "description": "Not countersigned within the timeout: still pending"}},
)
async def pay(
    ctx: Ctx,
    channel_id: ChannelId,
    body: PayRequest,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="A retry with the same key pays once: the first answer."),
    ] = None,
) -> PaymentView | PayBatchView:
    """Pay the peer and wait until it has countersigned. With `count` > 1 or `amounts`, a batch: by default
    (`history: batch`) one payment of the total, carried as one entry of one update, one future, and one
    history row on each side with the count and the total (decision 0012); with `history: per-payment`,
    `count` separate payments, one row each on both sides. Either is all or none up front: a batch whose
    total is more than this side can spend is refused whole (400 `insufficient_funds`) and changes nothing.
    With an `Idempotency-Key` (one payment, or a `batch`), a retried request (after a timeout or a crash
    of the client) pays once and answers with that payment, while it is among the channel's last 10,000."""
    node = ctx.node
    cid = _cid(channel_id)
    asset = asset_bytes(body.asset)
    amounts = [int(a) for a in body.amounts] if body.amounts is not None else None
    amount = int(body.amount) if body.amount is not None else 0
    count = len(amounts) if amounts is not None else body.count
    total = sum(amounts) if amounts is not None else amount * count
    pid = secrets.token_hex(8)  # chosen here so a payment still pending at the timeout can be looked up
    if idempotency_key is not None:
        if body.history == "per-payment" and body.is_batch:
            raise ApiError(400, Code.VALIDATION, "an Idempotency-Key names one payment or batch: not per-payment")
        pid = "k" + hashlib.sha256(cid + idempotency_key.encode()).hexdigest()[:31]
        prior = node.find_payment(cid, pid)
        if prior is not None:
            if prior.amount and (prior.asset, prior.amount, prior.count) != (asset, total, count):
                raise ApiError(409, Code.VALIDATION, "this Idempotency-Key was used for another payment")
            response.headers["Idempotent-Replayed"] = "true"
            if prior.status == "pending":
                response.status_code = 202
            if not prior.amount:  # queued or in flight: what it was asked to be
                prior = replace(prior, asset=asset, amount=total, count=count)
            return _batch_view(prior, 0) if body.is_batch else PaymentView.of(prior)
    ctx.require_peer(node.channel(cid), "pay")
    if body.is_batch and body.history == "per-payment":
        return await _pay_many(node, cid, asset, amount, count, body.timeout)
    created = int(time.time() * 1000)
    start = time.monotonic()
    if body.is_batch:
        if amounts is not None:
            fut = node.pay_batch_nowait(cid, asset, amounts, batch_id=pid)
        else:
            fut = node.pay_batch_nowait(cid, asset, each=amount, count=count, batch_id=pid)
    else:
        fut = node.pay_nowait(cid, asset, amount, pid)
    fut.add_done_callback(_consume)
    record = PaymentRecord(pid, cid, "out", asset, total, "pending", 0, "", created, count)
    try:
        record = await asyncio.wait_for(asyncio.shield(fut), body.timeout)
    except TimeoutError:
        response.status_code = 202
    except StatechannelError as exc:
        if not body.is_batch:
            raise
        record = replace(record, status="failed", reason=exc.reason.value)
    if body.is_batch:
        return _batch_view(record, int((time.monotonic() - start) * 1000))
    return PaymentView.of(record)


def _batch_view(r: PaymentRecord, elapsed_ms: int) -> PayBatchView:
    """A batch (one payment of `r.count`): all sent, all failed, or all still pending."""
    n = r.count
    return PayBatchView(
        requested=n,
        sent=n if r.status == "sent" else 0,
        failed=n if r.status == "failed" else 0,
        pending=n if r.status == "pending" else 0,
        failures={r.reason: n} if r.status == "failed" else {},
        elapsed_ms=elapsed_ms,
        batch_id=r.payment_id,
        total=str(r.amount),
        version=r.version,
    )


MAX_PAGE = 10_000
"""The most rows one page of `GET /payments` holds."""


CURSOR = r"^[0-9a-f]{32}$"
"""A page cursor: opaque to clients (it is where the page ended, in the order history is listed)."""


def _next_cursor(key: tuple[int, int]) -> str:
    return b"".join(v.to_bytes(8, "big") for v in key).hex()


def _cursor(raw: str) -> tuple[int, int]:
    ms, seq = int(raw[:16], 16), int(raw[16:], 16)
    if max(ms, seq) > 2**63 - 1:
        raise ApiError(422, Code.VALIDATION, "cursor: not one this node gave out")
    return ms, seq


@router.get("/payments", tags=["payments"])
async def list_payments(
    ctx: Ctx,
    response: Response,
    channel_id: ChannelFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows in this page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62, description="Skip this many of the newest rows.")] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=32,
            pattern=CURSOR,
            description="Opaque: the `X-Next-Cursor` of the previous page. The rows after it, however many "
            "payments arrived meanwhile (not with `offset`).",
        ),
    ] = None,
) -> list[PaymentView]:
    """Sent and received payments, newest first, one page at a time. `X-Next-Cursor` is the `cursor` of
    the next page (absent on the last): paging by cursor neither skips nor repeats a row while payments
    arrive. `offset` (skip the newest rows, `X-Next-Offset`) still works but shifts as rows arrive. Each
    row is one payment, on both sides: the update lists the payments it carries. The node keeps its
    newest `node start --history` rows: `X-History-Pruned` says how many older rows (of this channel,
    or in all) were deleted, and `X-History-Retention` how many are kept."""
    cid = None
    if channel_id is not None:
        cid = _cid(channel_id)
        ctx.node.channel(cid)  # 404 for a channel this node never had, rather than an empty list
    if cursor is not None and offset:
        raise ApiError(422, Code.VALIDATION, "give cursor or offset, not both")
    if cursor is not None or not offset:
        rows, last = ctx.node.payments_before(cid, limit, None if cursor is None else _cursor(cursor))
        if len(rows) == limit and last is not None:
            response.headers["X-Next-Cursor"] = _next_cursor(last)
    else:
        rows = ctx.node.payments(cid, limit, offset)
    store = ctx.node.store
    response.headers["X-History-Pruned"] = str(store.pruned(cid))
    response.headers["X-History-Retention"] = str(store.max_payments)
    if len(rows) == limit and cursor is None:
        response.headers["X-Next-Offset"] = str(offset + limit)
    return [PaymentView.of(rec) for rec in rows]


@router.get("/events", response_class=EventSourceResponse, tags=["events"])
async def events(
    ctx: Ctx,
    channel_id: ChannelFilter = None,
    since: Annotated[int | None, Query(ge=0, description="Replay buffered events numbered above this.")] = None,
    limit: Annotated[int | None, Query(ge=1, description="End the stream after this many events.")] = None,
    timeout: Annotated[float | None, Query(gt=0, description="End the stream after this many seconds.")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of channel phases and payments (`phase`, `sent`, `failed`, `received`, and `gap`
    when this client fell behind the buffer). Pass an event's id back as `Last-Event-ID` (or `since`) to
    resume after it."""
    ctx.hub.start()
    after = since
    if after is None and last_event_id is not None and last_event_id.isdigit():
        after = int(last_event_id)
    cid = channel_id.lower() if channel_id is not None else None
    async for ev in ctx.hub.stream(after, cid, limit, timeout):
        body = EventView(kind=ev.kind, channel_id=ev.channel_id, data=ev.data)
        yield ServerSentEvent(data=body, event=ev.kind, id=str(ev.seq))


def _consume(fut: asyncio.Future[Any]) -> None:
    """Marks the error of a payment nobody awaits any more as seen; the payment log keeps the outcome."""
    if not fut.cancelled():
        fut.exception()


async def _pay_many(node: Node, cid: bytes, asset: bytes, amount: int, count: int, timeout: float) -> PayBatchView:
    start = time.monotonic()
    futures = node.pay_many_nowait(cid, asset, amount, count)  # all or none: a total over the balance is a 400
    for fut in futures:
        fut.add_done_callback(_consume)
    done, pending = await asyncio.wait(futures, timeout=timeout)
    failures: Counter[str] = Counter()
    for fut in done:
        exc = fut.exception()
        if exc is not None:
            failures[exc.reason.value if isinstance(exc, StatechannelError) else Code.INTERNAL.value] += 1
    failed = sum(failures.values())
    return PayBatchView(
        requested=count,
        sent=len(done) - failed,
        failed=failed,
        pending=len(pending),
        failures=dict(failures),
        elapsed_ms=int((time.monotonic() - start) * 1000),
        batch_id=None,
        total=str(amount * count),
        version=0,
    )

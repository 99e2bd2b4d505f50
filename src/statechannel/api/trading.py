"""HTTP routes for two-asset trading: quote, take, and read positions and fills.

The trader lives in `app.state.trader`; if the app was built without one, the first trading request
makes it (it then counts the fills the node's log still holds). Amounts and quote ids are decimal
strings, prices two of them (`quote_unit` per `base_unit`) and realised P&L an exact fraction "n/d",
so nothing here is ever rounded."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from fractions import Fraction
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from statechannel.api.models import (
    CHANNEL_ID_PATTERN,
    MAX_WAIT,
    Asset,
    PositiveAmount,
    asset_bytes,
    asset_name,
    channel_hex,
)
from statechannel.apps.trading import Position, Trader
from statechannel.core.errors import StatechannelError
from statechannel.core.types import to_checksum
from statechannel.node.swapdesk import MAX_TTL_MS, Fill, SignedQuote

QuoteId = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,19})$", description="Quote id, in decimal.")]
ChannelId = Annotated[str, PathParam(pattern=CHANNEL_ID_PATTERN, description="0x-hex channel id (32 bytes).")]
ChannelFilter = Annotated[str | None, Query(pattern=CHANNEL_ID_PATTERN, description="Only this channel.")]


def _trader(request: Request) -> Trader:
    state = request.app.state
    trader: Trader | None = getattr(state, "trader", None)
    if trader is None:
        trader = state.trader = Trader(state.ctx.node)
    return trader


TraderDep = Annotated[Trader, Depends(_trader)]


def _cid(text: str) -> bytes:
    return bytes.fromhex(text[2:])


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class QuoteRequest(_Request):
    """Offer to sell (or buy) up to `size` of `base`, for `quote_unit` of `quote` per `base_unit` of base."""

    side: Literal["sell", "buy"] = Field(description="What this node, the maker, does with the base.")
    base: Asset
    quote: Asset
    base_unit: PositiveAmount = "1"
    quote_unit: PositiveAmount
    size: PositiveAmount = Field(description="The most base, over all takes, this quote may swap.")
    ttl_ms: int = Field(30_000, ge=1, le=MAX_TTL_MS, strict=True, description="Milliseconds until it expires.")


class TakeRequest(_Request):
    quote_id: QuoteId
    base_amount: PositiveAmount = Field(description="Base to swap; the quote amount follows exactly.")
    count: int = Field(1, ge=1, le=100_000, strict=True, description="Take `base_amount` this many times, pipelined.")
    timeout: float = Field(30.0, gt=0, le=MAX_WAIT, description="Seconds to wait for the maker's signature.")


class QuoteView(_Response):
    channel_id: str
    quote_id: str
    maker: str
    side: Literal["sell", "buy"] = Field(description="What the maker does with the base.")
    base: str
    quote: str
    base_unit: str
    quote_unit: str
    size: str
    filled: str | None = Field(description="How much the taker has taken: known to the maker only.")
    expires_at_ms: int
    signature: str

    @classmethod
    def of(cls, sq: SignedQuote, filled: int | None = None) -> QuoteView:
        q = sq.quote
        return cls(
            channel_id=channel_hex(q.channel_id),
            quote_id=str(q.quote_id),
            maker=to_checksum(sq.maker),
            side="sell" if q.maker_sells else "buy",
            base=asset_name(q.base),
            quote=asset_name(q.quote),
            base_unit=str(q.base_unit),
            quote_unit=str(q.quote_unit),
            size=str(q.size),
            filled=None if filled is None else str(filled),
            expires_at_ms=q.expires_at_ms,
            signature="0x" + sq.sig.to_bytes().hex(),
        )


class QuoteBook(_Response):
    received: list[QuoteView] = Field(description="The peer's live quotes: what this node can take.")
    sent: list[QuoteView] = Field(description="This node's live quotes, with how much of each was taken.")


class FillView(_Response):
    channel_id: str
    take_id: str = Field(description="This node's handle of its take; empty when it was the maker.")
    quote_id: str
    side: Literal["buy", "sell"] = Field(description="What this node did with the base.")
    maker: bool
    base: str
    quote: str
    base_amount: str
    quote_amount: str
    version: int
    at_ms: int

    @classmethod
    def of(cls, f: Fill) -> FillView:
        return cls(
            channel_id=channel_hex(f.channel_id),
            take_id=f.take_id,
            quote_id=str(f.quote_id),
            side="buy" if f.bought else "sell",
            maker=f.maker,
            base=asset_name(f.base),
            quote=asset_name(f.quote),
            base_amount=str(f.base_amount),
            quote_amount=str(f.quote_amount),
            version=f.version,
            at_ms=f.at_ms,
        )


class TakeBatchView(_Response):
    requested: int
    filled: int
    failed: int
    pending: int = Field(description="Still in flight when the timeout ran out; they may yet fill.")
    failures: dict[str, int] = Field(description="Failed takes counted by reason.")
    base_amount: str = Field(description="Base swapped by the takes that filled.")
    quote_amount: str = Field(description="Quote swapped by the takes that filled.")
    elapsed_ms: int


def _fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class PositionView(_Response):
    channel_id: str
    base: str
    quote: str
    base_net: str = Field(description="Base bought minus sold.")
    quote_net: str = Field(description="Quote received minus paid.")
    trades: int
    base_volume: str
    quote_volume: str
    average_price: str | None = Field(description="Quote per base of the open position, exact ('n/d'); null if flat.")
    realised_pnl: str = Field(description="Average-cost realised P&L in quote units, exact ('n/d' or an integer).")

    @classmethod
    def of(cls, p: Position) -> PositionView:
        avg = p.average_price
        return cls(
            channel_id=channel_hex(p.channel_id),
            base=asset_name(p.base),
            quote=asset_name(p.quote),
            base_net=str(p.base_net),
            quote_net=str(p.quote_net),
            trades=p.trades,
            base_volume=str(p.base_volume),
            quote_volume=str(p.quote_volume),
            average_price=None if avg is None else _fraction(avg),
            realised_pnl=_fraction(p.realised_pnl),
        )


router = APIRouter(tags=["trading"])


@router.post("/channels/{channel_id}/quotes", status_code=201)
async def make_quote(trader: TraderDep, channel_id: ChannelId, body: QuoteRequest) -> QuoteView:
    """Sign a quote and send it to the peer, who may take it (in parts) until it expires or is used up."""
    sq = await trader.quote(
        _cid(channel_id),
        body.side,
        asset_bytes(body.base),
        asset_bytes(body.quote),
        price=(int(body.quote_unit), int(body.base_unit)),
        size=int(body.size),
        ttl_ms=body.ttl_ms,
    )
    return QuoteView.of(sq, 0)


@router.get("/channels/{channel_id}/quotes")
async def list_quotes(trader: TraderDep, channel_id: ChannelId) -> QuoteBook:
    cid = _cid(channel_id)
    return QuoteBook(
        received=[QuoteView.of(sq) for sq in trader.quotes(cid)],
        sent=[QuoteView.of(sq, filled) for sq, filled in trader.my_quotes(cid)],
    )


@router.post(
    "/channels/{channel_id}/takes",
    responses={202: {"model": FillView, "description": "Not countersigned within the timeout: still pending"}},
)
async def take(
    trader: TraderDep, channel_id: ChannelId, body: TakeRequest, response: Response
) -> FillView | TakeBatchView:
    """Take the peer's quote and wait for the swap both signed. A take the maker refuses (expired, oversize,
    ...) answers 400 with its reason. With `count` > 1, take `base_amount` that many times, pipelined."""
    cid, quote_id, amount = _cid(channel_id), int(body.quote_id), int(body.base_amount)
    if body.count > 1:
        return await _take_many(trader, cid, quote_id, amount, body.count, body.timeout)
    offer = next((sq.quote for sq in trader.quotes(cid) if sq.quote.quote_id == quote_id), None)
    fut = trader.take(cid, quote_id, amount)  # raises unknown_quote when there is no such offer
    fut.add_done_callback(_consume)
    try:
        fill = await asyncio.wait_for(asyncio.shield(fut), body.timeout)
    except TimeoutError:
        assert offer is not None
        response.status_code = 202  # version 0: not both signed yet
        now = int(time.time() * 1000)
        quote_amount = offer.quote_amount(amount)
        pending = Fill(
            cid, "", quote_id, offer.base, offer.quote, offer.maker_sells, amount, quote_amount, False, 0, now
        )
        return FillView.of(pending)
    return FillView.of(fill)


@router.get("/channels/{channel_id}/positions")
async def channel_positions(trader: TraderDep, channel_id: ChannelId) -> list[PositionView]:
    cid = _cid(channel_id)
    trader.node.channel(cid)  # 404 for a channel this node never had
    return [PositionView.of(p) for p in trader.positions(cid)]


@router.get("/positions")
async def positions(trader: TraderDep) -> list[PositionView]:
    """Net base and quote and realised P&L per pair per channel, from this node's fills."""
    return [PositionView.of(p) for p in trader.positions()]


@router.get("/fills")
async def fills(
    trader: TraderDep, channel_id: ChannelFilter = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[FillView]:
    """Recent fills, newest first (the node keeps a bounded log)."""
    cid = None if channel_id is None else _cid(channel_id)
    return [FillView.of(f) for f in trader.fills(cid, limit)]


def _consume(fut: asyncio.Future[Any]) -> None:
    """Marks the error of a take nobody awaits any more as seen; the fill events keep the outcome."""
    if not fut.cancelled():
        fut.exception()


async def _take_many(
    trader: Trader, cid: bytes, quote_id: int, amount: int, count: int, timeout: float
) -> TakeBatchView:
    start = time.monotonic()
    futures = [trader.take(cid, quote_id, amount) for _ in range(count)]
    for fut in futures:
        fut.add_done_callback(_consume)
    done, pending = await asyncio.wait(futures, timeout=timeout)
    failures: Counter[str] = Counter()
    base = quote = 0
    for fut in done:
        exc = fut.exception()
        if exc is None:
            fill = fut.result()
            base, quote = base + fill.base_amount, quote + fill.quote_amount
        else:
            failures[exc.reason.value if isinstance(exc, StatechannelError) else "internal"] += 1
    failed = sum(failures.values())
    return TakeBatchView(
        requested=count,
        filled=len(done) - failed,
        failed=failed,
        pending=len(pending),
        failures=dict(failures),
        base_amount=str(base),
        quote_amount=str(quote),
        elapsed_ms=int((time.monotonic() - start) * 1000),
    )

"""The node's side of two-asset trading; the rules themselves are in core/swaps.py.

A quote is not a channel update: the maker signs one and sends it, the taker checks it and keeps the
latest offer per quote id until it expires. Takes made in one turn of the event loop go out together in
one swap update (up to MAX_TAKES; never beside payments), each filled whole at its quote's price or
refused on its own; while the pipeline is full they wait and go out as answers free room. So a burst of
takes costs one pair of signatures per update, not per take: that is how a channel carries thousands of
trades a second.

Positions are kept by the channel machine itself (core/positions.py), saved with each fill; the desk
keeps a bounded, in-memory log of recent fills for people to read, and publishes each as an event."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import Channel, Kind, Phase
from statechannel.core.crypto import Signature
from statechannel.core.errors import LocalError, Reason, RemoteError, StatechannelError
from statechannel.core.io import ActionTake, NotifyFilled, NotifyTakeFailed
from statechannel.core.quotes import MAX_TAKES, Quote, Swap
from statechannel.core.types import to_checksum
from statechannel.store.base import StoredQuote

if TYPE_CHECKING:
    from statechannel.node.node import Node

log = logging.getLogger(__name__)
FILL_LOG = 100_000
MAX_QUOTES_KEPT = 1024
"""Per channel and direction: a peer flooding offers displaces its own soonest-expiring ones."""
MAX_TTL_MS = 7 * 24 * 3600 * 1000
MAX_TAKES_IN_FLIGHT = 4 * MAX_TAKES
"""Takes proposed but not yet answered, per channel: each in-flight take is part of the channel value
saved on every change, so more would only make every save bigger, not the channel faster."""


class TakeRefused(RemoteError):
    """The maker refused a take (or it was rolled back with the channel); `reason` says why."""


@dataclass(frozen=True, slots=True)
class SignedQuote:
    quote: Quote
    sig: Signature
    maker: bytes


@dataclass(frozen=True, slots=True)
class Fill:
    """One swap both signed, from this node's point of view: `bought` is True when it received the base
    (and paid the quote)."""

    channel_id: bytes
    take_id: str
    """This node's handle of its take; empty when this node was the maker."""
    quote_id: int
    base: bytes
    quote: bytes
    bought: bool
    base_amount: int
    quote_amount: int
    maker: bool
    version: int
    at_ms: int


_quote_encoder = msgspec.json.Encoder()
_quote_decoder: msgspec.json.Decoder[SignedQuote] = msgspec.json.Decoder(SignedQuote)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SwapDesk:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._received: dict[bytes, dict[int, SignedQuote]] = {}
        self._sent: dict[bytes, dict[int, SignedQuote]] = {}
        self._queues: dict[bytes, deque[tuple[Swap, asyncio.Future[Fill]]]] = {}
        self._waiters: dict[str, asyncio.Future[Fill]] = {}
        self._flushing: set[bytes] = set()
        self._log: deque[Fill] = deque(maxlen=FILL_LOG)
        self._last_quote_id = 0
        self._take_ids = itertools.count(1)
        self._take_prefix = f"t{now_ms():x}-"
        loaded_at = now_ms()
        for stored in node.store.load_quotes(loaded_at):  # mine, sent before a restart and still live
            try:
                offer = _quote_decoder.decode(stored.blob)
            except (msgspec.DecodeError, msgspec.ValidationError, StatechannelError):
                log.warning("a stored quote of channel 0x%s is unreadable: skipped", stored.channel_id.hex()[:12])
                continue
            self._keep(self._sent, stored.channel_id, offer, loaded_at)  # within MAX_QUOTES_KEPT, as when sent
            self._last_quote_id = max(self._last_quote_id, offer.quote.quote_id)  # ids stay unique across restarts

    # ------------------------------------------------------------ maker

    async def send_quote(
        self,
        channel_id: bytes,
        base: bytes,
        quote: bytes,
        *,
        maker_sells: bool,
        base_unit: int,
        quote_unit: int,
        size: int,
        ttl_ms: int,
    ) -> SignedQuote:
        if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or not 0 < ttl_ms <= MAX_TTL_MS:
            raise LocalError(Reason.BAD_PARAMS, f"ttl_ms must be an int in (0, {MAX_TTL_MS}]")
        node = self._node
        ch = node.channel(channel_id)
        start = now_ms()
        quote_id = self._next_quote_id(start)
        q, sig = swaps.make_quote(
            ch, node.key, quote_id, base, quote, maker_sells, base_unit, quote_unit, size, start + ttl_ms
        )
        offer = SignedQuote(q, sig, node.address)
        # kept durably first, so a restarted maker still lists every quote a peer may hold
        await node.store.save_quote(
            StoredQuote(channel_id, quote_id, q.expires_at_ms, _quote_encoder.encode(offer)), start
        )
        self._keep(self._sent, channel_id, offer, start)  # listed as it is stored, even if the send fails
        await node.transport.send(ch.peer_address, m.encode(m.QuoteOffer(m.WireQuote.of(q), sig.to_bytes())))
        return offer

    def _next_quote_id(self, at_ms: int) -> int:
        """Unique per maker and channel across restarts (fills are tracked by id): microseconds of the
        wall clock, never repeating within this process."""
        self._last_quote_id = max(self._last_quote_id + 1, at_ms * 1000)
        return self._last_quote_id

    def my_quotes(self, channel_id: bytes) -> list[tuple[SignedQuote, int]]:
        """My live quotes on this channel, with how much of each the peer has taken."""
        ch = self._node.channel(channel_id)
        live = self._live(self._sent, channel_id)
        return [(sq, swaps.filled(ch, qid)) for qid, sq in sorted(live.items())]

    # ------------------------------------------------------------ taker

    def quotes(self, channel_id: bytes) -> list[SignedQuote]:
        """The peer's live quotes on this channel, the latest offer per quote id."""
        self._node.channel(channel_id)
        return [sq for _, sq in sorted(self._live(self._received, channel_id).items())]

    def take(self, channel_id: bytes, quote_id: int, base_amount: int) -> asyncio.Future[Fill]:
        """Queue a take of the peer's quote; the future resolves with the fill once both signed it, or
        fails with the reason (the maker's, as a TakeRefused)."""
        ch = self._node.channel(channel_id)
        if ch.phase is not Phase.OPEN:
            raise LocalError(Reason.WRONG_PHASE, f"channel is {ch.phase}, not open")
        offer = self._live(self._received, channel_id).get(quote_id)
        if offer is None:
            raise LocalError(Reason.UNKNOWN_QUOTE, f"no live quote {quote_id} from the peer on this channel")
        q = offer.quote
        q.quote_amount(base_amount)  # BAD_AMOUNT now rather than a round trip later
        if base_amount > q.size:
            raise LocalError(Reason.OVERSIZE, f"take of {base_amount} exceeds the quote's size {q.size}")
        swap = Swap(q, offer.sig, base_amount, f"{self._take_prefix}{next(self._take_ids)}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Fill] = loop.create_future()
        self._waiters[swap.take_id] = fut
        self._queues.setdefault(channel_id, deque()).append((swap, fut))
        if channel_id not in self._flushing:  # every take of this turn of the loop goes in one update
            self._flushing.add(channel_id)
            loop.call_soon(self._flush, channel_id)
        return fut

    def _flush(self, channel_id: bytes) -> None:
        self._flushing.discard(channel_id)
        queue = self._queues.get(channel_id)
        node = self._node
        while queue:
            ch = node.channels.get(channel_id)
            if ch is None or ch.room() <= 0:
                return  # flushed again when an update is answered
            room = MAX_TAKES_IN_FLIGHT - _takes_in_flight(ch)
            if room <= 0:
                return
            batch: list[tuple[Swap, asyncio.Future[Fill]]] = []
            while queue and len(batch) < min(MAX_TAKES, room):
                swap, fut = queue.popleft()
                if fut.done():  # the caller gave up before it was proposed: never propose it
                    self._waiters.pop(swap.take_id, None)
                else:
                    batch.append((swap, fut))
            self._propose(channel_id, batch)

    def _propose(self, channel_id: bytes, batch: list[tuple[Swap, asyncio.Future[Fill]]]) -> None:
        """Propose the batch in one update; a take the taker's own checks refuse fails alone."""
        while batch:
            try:
                self._node._feed(channel_id, ActionTake(tuple(swap for swap, _ in batch), now_ms()))
                return
            except StatechannelError as exc:
                failed = batch if exc.take is None else batch[exc.take : exc.take + 1]
                for swap, fut in failed:
                    self._waiters.pop(swap.take_id, None)
                    fut.set_exception(exc)
                batch = [] if exc.take is None else batch[: exc.take] + batch[exc.take + 1 :]

    def kick(self, channel_id: bytes) -> None:
        """An update was answered: there may be room for queued takes."""
        if self._queues.get(channel_id):
            self._flush(channel_id)

    # ------------------------------------------------------------ fills

    def recent_fills(self, channel_id: bytes | None = None) -> list[Fill]:
        """The last FILL_LOG fills, oldest first."""
        return [f for f in self._log if channel_id is None or f.channel_id == channel_id]

    # ------------------------------------------------------------ from the node

    def on_frame(self, peer: bytes, msg: m.QuoteOffer) -> None:
        node = self._node
        ch = node.channels.get(msg.channel_id)
        if ch is None or ch.peer_address != peer:
            raise RemoteError(Reason.WRONG_CHANNEL, f"no channel 0x{msg.channel_id.hex()[:12]} with this peer")
        q, sig, at = msg.quote.to_quote(), m.signature(msg.sig), now_ms()
        swaps.check_offer(ch, q, sig, at)
        self._keep(self._received, ch.channel_id, SignedQuote(q, sig, peer), at)
        if node._subscribers:
            self._publish(ch.channel_id, "quote", _quote_data(q))

    def on_effect(self, channel_id: bytes, effect: NotifyFilled | NotifyTakeFailed) -> None:
        swap = effect.swap
        if isinstance(effect, NotifyFilled):
            fill = _fill(channel_id, effect)
            self._log.append(fill)
            fut = self._waiters.pop(swap.take_id, None) if swap.take_id else None
            if fut is not None and not fut.done():
                fut.set_result(fill)
            if self._node._subscribers:  # checksumming addresses costs hashes: only for a listener
                self._publish(channel_id, "fill", _fill_data(fill))
        else:
            fut = self._waiters.pop(swap.take_id, None)
            known = effect.reason in Reason._value2member_map_
            refusal = TakeRefused(
                Reason(effect.reason) if known else Reason.ILLEGAL_MOVE,
                f"take {swap.take_id} of quote {swap.quote.quote_id} refused: {effect.reason}",
            )
            if fut is not None and not fut.done():
                fut.set_exception(refusal)
            data = {"take_id": swap.take_id, "quote_id": str(swap.quote.quote_id), "reason": effect.reason}
            self._publish(channel_id, "take_failed", data)
        self.kick(channel_id)
        node = self._node
        if node._queued.get(channel_id) and channel_id not in node._flushing:  # payments waiting for room
            node._flushing.add(channel_id)
            asyncio.get_running_loop().call_soon(node._flush, channel_id)

    # ------------------------------------------------------------ helpers

    def _keep(self, book: dict[bytes, dict[int, SignedQuote]], channel_id: bytes, sq: SignedQuote, at: int) -> None:
        quotes = self._live(book, channel_id, at)
        quotes[sq.quote.quote_id] = sq
        if len(quotes) > MAX_QUOTES_KEPT:
            soonest = min(quotes.values(), key=lambda s: s.quote.expires_at_ms)
            del quotes[soonest.quote.quote_id]

    @staticmethod
    def _live(
        book: dict[bytes, dict[int, SignedQuote]], channel_id: bytes, at: int | None = None
    ) -> dict[int, SignedQuote]:
        """The channel's quotes in `book`, expired ones dropped on the way."""
        quotes = book.setdefault(channel_id, {})
        at = now_ms() if at is None else at
        for qid in [qid for qid, sq in quotes.items() if sq.quote.expired(at)]:
            del quotes[qid]
        return quotes

    def _publish(self, channel_id: bytes, kind: str, data: dict[str, Any]) -> None:
        from statechannel.node.node import NodeEvent

        subscribers = self._node._subscribers
        if not subscribers:
            return
        event = NodeEvent(kind, "0x" + channel_id.hex(), data)
        for sub in subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1


def _takes_in_flight(ch: Channel) -> int:
    """Takes proposed (leader) or asked for (follower) and not yet answered."""
    if ch.leader:
        return sum(len(p.swaps) for p in ch.pending if p.kind is Kind.SWAP)
    return sum(len(r.takes) for r in ch.requests)


def _fill(channel_id: bytes, effect: NotifyFilled) -> Fill:
    swap, q = effect.swap, effect.swap.quote
    return Fill(
        channel_id=channel_id,
        take_id=swap.take_id,
        quote_id=q.quote_id,
        base=q.base,
        quote=q.quote,
        bought=q.maker_sells != effect.maker,
        base_amount=swap.base_amount,
        quote_amount=swap.quote_amount,
        maker=effect.maker,
        version=effect.version,
        at_ms=now_ms(),
    )


def _quote_data(q: Quote) -> dict[str, Any]:
    return {
        "quote_id": str(q.quote_id),
        "base": to_checksum(q.base),
        "quote": to_checksum(q.quote),
        "maker_sells": q.maker_sells,
        "base_unit": str(q.base_unit),
        "quote_unit": str(q.quote_unit),
        "size": str(q.size),
        "expires_at_ms": q.expires_at_ms,
    }


def _fill_data(f: Fill) -> dict[str, Any]:
    return {
        "take_id": f.take_id,
        "quote_id": str(f.quote_id),
        "version": f.version,
        "side": "buy" if f.bought else "sell",
        "maker": f.maker,
        "base": to_checksum(f.base),
        "quote": to_checksum(f.quote),
        "base_amount": str(f.base_amount),
        "quote_amount": str(f.quote_amount),
    }

"""Two-asset trading over a node: make quotes, take the peer's, and keep positions and realised P&L.

Every amount is an int, exactly as signed. Realised P&L is by average cost, in quote units, and is a
`Fraction` because an average price seldom divides evenly: it is a figure for people to read, never an
amount that is signed, stored or moved. Positions count the fills since this trader started listening,
plus those the node's bounded fill log still held then: make the trader when the node starts. Two traders
of one node see the same fills, so they agree."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from statechannel.node.node import Node
from statechannel.node.swapdesk import Fill, SignedQuote

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class Position:
    """One pair on one channel. `base_net` is base bought minus sold, `quote_net` quote received minus paid;
    `cost` is what the open position cost at its average price (negative when short: what it was sold for)."""

    channel_id: bytes
    base: bytes
    quote: bytes
    base_net: int
    quote_net: int
    trades: int
    base_volume: int
    quote_volume: int
    cost: Fraction
    realised_pnl: Fraction

    @property
    def average_price(self) -> Fraction | None:
        """Quote units per base unit of the open position; None when flat."""
        return self.cost / self.base_net if self.base_net else None


@dataclass
class _Book:
    """The running average-cost account of one pair; a mutable accumulator so each fill costs O(1)."""

    base_net: int = 0
    quote_net: int = 0
    trades: int = 0
    base_volume: int = 0
    quote_volume: int = 0
    cost: Fraction = Fraction(0)
    realised: Fraction = Fraction(0)

    def add(self, fill: Fill) -> None:
        qty = fill.base_amount if fill.bought else -fill.base_amount  # signed base
        paid = fill.quote_amount if fill.bought else -fill.quote_amount  # signed quote, same sign
        value = Fraction(paid)
        self.trades += 1
        self.base_volume += fill.base_amount
        self.quote_volume += fill.quote_amount
        self.quote_net -= paid
        if self.base_net == 0 or (self.base_net > 0) == (qty > 0):
            self.base_net += qty
            self.cost += value
            return
        closing = min(abs(qty), abs(self.base_net))  # the part of this fill that reduces the position
        closed_cost = self.cost * closing / abs(self.base_net)
        closing_value = value * closing / abs(qty)
        self.realised += -closing_value - closed_cost
        self.cost -= closed_cost
        self.base_net += closing if qty > 0 else -closing
        rest = abs(qty) - closing  # what is left opens a position the other way
        if rest:
            self.base_net += rest if qty > 0 else -rest
            self.cost += value - closing_value

    def position(self, channel_id: bytes, base: bytes, quote: bytes) -> Position:
        return Position(
            channel_id,
            base,
            quote,
            self.base_net,
            self.quote_net,
            self.trades,
            self.base_volume,
            self.quote_volume,
            self.cost,
            self.realised,
        )


class Trader:
    """The maker's and the taker's API in one, since either side of a channel may quote and either may
    take."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._books: dict[tuple[bytes, bytes, bytes], _Book] = {}
        for fill in node.swaps.recent_fills():
            self._on_fill(fill)
        node.swaps.add_listener(self._on_fill)

    def close(self) -> None:
        """Stop listening to the node's fills."""
        self.node.swaps.remove_listener(self._on_fill)

    # ------------------------------------------------------------ maker

    async def quote(
        self,
        channel_id: bytes,
        side: Side,
        base: bytes,
        quote: bytes,
        *,
        price: tuple[int, int],
        size: int,
        ttl_ms: int = 30_000,
    ) -> SignedQuote:
        """Offer to `side` (sell or buy) up to `size` of `base` at `price` = (quote units, per base units):
        (2000, 1) is 2000 quote units for each base unit."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side is 'buy' or 'sell', got {side!r}")
        quote_unit, base_unit = price
        return await self.node.send_quote(
            channel_id,
            base,
            quote,
            maker_sells=side == "sell",
            base_unit=base_unit,
            quote_unit=quote_unit,
            size=size,
            ttl_ms=ttl_ms,
        )

    def my_quotes(self, channel_id: bytes) -> list[tuple[SignedQuote, int]]:
        """My live quotes and how much of each has been taken."""
        return self.node.swaps.my_quotes(channel_id)

    # ------------------------------------------------------------ taker

    def quotes(self, channel_id: bytes) -> list[SignedQuote]:
        return self.node.quotes(channel_id)

    def take(self, channel_id: bytes, quote_id: int, base_amount: int) -> asyncio.Future[Fill]:
        return self.node.take(channel_id, quote_id, base_amount)

    # ------------------------------------------------------------ accounts

    def positions(self, channel_id: bytes | None = None) -> list[Position]:
        return [
            book.position(cid, base, quote)
            for (cid, base, quote), book in sorted(self._books.items())
            if channel_id is None or cid == channel_id
        ]

    def fills(self, channel_id: bytes | None = None, limit: int = 100) -> list[Fill]:
        """The most recent fills the node still remembers, newest first."""
        return list(reversed(self.node.swaps.recent_fills(channel_id)))[:limit]

    def _on_fill(self, fill: Fill) -> None:
        key = (fill.channel_id, fill.base, fill.quote)
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = _Book()
        book.add(fill)

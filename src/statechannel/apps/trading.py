"""Two-asset trading over a node: make quotes, take the peer's, and read positions and realised P&L.

Positions live in each channel (core/positions.py): updated in the transition that records each fill and
saved with it, so they survive restarts exactly. Realised P&L is by average cost, in quote units, and is
a `Fraction` because an average price seldom divides evenly: a figure for people to read, never an
amount that is signed, stored as money or moved."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from statechannel.core.positions import Tally
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

    @classmethod
    def of(cls, channel_id: bytes, t: Tally) -> Position:
        return cls(
            channel_id,
            t.base,
            t.quote,
            t.base_net,
            t.quote_net,
            t.trades,
            t.base_volume,
            t.quote_volume,
            t.cost_fraction,
            t.realised_fraction,
        )


class Trader:
    """The maker's and the taker's API in one, since either side of a channel may quote and either may
    take."""

    def __init__(self, node: Node) -> None:
        self.node = node

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
        """Every pair traded on the channel (or on every channel), closed channels included."""
        channels = self.node.channels
        chosen = [channel_id] if channel_id is not None else sorted(channels)
        return [
            Position.of(cid, t)
            for cid in chosen
            if cid in channels
            for t in sorted(channels[cid].positions, key=lambda t: (t.base, t.quote))
        ]

    def fills(self, channel_id: bytes | None = None, limit: int = 100) -> list[Fill]:
        """The most recent fills the node still remembers, newest first."""
        return list(reversed(self.node.swaps.recent_fills(channel_id)))[:limit]

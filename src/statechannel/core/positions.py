"""Positions and realised P&L per traded pair, kept in the channel itself.

A position changes in the same transition that records its fill, so it is saved with the state that
holds the fill, survives every restart and is never counted twice. Amounts are ints, exactly as signed.
Cost and realised P&L are by average cost, in quote units, and exact fractions (kept as integer
numerator and denominator) because an average price seldom divides evenly: figures for people to read,
never amounts that are signed or moved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from statechannel.core.quotes import Swap


@dataclass(frozen=True, slots=True)
class Tally:
    """One pair, from this participant's side. `base_net` is base bought minus sold, `quote_net` quote
    received minus paid; `cost` is what the open position cost at its average price (negative when
    short: what it was sold for)."""

    base: bytes
    quote: bytes
    base_net: int = 0
    quote_net: int = 0
    trades: int = 0
    base_volume: int = 0
    quote_volume: int = 0
    cost: tuple[int, int] = (0, 1)
    realised: tuple[int, int] = (0, 1)

    @property
    def cost_fraction(self) -> Fraction:
        return Fraction(*self.cost)

    @property
    def realised_fraction(self) -> Fraction:
        return Fraction(*self.realised)


class _Account:
    """A tally being updated: mutable, so a burst of fills costs O(1) each and one freeze at the end."""

    def __init__(self, t: Tally) -> None:
        self.t = t
        self.base_net, self.quote_net, self.trades = t.base_net, t.quote_net, t.trades
        self.base_volume, self.quote_volume = t.base_volume, t.quote_volume
        self.cost, self.realised = Fraction(*t.cost), Fraction(*t.realised)

    def add(self, bought: bool, base_amount: int, quote_amount: int) -> None:
        qty = base_amount if bought else -base_amount  # signed base
        paid = quote_amount if bought else -quote_amount  # signed quote, same sign
        self.trades += 1
        self.base_volume += base_amount
        self.quote_volume += quote_amount
        self.quote_net -= paid
        if self.base_net == 0 or (self.base_net > 0) == (qty > 0):
            self.base_net += qty
            self.cost += paid
            return
        closing = min(abs(qty), abs(self.base_net))  # the part of this fill that reduces the position
        closed_cost = self.cost * closing / abs(self.base_net)
        closing_value = Fraction(paid) * closing / abs(qty)
        self.realised += -closing_value - closed_cost
        self.cost -= closed_cost
        self.base_net += closing if qty > 0 else -closing
        rest = abs(qty) - closing  # what is left opens a position the other way
        if rest:
            self.base_net += rest if qty > 0 else -rest
            self.cost += paid - closing_value

    def freeze(self) -> Tally:
        return Tally(
            self.t.base,
            self.t.quote,
            self.base_net,
            self.quote_net,
            self.trades,
            self.base_volume,
            self.quote_volume,
            (self.cost.numerator, self.cost.denominator),
            (self.realised.numerator, self.realised.denominator),
        )


def record(tallies: tuple[Tally, ...], fills: Iterable[tuple[bool, int, int, bytes, bytes]]) -> tuple[Tally, ...]:
    """`tallies` with `fills` applied in order: each is (bought, base_amount, quote_amount, base, quote).
    A new pair is appended; the others keep their order."""
    accounts: dict[tuple[bytes, bytes], _Account] = {}
    index = {(t.base, t.quote): t for t in tallies}
    for bought, base_amount, quote_amount, base, quote in fills:
        account = accounts.get((base, quote))
        if account is None:
            account = accounts[(base, quote)] = _Account(index.get((base, quote)) or Tally(base, quote))
        account.add(bought, base_amount, quote_amount)
    if not accounts:
        return tallies
    kept = tuple(accounts.pop((t.base, t.quote)).freeze() if (t.base, t.quote) in accounts else t for t in tallies)
    return kept + tuple(a.freeze() for a in accounts.values())


def record_fills(tallies: tuple[Tally, ...], fills: Iterable[tuple[Swap, bool]]) -> tuple[Tally, ...]:
    """`tallies` with fills applied in order: each a swap, and whether I was its maker (I bought the base
    when the maker sold it and I was not the maker, or the other way round)."""
    return record(
        tallies,
        (
            (s.quote.maker_sells != maker, s.base_amount, s.quote_amount, s.quote.base, s.quote.quote)
            for s, maker in fills
        ),
    )

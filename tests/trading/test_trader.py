"""Positions and average-cost realised P&L, exact, from a stream of fills (core/positions.py, read
through apps/trading.Position)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from statechannel.apps.trading import Position
from statechannel.core.positions import Tally, record

CID = b"\x01" * 32
BASE, QUOTE = b"\x70" * 20, b"\x00" * 20


def trade(tallies: tuple[Tally, ...], bought: bool, base: int, quote: int) -> tuple[Tally, ...]:
    return record(tallies, [(bought, base, quote, BASE, QUOTE)])


def position(tallies: tuple[Tally, ...]) -> Position:
    (t,) = tallies
    return Position.of(CID, t)


def test_average_cost_through_a_long_a_flip_and_back_to_flat() -> None:
    t = trade((), True, 10, 20)  # long 10 at 2
    t = trade(t, True, 10, 30)  # long 20, cost 50: average 5/2
    p = position(t)
    assert (p.base_net, p.quote_net, p.cost, p.average_price, p.realised_pnl) == (
        20,
        -50,
        Fraction(50),
        Fraction(5, 2),
        Fraction(0),
    )
    t = trade(t, False, 5, 20)  # sell 5 at 4: realised 20 - 5 * 5/2 = 15/2
    p = position(t)
    assert (p.base_net, p.realised_pnl, p.cost) == (15, Fraction(15, 2), Fraction(75, 2))
    t = trade(t, False, 25, 25)  # sell 25 at 1: closes 15 (15 - 75/2), then short 10 at 1
    p = position(t)
    assert (p.base_net, p.realised_pnl, p.cost, p.average_price) == (-10, Fraction(-15), Fraction(-10), Fraction(1))
    t = trade(t, True, 10, 20)  # buy back 10 at 2: realised -10 more, flat
    p = position(t)
    assert (p.base_net, p.quote_net, p.realised_pnl, p.cost, p.average_price) == (
        0,
        -25,
        Fraction(-25),
        Fraction(0),
        None,
    )
    assert (p.trades, p.base_volume, p.quote_volume) == (5, 60, 115)


def test_pairs_are_kept_apart_in_first_traded_order_and_a_batch_equals_one_by_one() -> None:
    other = b"\x71" * 20
    fills = [(True, 3, 9, BASE, QUOTE), (True, 2, 5, other, QUOTE), (False, 3, 12, BASE, QUOTE)]
    together = record((), fills)
    one_by_one: tuple[Tally, ...] = ()
    for f in fills:
        one_by_one = record(one_by_one, [f])
    assert together == one_by_one
    assert [(t.base, t.base_net, t.trades) for t in together] == [(BASE, 0, 2), (other, 2, 1)]
    assert together[0].realised_fraction == Fraction(3) and together[1].cost_fraction == Fraction(5)
    assert record(together, []) is together


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50), st.integers(1, 500)), max_size=40))
def test_realised_plus_open_cost_is_the_cash_flow(trades: list[tuple[bool, int, int]]) -> None:
    """Every quote unit that moved is either realised or still in the open position's cost."""
    t = record((), [(bought, base, quote, BASE, QUOTE) for bought, base, quote in trades])
    for p in (Position.of(CID, tally) for tally in t):
        assert p.realised_pnl == p.quote_net + p.cost
        assert p.base_net == sum(b if bought else -b for bought, b, _ in trades)
        if p.base_net == 0:
            assert p.cost == 0 and p.realised_pnl == p.quote_net

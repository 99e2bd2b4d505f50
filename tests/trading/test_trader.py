"""The trader's accounts: positions and average-cost realised P&L, exact, from a stream of fills."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from statechannel.apps.trading import Trader
from statechannel.node.node import Node
from statechannel.node.swapdesk import Fill, FillListener

CID = b"\x01" * 32
BASE, QUOTE = b"\x70" * 20, b"\x00" * 20


class _Desk:
    def __init__(self, log: list[Fill]) -> None:
        self.log = log
        self.listeners: list[FillListener] = []

    def recent_fills(self, channel_id: bytes | None = None) -> list[Fill]:
        return list(self.log)

    def add_listener(self, listener: FillListener) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: FillListener) -> None:
        self.listeners.remove(listener)

    def emit(self, fill: Fill) -> None:
        self.log.append(fill)
        for listener in self.listeners:
            listener(fill)


class _Node:
    def __init__(self, log: list[Fill] | None = None) -> None:
        self.swaps = _Desk(log or [])


def fill(bought: bool, base: int, quote: int, version: int = 1) -> Fill:
    return Fill(CID, "", 1, BASE, QUOTE, bought, base, quote, True, version, 0)


def trader(log: list[Fill] | None = None) -> tuple[Trader, _Desk]:
    node = _Node(log)
    return Trader(cast(Node, node)), node.swaps


def test_average_cost_through_a_long_a_flip_and_back_to_flat() -> None:
    t, desk = trader()
    desk.emit(fill(True, 10, 20))  # long 10 at 2
    desk.emit(fill(True, 10, 30))  # long 20, cost 50: average 5/2
    (p,) = t.positions()
    assert (p.base_net, p.quote_net, p.cost, p.average_price, p.realised_pnl) == (
        20,
        -50,
        Fraction(50),
        Fraction(5, 2),
        Fraction(0),
    )
    desk.emit(fill(False, 5, 20))  # sell 5 at 4: realised 20 - 5 * 5/2 = 15/2
    (p,) = t.positions()
    assert (p.base_net, p.realised_pnl, p.cost) == (15, Fraction(15, 2), Fraction(75, 2))
    desk.emit(fill(False, 25, 25))  # sell 25 at 1: closes 15 (15 - 75/2), then short 10 at 1
    (p,) = t.positions()
    assert (p.base_net, p.realised_pnl, p.cost, p.average_price) == (-10, Fraction(-15), Fraction(-10), Fraction(1))
    desk.emit(fill(True, 10, 20))  # buy back 10 at 2: realised -10 more, flat
    (p,) = t.positions()
    assert (p.base_net, p.quote_net, p.realised_pnl, p.cost, p.average_price) == (
        0,
        -25,
        Fraction(-25),
        Fraction(0),
        None,
    )
    assert (p.trades, p.base_volume, p.quote_volume) == (5, 60, 115)


def test_a_trader_catches_up_from_the_log_then_listens() -> None:
    t, desk = trader([fill(True, 3, 9)])
    desk.emit(fill(False, 3, 12))
    (p,) = t.positions()
    assert (p.base_net, p.realised_pnl) == (0, Fraction(3))
    t.close()
    desk.emit(fill(True, 1, 1))
    assert t.positions()[0].trades == 2
    assert t.positions(b"\x02" * 32) == []


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50), st.integers(1, 500)), max_size=40))
def test_realised_plus_open_cost_is_the_cash_flow(trades: list[tuple[bool, int, int]]) -> None:
    """Every quote unit that moved is either realised or still in the open position's cost."""
    t, desk = trader()
    for bought, base, quote in trades:
        desk.emit(fill(bought, base, quote))
    for p in t.positions():
        assert p.realised_pnl == p.quote_net + p.cost
        assert p.base_net == sum(b if bought else -b for bought, b, _ in trades)
        if p.base_net == 0:
            assert p.cost == 0 and p.realised_pnl == p.quote_net

"""Swaps between two real nodes: ether and the test token on the embedded chain, a cooperative close
whose payouts of both assets are exactly what the fills say, and a burst of takes on one quote."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from pathlib import Path

import pytest

from statechannel.apps.trading import Trader
from statechannel.chain.adjudicator import Status
from statechannel.core.channel import MAX_TAKES, Phase
from statechannel.core.errors import LocalError, Reason
from statechannel.core.types import ETH
from statechannel.node.node import Node, NodeEvent
from statechannel.node.swapdesk import MAX_TAKES_IN_FLIGHT, Fill, SignedQuote, TakeRefused
from statechannel.store.sqlite import SqliteStore
from tests.terms import TEST_TERMS
from tests.trading.world import TOKENS, World, eventually, open_two_assets, run


async def quote_seen(taker: Node, cid: bytes, sq: SignedQuote) -> None:
    await eventually(lambda: any(q.quote == sq.quote for q in taker.quotes(cid)))


async def collect(node: Node, into: list[NodeEvent]) -> None:
    async for event in node.subscribe():
        into.append(event)


def test_swaps_both_ways_then_a_cooperative_close_pays_both_assets_exactly(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        trader_a, trader_b = Trader(a), Trader(b)
        events: list[NodeEvent] = []
        listener = asyncio.ensure_future(collect(a, events))
        cid = await open_two_assets(w)
        # A sells the token: 7 wei for every 4 token units, up to 4,000 units
        sells = await trader_a.quote(cid, "sell", token, ETH, price=(7, 4), size=4_000)
        await quote_seen(b, cid, sells)
        fills = await asyncio.gather(*(trader_b.take(cid, sells.quote.quote_id, 400) for _ in range(5)))
        assert {(f.base_amount, f.quote_amount, f.bought) for f in fills} == {(400, 700, True)}
        with pytest.raises(LocalError) as err:
            b.take(cid, sells.quote.quote_id, 401)  # 401 * 7 / 4 is not whole
        assert err.value.reason is Reason.BAD_AMOUNT
        with pytest.raises(LocalError) as err:
            b.take(cid, sells.quote.quote_id, 4_004)
        assert err.value.reason is Reason.OVERSIZE
        with pytest.raises(TakeRefused) as refused:
            await b.take(cid, sells.quote.quote_id, 2_004)  # only 2,000 left: the maker says no
        assert refused.value.reason is Reason.OVERSIZE
        # B buys ether with the token: 1 wei of ether for 3 token units... B is the maker, A sells it ether
        buys = await trader_b.quote(cid, "buy", ETH, token, price=(3, 1), size=10**6)
        await quote_seen(a, cid, buys)
        more = await asyncio.gather(*(a.take(cid, buys.quote.quote_id, 1_000) for _ in range(3)))
        assert {(f.base_amount, f.quote_amount, f.bought, f.maker) for f in more} == {(1_000, 3_000, False, False)}
        await a.idle(cid)
        await b.idle(cid)
        ch_a, ch_b = a.channel(cid), b.channel(cid)
        assert ch_a.latest is not None and ch_a.latest == ch_b.latest
        # A gave 2,000 token and got 3,500 wei; then gave 3,000 wei and got 9,000 token
        eth_t, token_t = -3_500 + 3_000, 2_000 - 9_000  # net transfers A -> B
        assert ch_a.latest.state.transfers == (eth_t, token_t)

        pos_a = {(p.base, p.quote): p for p in trader_a.positions(cid)}
        assert pos_a[(token, ETH)].base_net == -2_000 and pos_a[(token, ETH)].quote_net == 3_500
        assert pos_a[(ETH, token)].base_net == -3_000 and pos_a[(ETH, token)].quote_net == 9_000
        pos_b = {(p.base, p.quote): p for p in trader_b.positions(cid)}
        assert pos_b[(token, ETH)].base_net == 2_000 and pos_b[(token, ETH)].average_price == Fraction(7, 4)
        assert pos_b[(ETH, token)].base_net == 3_000 and pos_b[(ETH, token)].trades == 3

        before_b = await a.chainio.run(lambda: w.chain.balance(b.address))
        held = await a.chainio.run(lambda: w.chain.balance(w.adjudicator.address))
        await a.close(cid)
        await a.wait_for(cid, Phase.CLOSED)
        await b.wait_for(cid, Phase.CLOSED)
        info = await a.chainio.run(lambda: w.adjudicator.channel(cid))
        assert info.status is Status.CONCLUDED
        # B submitted nothing since `before_b`, so its ether moved by exactly its payout
        payout_b = 3 * 10**18 + eth_t
        assert await a.chainio.run(lambda: w.chain.balance(b.address)) - before_b == payout_b
        assert await a.chainio.run(lambda: w.chain.balance(w.adjudicator.address)) == held - 8 * 10**18
        for node, change in ((a, -token_t), (b, token_t)):
            balance = await a.chainio.run(lambda n=node: w.token.balance_of(n.address))  # type: ignore[misc]
            assert balance == TOKENS + change
        assert await a.chainio.run(lambda: w.token.balance_of(w.adjudicator.address)) == 0

        await eventually(lambda: sum(e.kind == "fill" for e in events) == 8)
        fill_events = [e for e in events if e.kind == "fill"]
        assert {e.data["side"] for e in fill_events} == {"sell"}
        assert {e.data["maker"] for e in fill_events} == {True, False}
        listener.cancel()

    run(tmp_path, scenario)


def test_a_burst_of_1000_takes_on_one_quote_then_oversize_is_refused(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        trader_b = Trader(b)
        sq = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=3, size=1_000)
        await quote_seen(b, cid, sq)
        # a few payments ride beside the takes; no update mixes the two
        payments = [b.pay_nowait(cid, ETH, 1) for _ in range(50)]
        fills: list[Fill] = await asyncio.gather(*(b.take(cid, sq.quote.quote_id, 1) for _ in range(1_000)))
        sent = await asyncio.gather(*payments)
        # takes of one turn of the loop share updates, MAX_TAKES to one; each is still its own fill
        assert len({f.version for f in fills}) == math.ceil(1_000 / MAX_TAKES)
        assert len({f.take_id for f in fills}) == 1_000
        assert {(f.base_amount, f.quote_amount, f.bought) for f in fills} == {(1, 3, True)}
        assert not {f.version for f in fills} & {p.version for p in sent}
        with pytest.raises(TakeRefused) as refused:
            await b.take(cid, sq.quote.quote_id, 1)
        assert refused.value.reason is Reason.OVERSIZE
        (position,) = trader_b.positions(cid)
        assert (position.base_net, position.quote_net, position.trades) == (1_000, -3_000, 1_000)
        await b.idle(cid)
        await a.idle(cid)
        assert a.channel(cid).latest == b.channel(cid).latest
        assert a.swaps.my_quotes(cid)[0][1] == 1_000

    run(tmp_path, scenario)


def test_expired_quotes_are_dropped_and_refused(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        sq = await a.send_quote(cid, token, ETH, maker_sells=False, base_unit=1, quote_unit=1, size=10, ttl_ms=300)
        await quote_seen(b, cid, sq)
        await asyncio.sleep(0.35)
        assert b.quotes(cid) == []
        with pytest.raises(LocalError) as err:
            b.take(cid, sq.quote.quote_id, 1)
        assert err.value.reason is Reason.UNKNOWN_QUOTE
        with pytest.raises(LocalError) as err:
            await a.send_quote(cid, token, b"\x01" * 20, maker_sells=True, base_unit=1, quote_unit=1, size=1)
        assert err.value.reason is Reason.BAD_ASSETS

    run(tmp_path, scenario)


def test_swaps_over_tcp(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        sq = await b.send_quote(cid, token, ETH, maker_sells=False, base_unit=2, quote_unit=5, size=10**6)
        await quote_seen(a, cid, sq)
        fills = await asyncio.gather(*(a.take(cid, sq.quote.quote_id, 2) for _ in range(200)))
        assert sum(f.quote_amount for f in fills) == 200 * 5
        assert b.swaps.my_quotes(cid)[0][1] == 400

    run(tmp_path, scenario, tcp=True)


def test_a_burst_beyond_the_takers_funds_fills_what_it_can_and_refuses_the_rest(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w, eth=(5 * 10**18, 1_000), tokens=(10**21, 7))
        sq = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=100, size=10**6)
        await quote_seen(b, cid, sq)
        # B holds 1,000 wei: ten takes at 100 wei fit, the next five do not; all go in one turn of the loop
        results = await asyncio.gather(*(b.take(cid, sq.quote.quote_id, 1) for _ in range(15)), return_exceptions=True)
        fills = [r for r in results if isinstance(r, Fill)]
        refused = [r for r in results if not isinstance(r, Fill)]
        assert len(fills) == 10 and len({f.version for f in fills}) == 1
        assert all(isinstance(r, LocalError) and r.reason is Reason.INSUFFICIENT_FUNDS for r in refused)
        assert len(refused) == 5
        await b.idle(cid)
        ch = b.channel(cid)
        assert ch.my_balance(ETH) == 0 and ch.my_balance(token) == 17
        assert a.swaps.my_quotes(cid)[0][1] == 10

    run(tmp_path, scenario)


def test_positions_survive_a_restart_exactly(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        sells = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=3, quote_unit=7, size=10**6)
        await quote_seen(b, cid, sells)
        await asyncio.gather(*(b.take(cid, sells.quote.quote_id, 30) for _ in range(40)))
        buys = await a.send_quote(cid, token, ETH, maker_sells=False, base_unit=1, quote_unit=3, size=10**6)
        await quote_seen(b, cid, buys)
        await b.take(
            cid, buys.quote.quote_id, 1_000
        )  # B sells back 1,000 of its 1,200 at 3: realises 3,000 - 1,000 * 7/3
        await b.idle(cid)
        before = Trader(b).positions(cid)
        (p,) = before
        assert (p.base_net, p.quote_net, p.trades) == (200, -2_800 + 3_000, 41)
        assert (p.realised_pnl, p.cost) == (Fraction(3_000) - Fraction(2_800 * 1_000, 1_200), Fraction(2_800, 6))
        await b.stop()
        await b.store.close()
        store = SqliteStore(tmp_path / "b.db")
        again = Node(b.key, b.chainio, store, b.transport, poll_interval=0.02, terms=TEST_TERMS)
        await again.start()
        try:
            assert Trader(again).positions(cid) == before
            assert Trader(a).positions(cid)[0].base_net == -200  # the maker's side, mirrored
        finally:
            await again.stop()
            await store.close()

    run(tmp_path, scenario)


def test_takes_in_flight_are_bounded_and_the_rest_wait_their_turn(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        sq = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=2, size=10**6)
        await quote_seen(b, cid, sq)
        futures = [b.take(cid, sq.quote.quote_id, 1) for _ in range(3 * MAX_TAKES_IN_FLIGHT)]
        await asyncio.sleep(0)  # the flush ran: as many takes as may be in flight were asked for, no more
        asked = b.channel(cid).requests  # B follows: its takes go to A as take requests
        assert sum(len(r.takes) for r in asked) == MAX_TAKES_IN_FLIGHT
        assert all(0 < len(r.takes) <= MAX_TAKES for r in asked)
        fills = await asyncio.gather(*futures)
        assert len({f.take_id for f in fills}) == 3 * MAX_TAKES_IN_FLIGHT
        await b.idle(cid)
        assert a.swaps.my_quotes(cid)[0][1] == 3 * MAX_TAKES_IN_FLIGHT

    run(tmp_path, scenario)


def test_a_restarted_maker_still_lists_its_live_quotes_and_never_reuses_their_ids(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a, b, token = w.a, w.b, w.token.address
        cid = await open_two_assets(w)
        sq = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=3, size=100)
        short = await a.send_quote(cid, token, ETH, maker_sells=True, base_unit=1, quote_unit=3, size=9, ttl_ms=50)
        await quote_seen(b, cid, sq)
        await b.take(cid, sq.quote.quote_id, 40)
        await a.idle(cid)
        await asyncio.sleep(0.06)  # the short quote expires
        await a.stop()
        await a.store.close()
        store = SqliteStore(tmp_path / "a.db")
        again = Node(a.key, a.chainio, store, a.transport, poll_interval=0.02, terms=TEST_TERMS)
        await again.start()
        try:
            assert [(q.quote, filled) for q, filled in again.swaps.my_quotes(cid)] == [(sq.quote, 40)]
            newer = await again.send_quote(cid, token, ETH, maker_sells=False, base_unit=1, quote_unit=2, size=5)
            assert newer.quote.quote_id > max(sq.quote.quote_id, short.quote.quote_id)
        finally:
            await again.stop()
            await store.close()

    run(tmp_path, scenario)

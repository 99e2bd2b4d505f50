"""Several takes in one swap update: each fills whole at its own quote's price or is refused on its own,
and a refusal of one never costs the others their fill."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import (
    ActionTake,
    ChainDisputeRecorded,
    ChainTime,
    SendMessage,
    SubmitTxChallenge,
    SubmitTxSettle,
)
from statechannel.core.machine import receive, transition
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.quotes import MAX_TAKES, Swap, swap_transfers
from statechannel.core.types import ETH
from tests.trading.harness import TOKEN, AssetPair


def sent(pair: AssetPair, i: int) -> list[m.Message]:
    return [e.message for e in pair.party(i).effects if isinstance(e, SendMessage)]


def test_takes_of_two_quotes_share_one_update_at_their_own_prices() -> None:
    pair = AssetPair()
    sells = pair.quote(0, maker_sells=True, base_unit=3, quote_unit=7, size=90)  # A sells TOKEN, 7 ETH per 3
    buys = pair.quote(0, maker_sells=False, base_unit=1, quote_unit=2, size=50)  # A buys TOKEN, 2 ETH each
    v0 = pair.b.ch.head.version
    taken = pair.take_many(1, [(*sells, 30), (*buys, 5), (*sells, 9)])
    assert len(taken) == 3 and len(pair.b.ch.pending) == 1 and pair.b.ch.pending[0].swaps == tuple(taken)
    (proposal,) = [msg for msg in sent(pair, 1) if isinstance(msg, m.ProposeSwap)]
    assert len(proposal.quotes) == 2 and len(proposal.takes) == 3
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest and pair.a.ch.latest is not None
    assert pair.a.ch.latest.state.version == v0 + 1
    # B bought 39 TOKEN for 91 ETH and sold 5 TOKEN for 10 ETH
    assert pair.balances(1) == {ETH: 1000 - 91 + 10, TOKEN: 1000 + 39 - 5}
    assert pair.balances(0) == {ETH: 1000 + 91 - 10, TOKEN: 1000 - 39 + 5}
    assert sorted(s.base_amount for s in pair.ledgers[1].filled.values()) == [5, 9, 30]
    assert sorted(s.base_amount for s in pair.ledgers[0].made) == [5, 9, 30]
    assert (swaps.filled(pair.a.ch, sells[0].quote_id), swaps.filled(pair.a.ch, buys[0].quote_id)) == (39, 5)


def test_the_takers_own_checks_name_the_take_and_change_nothing() -> None:
    pair = AssetPair(token=(1000, 1000))
    q, sig = pair.quote(0, maker_sells=True, base_unit=2, quote_unit=3, size=40)
    before = pair.b.ch
    for takes, index, reason in (
        ((Swap(q, sig, 10), Swap(q, sig, 3)), 1, Reason.BAD_AMOUNT),  # 3 * 3 / 2 is not whole
        ((Swap(q, sig, 42),), 0, Reason.OVERSIZE),
        ((Swap(q, sig, 2), Swap(q, sig, 2), Swap(q, sig, 2000)), 2, Reason.OVERSIZE),
    ):
        with pytest.raises(LocalError) as err:
            transition(pair.b.ch, ActionTake(takes, pair.clock), pair.b.key)
        assert (err.value.take, err.value.reason) == (index, reason)
        assert pair.b.ch == before
    with pytest.raises(LocalError) as err:
        transition(pair.b.ch, ActionTake((), pair.clock), pair.b.key)
    assert err.value.take is None and err.value.reason is Reason.BAD_PARAMS
    with pytest.raises(LocalError) as err:
        transition(pair.b.ch, ActionTake((Swap(q, sig, 2),) * (MAX_TAKES + 1), pair.clock), pair.b.key)
    assert err.value.take is None


def test_a_take_that_would_overdraw_after_the_others_is_blamed_alone() -> None:
    pair = AssetPair(eth=(1000, 20))  # B holds 20 ETH: enough for two takes at 9, not three
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=9, size=100)
    with pytest.raises(LocalError) as err:
        transition(pair.b.ch, ActionTake((Swap(q, sig, 1),) * 3, pair.clock), pair.b.key)
    assert (err.value.take, err.value.reason) == (2, Reason.INSUFFICIENT_FUNDS)
    assert len(pair.take_many(1, [(q, sig, 1)] * 3)) == 2
    pair.deliver_all()
    assert pair.balances(1) == {ETH: 2, TOKEN: 1002}


def test_the_maker_refuses_one_take_and_the_others_fill_in_the_next_update() -> None:
    pair = AssetPair()
    long = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=100, ttl_ms=10_000)
    short = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=3, size=100, ttl_ms=50)
    taken = pair.take_many(1, [(*long, 4), (*short, 5), (*long, 6)])  # fine by B's clock
    assert len(taken) == 3
    pair.clock += 60  # the short quote expires before A sees the take
    before = len(sent(pair, 0))
    pair.deliver(0)  # A refuses the update, blaming take 1
    (reject,) = sent(pair, 0)[before:]
    assert isinstance(reject, m.Reject)
    assert (reject.take, reject.reason) == (1, "expired")
    assert swaps.filled(pair.a.ch, long[0].quote_id) == 0, "a refusal records no fill"
    pair.deliver_all()
    assert pair.ledgers[1].refused == {taken[1].take_id: "expired"}
    assert set(pair.ledgers[1].filled) == {taken[0].take_id, taken[2].take_id}
    assert pair.balances(1) == {ETH: 1000 - 20, TOKEN: 1010}
    assert swaps.filled(pair.a.ch, long[0].quote_id) == 10
    assert pair.a.ch.latest == pair.b.ch.latest


def test_takes_overfilling_a_quote_together_are_refused_at_the_take_that_overfills() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=10)
    latest = pair.a.ch.latest
    assert latest is not None
    takes = (Swap(q, sig, 6), Swap(q, sig, 3), Swap(q, sig, 2))  # 11 of 10
    state = latest.state
    for swap in takes:
        state = replace(state, transfers=swap_transfers(state, swap, maker=0))
    state = replace(state, version=latest.state.version + 1)
    msg = m.ProposeSwap.of(state, pair.b.key.sign_digest(pair.b.ch.digest(state)), 9, takes)
    ch, effects = receive(pair.a.ch, m.decode(m.encode(msg)), pair.a.key, pair.clock)
    assert ch == pair.a.ch
    (effect,) = effects
    assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
    assert (effect.message.take, effect.message.reason) == (2, "oversize")
    # the same state with one take's amount changed is no take of these quotes: the whole update is refused
    altered = replace(state, transfers=(state.transfers[0] + 1, state.transfers[1]))
    msg = m.ProposeSwap.of(altered, pair.b.key.sign_digest(pair.b.ch.digest(altered)), 10, takes[:2])
    _, effects = receive(pair.a.ch, m.decode(m.encode(msg)), pair.a.key, pair.clock)
    (effect,) = effects
    assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
    assert (effect.message.take, effect.message.reason) == (-1, "altered")


def test_batched_takes_survive_a_restart_and_a_lost_link() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=False, base=ETH, quote=TOKEN, base_unit=1, quote_unit=4, size=200)
    pair.take_many(1, [(q, sig, n) for n in range(1, 21)])  # 210 base would exceed 200: the last one is
    pair.b.channel = decode_channel(encode_channel(pair.b.ch))  # restarted from its stored form
    assert pair.b.ch.pending and len(pair.b.ch.pending[0].swaps) == 20
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    refused = pair.ledgers[1].refused
    assert list(refused.values()) == ["oversize"]  # take 20 (of 20 base) leaves only 10: refused alone
    assert sum(s.base_amount for s in pair.ledgers[1].filled.values()) == 190
    assert swaps.filled(pair.a.ch, q.quote_id) == 190
    assert pair.balances(1) == {ETH: 1000 - 190, TOKEN: 1000 + 760}


def test_a_close_with_my_proposal_whose_accept_was_lost_fills_its_takes_and_i_can_settle_it() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=100)
    taken = pair.take_many(1, [(q, sig, 10), (q, sig, 20)])
    pair.deliver(0)  # A countersigns; its Accept never reaches B
    pair.links[1].clear()
    recorded = pair.a.ch.latest
    assert recorded is not None and recorded.state.version == pair.b.ch.pending[0].state.version
    finalizes_at = 5_000
    pair.feed(pair.b, ChainDisputeRecorded(recorded.state.version, finalizes_at, 0, 0, state_hash(recorded.state)))
    assert set(pair.ledgers[1].filled) == {s.take_id for s in taken} and not pair.ledgers[1].refused
    (tally,) = pair.b.ch.positions
    assert (tally.base_net, tally.quote_net, tally.trades) == (30, -60, 2)
    assert not any(isinstance(e, SubmitTxChallenge) for e in pair.b.effects), "nothing newer to challenge with"
    pair.feed(pair.b, ChainTime(finalizes_at))
    (settle,) = [e for e in pair.b.effects if isinstance(e, SubmitTxSettle)]
    assert settle.state == recorded.state


def test_a_reused_quote_id_shares_one_fill_record_kept_for_the_longest_expiry() -> None:
    """Quote ids repeat only if the maker's clock steps back across a restart; then both quotes count
    against one record, which lives as long as the later of them, so neither is ever overfilled."""
    pair = AssetPair()
    a = pair.a
    short, short_sig = swaps.make_quote(a.ch, a.key, 77, TOKEN, ETH, True, 1, 2, 10, pair.clock + 100)
    long, long_sig = swaps.make_quote(a.ch, a.key, 77, TOKEN, ETH, True, 1, 2, 10, pair.clock + 100_000)
    pair.take_many(1, [(short, short_sig, 5), (long, long_sig, 5)])
    pair.deliver_all()
    pair.clock += 200  # the short one expired; the long one is live
    taken = pair.take_many(1, [(long, long_sig, 10)])
    pair.deliver_all()
    assert pair.ledgers[1].refused == {taken[0].take_id: "oversize"}
    assert swaps.filled(a.ch, 77) == 10


def test_a_channel_stored_before_takes_shared_updates_reads_its_take_in_flight() -> None:
    """Stored by the release before batching: a proposal carried one `swap` (or null), not `swaps`."""
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=100)
    pair.take_many(1, [(q, sig, 10)])
    pair.pay_asset(1, ETH, 3)
    doc = msgspec.json.decode(encode_channel(pair.b.ch))
    take, pay = doc["pending"]
    take["swap"] = take.pop("swaps")[0]
    pay["swap"] = None
    del pay["swaps"]
    old = msgspec.json.encode(doc)
    assert b'"swaps"' not in old
    assert decode_channel(old) == pair.b.ch

"""Several takes in one update: each fills whole at its own quote's price or is refused on its own, and a
refusal of one never costs the others their fill. The leader's takes share one `ProposeSwap`; the
follower's share one `TakeRequest`, which the leader carries in one `ProposeFill`."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import Kind
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import (
    ActionTake,
    ChainConcluded,
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
from tests.core.harness import CHAIN_START, versions_unique
from tests.trading.harness import TOKEN, AssetPair


def agreed(pair: AssetPair) -> None:
    """Both agree, nothing waits, every take was resolved once, and each side holds what it was told."""
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.a.ch.pending == () and pair.a.ch.rolled == () and pair.b.ch.requests == ()
    for i in (0, 1):
        ledger = pair.ledgers[i]
        assert set(ledger.filled) | set(ledger.refused) == set(ledger.taken)
        assert pair.balances(i) == pair.expected(i)
    assert versions_unique(pair.a) and versions_unique(pair.b)


@pytest.mark.parametrize("taker", [0, 1])
def test_takes_of_two_quotes_share_one_update_at_their_own_prices(taker: int) -> None:
    pair = AssetPair()
    maker = 1 - taker
    sells = pair.quote(maker, maker_sells=True, base_unit=3, quote_unit=7, size=90)  # 7 ETH per 3 TOKEN
    buys = pair.quote(maker, maker_sells=False, base_unit=1, quote_unit=2, size=50)  # 2 ETH per TOKEN
    v0 = pair.a.ch.signed_upto
    taken = pair.take_many(taker, [(*sells, 30), (*buys, 5), (*sells, 9)])
    assert len(taken) == 3
    if taker == 0:
        assert len(pair.a.ch.pending) == 1 and pair.a.ch.pending[0].swaps == tuple(taken)
    else:
        assert len(pair.b.ch.requests) == 1 and pair.b.ch.requests[0].takes == tuple(taken)
    (carrier,) = [msg for msg in pair.sent(taker) if isinstance(msg, m.ProposeSwap | m.TakeRequest)]
    assert len(carrier.quotes) == 2 and len(carrier.takes) == 3, "each quote travels once"
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest and pair.a.ch.latest is not None
    assert pair.a.ch.latest.state.version == v0 + 1, "one update"
    if taker == 1:
        (fill,) = [msg for msg in pair.sent(0) if isinstance(msg, m.ProposeFill)]
        assert fill.taken == [0, 1, 2] and fill.refused == []
    # the taker bought 39 TOKEN for 91 ETH and sold 5 TOKEN for 10 ETH
    assert pair.balances(taker) == {ETH: 1000 - 91 + 10, TOKEN: 1000 + 39 - 5}
    assert pair.balances(maker) == {ETH: 1000 + 91 - 10, TOKEN: 1000 - 39 + 5}
    assert sorted(s.base_amount for s in pair.ledgers[taker].filled.values()) == [5, 9, 30]
    assert sorted(s.base_amount for s in pair.ledgers[maker].made) == [5, 9, 30]
    made = pair.party(maker).ch
    assert (swaps.filled(made, sells[0].quote_id), swaps.filled(made, buys[0].quote_id)) == (39, 5)
    agreed(pair)


@pytest.mark.parametrize("taker", [0, 1])
def test_the_takers_own_checks_name_the_take_and_change_nothing(taker: int) -> None:
    pair = AssetPair(token=(1000, 1000))
    party = pair.party(taker)
    q, sig = pair.quote(1 - taker, maker_sells=True, base_unit=2, quote_unit=3, size=40)
    before = party.ch
    for takes, index, reason in (
        ((Swap(q, sig, 10), Swap(q, sig, 3)), 1, Reason.BAD_AMOUNT),  # 3 * 3 / 2 is not whole
        ((Swap(q, sig, 42),), 0, Reason.OVERSIZE),
        ((Swap(q, sig, 2), Swap(q, sig, 2), Swap(q, sig, 2000)), 2, Reason.OVERSIZE),
    ):
        with pytest.raises(LocalError) as err:
            transition(party.ch, ActionTake(takes, pair.clock), party.key)
        assert (err.value.take, err.value.reason) == (index, reason)
        assert party.ch == before
    with pytest.raises(LocalError) as err:
        transition(party.ch, ActionTake((), pair.clock), party.key)
    assert err.value.take is None and err.value.reason is Reason.BAD_PARAMS
    with pytest.raises(LocalError) as err:
        transition(party.ch, ActionTake((Swap(q, sig, 2),) * (MAX_TAKES + 1), pair.clock), party.key)
    assert err.value.take is None


@pytest.mark.parametrize("taker", [0, 1])
def test_a_take_that_would_overdraw_after_the_others_is_blamed_alone(taker: int) -> None:
    pair = AssetPair(eth=(20, 1000) if taker == 0 else (1000, 20))  # 20 ETH: two takes at 9, not three
    party = pair.party(taker)
    q, sig = pair.quote(1 - taker, maker_sells=True, base_unit=1, quote_unit=9, size=100)
    with pytest.raises(LocalError) as err:
        transition(party.ch, ActionTake((Swap(q, sig, 1),) * 3, pair.clock), party.key)
    assert (err.value.take, err.value.reason) == (2, Reason.INSUFFICIENT_FUNDS)
    assert len(pair.take_many(taker, [(q, sig, 1)] * 3)) == 2
    pair.deliver_all()
    assert pair.balances(taker) == {ETH: 2, TOKEN: 1002}
    agreed(pair)


def test_the_follower_as_maker_refuses_one_take_and_the_others_fill_in_the_next_update() -> None:
    pair = AssetPair()
    long = pair.quote(1, maker_sells=True, base_unit=1, quote_unit=2, size=100, ttl_ms=10_000)
    short = pair.quote(1, maker_sells=True, base_unit=1, quote_unit=3, size=100, ttl_ms=50)
    taken = pair.take_many(0, [(*long, 4), (*short, 5), (*long, 6)])  # fine by A's clock
    assert len(taken) == 3
    pair.clock += 60  # the short quote expires before B sees the take
    pair.deliver(1)  # B refuses the update, blaming take 1
    (reject,) = pair.rejects(1)
    assert (reject.take, reject.reason) == (1, "expired")
    assert swaps.filled(pair.b.ch, long[0].quote_id) == 0, "a refusal records no fill"
    pair.deliver(0)  # A proposes the other two again, on B's latest; the refused take is held meanwhile
    (again,) = pair.a.ch.pending
    assert again.kind is Kind.SWAP and again.swaps == (taken[0], taken[2])
    assert pair.ledgers[0].refused == {} and [h.swap for h in pair.a.ch.held_take_failed] == [taken[1]]
    pair.deliver_all()
    assert pair.ledgers[0].refused == {taken[1].take_id: "expired"}
    assert set(pair.ledgers[0].filled) == {taken[0].take_id, taken[2].take_id}
    assert pair.balances(0) == {ETH: 1000 - 20, TOKEN: 1010}
    assert swaps.filled(pair.b.ch, long[0].quote_id) == 10
    agreed(pair)


def test_the_leader_as_maker_refuses_one_take_and_the_others_fill_in_the_same_update() -> None:
    pair = AssetPair()
    long = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=100, ttl_ms=10_000)
    short = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=3, size=100, ttl_ms=50)
    taken = pair.take_many(1, [(*long, 4), (*short, 5), (*long, 6)])  # fine by B's clock
    assert len(taken) == 3
    pair.clock += 60  # the short quote expires before A sees the request
    pair.deliver(0)
    (fill,) = [msg for msg in pair.sent(0) if isinstance(msg, m.ProposeFill)]
    assert fill.taken == [0, 2] and [(r.index, r.reason) for r in fill.refused] == [(1, "expired")]
    assert swaps.filled(pair.a.ch, long[0].quote_id) == 10 and swaps.filled(pair.a.ch, short[0].quote_id) == 0
    pair.deliver_all()
    assert pair.ledgers[1].refused == {taken[1].take_id: "expired"}
    assert set(pair.ledgers[1].filled) == {taken[0].take_id, taken[2].take_id}
    assert pair.balances(1) == {ETH: 1000 - 20, TOKEN: 1010}
    agreed(pair)


def test_takes_overfilling_a_quote_together_are_refused_at_the_take_that_overfills() -> None:
    pair = AssetPair()
    q, sig = pair.quote(1, maker_sells=True, base_unit=1, quote_unit=2, size=10)  # B's quote
    latest = pair.b.ch.latest
    assert latest is not None
    takes = (Swap(q, sig, 6), Swap(q, sig, 3), Swap(q, sig, 2))  # 11 of 10
    state = latest.state
    for swap in takes:
        state = replace(state, transfers=swap_transfers(state, swap, maker=1))
    state = replace(state, version=latest.state.version + 1)
    v = latest.state.version
    msg = m.ProposeSwap.of(state, pair.a.key.sign_digest(pair.a.ch.digest(state)), 9, v, takes)
    ch, effects = receive(pair.b.ch, m.decode(m.encode(msg)), pair.b.key, pair.clock)
    assert ch == pair.b.ch
    (effect,) = effects
    assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
    assert (effect.message.take, effect.message.reason) == (2, "oversize")
    # the same state with one take's amount changed is no take of these quotes: the whole update is refused
    altered = replace(state, transfers=(state.transfers[0] + 1, state.transfers[1]))
    msg = m.ProposeSwap.of(altered, pair.a.key.sign_digest(pair.a.ch.digest(altered)), 10, v, takes[:2])
    _, effects = receive(pair.b.ch, m.decode(m.encode(msg)), pair.b.key, pair.clock)
    (effect,) = effects
    assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
    assert (effect.message.take, effect.message.reason) == (-1, "altered")


def test_the_follower_asking_to_overfill_a_quote_gets_the_takes_that_fit() -> None:
    """The taker's own checks see each take alone (any could fill the quote); the maker sees them
    together and refuses the one that overfills, in the fill that carries the others."""
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=2, size=10)
    taken = pair.take_many(1, [(q, sig, 6), (q, sig, 3), (q, sig, 2)])  # 11 of 10
    assert len(taken) == 3
    pair.deliver_all()
    (fill,) = [msg for msg in pair.sent(0) if isinstance(msg, m.ProposeFill)]
    assert fill.taken == [0, 1] and [(r.index, r.reason) for r in fill.refused] == [(2, "oversize")]
    assert pair.ledgers[1].refused == {taken[2].take_id: "oversize"}
    assert swaps.filled(pair.a.ch, q.quote_id) == 9
    agreed(pair)


@pytest.mark.parametrize("taker", [0, 1])
def test_batched_takes_survive_a_restart_and_a_lost_link(taker: int) -> None:
    pair = AssetPair()
    q, sig = pair.quote(1 - taker, maker_sells=False, base=ETH, quote=TOKEN, base_unit=1, quote_unit=4, size=200)
    pair.take_many(taker, [(q, sig, n) for n in range(1, 21)])  # 210 base would exceed 200: the last one is
    party = pair.party(taker)
    party.channel = decode_channel(encode_channel(party.ch))  # restarted from its stored form
    if taker == 0:
        assert pair.a.ch.pending and len(pair.a.ch.pending[0].swaps) == 20
    else:
        assert pair.b.ch.requests and len(pair.b.ch.requests[0].takes) == 20
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    refused = pair.ledgers[taker].refused
    assert list(refused.values()) == ["oversize"]  # take 20 (of 20 base) leaves only 10: refused alone
    assert sum(s.base_amount for s in pair.ledgers[taker].filled.values()) == 190
    assert swaps.filled(pair.party(1 - taker).ch, q.quote_id) == 190
    assert pair.balances(taker) == {ETH: 1000 - 190, TOKEN: 1000 + 760}
    agreed(pair)


@pytest.mark.parametrize("leader_takes", [True, False])
def test_a_close_with_my_proposal_whose_accept_was_lost_fills_its_takes_and_i_can_settle_it(
    leader_takes: bool,
) -> None:
    """A's proposal (its takes of B's quotes, or its fill of B's take request) is countersigned, but B's
    Accept never reaches A; B closes with it. A knows the state (it signed it), so it settles it, and at
    the conclusion the takes it carries are filled: as taker, or as maker."""
    pair = AssetPair()
    q, sig = pair.quote(1 if leader_takes else 0, maker_sells=True, base_unit=1, quote_unit=2, size=100)
    taken = pair.take_many(0 if leader_takes else 1, [(q, sig, 10), (q, sig, 20)])
    if not leader_takes:
        pair.deliver(0)  # A carries the request in a fill
    pair.deliver(1)  # B countersigns; its Accept never reaches A
    pair.links[0].clear()
    recorded = pair.b.ch.latest
    assert recorded is not None and recorded.state.version == pair.a.ch.pending[0].state.version
    finalizes_at = CHAIN_START + 100
    pair.feed(pair.a, ChainDisputeRecorded(recorded.state.version, finalizes_at, state_hash(recorded.state)))
    assert not any(isinstance(e, SubmitTxChallenge) for e in pair.a.effects), "nothing newer to challenge with"
    pair.feed(pair.a, ChainTime(finalizes_at))
    (settle,) = [e for e in pair.a.effects if isinstance(e, SubmitTxSettle)]
    assert settle.state == recorded.state
    pair.feed(pair.a, ChainConcluded(recorded.state.version))
    ledger = pair.ledgers[0]
    if leader_takes:
        assert set(ledger.filled) == {s.take_id for s in taken} and not ledger.refused
    else:
        assert sorted(s.base_amount for s in ledger.made) == [10, 20]
    (tally,) = pair.a.ch.positions
    sign = 1 if leader_takes else -1  # A bought the TOKEN B sold, or sold its own
    assert (tally.base_net, tally.quote_net, tally.trades) == (sign * 30, -sign * 60, 2)
    outcome = pair.a.ch.outcome
    assert outcome is not None and outcome.paid is not None and not outcome.loss
    assert (outcome.paid[0][0], outcome.paid[1][0]) == (pair.expected(0)[ETH], pair.expected(0)[TOKEN])


@pytest.mark.parametrize("maker", [0, 1])
def test_a_reused_quote_id_shares_one_fill_record_kept_for_the_longest_expiry(maker: int) -> None:
    """Quote ids repeat only if the maker's clock steps back across a restart; then both quotes count
    against one record, which lives as long as the later of them, so neither is ever overfilled."""
    pair = AssetPair()
    party = pair.party(maker)
    short, short_sig = swaps.make_quote(party.ch, party.key, 77, TOKEN, ETH, True, 1, 2, 10, pair.clock + 100)
    long, long_sig = swaps.make_quote(party.ch, party.key, 77, TOKEN, ETH, True, 1, 2, 10, pair.clock + 100_000)
    pair.take_many(1 - maker, [(short, short_sig, 5), (long, long_sig, 5)])
    pair.deliver_all()
    pair.clock += 200  # the short one expired; the long one is live
    taken = pair.take_many(1 - maker, [(long, long_sig, 10)])
    pair.deliver_all()
    assert pair.ledgers[1 - maker].refused == {taken[0].take_id: "oversize"}
    assert swaps.filled(party.ch, 77) == 10
    agreed(pair)


def test_a_channel_stored_before_one_state_per_version_is_refused_not_misread() -> None:
    """Stored by a release before decision 0007: a proposal named no `base` (and before batching carried
    one `swap`), and the channel kept tie-break and held-receipt fields. Such a document cannot be read
    as a channel of this design (which proposal builds on which is not in it): it is refused as
    unreadable, never read as something else."""
    pair = AssetPair()
    q, sig = pair.quote(1, maker_sells=True, base_unit=1, quote_unit=2, size=100)
    pair.take_many(0, [(q, sig, 10)])
    pair.pay_asset(0, ETH, 3)
    raw = encode_channel(pair.a.ch)
    assert decode_channel(raw) == pair.a.ch
    doc = msgspec.json.decode(raw)
    take, pay = doc["pending"]
    for proposal in (take, pay):
        for name in ("base", "requests", "taken", "refused"):
            del proposal[name]
    take["swap"] = take.pop("swaps")[0]
    pay["swap"] = None
    del pay["swaps"]
    for name in ("rolled", "requests", "next_rid", "last_rid", "signed_upto"):
        del doc[name]
    doc.update(orphan_upto=0, chain_version=-1, held_received=[], held_filled=[])
    with pytest.raises(LocalError) as err:
        decode_channel(msgspec.json.encode(doc))
    assert err.value.reason is Reason.BAD_MESSAGE

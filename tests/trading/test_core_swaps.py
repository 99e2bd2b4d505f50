"""Swaps through the pure channel machine: every refusal reason, pipelining, tie-breaks, lost messages,
and the bounded record of fills."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import MAX_IN_FLIGHT, Kind
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import NotifyFilled, ReceiveMessage, SendMessage
from statechannel.core.machine import receive, transition
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.quotes import Quote, Swap, sign_quote, swap_transfers
from statechannel.core.types import ETH
from tests.core.harness import DOMAIN
from tests.trading.harness import TOKEN, AssetPair


def test_a_take_swaps_both_assets_at_exactly_the_quoted_price() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=3, quote_unit=7, size=90)  # A sells TOKEN, 7 ETH per 3
    pair.take(1, q, sig, 30)
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balances(0) == {ETH: 1000 + 70, TOKEN: 1000 - 30}
    assert pair.balances(1) == {ETH: 1000 - 70, TOKEN: 1000 + 30}
    (filled,) = pair.ledgers[1].filled.values()
    assert filled.base_amount == 30 and filled.quote_amount == 70
    assert [s.base_amount for s in pair.ledgers[0].made] == [30]
    assert swaps.filled(pair.a.ch, q.quote_id) == 30
    assert not any(isinstance(e, NotifyFilled) and e.maker for e in pair.b.effects)


@pytest.mark.parametrize("maker", [0, 1])
@pytest.mark.parametrize("maker_sells", [True, False])
def test_every_direction(maker: int, maker_sells: bool) -> None:
    pair = AssetPair()
    taker = 1 - maker
    q, sig = pair.quote(maker, maker_sells=maker_sells, base=ETH, quote=TOKEN, base_unit=1, quote_unit=5)
    pair.take(taker, q, sig, 20)
    pair.deliver_all()
    sign = 1 if maker_sells else -1  # the maker gives the base when it sells
    assert pair.balances(maker) == {ETH: 1000 - sign * 20, TOKEN: 1000 + sign * 100}
    assert pair.balances(taker) == {ETH: 1000 + sign * 20, TOKEN: 1000 - sign * 100}
    for i in (0, 1):
        assert pair.balances(i) == {asset: pair.funds[asset][i] + pair.ledgers[i].net[asset] for asset in (ETH, TOKEN)}


class Forger:
    """The taker, misbehaving: builds swap proposals by hand, bypassing its own checks."""

    def __init__(self, pair: AssetPair) -> None:
        self.pair = pair
        self.before = pair.a.ch

    def propose(
        self, q: Quote, sig: Signature, base_amount: int, transfers: tuple[int, ...] | None = None, **state: object
    ) -> m.Reject | None:
        pair, b = self.pair, self.pair.b
        latest = pair.a.ch.latest
        assert latest is not None
        swap = Swap(q, sig, base_amount)
        if transfers is None:
            transfers = swap_transfers(latest.state, swap, maker=0)
        fields: dict[str, object] = {"version": latest.state.version + 1, "transfers": transfers, **state}
        new = replace(latest.state, **fields)  # type: ignore[arg-type]
        msg = m.ProposeSwap.of(new, b.key.sign_digest(b.ch.digest(new)), 77, (swap,))
        ch, effects = receive(pair.a.ch, m.decode(m.encode(msg)), pair.a.key, pair.clock)
        if isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Reject):
            assert ch == pair.a.ch, "a refusal changes nothing"
            return effects[0].message
        pair.a.channel = ch
        return None

    def reason(self, *args: object, **kwargs: object) -> str:
        reject = self.propose(*args, **kwargs)  # type: ignore[arg-type]
        assert reject is not None
        return reject.reason


def test_every_refusal_of_the_maker_names_its_reason() -> None:
    pair = AssetPair()
    forger = Forger(pair)
    q, sig = pair.quote(0, maker_sells=True, base_unit=2, quote_unit=3, size=40, ttl_ms=5_000)
    latest = pair.a.ch.latest
    assert latest is not None
    exact = swap_transfers(latest.state, Swap(q, sig, 10), maker=0)

    # the state gives the maker less than the quote: 10 TOKEN for 14 ETH instead of 15
    assert forger.reason(q, sig, 10, transfers=(exact[0] + 1, exact[1])) == "altered"
    assert forger.reason(q, sig, 10, transfers=(exact[0], exact[1] + 1)) == "altered"  # more base than agreed
    assert forger.reason(q, sig, 10, is_final=True) == "altered"
    assert forger.reason(q, sig, 10, app_data=b"\x01" * 32) == "altered"
    # the quote itself altered (a better price): no longer the maker's signature
    assert forger.reason(replace(q, quote_unit=2), sig, 10) == "bad_signature"
    # a quote the taker signed itself
    assert forger.reason(q, sign_quote(DOMAIN, q, pair.b.key), 10) == "bad_signature"
    assert forger.reason(q, sig, 42) == "oversize"
    assert forger.reason(q, sig, 3, transfers=exact) == "bad_amount"  # 3 * 3 / 2 is not whole
    assert forger.reason(q, sig, 10, version=latest.state.version + 2) == "version_gap"
    pair.clock = q.expires_at_ms
    assert forger.reason(q, sig, 10) == "expired"
    pair.clock -= 1
    assert forger.propose(q, sig, 30) is None  # the last millisecond still counts
    assert forger.reason(q, sig, 12) == "oversize"  # 10 left
    assert forger.propose(q, sig, 10) is None
    assert forger.reason(q, sig, 2) == "oversize"
    assert swaps.filled(pair.a.ch, q.quote_id) == 40

    poor = AssetPair(token=(5, 1000))
    q, sig = poor.quote(0, maker_sells=True, size=100)
    assert Forger(poor).reason(q, sig, 6) == "insufficient_funds"  # A holds only 5 TOKEN


def test_a_plain_propose_cannot_smuggle_a_swap() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0)
    latest = pair.a.ch.latest
    assert latest is not None
    new = replace(
        latest.state, version=latest.state.version + 1, transfers=swap_transfers(latest.state, Swap(q, sig, 5), 0)
    )
    msg = m.Propose(m.WireState.of(new), pair.b.key.sign_digest(pair.b.ch.digest(new)).to_bytes(), 5)
    _, effects = receive(pair.a.ch, msg, pair.a.key)
    assert isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Reject)
    assert effects[0].message.reason == "illegal_move"


def test_a_swap_proposal_needs_the_receivers_clock() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0)
    pair.take(1, q, sig, 5)
    msg = pair.links[0].popleft()
    with pytest.raises(LocalError):
        receive(pair.a.ch, msg, pair.a.key)
    with pytest.raises(LocalError):
        transition(pair.a.ch, ReceiveMessage(msg), pair.a.key)


def test_the_taker_refuses_locally_what_it_can_tell() -> None:
    pair = AssetPair(eth=(1000, 10))
    q, sig = pair.quote(0, base_unit=1, quote_unit=2, size=100, ttl_ms=1_000)
    cases: list[tuple[Quote, Signature, int, Reason]] = [
        (q, sig, 6, Reason.INSUFFICIENT_FUNDS),  # 12 ETH, B has 10
        (q, sig, 101, Reason.OVERSIZE),
        (q, sig, 0, Reason.BAD_AMOUNT),
        (replace(q, quote_unit=1), sig, 2, Reason.BAD_SIGNATURE),
        (replace(q, channel_id=b"\x09" * 32), sig, 2, Reason.WRONG_CHANNEL),
        (q, sign_quote(DOMAIN, q, pair.b.key), 2, Reason.BAD_SIGNATURE),  # its own quote: not the peer's
    ]
    for quote, signature, amount, reason in cases:
        with pytest.raises(LocalError) as err:
            pair.take(1, quote, signature, amount)
        assert err.value.reason is reason
    big, big_sig = pair.quote(0, base_unit=1, quote_unit=1, size=10**6)
    with pytest.raises(LocalError) as err:
        pair.take(1, big, big_sig, 1001)  # A has only 1000 TOKEN to deliver
    assert err.value.reason is Reason.INSUFFICIENT_FUNDS
    pair.clock += 1_000
    with pytest.raises(LocalError) as err:
        pair.take(1, q, sig, 2)
    assert err.value.reason is Reason.EXPIRED
    assert pair.b.ch.pending == () and not pair.links[0]


def test_pipelined_takes_and_an_oversize_one_rolls_back_only_itself_and_later() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    for _ in range(4):
        pair.take(1, q, sig, 3)  # 3 + 3 + 3 fit, the fourth does not
    assert [p.kind for p in pair.b.ch.pending] == [Kind.SWAP] * 4
    pair.deliver_all()
    ledger = pair.ledgers[1]
    assert len(ledger.filled) == 3 and list(ledger.refused.values()) == ["oversize"]
    assert pair.balances(1) == {ETH: 1000 - 18, TOKEN: 1000 + 9}
    assert swaps.filled(pair.a.ch, q.quote_id) == 9
    for _ in range(MAX_IN_FLIGHT):
        pair.take(1, *pair.quote(0, size=1), 1)
    with pytest.raises(LocalError) as err:
        pair.take(1, q, sig, 1)
    assert err.value.reason is Reason.PIPELINE_FULL
    pair.deliver_all()
    assert len(ledger.filled) == 3 + MAX_IN_FLIGHT


def test_a_refusal_mid_pipeline_retries_the_later_takes_and_payments() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=5)
    pair.take(1, q, sig, 6 - 1)
    pair.take(1, q, sig, 1)  # oversize once the first filled the quote
    pair.pay_asset(1, TOKEN, 7)
    pair.take(1, *pair.quote(0, size=5), 2)
    pair.deliver_all()
    ledger = pair.ledgers[1]
    assert sorted(ledger.refused.values()) == ["oversize"]
    assert len(ledger.filled) == 2 and set(pair.b.sent) == {next(iter(pair.b.requested))}
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balances(1) == {ETH: 1000 - 14, TOKEN: 1000 + 5 + 2 - 7}


def test_tie_break_a_wins_b_retakes_on_top() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0)
    pair.pay_asset(0, ETH, 11)  # A proposes a payment ...
    pair.take(1, q, sig, 4)  # ... while B proposes a take of the same version
    pair.deliver_all()
    assert any(r.reason == "conflict" for r in pair.rejects(0))
    assert len(pair.ledgers[1].filled) == 1 and not pair.ledgers[1].refused
    assert pair.balances(1) == {ETH: 1000 + 11 - 8, TOKEN: 1000 + 4}


def test_tie_break_the_maker_as_b_drops_its_payment_and_accepts_the_take() -> None:
    pair = AssetPair()
    q, sig = pair.quote(1, maker_sells=False)  # B buys TOKEN at 2 ETH
    pair.pay_asset(1, ETH, 9)
    pair.take(0, q, sig, 4)  # A sells 4 TOKEN to B for 8 ETH
    pair.deliver_all()
    assert len(pair.ledgers[0].filled) == 1 and pair.b.sent and not pair.b.failed
    assert pair.balances(0) == {ETH: 1000 + 8 + 9, TOKEN: 1000 - 4}
    assert pair.a.ch.latest == pair.b.ch.latest


def test_lost_accept_then_resend_fills_once() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    pair.take(1, q, sig, 10)
    pair.deliver(0)  # the maker accepts; the accept is lost
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert len(pair.ledgers[1].filled) == 1 and len(pair.ledgers[0].made) == 1
    assert swaps.filled(pair.a.ch, q.quote_id) == 10


def test_a_duplicated_swap_proposal_is_not_counted_twice() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    pair.take(1, q, sig, 10)
    pair.links[0].append(pair.links[0][0])
    pair.deliver_all()
    assert swaps.filled(pair.a.ch, q.quote_id) == 10
    assert len(pair.ledgers[0].made) == 1 and not pair.ledgers[1].refused


def test_a_resent_take_after_a_drop_is_proposed_again() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    pair.take(1, q, sig, 4)
    pair.disconnect_and_reconnect()  # the proposal is lost; the resync resends it as a swap
    pair.deliver_all()
    assert len(pair.ledgers[1].filled) == 1 and swaps.filled(pair.a.ch, q.quote_id) == 4


def test_fill_records_expire_with_their_quotes_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = AssetPair()
    first = pair.quote(0, size=10, ttl_ms=1_000)
    pair.take(1, *first, 1)
    pair.deliver_all()
    assert [f.quote_id for f in pair.a.ch.fills] == [first[0].quote_id]
    pair.clock += 1_000
    second = pair.quote(0, size=10, ttl_ms=1_000)
    pair.take(1, *second, 1)
    pair.deliver_all()
    assert [f.quote_id for f in pair.a.ch.fills] == [second[0].quote_id]  # the expired record is gone
    monkeypatch.setattr(swaps, "MAX_LIVE_QUOTES", 2)
    pair.take(1, *pair.quote(0), 1)
    pair.take(1, *pair.quote(0), 1)
    pair.deliver_all()
    assert list(pair.ledgers[1].refused.values()) == ["quote_limit"]
    assert len(pair.a.ch.fills) == 2


def test_a_channel_with_swaps_in_flight_survives_its_stored_form() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    pair.take(1, q, sig, 2)
    pair.deliver_all()
    pair.take(1, q, sig, 2)
    for party in (pair.a, pair.b):
        assert decode_channel(encode_channel(party.ch)) == party.ch
    assert pair.b.ch.pending[0].swaps


def test_a_stranger_cannot_take_with_a_quote_of_another_maker() -> None:
    pair = AssetPair()
    stranger = PrivateKey(b"\x05" * 32)
    q = Quote(pair.a.ch.channel_id, 1, TOKEN, ETH, True, 1, 1, 10, pair.clock + 1000)
    assert Forger(pair).reason(q, sign_quote(DOMAIN, q, stranger), 1) == "bad_signature"

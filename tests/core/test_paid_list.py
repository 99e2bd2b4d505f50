"""The payments an update coalesces travel with it (informational: the money is the signed state), so
the payee records one row per payment as the payer does. A list that does not add up is refused and
changes nothing."""

from __future__ import annotations

import msgspec
import pytest

from statechannel.core import messages as m
from statechannel.core.errors import LocalError, RemoteError
from statechannel.core.io import ActionPay, NotifyReceived, Payment, SendMessage
from statechannel.core.machine import receive, transition
from statechannel.core.persist import encode_channel
from statechannel.core.types import ETH
from tests.core.harness import Pair, Party


def _listed(party: Party) -> list[tuple[bytes, int]]:
    return [x for e in party.effects if isinstance(e, NotifyReceived) for x in e.payments]


def test_both_directions_list_every_payment_of_a_coalesced_update() -> None:
    pair = Pair(seed="paid")
    pair.feed(pair.a, _pay(pair, 0, (1, 2, 3)))
    pair.deliver_all()
    assert _listed(pair.b) == [(ETH, 1), (ETH, 2), (ETH, 3)]
    pair.feed(pair.b, _pay(pair, 1, (4, 5)))
    pair.deliver_all()
    assert _listed(pair.a) == [(ETH, 4), (ETH, 5)]
    assert pair.a.received == 9 and pair.b.received == 6


def _pay(pair: Pair, i: int, amounts: tuple[int, ...]) -> ActionPay:
    return ActionPay(tuple(Payment(f"{'AB'[i]}{n}-{v}", ETH, v) for n, v in enumerate(amounts)))


BAD_LISTS = [
    [(0, b"\x01"), (0, b"\x02")],  # adds up to 3, the state moves 6
    [(0, b"\x06"), (0, b"\x01")],  # more than the state moves
    [(0, b"\x00\x06")],  # a leading zero: not the one way to write 6
    [(0, b"")],  # no amount
    [(0, b"\x06"), (0, b"\x00")],  # a zero payment
    [(1, b"\x06")],  # an asset the channel does not have
    [(0, b"\x01" * 33)],  # beyond 32 bytes
]


@pytest.mark.parametrize("paid", BAD_LISTS)
def test_a_proposal_whose_payment_list_does_not_add_up_is_refused_and_changes_nothing(
    paid: list[tuple[int, bytes]],
) -> None:
    pair = Pair(seed="bad list")
    pair.feed(pair.a, _pay(pair, 0, (1, 2, 3)))
    honest = pair.links[1].popleft()
    assert isinstance(honest, m.Propose) and len(honest.paid) == 3
    hostile = m.decode(m.encode(msgspec.structs.replace(honest, paid=paid)))  # through the real codec
    before = encode_channel(pair.b.ch)
    try:
        new, effects = receive(pair.b.ch, hostile, pair.b.key, pair.now_ms)
    except RemoteError:
        new, effects = pair.b.ch, ()
    assert not any(isinstance(e, NotifyReceived) for e in effects)
    assert not any(isinstance(e, SendMessage) and isinstance(e.message, m.Accept) for e in effects)
    assert encode_channel(new) == before
    pair.links[1].appendleft(honest)  # the honest proposal still goes through
    pair.deliver_all()
    assert _listed(pair.b) == [(ETH, 1), (ETH, 2), (ETH, 3)]


@pytest.mark.parametrize("paid", BAD_LISTS)
def test_a_pay_request_whose_payment_list_does_not_add_up_is_refused_and_changes_nothing(
    paid: list[tuple[int, bytes]],
) -> None:
    pair = Pair(seed="bad request")
    cid = pair.a.ch.channel_id
    hostile = m.decode(m.encode(m.PayRequest(cid, 1, [ETH], [m.u256(6)], paid)))
    before = encode_channel(pair.a.ch)
    new, effects = receive(pair.a.ch, hostile, pair.a.key, pair.now_ms)
    assert [type(e.message).__name__ for e in effects if isinstance(e, SendMessage)] == ["Refuse"]
    assert encode_channel(new) == before


def test_a_payment_list_longer_than_the_bound_is_undecodable() -> None:
    pair = Pair(seed="long list")
    frame = m.encode(m.PayRequest(pair.a.ch.channel_id, 1, [ETH], [m.u256(m.MAX_PAID + 1)], [(0, b"\x01")] * 513))
    with pytest.raises(RemoteError):
        m.decode(frame)
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(frame, type=m.PayRequest)


def test_a_peer_that_lists_nothing_is_recorded_per_asset_as_before() -> None:
    pair = Pair(seed="old peer")
    pair.feed(pair.a, _pay(pair, 0, (1, 2, 3)))
    honest = pair.links[1].popleft()
    assert isinstance(honest, m.Propose)
    pair.links[1].appendleft(msgspec.structs.replace(honest, paid=[]))
    pair.deliver_all()
    assert _listed(pair.b) == [(ETH, 6)]


# ------------------------------------------------------------------ batches (decision 0012)


def _batch(i: int, total: int, count: int) -> ActionPay:
    return ActionPay((Payment(f"{'AB'[i]}-batch", ETH, total, count),))


def _counted(party: Party) -> list[tuple[tuple[bytes, int], int]]:
    return [
        (x, c)
        for e in party.effects
        if isinstance(e, NotifyReceived)
        for x, c in zip(e.payments, e.counts or (1,) * len(e.payments), strict=True)
    ]


def test_a_batch_travels_as_one_listed_entry_with_its_count_both_ways() -> None:
    pair = Pair(deposit_a=10**6, seed="batch")
    pair.feed(pair.a, _batch(0, 300_000, 100_000))
    honest = pair.links[1][0]
    assert isinstance(honest, m.Propose) and len(honest.paid) == 1 and honest.counts == [100_000]
    pair.deliver_all()
    assert _counted(pair.b) == [((ETH, 300_000), 100_000)]
    assert pair.a.sent == {"A-batch": 300_000}
    pair.feed(pair.b, _batch(1, 10, 4))
    request = pair.links[0][0]
    assert isinstance(request, m.PayRequest) and request.counts == [4]
    pair.deliver_all()
    assert _counted(pair.a) == [((ETH, 10), 4)]
    assert pair.a.ch.latest is not None and pair.a.ch.latest.state.transfers == (300_000 - 10,)


def test_single_payments_send_no_counts_as_before() -> None:
    pair = Pair(seed="no counts")
    pair.feed(pair.a, _pay(pair, 0, (1, 2)))
    honest = pair.links[1][0]
    assert isinstance(honest, m.Propose) and honest.counts == []


@pytest.mark.parametrize(
    "count", [0, -1, 2**63, 2**64 + 5, True, 1.5], ids=["zero", "negative", "past-int64", "past-u64", "bool", "float"]
)
def test_a_bool_float_or_out_of_range_batch_count_of_my_own_is_refused(count: object) -> None:
    pair = Pair(seed="own count")
    before = encode_channel(pair.a.ch)
    with pytest.raises(LocalError):
        transition(pair.a.ch, ActionPay((Payment("x", ETH, 2**70, count),)), pair.a.key)  # type: ignore[arg-type]
    assert encode_channel(pair.a.ch) == before


def test_a_batch_counting_more_payments_than_units_is_refused_before_it_is_signed() -> None:
    pair = Pair(seed="own lie")
    before = encode_channel(pair.a.ch)
    with pytest.raises(LocalError):
        transition(pair.a.ch, _batch(0, 5, 6), pair.a.key)
    with pytest.raises(LocalError):
        transition(pair.b.ch, _batch(1, 5, 6), pair.b.key)
    assert encode_channel(pair.a.ch) == before


BAD_COUNTS = [
    ([(0, b"\x06")], [7]),  # 7 payments of at least one unit cannot total 6
    ([(0, b"\x06")], [3, 3]),  # more counts than listed entries
    ([(0, b"\x02"), (0, b"\x04")], [2]),  # fewer
    ([], [3]),  # counts without a list
    ([(0, b"\x05")], [5]),  # the count fits, the total does not match what the state moves (6)
    ([(0, b"\x06")], [0]),  # no payments: undecodable
    ([(0, b"\x06")], [2**63]),  # past what a row can count: undecodable
]


@pytest.mark.parametrize("paid,counts", BAD_COUNTS)
def test_a_proposal_with_a_bogus_batch_count_or_total_is_refused_and_changes_nothing(
    paid: list[tuple[int, bytes]], counts: list[int]
) -> None:
    pair = Pair(seed="bad count")
    pair.feed(pair.a, _batch(0, 6, 3))
    honest = pair.links[1].popleft()
    assert isinstance(honest, m.Propose) and honest.counts == [3]
    before = encode_channel(pair.b.ch)
    try:
        hostile = m.decode(m.encode(msgspec.structs.replace(honest, paid=paid, counts=counts)))
        new, effects = receive(pair.b.ch, hostile, pair.b.key, pair.now_ms)
    except RemoteError:
        new, effects = pair.b.ch, ()
    assert not any(isinstance(e, NotifyReceived) for e in effects)
    assert not any(isinstance(e, SendMessage) and isinstance(e.message, m.Accept) for e in effects)
    assert encode_channel(new) == before
    pair.links[1].appendleft(honest)  # the honest batch still goes through
    pair.deliver_all()
    assert _counted(pair.b) == [((ETH, 6), 3)]


@pytest.mark.parametrize("paid,counts", BAD_COUNTS)
def test_a_pay_request_with_a_bogus_batch_count_or_total_is_refused_and_changes_nothing(
    paid: list[tuple[int, bytes]], counts: list[int]
) -> None:
    pair = Pair(seed="bad request count")
    cid = pair.a.ch.channel_id
    before = encode_channel(pair.a.ch)
    try:
        hostile = m.decode(m.encode(m.PayRequest(cid, 1, [ETH], [m.u256(6)], paid, counts)))
    except RemoteError:
        return  # undecodable: nothing reaches the machine
    new, effects = receive(pair.a.ch, hostile, pair.a.key, pair.now_ms)
    assert [type(e.message).__name__ for e in effects if isinstance(e, SendMessage)] == ["Refuse"]
    assert encode_channel(new) == before

"""The payments an update coalesces travel with it (informational: the money is the signed state), so
the payee records one row per payment as the payer does. A list that does not add up is refused and
changes nothing."""

from __future__ import annotations

import msgspec
import pytest

from statechannel.core import messages as m
from statechannel.core.errors import RemoteError
from statechannel.core.io import ActionPay, NotifyReceived, Payment, SendMessage
from statechannel.core.machine import receive
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

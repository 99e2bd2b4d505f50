"""Quotes as values: exact-price arithmetic, validation, the wire codec, and the EIP-712 hash against
eth-account's independent encoder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from statechannel.core import messages as m
from statechannel.core.crypto import PrivateKey, recover
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.quotes import MAX_TAKES, UINT64_MAX, Quote, Swap, quote_digest, sign_quote, swap_transfers
from statechannel.core.types import ETH, Domain, State, to_checksum
from tests.trading.harness import TOKEN

CID = b"\x42" * 32
QUOTE = Quote(CID, 7, TOKEN, ETH, True, 3, 7, 30, 1_000)
DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
QUOTE_FIELDS = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "quoteId", "type": "uint64"},
    {"name": "base", "type": "address"},
    {"name": "quote", "type": "address"},
    {"name": "makerSells", "type": "bool"},
    {"name": "baseUnit", "type": "uint256"},
    {"name": "quoteUnit", "type": "uint256"},
    {"name": "size", "type": "uint256"},
    {"name": "expiresAtMs", "type": "uint64"},
]


def test_quote_amount_is_exact_or_refused() -> None:
    assert QUOTE.quote_amount(3) == 7
    assert QUOTE.quote_amount(6) == 14
    assert QUOTE.quote_amount(30) == 70
    for bad in (1, 2, 4, 29):  # 7 * n / 3 is not whole
        with pytest.raises(LocalError) as err:
            QUOTE.quote_amount(bad)
        assert err.value.reason is Reason.BAD_AMOUNT
    for nonsense in (0, -3, True, 3.0):
        with pytest.raises(LocalError) as err:
            QUOTE.quote_amount(nonsense)  # type: ignore[arg-type]
        assert err.value.reason is Reason.BAD_AMOUNT


@given(base_unit=st.integers(1, 10**30), quote_unit=st.integers(1, 10**30), base_amount=st.integers(1, 10**30))
def test_quote_amount_never_rounds(base_unit: int, quote_unit: int, base_amount: int) -> None:
    q = replace(QUOTE, base_unit=base_unit, quote_unit=quote_unit)
    try:
        amount = q.quote_amount(base_amount)
    except LocalError:
        assert base_amount * quote_unit % base_unit != 0
    else:
        assert amount * base_unit == base_amount * quote_unit


def test_quote_validates_itself() -> None:
    cases: list[tuple[dict[str, Any], Reason]] = [
        ({"base": ETH, "quote": ETH}, Reason.BAD_ASSETS),
        ({"base_unit": 0}, Reason.BAD_AMOUNT),
        ({"quote_unit": 0}, Reason.BAD_AMOUNT),
        ({"size": 0}, Reason.BAD_AMOUNT),
        ({"quote_id": UINT64_MAX + 1}, Reason.BAD_AMOUNT),
        ({"expires_at_ms": -1}, Reason.BAD_AMOUNT),
        ({"channel_id": b"\x01"}, Reason.BAD_CHANNEL_ID),
        ({"base": b"\x01" * 19}, Reason.BAD_ADDRESS),
    ]
    for change, reason in cases:
        with pytest.raises(LocalError) as err:
            replace(QUOTE, **change)
        assert err.value.reason is reason, change


def test_swap_moves_both_assets_in_opposite_directions() -> None:
    state = State(CID, 5, (ETH, TOKEN), (10, -4))
    sig = sign_quote(Domain(31337, b"\xad" * 20), QUOTE, PrivateKey(b"\x07" * 32))
    sells = Swap(QUOTE, sig, 6)
    # maker A sells 6 TOKEN (A -> B: +6) for 14 ETH (B -> A: -14)
    assert swap_transfers(state, sells, maker=0) == (10 - 14, -4 + 6)
    assert swap_transfers(state, sells, maker=1) == (10 + 14, -4 - 6)
    buys = Swap(replace(QUOTE, maker_sells=False), sig, 6)
    assert swap_transfers(state, buys, maker=0) == (10 + 14, -4 - 6)
    with pytest.raises(LocalError) as err:
        swap_transfers(State(CID, 5, (ETH,), (0,)), sells, maker=0)
    assert err.value.reason is Reason.BAD_ASSETS


def _reference_digest(d: Domain, q: Quote) -> bytes:
    message = {
        "types": {"EIP712Domain": DOMAIN_FIELDS, "Quote": QUOTE_FIELDS},
        "primaryType": "Quote",
        "domain": {
            "name": d.name,
            "version": d.version,
            "chainId": d.chain_id,
            "verifyingContract": to_checksum(d.adjudicator),
        },
        "message": {
            "channelId": q.channel_id,
            "quoteId": q.quote_id,
            "base": to_checksum(q.base),
            "quote": to_checksum(q.quote),
            "makerSells": q.maker_sells,
            "baseUnit": q.base_unit,
            "quoteUnit": q.quote_unit,
            "size": q.size,
            "expiresAtMs": q.expires_at_ms,
        },
    }
    return bytes(_hash_eip191_message(encode_typed_data(full_message=message)))


@given(
    chain_id=st.integers(0, 2**64),
    quote_id=st.integers(0, UINT64_MAX),
    maker_sells=st.booleans(),
    units=st.tuples(st.integers(1, 2**255 - 1), st.integers(1, 2**255 - 1), st.integers(1, 2**255 - 1)),
    expiry=st.integers(0, UINT64_MAX),
)
def test_quote_digest_matches_eth_account(
    chain_id: int, quote_id: int, maker_sells: bool, units: tuple[int, int, int], expiry: int
) -> None:
    d = Domain(chain_id, b"\xad" * 20)
    q = Quote(CID, quote_id, TOKEN, ETH, maker_sells, units[0], units[1], units[2], expiry)
    assert quote_digest(d, q) == _reference_digest(d, q)


def test_signature_binds_every_field_and_the_domain() -> None:
    key = PrivateKey(b"\x07" * 32)
    d = Domain(31337, b"\xad" * 20)
    sig = sign_quote(d, QUOTE, key)
    assert recover(quote_digest(d, QUOTE), sig) == key.address
    for change in ({"quote_unit": 8}, {"size": 31}, {"maker_sells": False}, {"expires_at_ms": 1_001}):
        assert recover(quote_digest(d, replace(QUOTE, **change)), sig) != key.address
    assert recover(quote_digest(Domain(1, b"\xad" * 20), QUOTE), sig) != key.address


def test_wire_round_trip_and_malformed_quotes() -> None:
    key = PrivateKey(b"\x07" * 32)
    sig = sign_quote(Domain(31337, b"\xad" * 20), QUOTE, key)
    offer = m.QuoteOffer(m.WireQuote.of(QUOTE), sig.to_bytes())
    back = m.decode(m.encode(offer))
    assert isinstance(back, m.QuoteOffer) and back.quote.to_quote() == QUOTE and back.channel_id == CID
    state = State(CID, 2, (ETH, TOKEN), (-7, 3))
    swap = Swap(QUOTE, sig, 3)
    other = Quote(CID, 8, TOKEN, ETH, False, 1, 2, 50, 1_000)
    other_sig = sign_quote(Domain(31337, b"\xad" * 20), other, key)
    takes = (swap, Swap(other, other_sig, 4), Swap(QUOTE, sig, 5))
    msg = m.ProposeSwap.of(state, sig, 9, 1, takes)
    assert len(msg.quotes) == 2 and [t.quote for t in msg.takes] == [0, 1, 0]  # each quote travels once
    back_swap = m.decode(m.encode(msg))
    assert isinstance(back_swap, m.ProposeSwap)
    assert back_swap.to_swaps() == takes and back_swap.state.to_state() == state
    assert (back_swap.pid, back_swap.base) == (9, 1)
    request = m.TakeRequest.of(CID, 4, takes)  # the follower's takes: the same packing, no state
    assert len(request.quotes) == 2 and [t.quote for t in request.takes] == [0, 1, 0]
    back_request = m.decode(m.encode(request))
    assert isinstance(back_request, m.TakeRequest) and back_request.rid == 4
    assert back_request.to_swaps() == takes and m.channel_of(back_request) == CID
    fill = m.ProposeFill(m.WireState.of(state), sig.to_bytes(), 10, 1, 4, [0, 2], [m.TakeRefusal(1, "expired", "")])
    assert m.decode(m.encode(fill)) == fill
    refuse = m.Refuse(CID, 4, "oversize", "no", [m.TakeRefusal(0, "oversize", ""), m.TakeRefusal(1, "expired", "")])
    assert m.decode(m.encode(refuse)) == refuse
    for broken in (
        msgspec.structs.replace(msg, takes=[]),
        msgspec.structs.replace(msg, takes=[m.WireTake(2, m.u256(1))]),
        msgspec.structs.replace(msg, takes=msg.takes * (MAX_TAKES // 3 + 1)),
        msgspec.structs.replace(msg, quote_sigs=msg.quote_sigs[:1]),
        msgspec.structs.replace(request, takes=[]),
        msgspec.structs.replace(request, takes=[m.WireTake(2, m.u256(1))]),
        msgspec.structs.replace(request, takes=request.takes * (MAX_TAKES // 3 + 1)),
        msgspec.structs.replace(request, quote_sigs=request.quote_sigs[:1]),
    ):
        with pytest.raises(RemoteError) as err:
            broken.to_swaps()
        assert err.value.reason is Reason.BAD_MESSAGE
    bad = m.WireQuote.of(QUOTE)
    with pytest.raises(RemoteError) as err:
        m.WireQuote(bad.channel_id, 1, ETH, ETH, True, m.u256(1), m.u256(1), m.u256(1), 5).to_quote()
    assert err.value.reason is Reason.BAD_ASSETS
    with pytest.raises(RemoteError) as err:
        m.WireQuote(bad.channel_id, 1, TOKEN, ETH, True, b"\x01", m.u256(1), m.u256(1), 5).to_quote()
    assert err.value.reason is Reason.BAD_MESSAGE

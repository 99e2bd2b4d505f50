"""The pure parts: the decision rule, receipts, the fee bump, the row encodings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st

from statechannel.chain.adjudicator import DisputeRecord
from statechannel.core.eip712 import domain_separator
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.hashing import keccak
from statechannel.core.tower import (
    MAX_AUTH_SKEW,
    Action,
    Receipt,
    authorize,
    check_client,
    check_pushed,
    decide,
    register_request,
)
from statechannel.core.types import ETH, ChannelParams, Domain, State
from statechannel.watchtower.records import (
    Dispute,
    decode_dispute,
    decode_params,
    decode_state,
    encode_dispute,
    encode_params,
    encode_state,
)
from statechannel.watchtower.sender import bump_fee
from tests.watchtower.helpers import key, sign

DOMAIN = Domain(5, b"\x11" * 20)
A, B, TOWER = key("rules A"), key("rules B"), key("rules tower")
PARAMS = ChannelParams(A.address, B.address, 600, 2**200 + 3)
CID = PARAMS.channel_id(DOMAIN.chain_id, DOMAIN.adjudicator)


def test_decide_challenges_only_a_lower_record_inside_the_window() -> None:
    assert decide(5, 2, now=100, finalizes_at=200) is Action.CHALLENGE
    assert decide(5, 2, now=199, finalizes_at=200) is Action.CHALLENGE
    assert decide(5, 2, now=200, finalizes_at=200) is Action.TOO_LATE  # the contract needs timestamp < end
    assert decide(5, 5, now=100, finalizes_at=200) is Action.UP_TO_DATE  # never act on our own version
    assert decide(5, 9, now=100, finalizes_at=200) is Action.UP_TO_DATE
    assert decide(None, 0, now=100, finalizes_at=200) is Action.NOTHING_HELD
    assert decide(1, 0, now=0, finalizes_at=1) is Action.CHALLENGE


@given(st.none() | st.integers(0, 2**48 - 1), st.integers(0, 2**48 - 1), st.integers(0, 2**40), st.integers(0, 2**40))
def test_decide_challenges_exactly_when_it_could_win(held: int | None, recorded: int, now: int, end: int) -> None:
    could_win = held is not None and held > recorded and now < end
    assert (decide(held, recorded, now, end) is Action.CHALLENGE) == could_win


def test_receipt_binds_chain_contract_channel_version_state_tower_and_block() -> None:
    r = Receipt(CID, 7, b"\x33" * 32, TOWER.address, 100)
    digest = r.digest(DOMAIN)
    others = {
        r.digest(Domain(6, DOMAIN.adjudicator)),
        r.digest(Domain(5, b"\x12" * 20)),
        replace(r, channel_id=b"\x00" * 32).digest(DOMAIN),
        replace(r, version=8).digest(DOMAIN),
        replace(r, state_hash=b"\x34" * 32).digest(DOMAIN),
        replace(r, tower=A.address).digest(DOMAIN),
        replace(r, from_block=101).digest(DOMAIN),
    }
    assert digest not in others and len(others) == 7
    sig = r.sign(TOWER, DOMAIN)
    assert r.signer(DOMAIN, sig) == TOWER.address
    assert replace(r, version=8).signer(DOMAIN, sig) != TOWER.address
    with pytest.raises(LocalError):
        r.sign(A, DOMAIN)  # a tower never signs a receipt naming another tower
    with pytest.raises(RemoteError):
        Receipt(CID, 7, b"\x01", TOWER.address, 0)


def test_receipt_digest_is_eip712_typed_data() -> None:
    """Recomputed from the EIP-712 rules with eth_abi, independently of core.tower."""
    r = Receipt(CID, 7, b"\x33" * 32, TOWER.address, 100)
    typehash = keccak(
        b"TowerReceipt(bytes32 channelId,uint48 version,bytes32 stateHash,address tower,uint64 fromBlock)"
    )
    struct = keccak(
        abi_encode(
            ["bytes32", "bytes32", "uint48", "bytes32", "address", "uint64"],
            [typehash, CID, 7, b"\x33" * 32, TOWER.address, 100],
        )
    )
    assert r.digest(DOMAIN) == keccak(b"\x19\x01" + domain_separator(DOMAIN) + struct)


def test_client_auth_names_participant_tower_request_and_time() -> None:
    request = register_request(PARAMS)
    auth = authorize(B, DOMAIN, TOWER.address, CID, request, 1_000)
    assert check_client(DOMAIN, TOWER.address, PARAMS, request, auth, 1_100) == 1
    assert (
        check_client(
            DOMAIN, TOWER.address, PARAMS, request, authorize(A, DOMAIN, TOWER.address, CID, request, 1_000), 1_000
        )
        == 0
    )
    for bad, tower, req, now in [
        (authorize(TOWER, DOMAIN, TOWER.address, CID, request, 1_000), TOWER.address, request, 1_000),  # no party
        (auth, A.address, request, 1_000),  # for another tower
        (auth, TOWER.address, b"\x00" * 32, 1_000),  # another request
        (auth, TOWER.address, request, 1_000 + MAX_AUTH_SKEW + 1),  # too old
        (replace(auth, client=A.address), TOWER.address, request, 1_000),  # B's signature claimed as A's
    ]:
        with pytest.raises(RemoteError):
            check_client(DOMAIN, tower, PARAMS, req, bad, now)


def test_check_pushed_needs_both_participants_on_this_channel() -> None:
    state = State(CID, 3, (ETH,), (5,))
    check_pushed(DOMAIN, PARAMS, sign(DOMAIN, state, A, B))
    for signed, why in [
        (sign(DOMAIN, state, B, A), Reason.WRONG_SIGNER),
        (sign(DOMAIN, state, A, A), Reason.WRONG_SIGNER),
        (sign(Domain(6, DOMAIN.adjudicator), state, A, B), Reason.WRONG_SIGNER),  # signed for another chain
        (sign(DOMAIN, State(b"\x01" * 32, 3, (ETH,), (5,)), A, B), Reason.WRONG_CHANNEL),
    ]:
        with pytest.raises(RemoteError) as err:
            check_pushed(DOMAIN, PARAMS, signed)
        assert err.value.reason is why


@given(st.integers(0, 2**128))
def test_fee_bump_is_at_least_an_eighth(fee: int) -> None:
    bumped = bump_fee(fee)
    assert bumped * 8 >= fee * 9 and bumped > fee


def test_row_encodings_round_trip() -> None:
    assert decode_params(encode_params(PARAMS)) == PARAMS
    small = ChannelParams(A.address, B.address, 1, 0)
    assert decode_params(encode_params(small)) == small and len(encode_params(small)) == 44
    state = State(CID, 2**48 - 1, (ETH, b"\x07" * 20), (-(2**255), 2**255 - 1), is_final=True, app_data=b"\x09" * 32)
    signed = sign(DOMAIN, state, A, B)
    assert decode_state(CID, state.version, encode_state(signed)) == signed
    d = Dispute(2**48 - 1, 2**40, b"\x05" * 32, 123, b"\x06" * 32, 2**31)
    assert decode_dispute(encode_dispute(d)) == d
    assert len(encode_dispute(d)) == 90  # no funded amounts: the chain keeps them
    assert d.record == DisputeRecord(2**48 - 1, 2**40, b"\x05" * 32)

"""Our EIP-712 hashing against eth-account's independent implementation."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from statechannel.core import ETH, Domain, PrivateKey, State, Withdrawal, state_digest, withdrawal_digest
from statechannel.core.crypto import recover
from statechannel.core.eip712 import domain_separator
from statechannel.core.types import INT256_MAX, INT256_MIN, MAX_VERSION, to_checksum

DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
STATE_FIELDS = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "version", "type": "uint48"},
    {"name": "isFinal", "type": "bool"},
    {"name": "assets", "type": "address[]"},
    {"name": "transfers", "type": "int256[]"},
    {"name": "appData", "type": "bytes32"},
]


def _domain_json(d: Domain) -> dict[str, Any]:
    return {
        "name": d.name,
        "version": d.version,
        "chainId": d.chain_id,
        "verifyingContract": to_checksum(d.adjudicator),
    }


def reference_state_digest(d: Domain, s: State) -> bytes:
    message = {
        "types": {"EIP712Domain": DOMAIN_FIELDS, "State": STATE_FIELDS},
        "primaryType": "State",
        "domain": _domain_json(d),
        "message": {
            "channelId": s.channel_id,
            "version": s.version,
            "isFinal": s.is_final,
            "assets": [to_checksum(a) for a in s.assets],
            "transfers": list(s.transfers),
            "appData": s.app_data,
        },
    }
    return bytes(_hash_eip191_message(encode_typed_data(full_message=message)))


addresses = st.binary(min_size=20, max_size=20)
domains = st.builds(Domain, chain_id=st.integers(0, 2**64), adjudicator=addresses)


@st.composite
def states(draw: st.DrawFn) -> State:
    n = draw(st.integers(0, 8))
    assets = tuple(sorted(set(draw(st.lists(addresses, min_size=n, max_size=n)))))
    return State(
        channel_id=draw(st.binary(min_size=32, max_size=32)),
        version=draw(st.integers(0, MAX_VERSION)),
        assets=assets,
        transfers=tuple(draw(st.integers(INT256_MIN, INT256_MAX)) for _ in assets),
        is_final=draw(st.booleans()),
        app_data=draw(st.binary(min_size=32, max_size=32)),
    )


@settings(max_examples=200, deadline=None)
@given(domains, states())
def test_state_digest_matches_eth_account(d: Domain, s: State) -> None:
    assert state_digest(d, s) == reference_state_digest(d, s)


@settings(max_examples=50, deadline=None)
@given(
    domains,
    st.binary(min_size=32, max_size=32),
    st.integers(0, 1),
    addresses,
    st.integers(1, 2**256 - 1),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**40 - 1),
)
def test_withdrawal_digest_matches_eth_account(
    d: Domain, cid: bytes, who: int, asset: bytes, amount: int, nonce: int, deadline: int
) -> None:
    w = Withdrawal(cid, who, asset, amount, nonce, deadline)
    message = {
        "types": {
            "EIP712Domain": DOMAIN_FIELDS,
            "Withdrawal": [
                {"name": "channelId", "type": "bytes32"},
                {"name": "participant", "type": "uint8"},
                {"name": "asset", "type": "address"},
                {"name": "amount", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Withdrawal",
        "domain": _domain_json(d),
        "message": {
            "channelId": cid,
            "participant": who,
            "asset": to_checksum(asset),
            "amount": amount,
            "nonce": nonce,
            "deadline": deadline,
        },
    }
    assert withdrawal_digest(d, w) == bytes(_hash_eip191_message(encode_typed_data(full_message=message)))


def test_domain_binds_chain_and_contract() -> None:
    s = State(bytes(32), 1, (ETH,), (5,))
    base = Domain(1, b"\x11" * 20)
    assert state_digest(base, s) != state_digest(Domain(2, b"\x11" * 20), s)
    assert state_digest(base, s) != state_digest(Domain(1, b"\x12" * 20), s)
    assert domain_separator(base) != domain_separator(Domain(2, b"\x11" * 20))


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**255))
def test_signature_matches_eth_account_and_recovers(digest: bytes, secret_int: int) -> None:
    secret = (secret_int % (2**256 - 2**32 - 977 - 1) or 1).to_bytes(32, "big")
    key = PrivateKey(secret)
    assert key.address == bytes.fromhex(Account.from_key(secret).address[2:])
    sig = key.sign_digest(digest)
    reference = Account.unsafe_sign_hash(digest, secret)
    assert (sig.r, sig.s, sig.v) == (reference.r, reference.s, reference.v)
    assert recover(digest, sig) == key.address

"""Every bad value is refused at construction with a reason code."""

from __future__ import annotations

from typing import Any

import pytest

from statechannel.core import ETH, ChannelParams, LocalError, PrivateKey, Reason, RemoteError, Signature, State
from statechannel.core.crypto import SECP256K1_N, verify_signer
from statechannel.core.types import address_from_hex, payout, to_checksum

A, B = b"\x0a" * 20, b"\x0b" * 20
CID = b"\x01" * 32


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"a": A, "b": A}, Reason.BAD_PARAMS),
        ({"a": ETH}, Reason.BAD_PARAMS),
        ({"a": b"\x01" * 19}, Reason.BAD_ADDRESS),
        ({"challenge_period": 0}, Reason.BAD_PARAMS),
        ({"challenge_period": 2**32}, Reason.BAD_PARAMS),
        ({"nonce": -1}, Reason.BAD_AMOUNT),
    ],
)
def test_bad_params(kwargs: dict[str, Any], reason: Reason) -> None:
    fields: dict[str, Any] = {"a": A, "b": B, "challenge_period": 10, "nonce": 0} | kwargs
    with pytest.raises(LocalError) as err:
        ChannelParams(**fields)
    assert err.value.reason is reason


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"channel_id": b"\x01" * 31}, Reason.BAD_CHANNEL_ID),
        ({"version": -1}, Reason.BAD_VERSION),
        ({"version": 2**48}, Reason.BAD_VERSION),
        ({"version": True}, Reason.BAD_VERSION),
        ({"assets": (B, A), "transfers": (0, 0)}, Reason.BAD_ASSETS),
        ({"assets": (A, A), "transfers": (0, 0)}, Reason.BAD_ASSETS),
        ({"assets": (A,), "transfers": ()}, Reason.BAD_ASSETS),
        ({"assets": tuple(bytes([i]) * 20 for i in range(1, 10)), "transfers": (0,) * 9}, Reason.BAD_ASSETS),
        ({"transfers": (2**255,)}, Reason.BAD_AMOUNT),
        ({"transfers": (1.5,)}, Reason.BAD_AMOUNT),
        ({"app_data": b"x"}, Reason.BAD_PARAMS),
    ],
)
def test_bad_state(kwargs: dict[str, Any], reason: Reason) -> None:
    fields: dict[str, Any] = {"channel_id": CID, "version": 1, "assets": (ETH,), "transfers": (0,)} | kwargs
    with pytest.raises(LocalError) as err:
        State(**fields)
    assert err.value.reason is reason


def test_payout_conserves_and_refuses_overdraw() -> None:
    assert payout(1000, 1000, -300) == (1300, 700)
    assert payout(1000, 1000, 1000) == (0, 2000)
    with pytest.raises(LocalError):
        payout(1000, 1000, 1001)
    with pytest.raises(LocalError):
        payout(1000, 1000, -1001)


def test_signature_rules() -> None:
    key = PrivateKey(b"\x07" * 32)
    digest = b"\x42" * 32
    sig = key.sign_digest(digest)
    assert Signature.from_bytes(sig.to_bytes()) == sig
    with pytest.raises(RemoteError) as high_s:
        Signature(sig.r, SECP256K1_N - sig.s, 55 - sig.v)  # the malleated twin
    assert high_s.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(RemoteError):
        Signature(sig.r, sig.s, 29)
    with pytest.raises(RemoteError):
        Signature.from_bytes(sig.to_bytes()[:64])
    verify_signer(digest, sig, key.address, "A")
    with pytest.raises(RemoteError) as wrong:
        verify_signer(b"\x43" * 32, sig, key.address, "A")
    assert wrong.value.reason is Reason.WRONG_SIGNER


def test_key_never_shows_secret() -> None:
    key = PrivateKey(b"\x07" * 32)
    assert (b"\x07" * 32).hex() not in repr(key)
    with pytest.raises(LocalError):
        PrivateKey(bytes(32))


def test_address_text_round_trip() -> None:
    text = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # the EIP-55 example
    assert to_checksum(address_from_hex(text.lower())) == text
    with pytest.raises(LocalError):
        address_from_hex("0x1234")

"""The watchtower's rules, without I/O: when to challenge, what a pushed state must prove, what a receipt says.

Kept in core so the decision a tower takes on a close can be tested (and reasoned about) apart from the
chain, the store and the clock it runs against: the caller passes chain time in, never wall time."""

from __future__ import annotations

from enum import StrEnum

from statechannel.core.crypto import PrivateKey, Signature, recover, verify_signer
from statechannel.core.eip712 import state_digest
from statechannel.core.errors import Reason, RemoteError
from statechannel.core.hashing import keccak
from statechannel.core.io import SignedState
from statechannel.core.types import ChannelParams, Domain

RECEIPT_TAG = b"statechannel-tower-receipt"


class Action(StrEnum):
    """What a tower does about one recorded close (or challenge) of a channel it watches."""

    CHALLENGE = "challenge"
    NOTHING_HELD = "nothing_held"
    """No state was ever pushed for the channel: there is nothing to answer with."""
    UP_TO_DATE = "up_to_date"
    """The chain already records the highest version the tower holds (or a higher one)."""
    TOO_LATE = "too_late"
    """The window has ended: the contract would revert, so a transaction would only burn gas."""


def decide(held_version: int | None, recorded_version: int, now: int, finalizes_at: int) -> Action:
    """The tower's whole decision on a Closed/Challenged record.

    `now` is the timestamp of the newest block seen: the contract compares the timestamp of the block
    that includes the challenge with `finalizes_at`, so a tower must judge by chain time. Acting when
    the recorded version is already ours would only revert with "stale version", hence UP_TO_DATE."""
    if held_version is None:
        return Action.NOTHING_HELD
    if held_version <= recorded_version:
        return Action.UP_TO_DATE
    if now >= finalizes_at:
        return Action.TOO_LATE
    return Action.CHALLENGE


def receipt_digest(chain_id: int, adjudicator: bytes, channel_id: bytes, version: int) -> bytes:
    """What a tower signs when it takes a state: a user who holds it can prove the tower had that version
    (for that chain and contract) if the tower then fails to answer a stale close."""
    if len(adjudicator) != 20 or len(channel_id) != 32:
        raise RemoteError(Reason.BAD_PARAMS, "adjudicator must be 20 bytes and channel id 32 bytes")
    return keccak(RECEIPT_TAG + chain_id.to_bytes(32, "big") + adjudicator + channel_id + version.to_bytes(32, "big"))


def sign_receipt(key: PrivateKey, domain: Domain, channel_id: bytes, version: int) -> Signature:
    return key.sign_digest(receipt_digest(domain.chain_id, domain.adjudicator, channel_id, version))


def receipt_signer(domain: Domain, channel_id: bytes, version: int, receipt: Signature) -> bytes:
    """The address that issued `receipt`: a client compares it with the tower it pushed to."""
    return recover(receipt_digest(domain.chain_id, domain.adjudicator, channel_id, version), receipt)


def check_pushed(domain: Domain, params: ChannelParams, signed: SignedState) -> None:
    """A pushed state counts only if it is for this channel (on this chain and contract) and both
    participants signed exactly it; anything else could never win a challenge, so it is refused."""
    channel_id = params.channel_id(domain.chain_id, domain.adjudicator)
    if signed.state.channel_id != channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "the state names another channel")
    digest = state_digest(domain, signed.state)
    verify_signer(digest, signed.sig_a, params.a, "participant A")
    verify_signer(digest, signed.sig_b, params.b, "participant B")

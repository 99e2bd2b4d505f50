"""The watchtower's rules, without I/O: when to challenge, what a pushed state must prove, what a receipt says.

Kept in core so the decision a tower takes on a close can be tested (and reasoned about) apart from the
chain, the store and the clock it runs against: the caller passes chain time in, never wall time."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from statechannel.core.crypto import PrivateKey, Signature, recover, verify_signer
from statechannel.core.eip712 import state_digest, state_hash, typed_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.hashing import keccak
from statechannel.core.io import SignedState
from statechannel.core.types import MAX_VERSION, ChannelParams, Domain


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


RECEIPT_TYPE = b"TowerReceipt(bytes32 channelId,uint48 version,bytes32 stateHash,address tower,uint64 fromBlock)"
RECEIPT_TYPEHASH = keccak(RECEIPT_TYPE)
REQUEST_TYPE = b"TowerRequest(address tower,bytes32 channelId,bytes32 request,uint64 timestamp)"
REQUEST_TYPEHASH = keccak(REQUEST_TYPE)
REGISTER_TAG = keccak(b"statechannel-tower-register")
MAX_AUTH_SKEW = 300
"""Seconds a request's timestamp may differ from the tower's clock: a captured request replays only for that
long, and a replay repeats a request the client made (registering or pushing the same state again)."""


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: bytes) -> bytes:
    if len(address) != 20:
        raise RemoteError(Reason.BAD_ADDRESS, "an address is 20 bytes")
    return bytes(12) + address


@dataclass(frozen=True, slots=True)
class Receipt:
    """A tower's EIP-712 statement (under the adjudicator's domain, so it names chain and contract): it holds
    `state_hash` as `version` of `channel_id`, and answers a stale close from block `from_block` on."""

    channel_id: bytes
    version: int
    state_hash: bytes
    tower: bytes
    from_block: int

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32 or len(self.state_hash) != 32 or len(self.tower) != 20:
            raise RemoteError(Reason.BAD_PARAMS, "a receipt names a 32-byte channel id and state hash, a 20-byte tower")
        if not 0 <= self.version <= MAX_VERSION or not 0 <= self.from_block < 2**64:
            raise RemoteError(Reason.BAD_PARAMS, "a receipt's version or block is out of range")

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(
            domain,
            keccak(
                RECEIPT_TYPEHASH
                + self.channel_id
                + _word(self.version)
                + self.state_hash
                + _address_word(self.tower)
                + _word(self.from_block)
            ),
        )

    def sign(self, key: PrivateKey, domain: Domain) -> Signature:
        if key.address != self.tower:
            raise LocalError(Reason.WRONG_SIGNER, "a tower signs receipts that name its own address")
        return key.sign_digest(self.digest(domain))

    def signer(self, domain: Domain, signature: Signature) -> bytes:
        return recover(self.digest(domain), signature)


def receipt_for(tower: bytes, signed: SignedState, from_block: int) -> Receipt:
    s = signed.state
    return Receipt(s.channel_id, s.version, state_hash(s), tower, from_block)


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """A client's proof that it is `client`: its signature over the tower, the channel, the request and a time."""

    client: bytes
    timestamp: int
    signature: Signature


def register_request(params: ChannelParams) -> bytes:
    """What a registration asks for, as the 32 bytes a client signs: the channel's parameters."""
    return keccak(
        REGISTER_TAG
        + _address_word(params.a)
        + _address_word(params.b)
        + _word(params.challenge_period)
        + _word(params.nonce)
    )


def push_request(signed: SignedState) -> bytes:
    """What a push asks for: the state's EIP-712 struct hash (its signatures are checked on their own)."""
    return state_hash(signed.state)


def request_digest(domain: Domain, tower: bytes, channel_id: bytes, request: bytes, timestamp: int) -> bytes:
    if len(channel_id) != 32 or len(request) != 32 or not 0 <= timestamp < 2**64:
        raise RemoteError(Reason.BAD_PARAMS, "a request names a 32-byte channel and request hash, a uint64 time")
    return typed_digest(
        domain, keccak(REQUEST_TYPEHASH + _address_word(tower) + channel_id + request + _word(timestamp))
    )


def authorize(
    key: PrivateKey, domain: Domain, tower: bytes, channel_id: bytes, request: bytes, timestamp: int
) -> ClientAuth:
    """A client's side: sign a request for one tower (a request to another tower does not verify here)."""
    return ClientAuth(
        key.address, timestamp, key.sign_digest(request_digest(domain, tower, channel_id, request, timestamp))
    )


def check_client(
    domain: Domain, tower: bytes, params: ChannelParams, request: bytes, auth: ClientAuth, now: int
) -> int:
    """The participant (0 = A, 1 = B) that signed this request for this tower, within MAX_AUTH_SKEW of `now`;
    anyone else (another address, another tower's request, an old one) is refused."""
    if auth.client not in (params.a, params.b):
        raise RemoteError(Reason.WRONG_SIGNER, "the client is not a participant of the channel")
    if abs(auth.timestamp - now) > MAX_AUTH_SKEW:
        raise RemoteError(
            Reason.BAD_PARAMS, f"the request's timestamp is more than {MAX_AUTH_SKEW} s from the tower's clock"
        )
    cid = params.channel_id(domain.chain_id, domain.adjudicator)
    verify_signer(
        request_digest(domain, tower, cid, request, auth.timestamp), auth.signature, auth.client, "the client"
    )
    return 0 if auth.client == params.a else 1


ACCOUNT_TAG = keccak(b"statechannel-tower-account")
NO_CHANNEL = bytes(32)
"""The channel a request about an account (not a channel) names in its digest."""


def account_request(address: bytes) -> bytes:
    """What reading a paid tower's account of `address` asks, as the 32 bytes its holder signs."""
    if len(address) != 20:
        raise RemoteError(Reason.BAD_PARAMS, "an account is a 20-byte address")
    return keccak(ACCOUNT_TAG + _address_word(address))


def check_account(domain: Domain, tower: bytes, address: bytes, auth: ClientAuth, now: int) -> None:
    """Only the holder of an account reads it: signed by `address` itself, for this tower, within the skew."""
    if auth.client != address:
        raise RemoteError(Reason.WRONG_SIGNER, "an account is shown only to its holder")
    if abs(auth.timestamp - now) > MAX_AUTH_SKEW:
        raise RemoteError(
            Reason.BAD_PARAMS, f"the request's timestamp is more than {MAX_AUTH_SKEW} s from the tower's clock"
        )
    digest = request_digest(domain, tower, NO_CHANNEL, account_request(address), auth.timestamp)
    verify_signer(digest, auth.signature, address, "the account holder")


def check_pushed(domain: Domain, params: ChannelParams, signed: SignedState) -> None:
    """A pushed state counts only if it is for this channel (on this chain and contract) and both
    participants signed exactly it; anything else could never win a challenge, so it is refused."""
    channel_id = params.channel_id(domain.chain_id, domain.adjudicator)
    if signed.state.channel_id != channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "the state names another channel")
    digest = state_digest(domain, signed.state)
    verify_signer(digest, signed.sig_a, params.a, "participant A")
    verify_signer(digest, signed.sig_b, params.b, "participant B")

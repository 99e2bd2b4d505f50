"""EIP-712 hashing of states and withdrawals: the same bytes the adjudicator checks."""

from __future__ import annotations

from functools import lru_cache

from eth_abi.abi import encode as abi_encode

from statechannel.core.hashing import keccak
from statechannel.core.types import Domain, State, Withdrawal

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
STATE_TYPE = b"State(bytes32 channelId,uint48 version,bool isFinal,address[] assets,int256[] transfers,bytes32 appData)"
WITHDRAWAL_TYPE = (
    b"Withdrawal(bytes32 channelId,uint8 participant,address asset,uint256 amount,uint256 nonce,uint256 deadline)"
)

DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE)
STATE_TYPEHASH = keccak(STATE_TYPE)
WITHDRAWAL_TYPEHASH = keccak(WITHDRAWAL_TYPE)


@lru_cache(maxsize=64)
def domain_separator(domain: Domain) -> bytes:
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(domain.name.encode())
        + keccak(domain.version.encode())
        + domain.chain_id.to_bytes(32, "big")
        + bytes(12)
        + domain.adjudicator
    )


@lru_cache(maxsize=256)
def _assets_hash(assets: tuple[bytes, ...]) -> bytes:
    """A channel's assets never change, so their hash is worked out once, not once per state."""
    return keccak(b"".join(bytes(12) + a for a in assets))


def state_hash(state: State) -> bytes:
    """hashStruct(State). Arrays hash as the keccak of their 32-byte-padded items."""
    assets_hash = _assets_hash(state.assets)
    transfers_hash = keccak(b"".join(t.to_bytes(32, "big", signed=True) for t in state.transfers))
    return keccak(
        STATE_TYPEHASH
        + state.channel_id
        + state.version.to_bytes(32, "big")
        + (b"\x00" * 31 + (b"\x01" if state.is_final else b"\x00"))
        + assets_hash
        + transfers_hash
        + state.app_data
    )


def withdrawal_hash(w: Withdrawal) -> bytes:
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "uint8", "address", "uint256", "uint256", "uint256"],
            [WITHDRAWAL_TYPEHASH, w.channel_id, w.participant, w.asset, w.amount, w.nonce, w.deadline],
        )
    )


def typed_digest(domain: Domain, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain_separator(domain) + struct_hash)


@lru_cache(maxsize=4096)
def state_digest(domain: Domain, state: State) -> bytes:
    """The 32 bytes both participants sign for `state`. Cached: a proposer checks the countersignature
    on the very state it hashed to sign, and resends hash it again."""
    return typed_digest(domain, state_hash(state))


def withdrawal_digest(domain: Domain, w: Withdrawal) -> bytes:
    return typed_digest(domain, withdrawal_hash(w))


def dispute_commitment(recorded_state_hash: bytes, version: int, finalizes_at: int) -> bytes:
    """The whole word the contract keeps while a close is pending: bits 0..47 the version, 48..87 the
    window's end, 88..255 the top 168 bits of the state hash (docs/decisions/0009). Funded amounts stay
    in storage, so a close can never pay more than the channel holds. Values the contract can never
    record (a version from 2**48, a window end from 2**40) give the zero word, which no pending close has."""
    if not 0 <= version < 2**48 or not 0 < finalizes_at < 2**40 or len(recorded_state_hash) != 32:
        return bytes(32)
    top = int.from_bytes(recorded_state_hash, "big") >> 88 << 88
    return (top | finalizes_at << 48 | version).to_bytes(32, "big")

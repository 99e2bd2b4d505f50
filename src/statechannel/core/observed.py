"""What the chain reported, as inputs to the protocol (Raiden's ContractReceive*).

Every record carries where it came from (block hash, log index), so a watcher
handles each one exactly once and can drop those of a block that was reorged away."""

from __future__ import annotations

from dataclasses import dataclass

from statechannel.core.types import State


@dataclass(frozen=True, slots=True)
class Origin:
    block_number: int
    block_hash: bytes
    log_index: int
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class ChainObservedOpened:
    """A channel was opened. Neither its parameters nor A's opening deposit are
    logged (gas): both participants agreed the parameters, and so the channel id,
    before it opened, and funded amounts are read from `Adjudicator.channel`."""

    origin: Origin
    channel_id: bytes


@dataclass(frozen=True, slots=True)
class ChainObservedDeposit:
    origin: Origin
    channel_id: bytes
    asset: bytes
    participant: int
    funded: int
    """The participant's funded total of this asset after the deposit."""


@dataclass(frozen=True, slots=True)
class ChainObservedWithdrawal:
    origin: Origin
    channel_id: bytes
    asset: bytes
    participant: int
    amount: int
    funded: int
    nonce: int
    """The signed withdrawal's nonce: names exactly which withdrawal was carried out."""


@dataclass(frozen=True, slots=True)
class ChainObservedClose:
    """A unilateral close (challenge=False) or a challenge recorded a state."""

    origin: Origin
    channel_id: bytes
    version: int
    finalizes_at: int
    state_hash: bytes
    challenge: bool
    state: State | None = None
    """The recorded state itself, from the transaction's calldata, when the watcher read it."""


@dataclass(frozen=True, slots=True)
class ChainObservedConcluded:
    origin: Origin
    channel_id: bytes
    version: int
    deferred: tuple[tuple[bytes, bytes, int], ...] = ()
    """(account, asset, amount) of the payouts of the same transaction that were credited to
    `claimable` instead of delivered (its PayoutDeferred events, which name no channel)."""


@dataclass(frozen=True, slots=True)
class ChainObservedPayoutDeferred:
    origin: Origin
    account: bytes
    asset: bytes
    amount: int


ChainObserved = (
    ChainObservedOpened
    | ChainObservedDeposit
    | ChainObservedWithdrawal
    | ChainObservedClose
    | ChainObservedConcluded
    | ChainObservedPayoutDeferred
)

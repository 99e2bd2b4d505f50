"""Inputs to and effects of the channel machine, named by origin (after Raiden):
Action* come from the local user, Receive* from the peer, ChainObserved* from
the chain; the machine answers with Send* (to the peer), SubmitTx* (to the
chain) and Notify* (to the user). Effects are plain data: the shell runs them."""

from __future__ import annotations

from dataclasses import dataclass

from statechannel.core.crypto import Signature
from statechannel.core.messages import Message
from statechannel.core.quotes import Swap
from statechannel.core.types import State, Withdrawal


@dataclass(frozen=True, slots=True)
class Payment:
    """One payment from this node to its peer; `payment_id` is the caller's handle. With `count` > 1 it
    is a batch of that many payments (each of at least one unit) and `amount` is their total: one entry
    in an update and in history, whatever the count (decision 0012)."""

    payment_id: str
    asset: bytes
    amount: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class SignedState:
    state: State
    sig_a: Signature
    sig_b: Signature


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class ActionPay:
    payments: tuple[Payment, ...]


@dataclass(frozen=True, slots=True)
class ActionCloseCooperative:
    pass


@dataclass(frozen=True, slots=True)
class ActionCloseUnilateral:
    pass


@dataclass(frozen=True, slots=True)
class ActionAbandon:
    """Give up a channel that never opened and holds nothing of anyone's (a refused or never answered
    request, an expired unfunded one). A channel with money in it is closed instead, never abandoned."""


@dataclass(frozen=True, slots=True)
class ActionWithdraw:
    asset: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class ReceiveMessage:
    """A peer message, with the receiver's wall clock in ms: the machine has no clock of its own, and a
    quote's expiry is in milliseconds, finer than any block time (only takes use it)."""

    message: Message
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class ActionTake:
    """Take the peer's quotes: `takes` (at most MAX_TAKES) go in one update, each filled whole or refused
    on its own. `now_ms` is the caller's clock, so an offer it knows has expired is refused before it costs
    a round trip (the maker checks again by its own clock). One take the taker's own checks refuse makes
    the whole action raise, naming it by index (`LocalError.take`), and nothing changes."""

    takes: tuple[Swap, ...]
    now_ms: int


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """The link to the peer came (back) up: resynchronise."""


@dataclass(frozen=True, slots=True)
class ChainFunded:
    """A participant's funded total of an asset, as the chain now says."""

    asset: bytes
    participant: int
    funded: int


@dataclass(frozen=True, slots=True)
class ChainWithdrawn:
    """A both-signed withdrawal was carried out on chain; `funded` is the participant's total after."""

    asset: bytes
    participant: int
    funded: int
    nonce: int


@dataclass(frozen=True, slots=True)
class ChainOpened:
    pass


@dataclass(frozen=True, slots=True)
class ChainDisputeRecorded:
    """A close (or a challenge) recorded `state_hash` at `version`; the window ends at `finalizes_at`."""

    version: int
    finalizes_at: int
    state_hash: bytes
    challenge: bool = False
    state: State | None = None
    """The recorded state as the transaction's calldata gave it, when the chain adapter decoded it:
    the machine believes it only if it hashes to `state_hash`."""


@dataclass(frozen=True, slots=True)
class ChainConcluded:
    version: int
    deferred: tuple[tuple[bytes, bytes, int], ...] = ()
    """(account, asset, amount) of each payout of that transaction the recipient (or token) refused:
    credited to `claimable` in the contract, not delivered."""


@dataclass(frozen=True, slots=True)
class ChainTxFailed:
    """A transaction this node submitted for the channel reverted (`reason` is the contract's)."""

    tx: SubmitTxOpen | SubmitTxDeposit | SubmitTxWithdraw | SubmitTxClose | SubmitTxCloseCooperative
    reason: str


@dataclass(frozen=True, slots=True)
class ChainTime:
    """A new block: the only clock the machine knows."""

    timestamp: int


Input = (
    ActionPay
    | ActionCloseCooperative
    | ActionCloseUnilateral
    | ActionWithdraw
    | ActionAbandon
    | ActionTake
    | ReceiveMessage
    | PeerConnected
    | ChainFunded
    | ChainWithdrawn
    | ChainOpened
    | ChainDisputeRecorded
    | ChainConcluded
    | ChainTxFailed
    | ChainTime
)

# ------------------------------------------------------------------ effects


@dataclass(frozen=True, slots=True)
class SendMessage:
    message: Message


@dataclass(frozen=True, slots=True)
class SubmitTxOpen:
    eth_deposit: int


@dataclass(frozen=True, slots=True)
class SubmitTxDeposit:
    asset: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class SubmitTxCloseCooperative:
    signed: SignedState


@dataclass(frozen=True, slots=True)
class SubmitTxClose:
    signed: SignedState


@dataclass(frozen=True, slots=True)
class SubmitTxChallenge:
    """Replace the recorded (version, finalizes_at, recorded_hash) with `signed`."""

    signed: SignedState
    recorded_version: int
    finalizes_at: int
    recorded_hash: bytes


@dataclass(frozen=True, slots=True)
class SubmitTxSettle:
    state: State
    finalizes_at: int


@dataclass(frozen=True, slots=True)
class SubmitTxWithdraw:
    withdrawal: Withdrawal
    sig_a: Signature
    sig_b: Signature


@dataclass(frozen=True, slots=True)
class NotifySent:
    payments: tuple[Payment, ...]
    version: int


@dataclass(frozen=True, slots=True)
class NotifyFailed:
    payments: tuple[Payment, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    """The peer paid us: the per-asset amounts of one accepted update, and the payments (asset, amount)
    they coalesce, as the peer listed them (a peer that listed none: one per asset). `counts`, when not
    empty, says per listed entry how many payments it is (a batch: `amount` is their total)."""

    amounts: tuple[tuple[bytes, int], ...]
    version: int
    payments: tuple[tuple[bytes, int], ...] = ()
    counts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class NotifyPhase:
    phase: str


@dataclass(frozen=True, slots=True)
class NotifyFilled:
    """A swap both signed: as taker (`maker` False) once the peer accepted, as maker once I did."""

    swap: Swap
    maker: bool
    version: int


@dataclass(frozen=True, slots=True)
class NotifyTakeFailed:
    swap: Swap
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the channel ended, as the chain says: the version it concluded with, whether a challenge was
    recorded, and per asset what A and B were paid (None when the concluding state is not one this node
    knows). `loss` is set when the channel concluded below my latest both-signed version."""

    version: int
    cooperative: bool
    challenged: bool
    paid: tuple[tuple[int, int], ...] | None
    loss: bool = False
    deferred: tuple[tuple[bytes, int], ...] = ()
    """Per asset, what of my payout the contract could not deliver and holds for me to `claim`."""


@dataclass(frozen=True, slots=True)
class NotifyConcluded:
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class NotifyAlert:
    """Something the user must know: the chain concluded on a state older than my latest, a close I
    cannot answer, a peer breaking the protocol."""

    kind: str
    detail: str


Effect = (
    SendMessage
    | SubmitTxOpen
    | SubmitTxDeposit
    | SubmitTxCloseCooperative
    | SubmitTxClose
    | SubmitTxChallenge
    | SubmitTxSettle
    | SubmitTxWithdraw
    | NotifySent
    | NotifyFailed
    | NotifyReceived
    | NotifyPhase
    | NotifyFilled
    | NotifyTakeFailed
    | NotifyConcluded
    | NotifyAlert
)

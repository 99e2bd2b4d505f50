"""One channel as seen by one participant: a frozen value, changed only by
`machine.transition`. Balances are derived, never stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from statechannel.core.crypto import Signature, recover
from statechannel.core.eip712 import state_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import NotifyFailed, NotifyFilled, NotifyReceived, NotifyTakeFailed, Payment, SignedState
from statechannel.core.positions import Tally
from statechannel.core.quotes import MAX_TAKES, QuoteFill, Swap
from statechannel.core.types import ChannelParams, Domain, State, Withdrawal

MAX_IN_FLIGHT = 64
__all__ = ["MAX_IN_FLIGHT", "MAX_TAKES", "Channel", "Dispute", "Kind", "PendingWithdrawal", "Phase", "Proposal"]


class Phase(StrEnum):
    OPENING = "opening"  # A signed the pre-fund state; B has not
    FUNDING = "funding"  # pre-fund state signed by both; deposits under way
    OPEN = "open"  # post-fund state signed: payments flow
    CLOSING = "closing"  # a final state is being signed or submitted
    DISPUTE = "dispute"  # a unilateral close is recorded on chain
    CLOSED = "closed"


class Kind(StrEnum):
    PAY = "pay"
    POSTFUND = "postfund"
    FINAL = "final"
    SWAP = "swap"


@dataclass(frozen=True, slots=True)
class Proposal:
    """A state I signed and sent, not yet countersigned; built on the one before."""

    state: State
    sig: Signature
    kind: Kind
    pid: int
    payments: tuple[Payment, ...] = ()
    swaps: tuple[Swap, ...] = ()
    """Set on a swap proposal, never beside payments: the takes it carries, applied in order."""


@dataclass(frozen=True, slots=True)
class PendingWithdrawal:
    withdrawal: Withdrawal
    sig_a: Signature | None
    sig_b: Signature | None


@dataclass(frozen=True, slots=True)
class Dispute:
    version: int
    finalizes_at: int
    funded_a: int
    funded_b: int
    state_hash: bytes
    challenged: bool = False
    settle_submitted: bool = False
    state: State | None = None
    """The recorded state, when it is one of my proposals the peer signed but never confirmed to me
    (its Accept was lost): I know it without holding the peer's signature, and can settle with it."""


@dataclass(frozen=True, slots=True)
class Channel:
    params: ChannelParams
    domain: Domain
    me: int
    assets: tuple[bytes, ...]
    deposits: tuple[tuple[int, int], ...]
    """Per asset, what A and B agreed to deposit."""
    phase: Phase
    latest: SignedState | None
    opening_sig: Signature | None = None
    """A's own signature on the pre-fund state, kept until B countersigns."""
    funded: tuple[tuple[int, int], ...] = ()
    opened: bool = False
    pending: tuple[Proposal, ...] = ()
    withdrawals: tuple[PendingWithdrawal, ...] = ()
    withdraw_nonce: int = 0
    next_pid: int = 1
    dispute: Dispute | None = None
    now: int = 0
    fills: tuple[QuoteFill, ...] = ()
    """How much of each of my unexpired quotes the peer has taken."""
    positions: tuple[Tally, ...] = ()
    """What this side bought and sold per traded pair, and its realised P&L: kept after close."""
    orphan_upto: int = 0
    """The highest version of a proposal of mine that was rolled back (refused, or lost a tie). I signed
    it, so the peer may still countersign it and close with it until a higher version is both-signed."""
    chain_version: int = -1
    """The highest version the chain recorded or concluded for this channel (-1: none yet)."""
    held_received: tuple[NotifyReceived, ...] = ()
    held_filled: tuple[NotifyFilled, ...] = ()
    held_failed: tuple[NotifyFailed, ...] = ()
    held_take_failed: tuple[NotifyTakeFailed, ...] = ()
    """Outcomes reported while `orphan_upto` was not yet superseded: a rolled-back proposal could still
    undo them, so they wait here (durably) until my latest version is above it."""
    _cid: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.me not in (0, 1):
            raise LocalError(Reason.BAD_PARAMS, "me must be 0 (A) or 1 (B)")
        if len(self.deposits) != len(self.assets):
            raise LocalError(Reason.BAD_ASSETS, "one deposit pair per asset")
        if not self.funded:
            object.__setattr__(self, "funded", tuple((0, 0) for _ in self.assets))
        if not self._cid:
            object.__setattr__(self, "_cid", self.params.channel_id(self.domain.chain_id, self.domain.adjudicator))

    @property
    def channel_id(self) -> bytes:
        return self._cid

    @property
    def peer(self) -> int:
        return 1 - self.me

    @property
    def peer_address(self) -> bytes:
        return self.params.b if self.me == 0 else self.params.a

    def address_of(self, who: int) -> bytes:
        return self.params.a if who == 0 else self.params.b

    @property
    def head(self) -> State:
        """The state my next proposal builds on: my last in-flight one, else the latest."""
        if self.pending:
            return self.pending[-1].state
        if self.latest is None:
            raise LocalError(Reason.WRONG_PHASE, "channel has no signed state yet")
        return self.latest.state

    def digest(self, state: State) -> bytes:
        return state_digest(self.domain, state)

    def fully_funded(self) -> bool:
        return all(f[0] >= d[0] and f[1] >= d[1] for f, d in zip(self.funded, self.deposits, strict=True))

    def withdrawing(self, who: int, asset: bytes) -> int:
        return sum(
            p.withdrawal.amount
            for p in self.withdrawals
            if p.withdrawal.participant == who and p.withdrawal.asset == asset
        )

    def balances(self, state: State) -> tuple[tuple[int, int], ...]:
        """Per asset, (A, B) as `state` pays them on the funds now on chain,
        less withdrawals agreed but not yet seen there. May be negative: callers check."""
        out = []
        for asset, (fa, fb) in zip(self.assets, self.funded, strict=True):
            t = state.transfer_of(asset)
            out.append((fa - self.withdrawing(0, asset) - t, fb - self.withdrawing(1, asset) + t))
        return tuple(out)

    def lowest_balance(self, who: int, asset: bytes) -> int:
        """`who`'s balance of `asset` in the worst case: under the latest state or any proposal in
        flight, whichever pays it least (any of them may be the one that ends up signed)."""
        i = self.assets.index(asset)
        states = [p.state for p in self.pending]
        if self.latest is not None:
            states.append(self.latest.state)
        return min(self.balances(s)[i][who] for s in states)

    def my_balance(self, asset: bytes, state: State | None = None) -> int:
        bal = self.balances(state or self.head)
        return bal[self.assets.index(asset)][self.me]

    def signed(self, state: State, mine: Signature, theirs: Signature) -> SignedState:
        return SignedState(state, mine, theirs) if self.me == 0 else SignedState(state, theirs, mine)

    def check_peer_sig(self, state: State, sig: Signature, digest: bytes | None = None) -> None:
        """`digest`: the state's, when the caller already has it (it is about to sign it too)."""
        if recover(digest or self.digest(state), sig) != self.peer_address:
            raise RemoteError(Reason.WRONG_SIGNER, f"signature on version {state.version} is not the peer's")

    def check_signed(self, signed: SignedState) -> None:
        d = self.digest(signed.state)
        if recover(d, signed.sig_a) != self.params.a or recover(d, signed.sig_b) != self.params.b:
            raise RemoteError(Reason.WRONG_SIGNER, f"version {signed.state.version} is not signed by both")

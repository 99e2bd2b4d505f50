"""One channel as seen by one participant: a frozen value, changed only by
`machine.transition`. Balances are derived, never stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from statechannel.core.crypto import Signature, recover
from statechannel.core.eip712 import state_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import NotifyFailed, NotifyTakeFailed, Outcome, Payment, SignedState
from statechannel.core.positions import Tally
from statechannel.core.quotes import MAX_TAKES, QuoteFill, Swap
from statechannel.core.types import ChannelParams, Domain, State, Withdrawal

MAX_IN_FLIGHT = 64
"""The leader's proposals in flight, and the follower's requests outstanding, per channel."""
MAX_ROLLED = 2 * 64
"""The leader's refused proposals kept (signed, so still usable by the peer) before it stops proposing."""
MAX_QUEUED = 256
"""Follower requests the leader holds while its pipeline is full; past it they are refused."""
LEADER, FOLLOWER = 0, 1
__all__ = [
    "FOLLOWER",
    "LEADER",
    "MAX_IN_FLIGHT",
    "MAX_QUEUED",
    "MAX_ROLLED",
    "MAX_TAKES",
    "Channel",
    "Dispute",
    "Kind",
    "PendingWithdrawal",
    "Phase",
    "Proposal",
    "Request",
]


class Phase(StrEnum):
    OPENING = "opening"  # A signed the pre-fund state; B has not
    FUNDING = "funding"  # pre-fund state signed by both; deposits under way
    OPEN = "open"  # post-fund state signed: payments flow
    CLOSING = "closing"  # a final state is being signed or submitted
    DISPUTE = "dispute"  # a unilateral close is recorded on chain
    CLOSED = "closed"
    RECOVERING = "recovering"  # restored from a backup: learns the highest provable state, signs nothing, closes


class Kind(StrEnum):
    PAY = "pay"
    POSTFUND = "postfund"
    FINAL = "final"
    SWAP = "swap"
    """The leader's takes of the follower's quotes."""
    FILL = "fill"
    """The follower's takes (one take request) of the leader's quotes."""


@dataclass(frozen=True, slots=True)
class TakeRefused:
    index: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """What the follower asks the leader to propose. The follower keeps its own (with payment ids and
    take ids) until a state it countersigns carries it, or the leader refuses it; the leader keeps the
    ones it has not proposed yet. `amounts` are the per-asset totals of a payment request."""

    rid: int
    amounts: tuple[tuple[bytes, int], ...] = ()
    payments: tuple[Payment, ...] = ()
    takes: tuple[Swap, ...] = ()
    tries: int = 0
    """Leader: how often a proposal carrying it was refused."""
    paid: tuple[tuple[bytes, int], ...] = ()
    """Leader: the payments (asset, amount) the follower listed in it; empty if it listed none."""
    paid_counts: tuple[int, ...] = ()
    """Leader: per entry of `paid`, how many payments the follower said it is (empty: one each)."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A state the leader signed and sent, built on version `base`, not yet countersigned."""

    state: State
    sig: Signature
    kind: Kind
    pid: int
    base: int
    payments: tuple[Payment, ...] = ()
    """The leader's own payments to the follower."""
    swaps: tuple[Swap, ...] = ()
    """SWAP: the leader's takes, in order. FILL: the follower's takes it carries (those in `taken`)."""
    requests: tuple[Request, ...] = ()
    """PAY: the follower's payment requests it carries, whole. FILL: the one take request."""
    taken: tuple[int, ...] = ()
    refused: tuple[TakeRefused, ...] = ()
    """FILL: indexes of the request's takes carried, and the others with why they are not."""


@dataclass(frozen=True, slots=True)
class PendingWithdrawal:
    withdrawal: Withdrawal
    sig_a: Signature | None
    sig_b: Signature | None


@dataclass(frozen=True, slots=True)
class Dispute:
    version: int
    finalizes_at: int
    state_hash: bytes
    challenged: bool = False
    """A challenge was recorded on chain (by anyone)."""
    answered: int = -1
    """The recorded version I last sent a challenge against (-1: none)..."""
    answered_at: int = 0
    """...and when (chain time): a challenge that did not land is sent again after a while."""
    settle_at: int = -1
    """When (chain time) I last sent the settle (-1: never); sent again after a while until concluded."""
    late: bool = False
    """Told already that a close recorded below my latest was seen only after its window."""
    state: State | None = None
    """The recorded state, when I know it: my latest, or a proposal of mine the peer countersigned
    without telling me (the chain checked its signature)."""


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
    open_submitted: bool = False
    """A sent `open` (with its ether); if that reverts because someone else opened first, A deposits."""
    deposits_sent: tuple[bytes, ...] = ()
    """The assets whose agreed deposit I submitted (my ether by `open` counts): never twice, whatever a
    restart replays."""
    signed_upto: int = 0
    """The highest version this key ever signed (invariant 3): it signs only above it."""
    pending: tuple[Proposal, ...] = ()
    """Leader: proposals in flight, each built on the one before, the first on `latest`."""
    rolled: tuple[Proposal, ...] = ()
    """Leader: proposals the follower refused (and those built on them). I signed them, so the follower
    can still countersign one and close with it, until `latest` passes its version."""
    requests: tuple[Request, ...] = ()
    """Follower: my requests not yet carried or refused. Leader: the follower's, not yet proposed."""
    next_rid: int = 1
    last_rid: int = 0
    """Leader: the highest request id taken in (resent ones at or below it are not taken twice)."""
    deferred: Proposal | None = None
    """Follower: the leader's post-fund proposal, countersigned once I see every deposit."""
    signs_nothing: bool = False
    """Restored from a backup or recovered without one: this key may have signed states above `signed_upto`
    that it no longer knows, so it never signs on this channel again, in any phase (invariant 3). It learns
    proven states (a peer's Sync, a tower) and closes, challenges and settles on chain with them."""
    final_signed: bool = False
    """I signed a final state: I never sign a state that is not final again (a final closes at once)."""
    close_wanted: bool = False
    """Leader: propose the final state as soon as the pipeline is empty. Follower: I asked for it."""
    withdrawals: tuple[PendingWithdrawal, ...] = ()
    withdraw_nonce: int = 0
    next_pid: int = 1
    dispute: Dispute | None = None
    now: int = 0
    fills: tuple[QuoteFill, ...] = ()
    """How much of each of my unexpired quotes the peer has taken."""
    positions: tuple[Tally, ...] = ()
    """What this side bought and sold per traded pair, and its realised P&L: kept after close."""
    held_failed: tuple[NotifyFailed, ...] = ()
    held_take_failed: tuple[NotifyTakeFailed, ...] = ()
    """Leader: failures of payments and takes in refused proposals, told once no refused proposal can be
    countersigned any more (`rolled` is empty), or at conclusion by what the chain paid."""
    outcome: Outcome | None = None
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
    def leader(self) -> bool:
        return self.me == LEADER

    def room(self) -> int:
        """How many more updates (leader) or requests (follower) may start now."""
        if self.me == LEADER:
            return 0 if len(self.rolled) >= MAX_ROLLED else MAX_IN_FLIGHT - len(self.pending)
        return MAX_IN_FLIGHT - len(self.requests)

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
        states = [p.state for p in (*self.pending, *self.rolled)]
        if self.latest is not None:
            states.append(self.latest.state)
        low = min(self.balances(s)[i][who] for s in states)
        if who == FOLLOWER:  # what the follower asked for may still be carried
            low -= sum(amount for r in self.requests for a, amount in r.amounts if a == asset)
        return low

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

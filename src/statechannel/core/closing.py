"""Closing: a unilateral close and its challenge window, settling, and what the node reports at the end.

What is reported after a close is what the chain says: the version the channel concluded with, whether a
challenge was recorded, what each side was paid. A leader's proposals still in flight (or refused) when
the channel closes may be the state the chain pays: their outcomes are decided only then, by whether the
concluding state carries them. A conclusion below my latest both-signed version is a loss, raised as an
alert, never shown as paid."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core.channel import LEADER, Channel, Dispute, Kind, Phase, Proposal
from statechannel.core.common import Result, fail, fail_takes, filled
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason
from statechannel.core.follower import fail_requests
from statechannel.core.io import (
    ChainConcluded,
    ChainDisputeRecorded,
    Effect,
    NotifyAlert,
    NotifyConcluded,
    NotifyFailed,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Outcome,
    SubmitTxChallenge,
    SubmitTxClose,
    SubmitTxCloseCooperative,
    SubmitTxOpen,
    SubmitTxSettle,
)
from statechannel.core.types import ETH, State, payout
from statechannel.core.withdrawals import expire


def close_unilateral(ch: Channel) -> Result:
    if ch.latest is None:
        raise LocalError(Reason.WRONG_PHASE, "no both-signed state to close with")
    return ch, (SubmitTxClose(ch.latest),)


def _mine(ch: Channel) -> tuple[Proposal, ...]:
    return (*ch.pending, *ch.rolled)


def _known(ch: Channel, version: int, digest: bytes) -> State | None:
    """The recorded state, if it is my latest or a proposal of mine the peer countersigned."""
    if ch.latest is not None and ch.latest.state.version == version and state_hash(ch.latest.state) == digest:
        return ch.latest.state
    for p in _mine(ch):
        if p.state.version == version and state_hash(p.state) == digest:
            return p.state
    if ch.dispute is not None and ch.dispute.state is not None and ch.dispute.state_hash == digest:
        return ch.dispute.state
    return None


def _told(ch: Channel, inp: ChainDisputeRecorded) -> State | None:
    s = inp.state
    if s is None or s.channel_id != ch.channel_id or s.version != inp.version or state_hash(s) != inp.state_hash:
        return None
    return s


def on_dispute(ch: Channel, inp: ChainDisputeRecorded) -> Result:
    if ch.phase is Phase.CLOSED:
        return ch, ()
    if ch.latest is None:  # closed with the pre-fund state before its countersignature reached me
        alert = NotifyAlert("closed_while_opening", "the peer closed the channel before I held its signature")
        return replace(ch, phase=Phase.CLOSED, opening_sig=None), (alert, NotifyPhase(Phase.CLOSED))
    prev = ch.dispute
    d = Dispute(
        inp.version,
        inp.finalizes_at,
        inp.state_hash,
        challenged=inp.challenge or (prev is not None and prev.challenged),
        answered=prev.answered if prev is not None else -1,
        answered_at=prev.answered_at if prev is not None else 0,
        state=_known(ch, inp.version, inp.state_hash) or _told(ch, inp),
    )
    # what I had in flight may still be countersigned and recorded: it waits for the conclusion
    ordered = tuple(sorted(_mine(ch), key=lambda p: p.state.version))
    new = replace(ch, phase=Phase.DISPUTE, dispute=d, pending=(), rolled=ordered, deferred=None, withdrawals=())
    new, effects = on_time(new)
    return new, ((NotifyPhase(Phase.DISPUTE),) if ch.phase is not Phase.DISPUTE else ()) + effects


RETRY = 60
"""Seconds of chain time after which a challenge or settle that has not landed is sent again: a
transaction lost to an outage must not cost the window (a duplicate only fails its dry run). A challenge
is sent again after a quarter of the window at most (`retry_after`): a short window still gets tries."""


def retry_after(challenge_period: int) -> int:
    """Chain seconds before a challenge that has not landed is sent again: RETRY, or a quarter of a window
    shorter than four times that (at least one second)."""
    return max(1, min(RETRY, challenge_period // 4))


def on_time(ch: Channel) -> Result:
    """Everything a dispute asks of me by now: challenge a record below my latest while its window is
    open, settle once it is over (both again after RETRY until the chain shows them done)."""
    ch = expire(ch)
    d = ch.dispute
    if ch.phase is not Phase.DISPUTE or d is None:
        return ch, ()
    effects: list[Effect] = []
    latest = ch.latest
    if latest is not None and latest.state.version > d.version:
        if ch.now < d.finalizes_at:
            if d.answered != d.version or ch.now >= d.answered_at + retry_after(ch.params.challenge_period):
                effects.append(SubmitTxChallenge(latest, d.version, d.finalizes_at, d.state_hash))
                d = replace(d, answered=d.version, answered_at=ch.now)
        elif not d.late:
            effects.append(
                NotifyAlert("too_late", f"version {d.version} recorded and its window is over; mine is higher")
            )
            d = replace(d, late=True)
    if ch.now >= d.finalizes_at and d.state is not None and (d.settle_at < 0 or ch.now >= d.settle_at + RETRY):
        effects.append(SubmitTxSettle(d.state, d.finalizes_at))
        d = replace(d, settle_at=ch.now)
    return replace(ch, dispute=d), tuple(effects)


def _concluding(ch: Channel, version: int) -> State | None:
    d = ch.dispute
    if d is not None and d.version == version and d.state is not None:
        return d.state
    if ch.latest is not None and ch.latest.state.version == version:
        return ch.latest.state
    # a final of mine the peer countersigned and submitted before its Accept reached me (one state per
    # version: the version names it)
    return next((p.state for p in _mine(ch) if p.state.version == version), None)


def _lineage(ch: Channel, state: State) -> tuple[Proposal, ...]:
    """My proposals the concluding state carries: it and every one it is built on, down to my latest."""
    by_version = {p.state.version: p for p in _mine(ch)}
    out: list[Proposal] = []
    p = by_version.get(state.version)
    if p is None or p.state != state:
        return ()
    while p is not None:
        out.append(p)
        p = by_version.get(p.base)
    return tuple(reversed(out))


def _paid(ch: Channel, state: State) -> tuple[tuple[int, int], ...] | None:
    if state.assets != ch.assets:
        return None
    try:
        return tuple(payout(fa, fb, t) for (fa, fb), t in zip(ch.funded, state.transfers, strict=True))
    except LocalError:
        return None


def _delivered(
    ch: Channel, due: tuple[tuple[int, int], ...] | None, deferred: tuple[tuple[bytes, bytes, int], ...]
) -> tuple[tuple[int, int], ...] | None:
    """What reached each side: its payout less what the contract had to keep for it to claim."""
    if due is None or not deferred:
        return due
    out = [list(pair) for pair in due]
    for account, asset, amount in deferred:
        if asset in ch.assets:
            for who in (0, 1):
                if account == ch.address_of(who):
                    out[ch.assets.index(asset)][who] -= amount
    return tuple((a, b) for a, b in out)


def on_concluded(ch: Channel, inp: ChainConcluded) -> Result:
    if ch.phase is Phase.CLOSED:
        return ch, ()
    state = _concluding(ch, inp.version)
    effects: list[Effect] = []
    if ch.me == LEADER:
        ch, effects = _resolve_leader(ch, state)
    else:
        ch, failed = fail_requests(ch, str(Reason.NOT_INCLUDED))
        effects.extend(failed)
    latest = ch.latest.state.version if ch.latest is not None else -1
    loss = inp.version < latest
    d = ch.dispute
    mine = ch.address_of(ch.me)
    held: dict[bytes, int] = {}
    for account, asset, amount in inp.deferred:
        if account == mine and asset in ch.assets:
            held[asset] = held.get(asset, 0) + amount
    outcome = Outcome(
        version=inp.version,
        cooperative=d is None or d.version != inp.version,
        challenged=d is not None and d.challenged,
        paid=_delivered(ch, _paid(ch, state), inp.deferred) if state is not None else None,
        loss=loss,
        deferred=tuple(sorted(held.items())),
    )
    if held:
        effects.append(
            NotifyAlert("payout_deferred", f"the contract could not deliver {len(held)} payout(s) of mine: claim them")
        )
    if loss:
        effects.append(
            NotifyAlert("loss", f"concluded at version {inp.version}, below my latest {latest}: later updates undone")
        )
    elif state is None:
        effects.append(NotifyAlert("unknown_state", f"concluded at version {inp.version}, a state this node lacks"))
    new = replace(
        ch,
        phase=Phase.CLOSED,
        pending=(),
        rolled=(),
        requests=(),
        fills=(),
        withdrawals=(),
        held_failed=(),
        held_take_failed=(),
        deferred=None,
        outcome=outcome,
    )
    return new, (*effects, NotifyConcluded(outcome), NotifyPhase(Phase.CLOSED))


def _resolve_leader(ch: Channel, state: State | None) -> tuple[Channel, list[Effect]]:
    """Whatever I had in flight or refused is decided now: carried by the concluding state, it was paid
    (or received, or filled); otherwise it never happens."""
    carried = _lineage(ch, state) if state is not None else ()
    effects: list[Effect] = []
    sent_ids: set[str] = set()
    take_ids: set[str] = set()
    for p in carried:
        if p.payments:
            effects.append(NotifySent(p.payments, p.state.version))
            sent_ids.update(x.payment_id for x in p.payments)
        totals: dict[bytes, int] = {}
        for r in p.requests if p.kind is Kind.PAY else ():
            for asset, amount in r.amounts:
                totals[asset] = totals.get(asset, 0) + amount
        if totals:
            effects.append(NotifyReceived(tuple(sorted(totals.items())), p.state.version))
        ch, fills = filled(ch, p.swaps, p.kind is Kind.FILL, p.state.version)
        effects.extend(fills)
        take_ids.update(s.take_id for s in p.swaps if p.kind is Kind.SWAP)
    why = str(Reason.NOT_INCLUDED)
    seen_pay = set(sent_ids)
    seen_take = set(take_ids)
    for p in _mine(ch):
        if p in carried:
            continue
        left = tuple(x for x in p.payments if x.payment_id not in seen_pay)
        seen_pay.update(x.payment_id for x in left)
        effects.extend(fail(left, why))
        if p.kind is Kind.SWAP:
            takes = tuple(s for s in p.swaps if s.take_id not in seen_take)
            seen_take.update(s.take_id for s in takes)
            effects.extend(fail_takes(takes, why))
    for held in ch.held_failed:
        left = tuple(x for x in held.payments if x.payment_id not in seen_pay)
        seen_pay.update(x.payment_id for x in left)
        if left:
            effects.append(NotifyFailed(left, held.reason))
    for held_take in ch.held_take_failed:
        if held_take.swap.take_id not in seen_take:
            seen_take.add(held_take.swap.take_id)
            effects.append(NotifyTakeFailed(held_take.swap, held_take.reason))
    return ch, effects


def pending_work(ch: Channel) -> tuple[Effect, ...]:
    """What a restarted node must (re)do for this channel: computed, never stored. A challenge or settle
    sent before a restart may never have landed: sent again (a duplicate fails its dry run, costing no gas)."""
    d = ch.dispute
    if ch.phase is Phase.DISPUTE and d is not None:
        out: list[Effect] = []
        if ch.latest is not None and ch.latest.state.version > d.version and ch.now < d.finalizes_at:
            out.append(SubmitTxChallenge(ch.latest, d.version, d.finalizes_at, d.state_hash))
        if ch.now >= d.finalizes_at and d.state is not None:
            out.append(SubmitTxSettle(d.state, d.finalizes_at))
        return tuple(out)
    if ch.phase is Phase.CLOSING and ch.latest is not None and ch.latest.state.is_final and not ch.pending:
        return (SubmitTxCloseCooperative(ch.latest),)
    if ch.phase is Phase.FUNDING and ch.me == LEADER and not ch.opened:
        eth = ch.deposits[ch.assets.index(ETH)][0] if ETH in ch.assets else 0
        return (SubmitTxOpen(eth),)
    return ()

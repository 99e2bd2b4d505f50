"""The channel protocol as one pure function: `transition(channel, input, key) -> (channel, effects)`.
A bad input raises (LocalError for the caller's mistakes, RemoteError for the peer's) and changes
nothing; `receive` turns a RemoteError about a proposal into the Reject the peer is owed, and one about
a request into a Refuse.

One state per version (decision 0007): A, the leader, proposes every state, each above every version
it ever signed and naming the one it builds on; B, the follower, asks for what it wants with requests
and countersigns in order. The rules live by concern: funding.py, leader.py, follower.py, closing.py,
withdrawals.py, swaps.py; this module dispatches and checks the invariants after every step."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import closing, follower, funding, leader, recovery, withdrawals
from statechannel.core import messages as m
from statechannel.core.channel import FOLLOWER, LEADER, Channel, Phase
from statechannel.core.common import Result, sync_message
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.funding import Terms, accept_open, open_channel
from statechannel.core.io import (
    ActionAbandon,
    ActionCloseCooperative,
    ActionCloseUnilateral,
    ActionPay,
    ActionTake,
    ActionWithdraw,
    ChainConcluded,
    ChainDisputeRecorded,
    ChainFunded,
    ChainOpened,
    ChainTime,
    ChainTxFailed,
    ChainWithdrawn,
    Effect,
    Input,
    PeerConnected,
    ReceiveMessage,
    SendMessage,
    SubmitTxWithdraw,
)

__all__ = ["LEGAL", "Terms", "accept_open", "check_invariants", "open_channel", "pending_work", "receive", "transition"]
pending_work = closing.pending_work

_ANY = frozenset(Phase)
_LIVE = frozenset({Phase.OPENING, Phase.FUNDING, Phase.OPEN, Phase.CLOSING, Phase.DISPUTE, Phase.RECOVERING})
# Which input may arrive in which phase (messages are checked per type and role below).
LEGAL: dict[type, frozenset[Phase]] = {
    ActionPay: frozenset({Phase.OPEN}),
    ActionTake: frozenset({Phase.OPEN}),
    ActionWithdraw: frozenset({Phase.OPEN}),
    ActionAbandon: frozenset({Phase.OPENING, Phase.FUNDING}),
    ActionCloseCooperative: frozenset({Phase.OPEN, Phase.CLOSING, Phase.DISPUTE}),
    ActionCloseUnilateral: frozenset({Phase.FUNDING, Phase.OPEN, Phase.CLOSING, Phase.RECOVERING}),
    ReceiveMessage: _LIVE,
    PeerConnected: _ANY,
    ChainOpened: _ANY,
    ChainFunded: _ANY,
    ChainWithdrawn: _ANY,
    ChainDisputeRecorded: _ANY,
    ChainConcluded: _ANY,
    ChainTxFailed: _ANY,
    ChainTime: _ANY,
}

_SIGNS = (ActionPay, ActionTake, ActionWithdraw, ActionCloseCooperative)
"""What a restored channel (`signs_nothing`) refuses: each would have this key sign a new state."""


def transition(ch: Channel, inp: Input, key: PrivateKey) -> Result:
    allowed = LEGAL[type(inp)]
    if ch.phase not in allowed:
        raise LocalError(Reason.WRONG_PHASE, f"{type(inp).__name__} is not allowed while {ch.phase}")
    if ch.signs_nothing and isinstance(inp, _SIGNS):
        raise LocalError(
            Reason.WRONG_PHASE, f"{type(inp).__name__}: this channel was restored, so it signs nothing: close it"
        )
    lead = ch.me == LEADER
    match inp:
        case ActionPay():
            new, effects = leader.pay(ch, inp.payments, key) if lead else follower.request_pay(ch, inp.payments)
        case ActionTake():
            if lead:
                new, effects = leader.propose_takes(ch, inp.takes, inp.now_ms, key)
            else:
                new, effects = follower.request_take(ch, inp.takes, inp.now_ms)
        case ActionCloseCooperative():
            new, effects = leader.close_cooperative(ch, key) if lead else follower.request_close(ch)
        case ActionCloseUnilateral():
            new, effects = closing.close_unilateral(ch)
        case ActionWithdraw():
            new, effects = withdrawals.withdraw(ch, inp, key)
        case ActionAbandon():
            new, effects = funding.abandon(ch)
        case ReceiveMessage():
            new, effects = _receive(ch, inp.message, key, inp.now_ms)
        case PeerConnected():
            new, effects = _connected(ch, key)
        case ChainOpened():
            new, effects = funding.on_opened(ch)
        case ChainFunded() | ChainWithdrawn():
            new, effects = funding.on_funded(ch, inp, key)
        case ChainDisputeRecorded():
            new, effects = closing.on_dispute(ch, inp)
        case ChainConcluded():
            new, effects = closing.on_concluded(ch, inp)
        case ChainTxFailed():
            if isinstance(inp.tx, SubmitTxWithdraw):
                new, effects = withdrawals.on_tx_failed(ch, inp.tx, inp.reason), ()
            else:
                new, effects = funding.on_tx_failed(ch, inp)
        case ChainTime():
            new, effects = closing.on_time(replace(ch, now=max(ch.now, inp.timestamp)))
    check_invariants(new)
    return new, effects


def _connected(ch: Channel, key: PrivateKey) -> Result:
    """After a (re)connect: resynchronise, then resend what is in flight."""
    if ch.phase is Phase.OPENING and ch.opening_sig is not None:
        return ch, (SendMessage(funding.open_request(ch)),)
    if ch.phase is Phase.CLOSED:
        return ch, ()
    if ch.phase is Phase.RECOVERING or ch.signs_nothing:
        return ch, tuple(e for e in (sync_message(ch),) if e is not None)
    effects: tuple[Effect, ...] = leader.resync(ch) if ch.me == LEADER else follower.resync(ch)
    effects = (*effects, *withdrawals.resend(ch))
    new, more = funding.on_connected(ch, key)
    return new, (*effects, *more)


def _receive(ch: Channel, msg: m.Message, key: PrivateKey, now_ms: int) -> Result:
    if isinstance(msg, m.OpenRequest):
        raise RemoteError(Reason.WRONG_PHASE, "channel already exists")
    if isinstance(msg, m.QuoteOffer):
        raise LocalError(Reason.BAD_PARAMS, "quote offers are kept by the node's swap desk, not the machine")
    if m.channel_of(msg) != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "message is for another channel")
    lead = ch.me == LEADER
    if ch.phase is Phase.RECOVERING or ch.signs_nothing:  # a restored node signs nothing: it only learns proofs
        if isinstance(msg, m.Sync):
            return recovery.on_sync(ch, msg)
        raise RemoteError(Reason.WRONG_PHASE, "this node is recovering its channel: it signs nothing, it closes")
    match msg:
        case m.WithdrawRequest():
            return withdrawals.on_request(ch, msg, key)
        case m.WithdrawAccept():
            return withdrawals.on_accept(ch, msg)
        case m.Sync():
            return leader.on_sync(ch, msg, key, now_ms) if lead else follower.on_sync(ch, msg)
    if lead:
        match msg:
            case m.Accept():
                if ch.phase is Phase.OPENING:
                    if msg.version != 0:
                        raise RemoteError(Reason.UNKNOWN_PROPOSAL, "only the pre-fund state is signed yet")
                    return funding.on_open_accepted(ch, msg)
                return leader.on_accept(ch, msg, key, now_ms)
            case m.Reject():
                return leader.on_reject(ch, msg, key, now_ms)
            case m.PayRequest():
                return leader.on_pay_request(ch, msg, key, now_ms)
            case m.TakeRequest():
                if now_ms <= 0:
                    raise LocalError(Reason.BAD_PARAMS, "a take request needs the receiver's clock (now_ms)")
                return leader.on_take_request(ch, msg, key, now_ms)
            case m.CloseRequest():
                return leader.on_close_request(ch, key)
    else:
        match msg:
            case m.Propose():
                return follower.on_propose(ch, msg, key)
            case m.ProposeSwap():
                if now_ms <= 0:
                    raise LocalError(Reason.BAD_PARAMS, "a swap proposal needs the receiver's clock (now_ms)")
                return follower.on_swap(ch, msg, key, now_ms)
            case m.ProposeFill():
                return follower.on_fill(ch, msg, key)
            case m.Refuse():
                return follower.on_refuse(ch, msg)
    role = "leader" if lead else "follower"
    raise RemoteError(Reason.WRONG_ROLE, f"the {role} does not take {type(msg).__name__}")


def receive(ch: Channel, msg: m.Message, key: PrivateKey, now_ms: int = 0) -> Result:
    """Feed a peer message. A proposal the rules refuse is answered with a Reject, a request with a
    Refuse (the protocol owes the peer a reason); other bad messages raise. `now_ms` is the receiver's
    wall clock, which judges a quote's expiry (a take without it raises: our fault, not the peer's)."""
    if isinstance(msg, m.ProposeSwap | m.TakeRequest) and now_ms <= 0:
        raise LocalError(Reason.BAD_PARAMS, f"receiving a {type(msg).__name__} needs the receiver's clock (now_ms)")
    try:
        return transition(ch, ReceiveMessage(msg, now_ms), key)
    except (RemoteError, LocalError) as err:
        if isinstance(msg, m.Propose | m.ProposeSwap | m.ProposeFill) and ch.me == FOLLOWER:
            take = err.take if err.take is not None and isinstance(msg, m.ProposeSwap) else -1
            reject = m.Reject(
                msg.state.channel_id, msg.state.version, msg.pid, str(err.reason), err.detail, take, err.request or 0
            )
            # a request of mine I blame is dead on both sides: the leader drops it on this Reject
            new, failed = follower.drop_request(ch, err.request or 0, str(err.reason))
            return new, (SendMessage(reject), *failed)
        if isinstance(msg, m.PayRequest | m.TakeRequest) and ch.me == LEADER and msg.channel_id == ch.channel_id:
            return ch, (SendMessage(m.Refuse(msg.channel_id, msg.rid, str(err.reason), err.detail)),)
        raise


def check_invariants(ch: Channel) -> None:
    """One state per version: every proposal in flight builds on the one before (the first on my
    latest), all above the latest and no higher than the highest version I signed; refused proposals are
    above the latest; the follower has none of either. No state overdraws."""
    if ch.latest is None:
        if ch.phase not in (Phase.OPENING, Phase.CLOSED):
            raise AssertionError("only an opening (or a declined) channel lacks a signed state")
        return
    v = ch.latest.state.version
    if ch.signed_upto < v:
        raise AssertionError("the latest state is above the highest version I signed")
    base = v
    for p in ch.pending:
        if p.base != base or p.state.version <= base or p.state.version > ch.signed_upto:
            raise AssertionError("in-flight proposals must each build on the one before, at higher versions")
        base = p.state.version
    if any(p.state.version <= v for p in ch.rolled):
        raise AssertionError("a refused proposal at or below the latest must have been dropped")
    if ch.me == FOLLOWER and (ch.pending or ch.rolled):
        raise AssertionError("the follower proposes nothing")
    if ch.phase in (Phase.OPEN, Phase.CLOSING) and ch.fully_funded():
        for state in (ch.latest.state, *(p.state for p in ch.pending[-1:])):
            for pair in ch.balances(state):
                if min(pair) < 0:
                    raise AssertionError(f"version {state.version} overdraws a participant")

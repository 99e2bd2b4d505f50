"""The channel protocol as one pure function: `transition(channel, input, key)
-> (channel, effects)`. A bad input raises (LocalError for the caller's
mistakes, RemoteError for the peer's) and changes nothing; `reject_for` turns a
RemoteError about a proposal into the Reject message the peer is owed.

Both sides proposing the same version at once: A (index 0) wins. A refuses B's
proposal with CONFLICT; B, on seeing A's, drops its own in-flight proposals,
countersigns A's and proposes its payments (and takes) again on top.

A swap is a proposal like any other (pipelined, tie-broken, rolled back), except
that it carries the maker's quote and is checked against it: see swaps.py."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core import positions, swaps, withdrawals
from statechannel.core.channel import (
    MAX_IN_FLIGHT,
    MAX_TAKES,
    Channel,
    Dispute,
    Kind,
    Phase,
    Proposal,
)
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import dispute_record, state_hash
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
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
    ChainWithdrawn,
    Effect,
    Input,
    NotifyFailed,
    NotifyFilled,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    PeerConnected,
    ReceiveMessage,
    ReceiveSwap,
    SendMessage,
    SignedState,
    SubmitTxChallenge,
    SubmitTxClose,
    SubmitTxCloseCooperative,
    SubmitTxDeposit,
    SubmitTxOpen,
    SubmitTxSettle,
)
from statechannel.core.quotes import Swap
from statechannel.core.types import ETH, ChannelParams, Domain, State

Result = tuple[Channel, tuple[Effect, ...]]

_ANY = frozenset(Phase)
_LIVE = frozenset({Phase.OPENING, Phase.FUNDING, Phase.OPEN, Phase.CLOSING})
# Which input may arrive in which phase (messages are checked per type below).
LEGAL: dict[type, frozenset[Phase]] = {
    ActionPay: frozenset({Phase.OPEN}),
    ActionTake: frozenset({Phase.OPEN}),
    ActionWithdraw: frozenset({Phase.OPEN}),
    ActionCloseCooperative: frozenset({Phase.OPEN}),
    ActionCloseUnilateral: frozenset({Phase.FUNDING, Phase.OPEN, Phase.CLOSING}),
    ReceiveMessage: _LIVE | {Phase.DISPUTE},
    ReceiveSwap: _LIVE | {Phase.DISPUTE},
    PeerConnected: _ANY,
    ChainOpened: _ANY,
    ChainFunded: _ANY,
    ChainWithdrawn: _ANY,
    ChainDisputeRecorded: _ANY,
    ChainConcluded: _ANY,
    ChainTime: _ANY,
}


# ------------------------------------------------------------------ opening


def open_channel(
    params: ChannelParams,
    domain: Domain,
    assets: tuple[bytes, ...],
    deposits: tuple[tuple[int, int], ...],
    key: PrivateKey,
) -> Result:
    """A proposes a channel: signs the pre-fund state, asks B to countersign."""
    if key.address != params.a:
        raise LocalError(Reason.BAD_PARAMS, "the opener must be participant A")
    if any(a < 0 or b < 0 for a, b in deposits):
        raise LocalError(Reason.BAD_AMOUNT, "deposits must not be negative")
    ch = Channel(params, domain, 0, assets, deposits, Phase.OPENING, None)
    prefund = State(ch.channel_id, 0, assets, tuple(0 for _ in assets))
    sig = key.sign_digest(ch.digest(prefund))
    return replace(ch, opening_sig=sig), (SendMessage(_open_request(ch, sig)), NotifyPhase(Phase.OPENING))


def _open_request(ch: Channel, sig: Signature) -> m.OpenRequest:
    return m.OpenRequest(
        chain_id=ch.domain.chain_id,
        adjudicator=ch.domain.adjudicator,
        a=ch.params.a,
        b=ch.params.b,
        challenge_period=ch.params.challenge_period,
        nonce=m.u256(ch.params.nonce),
        assets=list(ch.assets),
        deposits_a=[m.u256(d[0]) for d in ch.deposits],
        deposits_b=[m.u256(d[1]) for d in ch.deposits],
        sig=sig.to_bytes(),
    )


def accept_open(request: m.OpenRequest, domain: Domain, key: PrivateKey) -> Result:
    """B countersigns the pre-fund state. `domain` is the adjudicator B trusts."""
    if (request.chain_id, request.adjudicator) != (domain.chain_id, domain.adjudicator):
        raise RemoteError(Reason.WRONG_CHANNEL, "open request is for another chain or adjudicator")
    if request.b != key.address:
        raise RemoteError(Reason.BAD_PARAMS, "open request names someone else as B")
    if not len(request.assets) == len(request.deposits_a) == len(request.deposits_b):
        raise RemoteError(Reason.BAD_ASSETS, "one deposit pair per asset")
    try:
        params = ChannelParams(request.a, request.b, request.challenge_period, m.from_u256(request.nonce))
        deposits = tuple(
            (m.from_u256(a), m.from_u256(b)) for a, b in zip(request.deposits_a, request.deposits_b, strict=True)
        )
        ch = Channel(params, domain, 1, tuple(request.assets), deposits, Phase.FUNDING, None)
        prefund = State(ch.channel_id, 0, ch.assets, tuple(0 for _ in ch.assets))
    except LocalError as exc:
        raise RemoteError(exc.reason, f"bad open request: {exc.detail}") from exc
    sig_a = m.signature(request.sig)
    ch.check_peer_sig(prefund, sig_a)
    mine = key.sign_digest(ch.digest(prefund))
    ch = replace(ch, latest=SignedState(prefund, sig_a, mine))
    return ch, (SendMessage(m.Accept(ch.channel_id, 0, mine.to_bytes())), NotifyPhase(Phase.FUNDING))


# ------------------------------------------------------------------ dispatch


def transition(ch: Channel, inp: Input, key: PrivateKey) -> Result:
    allowed = LEGAL[type(inp)]
    if ch.phase not in allowed:
        raise LocalError(Reason.WRONG_PHASE, f"{type(inp).__name__} is not allowed while {ch.phase}")
    match inp:
        case ActionPay():
            new, effects = _pay(ch, inp.payments, key)
        case ActionTake():
            new, effects = _take(ch, inp.takes, inp.now_ms, key)
        case ActionCloseCooperative():
            new, effects = _propose(
                ch, replace(ch.head, version=ch.head.version + 1, is_final=True), Kind.FINAL, (), key
            )
            new = replace(new, phase=Phase.CLOSING)
            effects = (*effects, NotifyPhase(Phase.CLOSING))
        case ActionCloseUnilateral():
            assert ch.latest is not None
            new, effects = ch, (SubmitTxClose(ch.latest),)
        case ActionWithdraw():
            new, effects = withdrawals.withdraw(ch, inp, key)
        case ReceiveMessage():
            new, effects = _receive(ch, inp.message, key)
        case ReceiveSwap():
            new, effects = _on_swap(ch, inp, key)
        case PeerConnected():
            new, effects = ch, _resync(ch)
        case ChainOpened():
            new, effects = _on_opened(ch)
        case ChainFunded() | ChainWithdrawn():
            new, effects = _on_funded(ch, inp, key)
        case ChainDisputeRecorded():
            new, effects = _on_dispute(ch, inp)
        case ChainConcluded():
            # Closed cooperatively (no dispute came first) with the final state I hold: that is the state
            # paid out, so nothing I rolled back was; otherwise what I had in flight may have been.
            mine = ch.phase is not Phase.DISPUTE and ch.latest is not None and ch.latest.state.is_final
            if mine and ch.latest is not None and ch.latest.state.version == inp.version:
                orphan_upto = min(ch.orphan_upto, inp.version - 1)
            else:
                orphan_upto = max(ch.orphan_upto, *(p.state.version for p in ch.pending), 0)
            new = replace(
                ch,
                phase=Phase.CLOSED,
                pending=(),
                fills=(),
                chain_version=max(ch.chain_version, inp.version),
                orphan_upto=orphan_upto,
            )
            effects = (*_fail_all(ch.pending, "channel concluded"), NotifyPhase(Phase.CLOSED))
        case ChainTime():
            new, effects = _on_time(replace(ch, now=max(ch.now, inp.timestamp)))
    if new.phase is Phase.OPEN and new.latest is not None and new.head.version <= new.orphan_upto:
        new, more = _supersede(new, key)
        effects = (*effects, *more)
    new, effects = _outcomes(new, effects)
    funds_moved = isinstance(inp, ChainFunded | ChainWithdrawn | ActionWithdraw) or (
        isinstance(inp, ReceiveMessage) and isinstance(inp.message, m.WithdrawRequest | m.WithdrawAccept)
    )
    check_invariants(new, every_state=funds_moved)
    return new, effects


def _supersede(ch: Channel, key: PrivateKey) -> Result:
    """After a rollback: propose empty updates ("bumps") until my head is above every version I rolled
    back, as far as the pipeline has room (each answer makes room for the next)."""
    effects: list[Effect] = []
    while ch.head.version <= ch.orphan_upto and len(ch.pending) < MAX_IN_FLIGHT:
        ch, more = _propose(ch, replace(ch.head, version=ch.head.version + 1), Kind.PAY, (), key)
        effects.extend(more)
    return ch, tuple(effects)


def _outcomes(ch: Channel, effects: tuple[Effect, ...]) -> Result:
    """Report an outcome only once no rolled-back proposal of mine can undo it (decision 0006).

    While neither my latest both-signed version nor a version the chain recorded is above
    `orphan_upto`, the peer may still countersign a proposal of mine it refused (or that lost a tie,
    or was in flight when a close began) and settle with it: what I was told I received, my fills as
    maker and my failures could all be undone, so they wait in the channel and go out, in order, once
    it is superseded (a rollback proposes until it is). Closed on chain without that, failures are
    told as `unconfirmed` and receipts stay untold. Confirmations of my own proposals need not wait: a
    rolled-back proposal builds on them, or carries the very payments and takes they re-propose.
    Positions count the fills as they are reported."""
    latest = ch.latest.state.version if ch.latest is not None else 0
    settled = max(latest, ch.chain_version) > ch.orphan_upto
    out: list[Effect] = []
    if settled and (ch.held_received or ch.held_filled or ch.held_failed or ch.held_take_failed):
        out += [*ch.held_received, *ch.held_filled, *ch.held_failed, *ch.held_take_failed]
        ch = replace(ch, held_received=(), held_filled=(), held_failed=(), held_take_failed=())
    for e in effects:
        if settled:
            out.append(e)
        elif isinstance(e, NotifyReceived):
            ch = replace(ch, held_received=(*ch.held_received, e))
        elif isinstance(e, NotifyFilled) and e.maker:
            ch = replace(ch, held_filled=(*ch.held_filled, e))
        elif isinstance(e, NotifyFailed):
            ch = replace(ch, held_failed=(*ch.held_failed, e))
        elif isinstance(e, NotifyTakeFailed):
            ch = replace(ch, held_take_failed=(*ch.held_take_failed, e))
        else:
            out.append(e)
    if not settled and ch.phase is Phase.CLOSED and (ch.held_failed or ch.held_take_failed):
        why = str(Reason.UNCONFIRMED)
        out += [NotifyFailed(e.payments, why) for e in ch.held_failed]
        out += [NotifyTakeFailed(e.swap, why) for e in ch.held_take_failed]
        ch = replace(ch, held_failed=(), held_take_failed=())
    fills = [(e.swap, e.maker) for e in out if isinstance(e, NotifyFilled)]
    if fills:
        ch = replace(ch, positions=positions.record_fills(ch.positions, fills))
    return ch, tuple(out)


def check_invariants(ch: Channel, every_state: bool = True) -> None:
    """Versions grow one by one through the pipeline; no state overdraws.

    A step that cannot change funds or withdrawals can only add the newest
    proposal or a new latest state, so only those two need the balance check."""
    if ch.latest is None:
        if ch.phase not in (Phase.OPENING, Phase.CLOSED):
            raise AssertionError("only an opening (or a declined) channel lacks a signed state")
        return
    v = ch.latest.state.version
    for p in ch.pending:
        v += 1
        if p.state.version != v:
            raise AssertionError("in-flight proposals must have consecutive versions")
    if ch.phase in (Phase.OPEN, Phase.CLOSING) and ch.fully_funded():
        states = [p.state for p in ch.pending] if every_state else [p.state for p in ch.pending[-1:]]
        for state in (ch.latest.state, *states):
            for pair in ch.balances(state):
                if min(pair) < 0:
                    raise AssertionError(f"version {state.version} overdraws a participant")


# ------------------------------------------------------------------ proposing


def _propose(
    ch: Channel,
    state: State,
    kind: Kind,
    payments: tuple[Payment, ...],
    key: PrivateKey,
    takes: tuple[Swap, ...] = (),
) -> Result:
    if len(ch.pending) >= MAX_IN_FLIGHT:
        raise LocalError(Reason.PIPELINE_FULL, f"{MAX_IN_FLIGHT} updates already in flight")
    sig = key.sign_digest(ch.digest(state))
    proposal = Proposal(state, sig, kind, ch.next_pid, payments, takes)
    new = replace(ch, pending=(*ch.pending, proposal), next_pid=ch.next_pid + 1)
    return new, (SendMessage(_wire(proposal)),)


def _wire(p: Proposal) -> m.Message:
    if p.swaps:
        return m.ProposeSwap.of(p.state, p.sig, p.pid, p.swaps)
    return m.Propose(m.WireState.of(p.state), p.sig.to_bytes(), p.pid)


def _apply_payments(ch: Channel, base: State, payments: tuple[Payment, ...]) -> State:
    moved = dict(zip(base.assets, base.transfers, strict=True))
    sign = 1 if ch.me == 0 else -1  # A paying B raises the transfer
    for p in payments:
        if p.asset not in moved:
            raise LocalError(Reason.BAD_ASSETS, f"asset 0x{p.asset.hex()} is not in this channel")
        if not isinstance(p.amount, int) or isinstance(p.amount, bool) or p.amount <= 0:
            raise LocalError(Reason.BAD_AMOUNT, f"payment {p.payment_id}: amount must be a positive int")
        moved[p.asset] += sign * p.amount
    state = State(base.channel_id, base.version + 1, base.assets, tuple(moved[a] for a in base.assets))
    for asset in base.assets:
        if ch.my_balance(asset, state) < 0:
            raise LocalError(Reason.INSUFFICIENT_FUNDS, f"not enough of asset 0x{asset.hex()} for these payments")
    return replace(state, app_data=base.app_data)


def _pay(ch: Channel, payments: tuple[Payment, ...], key: PrivateKey) -> Result:
    if not payments:
        raise LocalError(Reason.BAD_AMOUNT, "no payments")
    return _propose(ch, _apply_payments(ch, ch.head, payments), Kind.PAY, payments, key)


def _take(ch: Channel, takes: tuple[Swap, ...], now_ms: int | None, key: PrivateKey) -> Result:
    return _propose(ch, swaps.build_takes(ch, takes, now_ms), Kind.SWAP, (), key, takes)


def _retake(ch: Channel, takes: tuple[Swap, ...], key: PrivateKey) -> Result:
    """Propose takes again after a rollback, MAX_TAKES to an update; a take that no longer passes the
    taker's checks fails alone and the others go ahead."""
    effects: list[Effect] = []
    for start in range(0, len(takes), MAX_TAKES):
        batch = takes[start : start + MAX_TAKES]
        while batch:
            try:
                ch, proposed = _take(ch, batch, None, key)
            except LocalError as exc:
                if exc.take is None:
                    effects.extend(_fail_takes(batch, exc.reason))
                    break
                effects.extend(_fail_takes(batch[exc.take : exc.take + 1], exc.reason))
                batch = batch[: exc.take] + batch[exc.take + 1 :]
            else:
                effects.extend(proposed)
                break
    return ch, tuple(effects)


def _rebase(ch: Channel, payments: tuple[Payment, ...], key: PrivateKey, takes: tuple[Swap, ...] = ()) -> Result:
    """Propose dropped payments (in one update) and takes again on the current head; fail those that no
    longer fit."""
    if ch.phase is not Phase.OPEN:
        return ch, (*_fail(payments, "channel no longer open"), *_fail_takes(takes, "channel no longer open"))
    effects: list[Effect] = []
    if payments:
        try:
            ch, proposed = _pay(ch, payments, key)
            effects.extend(proposed)
        except LocalError as exc:
            effects.extend(_fail(payments, exc.reason))
    if takes:
        ch, more = _retake(ch, takes, key)
        effects.extend(more)
    return ch, tuple(effects)


def _fail(payments: tuple[Payment, ...], reason: str) -> tuple[Effect, ...]:
    return (NotifyFailed(payments, reason),) if payments else ()


def _fail_takes(takes: tuple[Swap, ...], reason: str) -> tuple[Effect, ...]:
    return tuple(NotifyTakeFailed(swap, reason) for swap in takes)


def _takes_of(pending: tuple[Proposal, ...]) -> tuple[Swap, ...]:
    return tuple(swap for p in pending for swap in p.swaps)


def _fail_all(pending: tuple[Proposal, ...], reason: str) -> tuple[Effect, ...]:
    payments = _fail(tuple(p for prop in pending for p in prop.payments), reason)
    return (*payments, *_fail_takes(_takes_of(pending), reason))


# ------------------------------------------------------------------ receiving


def _receive(ch: Channel, msg: m.Message, key: PrivateKey) -> Result:
    if isinstance(msg, m.OpenRequest):
        raise RemoteError(Reason.WRONG_PHASE, "channel already exists")
    cid = msg.state.channel_id if isinstance(msg, (m.Propose, m.Sync)) else msg.channel_id
    if cid != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "message is for another channel")
    if isinstance(msg, m.ProposeSwap):
        raise LocalError(Reason.BAD_PARAMS, "a swap proposal is fed as ReceiveSwap, with the time")
    match msg:
        case m.Propose():
            return _on_propose(ch, msg.state.to_state(), m.signature(msg.sig), msg.pid, key)
        case m.Accept():
            return _on_accept(ch, msg)
        case m.Reject():
            return _on_reject(ch, msg, key)
        case m.Sync():
            return _on_sync(ch, msg, key)
        case m.WithdrawRequest():
            return withdrawals.on_request(ch, msg, key)
        case m.WithdrawAccept():
            return withdrawals.on_accept(ch, msg)
    raise RemoteError(Reason.BAD_MESSAGE, f"unexpected {type(msg).__name__}")


def receive(ch: Channel, msg: m.Message, key: PrivateKey, now_ms: int | None = None) -> Result:
    """Feed a peer message. A proposal the rules refuse is answered with a Reject
    (the protocol owes the proposer a reason); other bad messages raise. A swap
    proposal needs `now_ms`, the receiver's wall clock, to judge the quote's expiry."""
    inp: ReceiveMessage | ReceiveSwap = ReceiveMessage(msg)
    if isinstance(msg, m.ProposeSwap):
        if now_ms is None:
            raise LocalError(Reason.BAD_PARAMS, "receiving a swap proposal needs now_ms")
        inp = ReceiveSwap(msg, now_ms)
    try:
        return transition(ch, inp, key)
    except (RemoteError, LocalError) as err:
        if not isinstance(msg, m.Propose | m.ProposeSwap):
            raise
        take = err.take if err.take is not None and isinstance(msg, m.ProposeSwap) else -1
        reject = m.Reject(msg.state.channel_id, msg.state.version, msg.pid, str(err.reason), err.detail, take)
        return ch, (SendMessage(reject),)


def _on_swap(ch: Channel, inp: ReceiveSwap, key: PrivateKey) -> Result:
    msg = inp.message
    if msg.state.channel_id != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "message is for another channel")
    takes = msg.to_swaps()
    return _on_propose(ch, msg.state.to_state(), m.signature(msg.sig), msg.pid, key, (takes, inp.now_ms))


def _on_propose(
    ch: Channel,
    state: State,
    sig: Signature,
    pid: int,
    key: PrivateKey,
    take: tuple[tuple[Swap, ...], int] | None = None,
) -> Result:
    """`take`: the takes a ProposeSwap carries and the time it arrived."""
    if ch.latest is None:
        raise RemoteError(Reason.WRONG_PHASE, "no pre-fund state yet")
    latest = ch.latest.state
    if state.version <= latest.version:
        if state == latest:  # a retransmission: answer again, idempotently
            mine = ch.latest.sig_a if ch.me == 0 else ch.latest.sig_b
            return ch, (SendMessage(m.Accept(ch.channel_id, state.version, mine.to_bytes())),)
        return ch, (_refuse(ch, state, pid, Reason.STALE_VERSION, f"version {state.version} <= {latest.version}"),)
    if state.version > latest.version + 1:
        return ch, (_refuse(ch, state, pid, Reason.VERSION_GAP, f"expected version {latest.version + 1}"),)
    digest = ch.digest(state)
    ch.check_peer_sig(state, sig, digest)
    dropped: tuple[Proposal, ...] = ()
    if ch.pending:  # both proposed this version
        if ch.me == 0:
            return ch, (_refuse(ch, state, pid, Reason.CONFLICT, "A's proposal of this version wins"),)
        dropped = ch.pending
        # what I signed and now drop can still be countersigned by the peer, unless it is this very state
        rolled = [p.state.version for p in dropped if p.state != state]
        ch = replace(ch, pending=(), orphan_upto=max(ch.orphan_upto, *rolled, 0))
        if ch.phase is Phase.CLOSING and any(p.kind is Kind.FINAL for p in dropped):
            ch = replace(ch, phase=Phase.OPEN)  # my close is dropped with the rest: open again
    if take is None:
        kind = _check_move(ch, latest, state)
    else:
        kind, ch = Kind.SWAP, swaps.accept_takes(ch, latest, state, *take)
    mine = key.sign_digest(digest)
    new = replace(ch, latest=ch.signed(state, mine, sig))
    effects: list[Effect] = [SendMessage(m.Accept(ch.channel_id, state.version, mine.to_bytes()))]
    received = tuple(
        (asset, abs(t1 - t0))
        for asset, t0, t1 in zip(state.assets, latest.transfers, state.transfers, strict=True)
        if t1 != t0
    )
    if take is not None:
        effects.extend(NotifyFilled(swap, True, state.version) for swap in take[0])
    elif received:
        effects.append(NotifyReceived(received, state.version))
    if kind is Kind.POSTFUND:
        new = replace(new, phase=Phase.OPEN)
        effects.append(NotifyPhase(Phase.OPEN))
    elif kind is Kind.FINAL:
        new = replace(new, phase=Phase.CLOSING)
        effects.append(NotifyPhase(Phase.CLOSING))
    if dropped:
        if new.phase is Phase.OPEN and any(p.kind is Kind.FINAL for p in dropped):
            effects.append(NotifyPhase(Phase.OPEN))
        new, more = _rebase(new, tuple(p for prop in dropped for p in prop.payments), key, _takes_of(dropped))
        effects.extend(more)
    return new, tuple(effects)


def _refuse(ch: Channel, state: State, pid: int, reason: Reason, detail: str) -> SendMessage:
    return SendMessage(m.Reject(ch.channel_id, state.version, pid, str(reason), detail))


def _check_move(ch: Channel, old: State, new: State) -> Kind:
    """Which kind of update the peer proposes; raises if the rules do not allow it."""
    if new.assets != old.assets or new.app_data != old.app_data:
        raise RemoteError(Reason.ILLEGAL_MOVE, "assets and app data may not change")
    if new.is_final:
        if ch.phase is not Phase.OPEN or new.transfers != old.transfers:
            raise RemoteError(Reason.ILLEGAL_MOVE, "a final state must repeat the latest transfers while open")
        return Kind.FINAL
    if ch.phase is Phase.FUNDING:
        if new.version != 1 or new.transfers != old.transfers:
            raise RemoteError(Reason.ILLEGAL_MOVE, "while funding only the post-fund state may be proposed")
        if not ch.fully_funded():
            raise RemoteError(Reason.NOT_FUNDED, "this side has not seen every deposit yet")
        return Kind.POSTFUND
    if ch.phase is not Phase.OPEN:
        raise RemoteError(Reason.WRONG_PHASE, f"no payments while {ch.phase}")
    sign = 1 if ch.peer == 0 else -1  # the peer may only pay: move value towards me
    for t0, t1 in zip(old.transfers, new.transfers, strict=True):
        if sign * (t1 - t0) < 0:
            raise RemoteError(Reason.ILLEGAL_MOVE, "a proposal may only move value from its proposer")
    for pair in ch.balances(new):
        if pair[ch.peer] < 0:
            raise RemoteError(Reason.INSUFFICIENT_FUNDS, "the proposer cannot pay that much")
    return Kind.PAY


def _on_accept(ch: Channel, msg: m.Accept) -> Result:
    if not ch.pending:
        if ch.phase is Phase.OPENING and msg.version == 0:
            return _on_open_accepted(ch, msg)
        return ch, ()  # a late duplicate
    head = ch.pending[0]
    if msg.version != head.state.version:
        if msg.version < head.state.version:
            return ch, ()  # a duplicate of one already confirmed
        raise RemoteError(Reason.UNKNOWN_PROPOSAL, f"accept for version {msg.version}, expected {head.state.version}")
    theirs = m.signature(msg.sig)
    ch.check_peer_sig(head.state, theirs)
    new = replace(ch, latest=ch.signed(head.state, head.sig, theirs), pending=ch.pending[1:])
    new, effects = _confirmed(new, head)
    if head.kind is Kind.POSTFUND:
        new = replace(new, phase=Phase.OPEN)
        effects.append(NotifyPhase(Phase.OPEN))
    elif head.kind is Kind.FINAL:
        assert new.latest is not None
        effects.append(SubmitTxCloseCooperative(new.latest))
    return new, tuple(effects)


def _confirmed(ch: Channel, p: Proposal) -> tuple[Channel, list[Effect]]:
    """My proposal `p` is signed by both: its payments are sent and its takes filled."""
    effects: list[Effect] = []
    if p.payments:
        effects.append(NotifySent(p.payments, p.state.version))
    effects.extend(NotifyFilled(swap, False, p.state.version) for swap in p.swaps)
    return ch, effects


def _on_open_accepted(ch: Channel, msg: m.Accept) -> Result:
    prefund = State(ch.channel_id, 0, ch.assets, tuple(0 for _ in ch.assets))
    theirs = m.signature(msg.sig)
    ch.check_peer_sig(prefund, theirs)
    assert ch.opening_sig is not None
    new = replace(ch, latest=SignedState(prefund, ch.opening_sig, theirs), phase=Phase.FUNDING, opening_sig=None)
    eth = ch.deposits[ch.assets.index(ETH)][0] if ETH in ch.assets else 0
    return new, (SubmitTxOpen(eth), NotifyPhase(Phase.FUNDING))


def _on_reject(ch: Channel, msg: m.Reject, key: PrivateKey) -> Result:
    if ch.phase is Phase.OPENING and msg.version == 0:  # B declined to open
        return replace(ch, phase=Phase.CLOSED, opening_sig=None), (NotifyPhase(Phase.CLOSED),)
    index = next((i for i, p in enumerate(ch.pending) if p.pid == msg.pid), None)
    if index is None:
        return ch, ()  # about a proposal already rolled back or confirmed
    rejected, later = ch.pending[index], ch.pending[index + 1 :]
    new = replace(ch, pending=ch.pending[:index], orphan_upto=max(ch.orphan_upto, ch.pending[-1].state.version))
    effects: list[Effect] = []
    if any(p.kind is Kind.FINAL for p in (rejected, *later)):  # the close is rolled back with it: open again
        new = replace(new, phase=Phase.OPEN)
        effects.append(NotifyPhase(Phase.OPEN))
    retry = tuple(p for prop in later for p in prop.payments)
    retry_takes = _takes_of(later)
    blamed = msg.take if rejected.swaps and 0 <= msg.take < len(rejected.swaps) else None
    if msg.reason == Reason.CONFLICT and ch.me == 1:  # B lost a tie-break: nothing wrong with the payments
        # (A wins every tie, so a CONFLICT sent to A is a refusal like any other: retrying it forever
        # would let B keep A busy)
        retry = rejected.payments + retry
        retry_takes = rejected.swaps + retry_takes
    elif blamed is not None:  # one take refused: the others in its update go ahead without it
        effects.extend(_fail_takes(rejected.swaps[blamed : blamed + 1], msg.reason))
        retry_takes = rejected.swaps[:blamed] + rejected.swaps[blamed + 1 :] + retry_takes
    else:
        effects.extend(_fail(rejected.payments, msg.reason))
        effects.extend(_fail_takes(rejected.swaps, msg.reason))
    new, more = _rebase(new, retry, key, retry_takes)
    return new, (*effects, *more)


def _on_sync(ch: Channel, msg: m.Sync, key: PrivateKey) -> Result:
    signed = SignedState(msg.state.to_state(), m.signature(msg.sig_a), m.signature(msg.sig_b))
    ch.check_signed(signed)
    if ch.latest is None or signed.state.version <= ch.latest.state.version:
        return ch, ()
    # The peer holds a newer state, signed by us too: one of our proposals it accepted
    # (its Accept was lost). Our proposals are consecutive, so every one up to that
    # version is confirmed; the ones above it still build on it and stay in flight
    # as they are (they may already be on their way again): never re-propose them.
    if not any(p.state == signed.state for p in ch.pending):
        raise RemoteError(Reason.UNKNOWN_PROPOSAL, f"peer's version {signed.state.version} is none of ours")
    confirmed = tuple(p for p in ch.pending if p.state.version <= signed.state.version)
    rest = tuple(p for p in ch.pending if p.state.version > signed.state.version)
    new = replace(ch, latest=signed, pending=rest)
    effects: list[Effect] = []
    for p in confirmed:
        new, done = _confirmed(new, p)
        effects.extend(done)
        if p.kind is Kind.POSTFUND:
            new = replace(new, phase=Phase.OPEN)
            effects.append(NotifyPhase(Phase.OPEN))
        elif p.kind is Kind.FINAL:  # we proposed it, so we submit it
            effects.append(SubmitTxCloseCooperative(signed))
    return new, tuple(effects)


def _resync(ch: Channel) -> tuple[Effect, ...]:
    """After a (re)connect: offer our latest state, then resend what is in flight."""
    effects: list[Effect] = []
    if ch.phase is Phase.OPENING and ch.opening_sig is not None:
        return (SendMessage(_open_request(ch, ch.opening_sig)),)
    if ch.latest is not None:
        s = ch.latest
        effects.append(SendMessage(m.Sync(m.WireState.of(s.state), s.sig_a.to_bytes(), s.sig_b.to_bytes())))
    for p in ch.pending:
        effects.append(SendMessage(_wire(p)))
    effects.extend(withdrawals.resend(ch))
    return tuple(effects)


# ------------------------------------------------------------------ chain


def _on_opened(ch: Channel) -> Result:
    if ch.opened:
        return ch, ()
    new = replace(ch, opened=True)
    effects: list[Effect] = []
    for asset, pair in zip(ch.assets, ch.deposits, strict=True):
        amount = pair[ch.me]
        if amount and (ch.me == 1 or asset != ETH):  # A's ether came with the open
            effects.append(SubmitTxDeposit(asset, amount))
    return new, tuple(effects)


def _on_funded(ch: Channel, inp: ChainFunded | ChainWithdrawn, key: PrivateKey) -> Result:
    if inp.asset not in ch.assets:
        return ch, ()
    i = ch.assets.index(inp.asset)
    pair = list(ch.funded[i])
    pair[inp.participant] = inp.funded
    funded = (*ch.funded[:i], (pair[0], pair[1]), *ch.funded[i + 1 :])
    new = replace(ch, funded=funded, opened=True)
    if isinstance(inp, ChainWithdrawn):  # exactly this withdrawal is done: stop holding it back
        ws = tuple(
            p for p in ch.withdrawals if (p.withdrawal.participant, p.withdrawal.nonce) != (inp.participant, inp.nonce)
        )
        new = replace(new, withdrawals=ws)
    if new.phase is Phase.FUNDING and new.fully_funded() and not new.pending:
        assert new.latest is not None
        return _propose(new, replace(new.latest.state, version=1), Kind.POSTFUND, (), key)
    return new, ()


def _on_dispute(ch: Channel, inp: ChainDisputeRecorded) -> Result:
    d = Dispute(inp.version, inp.finalizes_at, inp.funded_a, inp.funded_b, inp.state_hash)
    # The recorded state may be one of my proposals whose Accept never reached me: the chain checked
    # both signatures, so it and the proposals below it are done, not failed.
    recorded = next(
        (p for p in ch.pending if p.state.version == inp.version and state_hash(p.state) == inp.state_hash), None
    )
    new = replace(ch, phase=Phase.DISPUTE, dispute=d, pending=(), chain_version=max(ch.chain_version, inp.version))
    effects: list[Effect] = []
    failed = ch.pending
    if recorded is not None:
        new = replace(new, dispute=replace(d, state=recorded.state))
        for p in ch.pending:
            if p.state.version <= inp.version:
                new, done = _confirmed(new, p)
                effects.extend(done)
        failed = tuple(p for p in ch.pending if p.state.version > inp.version)
    # the proposals of mine still in flight are rolled back too: the peer may hold one countersigned
    new = replace(new, orphan_upto=max(new.orphan_upto, *(p.state.version for p in failed), 0))
    effects += [*_fail_all(failed, "channel is being closed"), NotifyPhase(Phase.DISPUTE)]
    if ch.latest is not None and ch.latest.state.version > inp.version and ch.now < inp.finalizes_at:
        effects.append(SubmitTxChallenge(ch.latest, inp.funded_a, inp.funded_b, inp.state_hash))
        new = replace(new, dispute=replace(d, challenged=True))
    new, more = _on_time(new)
    return new, (*effects, *more)


def _on_time(ch: Channel) -> Result:
    d = ch.dispute
    if ch.phase is not Phase.DISPUTE or d is None or d.settle_submitted or ch.now < d.finalizes_at:
        return ch, ()
    state = ch.latest.state if ch.latest is not None and ch.latest.state.version == d.version else d.state
    if state is None:
        return ch, ()  # the recorded state is not one we know; the peer settles it
    if dispute_record(d.funded_a, d.funded_b, state_hash(state)) != dispute_record(
        d.funded_a, d.funded_b, d.state_hash
    ):
        return ch, ()
    return replace(ch, dispute=replace(d, settle_submitted=True)), (SubmitTxSettle(state, d.funded_a, d.funded_b),)


def pending_work(ch: Channel) -> tuple[Effect, ...]:
    """What a restarted node must (re)do for this channel: computed, never stored."""
    if ch.phase is Phase.CLOSING and ch.latest is not None and ch.latest.state.is_final and not ch.pending:
        return (SubmitTxCloseCooperative(ch.latest),)
    if ch.phase is Phase.FUNDING and not ch.opened and ch.me == 0:
        eth = ch.deposits[ch.assets.index(ETH)][0] if ETH in ch.assets else 0
        return (SubmitTxOpen(eth),)
    return ()

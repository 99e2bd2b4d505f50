"""The leader's side of updates (decision 0007). A, the leader, is the only one who proposes states:
its own payments and takes, and what the follower asks for in requests. Each proposal gets a version
above everything A ever signed (`signed_upto`), and names the version it builds on, so no key ever
signs two states of one version and a refused proposal can never be confused with its replacement.

A refused proposal (and those built on it) is rolled back but kept: A signed it, so the follower can
still countersign it and close with it until A's latest both-signed version passes it. Until then the
failures it caused are held; after a rollback A proposes again at once (the retried payments, or an
empty "bump"), and the failures are told when that is countersigned. What A confirms is never held:
every state the follower could still use builds on A's latest."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import (
    FOLLOWER,
    LEADER,
    MAX_IN_FLIGHT,
    MAX_QUEUED,
    MAX_ROLLED,
    MAX_TAKES,
    Channel,
    Kind,
    Phase,
    Proposal,
    Request,
    TakeRefused,
)
from statechannel.core.common import Result, check_payment, fail, fail_takes, filled, sync_message, wire
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    Effect,
    NotifyFailed,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    SendMessage,
    SignedState,
    SubmitTxClose,
    SubmitTxCloseCooperative,
)
from statechannel.core.quotes import QuoteFill, Swap, quote_signer
from statechannel.core.types import State

MAX_REQUESTS_PER_UPDATE = 64
"""Follower payment requests carried by one update (each already holds up to 512 payments)."""
MAX_QUEUED_TAKES = 4 * 256
"""Takes the follower may have waiting in my queue, in all its take requests together."""
MAX_CARRIED = 2
"""Times the follower may refuse a proposal of mine that carried nothing but its requests: past that
they are refused, so a follower refusing its own requests cannot make me propose forever."""


# ------------------------------------------------------------------ signing


def propose(
    ch: Channel,
    transfers: tuple[int, ...],
    kind: Kind,
    key: PrivateKey,
    *,
    is_final: bool = False,
    payments: tuple[Payment, ...] = (),
    takes: tuple[Swap, ...] = (),
    requests: tuple[Request, ...] = (),
    taken: tuple[int, ...] = (),
    refused: tuple[TakeRefused, ...] = (),
) -> Result:
    """Sign a state on my head at the next version above everything I signed, and send it."""
    if ch.me != LEADER:
        raise LocalError(Reason.WRONG_ROLE, "only the leader proposes states")
    if ch.final_signed:
        raise LocalError(Reason.CLOSING, "a final state is signed: nothing else is")
    if len(ch.pending) >= MAX_IN_FLIGHT:
        raise LocalError(Reason.PIPELINE_FULL, f"{MAX_IN_FLIGHT} updates in flight")
    superseding = is_final or (kind is Kind.PAY and not payments and not requests)
    if len(ch.rolled) >= MAX_ROLLED and not superseding:  # a final or a bump may still clear them
        raise LocalError(Reason.PIPELINE_FULL, f"{MAX_ROLLED} refused proposals of mine are still usable")
    head = ch.head
    state = State(head.channel_id, ch.signed_upto + 1, head.assets, transfers, is_final, head.app_data)
    sig = key.sign_digest(ch.digest(state))
    p = Proposal(state, sig, kind, ch.next_pid, head.version, payments, takes, requests, taken, refused)
    new = replace(
        ch,
        pending=(*ch.pending, p),
        next_pid=ch.next_pid + 1,
        signed_upto=state.version,
        final_signed=is_final,
    )
    return new, (SendMessage(wire(p)),)


def _check_payments(ch: Channel, payments: tuple[Payment, ...]) -> None:
    if len(payments) > m.MAX_PAID:
        raise LocalError(Reason.BAD_AMOUNT, f"at most {m.MAX_PAID} payments in one update")
    for p in payments:
        check_payment(ch, p)


def _pay_state(ch: Channel, payments: tuple[Payment, ...], requests: tuple[Request, ...]) -> tuple[int, ...]:
    """Transfers on my head with my payments (A pays B: up) and the follower's requests (down)."""
    moved = dict(zip(ch.head.assets, ch.head.transfers, strict=True))
    for p in payments:
        moved[p.asset] += p.amount
    for r in requests:
        for asset, amount in r.amounts:
            moved[asset] -= amount
    return tuple(moved[a] for a in ch.assets)


def _fits(ch: Channel, transfers: tuple[int, ...], who: int) -> bool:
    try:
        probe = replace(ch.head, transfers=transfers)
    except LocalError:  # beyond what a state can carry: it cannot fit either
        return False
    return all(pair[who] >= 0 for pair in ch.balances(probe))


def propose_pay(ch: Channel, payments: tuple[Payment, ...], key: PrivateKey) -> Result:
    """One update with my payments and as many of the follower's queued payment requests as it can
    afford (a request it cannot afford is refused). Raises, changing nothing, if mine do not fit."""
    _check_payments(ch, payments)
    carried: list[Request] = []
    refusals: list[Effect] = []
    rest: list[Request] = []
    for r in ch.requests:
        if not r.amounts or len(carried) >= MAX_REQUESTS_PER_UPDATE:
            rest.append(r)
        elif _fits(ch, _pay_state(ch, (), (*carried, r)), FOLLOWER):
            carried.append(r)
        else:
            refusals.append(_refuse(ch, r.rid, Reason.INSUFFICIENT_FUNDS, "the follower cannot afford it"))
    transfers = _pay_state(ch, payments, tuple(carried))
    if payments and not _fits(ch, transfers, LEADER):
        raise LocalError(Reason.INSUFFICIENT_FUNDS, "not enough funds for these payments")
    ch = replace(ch, requests=tuple(rest))
    if not payments and not carried:
        return ch, tuple(refusals)
    ch, sent = propose(ch, transfers, Kind.PAY, key, payments=payments, requests=tuple(carried))
    return ch, (*refusals, *sent)


def bump(ch: Channel, key: PrivateKey) -> Result:
    """An empty update, so that a refused proposal of mine is superseded and its failures can be told."""
    return propose(ch, ch.head.transfers, Kind.PAY, key)


def _is_bump(p: Proposal) -> bool:
    return p.kind is Kind.PAY and not p.payments and not p.requests


def propose_takes(ch: Channel, takes: tuple[Swap, ...], now_ms: int | None, key: PrivateKey) -> Result:
    """My takes of the follower's quotes, in one update; raises naming the first my checks refuse."""
    transfers = swaps.build_takes(ch, takes, now_ms)
    return propose(ch, transfers, Kind.SWAP, key, takes=takes)


def _retake(ch: Channel, takes: tuple[Swap, ...], key: PrivateKey) -> Result:
    """Propose takes again after a rollback, MAX_TAKES to an update; one that no longer passes my own
    checks fails alone."""
    effects: list[Effect] = []
    for start in range(0, len(takes), MAX_TAKES):
        batch = takes[start : start + MAX_TAKES]
        while batch:
            try:
                ch, proposed = propose_takes(ch, batch, None, key)
            except LocalError as exc:
                if exc.take is None:
                    effects.extend(fail_takes(batch, exc.reason))
                    break
                effects.extend(fail_takes(batch[exc.take : exc.take + 1], exc.reason))
                batch = batch[: exc.take] + batch[exc.take + 1 :]
            else:
                effects.extend(proposed)
                break
    return ch, tuple(effects)


def propose_fill(ch: Channel, req: Request, now_ms: int, key: PrivateKey) -> Result:
    """The follower's take request, checked against my quotes by my clock: the takes that pass go in one
    update, the others are refused in it (or the whole request is refused when none passes)."""
    ch = replace(ch, requests=tuple(r for r in ch.requests if r.rid != req.rid))
    fills = {f.quote_id: f for f in ch.fills if not f.expired_by(now_ms)}
    transfers = ch.head.transfers
    taken: list[int] = []
    refused: list[TakeRefused] = []
    for i, swap in enumerate(req.takes):
        try:
            transfers = swaps.accept_one(ch, transfers, swap, now_ms, fills)
            taken.append(i)
        except RemoteError as exc:
            refused.append(TakeRefused(i, str(exc.reason), exc.detail))
    if not taken:
        first = refused[0]
        wire_refused = [m.TakeRefusal(r.index, r.reason, r.detail) for r in refused]
        msg = m.Refuse(ch.channel_id, req.rid, first.reason, first.detail, wire_refused)
        return ch, (SendMessage(msg),)
    ch = replace(ch, fills=tuple(fills.values()))
    carried = tuple(req.takes[i] for i in taken)
    return propose(
        ch, transfers, Kind.FILL, key, takes=carried, requests=(req,), taken=tuple(taken), refused=tuple(refused)
    )


def _unreserve(fills: tuple[QuoteFill, ...], rolled: tuple[Proposal, ...]) -> tuple[QuoteFill, ...]:
    """The fills a rolled-back FILL reserved go back: it and its replacement are alternatives, so each
    chain of states the chain could settle stays within every quote's size."""
    back: dict[int, int] = {}
    for p in rolled:
        if p.kind is Kind.FILL:
            for swap in p.swaps:
                back[swap.quote.quote_id] = back.get(swap.quote.quote_id, 0) + swap.base_amount
    if not back:
        return fills
    out = []
    for f in fills:
        left = f.filled - back.get(f.quote_id, 0)
        if left > 0:
            out.append(replace(f, filled=left))
    return tuple(out)


def propose_queued(ch: Channel, key: PrivateKey, now_ms: int, payments: tuple[Payment, ...] = ()) -> Result:
    """Carry what waits: my payments (if any) with the queued payment requests, then take requests."""
    effects: list[Effect] = []
    if ch.phase is not Phase.OPEN or ch.close_wanted:
        if payments:
            raise LocalError(Reason.CLOSING, f"the channel is {ch.phase}")
        return ch, ()
    if payments or any(r.amounts for r in ch.requests):
        if ch.room() > 0:
            ch, more = propose_pay(ch, payments, key)
            effects.extend(more)
        elif payments:
            raise LocalError(Reason.PIPELINE_FULL, "no room for another update")
    for r in ch.requests:
        if ch.room() <= 0 or now_ms <= 0:
            break
        if r.takes:
            ch, more = propose_fill(ch, r, now_ms, key)
            effects.extend(more)
    return ch, tuple(effects)


def _refuse(ch: Channel, rid: int, reason: Reason, detail: str) -> SendMessage:
    return SendMessage(m.Refuse(ch.channel_id, rid, str(reason), detail))


# ------------------------------------------------------------------ actions


def pay(ch: Channel, payments: tuple[Payment, ...], key: PrivateKey) -> Result:
    if not payments:
        raise LocalError(Reason.BAD_AMOUNT, "no payments")
    if ch.close_wanted:
        raise LocalError(Reason.CLOSING, "the channel is closing")
    return propose_pay(ch, payments, key)


def close_cooperative(ch: Channel, key: PrivateKey) -> Result:
    """The final state repeats my latest transfers, and is proposed only once nothing is in flight, so
    it pays exactly what my latest both-signed state pays (and so does any final I ever signed)."""
    if ch.final_signed:
        return ch, ()
    ch = replace(ch, close_wanted=True)
    effects: list[Effect] = [_refuse(ch, r.rid, Reason.CLOSING, "the channel is closing") for r in ch.requests]
    ch = replace(ch, requests=())
    if ch.phase is Phase.OPEN:
        ch = replace(ch, phase=Phase.CLOSING)
        effects.append(NotifyPhase(Phase.CLOSING))
    if not ch.pending:
        ch, more = _propose_final(ch, key)
        effects.extend(more)
    return ch, tuple(effects)


def _propose_final(ch: Channel, key: PrivateKey) -> Result:
    assert ch.latest is not None
    return propose(ch, ch.latest.state.transfers, Kind.FINAL, key, is_final=True)


# ------------------------------------------------------------------ from the follower


def on_pay_request(ch: Channel, msg: m.PayRequest, key: PrivateKey, now_ms: int) -> Result:
    if _seen(ch, msg.rid):
        return ch, ()
    if msg.rid <= ch.last_rid:
        return ch, (_refuse(ch, msg.rid, Reason.UNKNOWN_REQUEST, "request already handled"),)
    if not 0 < len(msg.assets) == len(msg.amounts) <= len(ch.assets) or len(set(msg.assets)) != len(msg.assets):
        raise RemoteError(Reason.BAD_MESSAGE, "one amount per asset, each asset once", request=msg.rid)
    amounts = tuple((a, m.from_u256(v)) for a, v in zip(msg.assets, msg.amounts, strict=True))
    if any(a not in ch.assets or v <= 0 for a, v in amounts):
        raise RemoteError(Reason.BAD_AMOUNT, "amounts must be positive, of this channel's assets", request=msg.rid)
    for asset, amount in amounts:
        if amount > sum(ch.funded[ch.assets.index(asset)]):  # it could never be carried: refused now, not queued
            raise RemoteError(Reason.INSUFFICIENT_FUNDS, "more than the channel holds", request=msg.rid)
    try:
        paid = m.unpack_paid(ch.assets, msg.paid, dict(amounts))
        counts = m.unpack_counts(msg.paid, msg.counts)
    except RemoteError as exc:
        raise RemoteError(exc.reason, exc.detail, request=msg.rid) from exc
    return _take_in(ch, Request(msg.rid, amounts, paid=paid, paid_counts=counts), key, now_ms)


def on_take_request(ch: Channel, msg: m.TakeRequest, key: PrivateKey, now_ms: int) -> Result:
    if _seen(ch, msg.rid):
        return ch, ()
    if msg.rid <= ch.last_rid:
        return ch, (_refuse(ch, msg.rid, Reason.UNKNOWN_REQUEST, "request already handled"),)
    try:
        takes = msg.to_swaps()
    except RemoteError as exc:
        raise RemoteError(exc.reason, exc.detail, request=msg.rid) from exc
    mine = ch.address_of(ch.me)
    for swap in takes:  # an honest follower takes only my quotes of this channel: anything else, never queued
        if swap.quote.channel_id != ch.channel_id:
            raise RemoteError(Reason.WRONG_CHANNEL, "a take of a quote of another channel", request=msg.rid)
        if quote_signer(ch.domain, swap.quote, swap.quote_sig) != mine:
            raise RemoteError(Reason.BAD_SIGNATURE, "a take of a quote I did not sign", request=msg.rid)
    return _take_in(ch, Request(msg.rid, takes=takes), key, now_ms)


def _seen(ch: Channel, rid: int) -> bool:
    """A request resent after a reconnect that is still on its way: taken in once only. (One carried only
    by a refused proposal is not on its way: it went back to the queue, or was refused.)"""
    if rid > ch.last_rid:
        return False
    return any(r.rid == rid for r in ch.requests) or any(r.rid == rid for p in ch.pending for r in p.requests)


def _take_in(ch: Channel, req: Request, key: PrivateKey, now_ms: int) -> Result:
    ch = replace(ch, last_rid=req.rid)
    if ch.phase is not Phase.OPEN or ch.close_wanted or ch.final_signed:
        return ch, (_refuse(ch, req.rid, Reason.CLOSING, f"the channel is {ch.phase}"),)
    if len(ch.requests) >= MAX_QUEUED:
        return ch, (_refuse(ch, req.rid, Reason.PIPELINE_FULL, f"{MAX_QUEUED} requests already queued"),)
    if sum(len(r.takes) for r in ch.requests) + len(req.takes) > MAX_QUEUED_TAKES:
        return ch, (_refuse(ch, req.rid, Reason.PIPELINE_FULL, f"{MAX_QUEUED_TAKES} takes already queued"),)
    ch = replace(ch, requests=(*ch.requests, req))
    return propose_queued(ch, key, now_ms)


def on_close_request(ch: Channel, key: PrivateKey) -> Result:
    if ch.phase not in (Phase.OPEN, Phase.CLOSING, Phase.DISPUTE):
        return ch, ()
    return close_cooperative(ch, key)


def on_accept(ch: Channel, msg: m.Accept, key: PrivateKey, now_ms: int) -> Result:
    """The follower countersigned one of my proposals in flight: it, and every one it builds on (their
    own Accepts may be lost), are both-signed now."""
    upto = next((i for i, p in enumerate(ch.pending) if p.state.version == msg.version), None)
    if upto is None:
        if (
            not ch.pending
            or msg.version < ch.pending[0].state.version
            or any(p.state.version == msg.version for p in ch.rolled)
        ):
            return ch, ()  # a duplicate, or about a refused proposal (the chain tells if it is used)
        raise RemoteError(Reason.UNKNOWN_PROPOSAL, f"accept for version {msg.version}, none of mine in flight")
    proposal = ch.pending[upto]
    theirs = m.signature(msg.sig)
    ch.check_peer_sig(proposal.state, theirs)
    done, rest = ch.pending[: upto + 1], ch.pending[upto + 1 :]
    ch = replace(ch, latest=ch.signed(proposal.state, proposal.sig, theirs), pending=rest)
    ch, effects = _confirmed(ch, done)
    ch, more = _after_confirm(ch, key, now_ms)
    return ch, (*effects, *more)


def on_sync(ch: Channel, msg: m.Sync, key: PrivateKey, now_ms: int) -> Result:
    """The follower's latest. Newer than mine, it is one of my proposals whose Accept was lost: it and
    those below it are confirmed. A refused proposal of mine countersigned after all is not adopted: my
    later proposals supersede it, and if it is used on chain the conclusion tells what it paid."""
    signed = SignedState(msg.state.to_state(), m.signature(msg.sig_a), m.signature(msg.sig_b))
    ch.check_signed(signed)
    if ch.latest is None or signed.state.version <= ch.latest.state.version:
        return ch, ()
    upto = next((i for i, p in enumerate(ch.pending) if p.state == signed.state), None)
    if upto is None:
        return ch, ()
    done, rest = ch.pending[: upto + 1], ch.pending[upto + 1 :]
    ch = replace(ch, latest=signed, pending=rest)
    ch, effects = _confirmed(ch, done)
    ch, more = _after_confirm(ch, key, now_ms)
    return ch, (*effects, *more)


def _confirmed(ch: Channel, done: tuple[Proposal, ...]) -> tuple[Channel, list[Effect]]:
    """My proposals `done` are signed by both: my payments are sent, the requests carried are received,
    the takes filled. Refused proposals below the new latest can no longer be used: their held failures
    are told."""
    effects: list[Effect] = []
    for p in done:
        v = p.state.version
        if p.payments:
            effects.append(NotifySent(p.payments, v))
        if p.kind is Kind.PAY and p.requests:
            totals: dict[bytes, int] = {}
            for r in p.requests:
                for asset, amount in r.amounts:
                    totals[asset] = totals.get(asset, 0) + amount
            listed = tuple(x for r in p.requests for x in (r.paid or r.amounts))
            counts: tuple[int, ...] = ()
            if any(r.paid_counts for r in p.requests):
                counts = tuple(c for r in p.requests for c in (r.paid_counts or (1,) * len(r.paid or r.amounts)))
            effects.append(NotifyReceived(tuple(sorted(totals.items())), v, listed, counts))
        ch, fills = filled(ch, p.swaps, p.kind is Kind.FILL, v)
        effects.extend(fills)
        if p.kind is Kind.POSTFUND:
            ch = replace(ch, phase=Phase.OPEN)
            effects.append(NotifyPhase(Phase.OPEN))
        elif p.kind is Kind.FINAL:
            assert ch.latest is not None
            effects.append(SubmitTxCloseCooperative(ch.latest))
    assert ch.latest is not None
    top = ch.latest.state.version
    if ch.rolled:
        ch = replace(ch, rolled=tuple(p for p in ch.rolled if p.state.version > top))
    if not ch.rolled and (ch.held_failed or ch.held_take_failed):
        effects.extend([*ch.held_failed, *ch.held_take_failed])
        ch = replace(ch, held_failed=(), held_take_failed=())
    return ch, effects


def _after_confirm(ch: Channel, key: PrivateKey, now_ms: int) -> Result:
    if ch.close_wanted and not ch.pending and not ch.final_signed and ch.phase in (Phase.CLOSING, Phase.DISPUTE):
        return _propose_final(ch, key)
    return propose_queued(ch, key, now_ms)


def on_reject(ch: Channel, msg: m.Reject, key: PrivateKey, now_ms: int) -> Result:
    """Every failure a refusal causes is about something a refused proposal carries, which the follower
    can still countersign: all are held until that is superseded (or the chain concludes)."""
    if ch.phase is Phase.OPENING and msg.version == 0:  # B declined to open
        return replace(ch, phase=Phase.CLOSED, opening_sig=None), (NotifyPhase(Phase.CLOSED),)
    new, effects = _rollback(ch, msg, key, now_ms)
    held = [e for e in effects if isinstance(e, NotifyFailed)]
    held_takes = [e for e in effects if isinstance(e, NotifyTakeFailed)]
    new = replace(new, held_failed=(*new.held_failed, *held), held_take_failed=(*new.held_take_failed, *held_takes))
    return new, tuple(e for e in effects if not isinstance(e, NotifyFailed | NotifyTakeFailed))


def _rollback(ch: Channel, msg: m.Reject, key: PrivateKey, now_ms: int) -> Result:
    index = next((i for i, p in enumerate(ch.pending) if p.pid == msg.pid), None)
    if index is None:
        return ch, ()  # about a proposal already rolled back or confirmed
    rejected, later = ch.pending[index], ch.pending[index + 1 :]
    gone = ch.pending[index:]
    msg = m.Reject(msg.channel_id, msg.version, msg.pid, msg.reason[:64], "", msg.take, msg.request)  # kept: bounded
    ch = replace(ch, pending=ch.pending[:index], rolled=(*ch.rolled, *gone), fills=_unreserve(ch.fills, gone))
    effects: list[Effect] = []
    retry, retry_takes, held, held_takes = _blame(rejected, later, msg)
    effects += [*held, *held_takes]
    # the follower's requests they carried wait again (the one it blamed is dead: it dropped it)
    only_requests = not rejected.payments and rejected.kind in (Kind.PAY, Kind.FILL)  # the refusal is about them
    back: list[Request] = []
    queued_takes = sum(len(r.takes) for r in ch.requests)
    for r in (r for p in gone for r in p.requests if r.rid != msg.request):
        tries = r.tries + (1 if only_requests and r in rejected.requests else 0)
        if tries >= MAX_CARRIED:
            effects.append(_refuse(ch, r.rid, Reason.UNKNOWN_REQUEST, "refused by the follower each time"))
        elif len(ch.requests) + len(back) >= MAX_QUEUED or queued_takes + len(r.takes) > MAX_QUEUED_TAKES:
            effects.append(_refuse(ch, r.rid, Reason.PIPELINE_FULL, "no room to queue it again"))
        else:
            back.append(replace(r, tries=tries))
            queued_takes += len(r.takes)
    ch = replace(ch, requests=tuple(sorted((*back, *ch.requests), key=lambda r: r.rid)))
    if any(p.kind is Kind.FINAL for p in gone) or ch.final_signed:
        # my final is out, so I sign nothing else: close with my latest, which pays the same
        effects += [*fail(retry, str(Reason.CLOSING)), *fail_takes(retry_takes, str(Reason.CLOSING))]
        effects += [_refuse(ch, r.rid, Reason.CLOSING, "the channel is closing") for r in ch.requests]
        ch = replace(ch, requests=())
        assert ch.latest is not None
        if ch.phase is not Phase.DISPUTE:
            effects.append(SubmitTxClose(ch.latest))
        return ch, tuple(effects)
    if ch.phase is Phase.OPEN:
        again: list[Effect] = []
        try:
            ch, more = propose_queued(ch, key, now_ms, retry)
            again.extend(more)
        except LocalError as exc:
            again.extend(fail(retry, exc.reason))
            ch, more = propose_queued(ch, key, now_ms)
            again.extend(more)
        if retry_takes:
            ch, more = _retake(ch, retry_takes, key)
            again.extend(more)
        effects.extend(again)
        if not ch.pending and ch.rolled and not _is_bump(rejected):  # a bump may go out even with rolled full
            ch, more = bump(ch, key)
            effects.extend(more)
    else:
        effects += [*fail(retry, f"channel is {ch.phase}"), *fail_takes(retry_takes, f"channel is {ch.phase}")]
        if ch.close_wanted and not ch.pending and ch.phase in (Phase.CLOSING, Phase.DISPUTE):
            ch, more = _propose_final(ch, key)
            effects.extend(more)
    return ch, tuple(effects)


def _blame(
    rejected: Proposal, later: tuple[Proposal, ...], msg: m.Reject
) -> tuple[tuple[Payment, ...], tuple[Swap, ...], list[NotifyFailed], list[NotifyTakeFailed]]:
    """What a refusal fails (held until superseded) and what goes again: the refused proposal's own
    payments and takes fail unless the follower blamed one take or one request of it; everything in the
    proposals built on it goes again."""
    blamed_take = msg.take if rejected.kind is Kind.SWAP and 0 <= msg.take < len(rejected.swaps) else None
    blamed_request = msg.request if any(r.rid == msg.request for r in rejected.requests) else 0
    retry = tuple(p for prop in later for p in prop.payments)
    retry_takes = tuple(s for prop in later if prop.kind is Kind.SWAP for s in prop.swaps)
    own_takes = rejected.swaps if rejected.kind is Kind.SWAP else ()
    if blamed_take is not None:  # one take refused: the others in its update go ahead without it
        others = own_takes[:blamed_take] + own_takes[blamed_take + 1 :]
        return (
            rejected.payments + retry,
            others + retry_takes,
            [],
            [NotifyTakeFailed(own_takes[blamed_take], msg.reason)],
        )
    if blamed_request:
        return rejected.payments + retry, own_takes + retry_takes, [], []
    held = [NotifyFailed(rejected.payments, msg.reason)] if rejected.payments else []
    return retry, retry_takes, held, [NotifyTakeFailed(s, msg.reason) for s in own_takes]


def resync(ch: Channel) -> tuple[Effect, ...]:
    """After a (re)connect: my latest, then everything in flight again, in order."""
    if ch.phase is Phase.OPENING:
        return ()
    effects: list[Effect] = []
    sync = sync_message(ch)
    if sync is not None:
        effects.append(sync)
    effects.extend(SendMessage(wire(p)) for p in ch.pending)
    return tuple(effects)

"""The follower's side of updates (decision 0007). B, the follower, never proposes a state: it asks the
leader with requests (pay, take, close), which carry no signature, and countersigns the leader's
proposals in order, each only if it builds on B's latest, is above every version B signed, and moves
exactly what the rules allow. So B's signatures are one chain of both-signed states, and what B reports
(sent, received, filled) can never be undone by anything it signed: the peer holds nothing newer."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import FOLLOWER, LEADER, MAX_IN_FLIGHT, Channel, Kind, Phase, Proposal, Request
from statechannel.core.common import Result, check_payment, countersign, fail, fail_takes, filled, sync_message
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    Effect,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    SendMessage,
    SignedState,
)
from statechannel.core.quotes import Swap, apply_swap
from statechannel.core.types import State

# ------------------------------------------------------------------ requests


def _new_request(ch: Channel) -> None:
    if ch.me != FOLLOWER:
        raise LocalError(Reason.WRONG_ROLE, "only the follower sends requests")
    if ch.close_wanted or ch.final_signed:
        raise LocalError(Reason.CLOSING, "the channel is closing")
    if ch.room() <= 0:
        raise LocalError(Reason.PIPELINE_FULL, f"{MAX_IN_FLIGHT} requests already outstanding")


def request_pay(ch: Channel, payments: tuple[Payment, ...]) -> Result:
    """Ask the leader to carry my payments. Checked here against my lowest possible balance, so an
    honest leader can always carry it."""
    _new_request(ch)
    if not payments or len(payments) > m.MAX_PAID:
        raise LocalError(Reason.BAD_AMOUNT, f"1 to {m.MAX_PAID} payments in one request")
    totals: dict[bytes, int] = {}
    for p in payments:
        check_payment(ch, p)
        totals[p.asset] = totals.get(p.asset, 0) + p.amount
    for asset, total in totals.items():
        if ch.lowest_balance(FOLLOWER, asset) < total:
            raise LocalError(Reason.INSUFFICIENT_FUNDS, f"not enough of asset 0x{asset.hex()} for these payments")
    amounts = tuple(sorted(totals.items()))
    req = Request(ch.next_rid, amounts, payments)
    return replace(ch, requests=(*ch.requests, req), next_rid=ch.next_rid + 1), (SendMessage(_wire(ch, req)),)


def request_take(ch: Channel, takes: tuple[Swap, ...], now_ms: int) -> Result:
    """Ask the leader (the maker) to carry my takes of its quotes; my own checks first."""
    _new_request(ch)
    swaps.build_takes(ch, takes, now_ms)  # raises naming the take my checks refuse
    req = Request(ch.next_rid, takes=takes)
    return replace(ch, requests=(*ch.requests, req), next_rid=ch.next_rid + 1), (SendMessage(_wire(ch, req)),)


def request_close(ch: Channel) -> Result:
    if ch.final_signed:
        return ch, ()
    effects: list[Effect] = [SendMessage(m.CloseRequest(ch.channel_id))]
    new = replace(ch, close_wanted=True)
    if ch.phase is Phase.OPEN:
        new = replace(new, phase=Phase.CLOSING)
        effects.append(NotifyPhase(Phase.CLOSING))
    return new, tuple(effects)


def _wire(ch: Channel, req: Request) -> m.Message:
    if req.takes:
        return m.TakeRequest.of(ch.channel_id, req.rid, req.takes)
    paid = m.pack_paid(ch.assets, ((p.asset, p.amount) for p in req.payments))
    counts = m.pack_counts(p.count for p in req.payments)
    assets, amounts = [a for a, _ in req.amounts], [m.u256(v) for _, v in req.amounts]
    return m.PayRequest(ch.channel_id, req.rid, assets, amounts, paid, counts)


def on_refuse(ch: Channel, msg: m.Refuse) -> Result:
    """The leader will never carry request `rid`: nothing of it was signed, so its failure is final."""
    req = next((r for r in ch.requests if r.rid == msg.rid), None)
    if req is None:
        return ch, ()
    ch = replace(ch, requests=tuple(r for r in ch.requests if r.rid != msg.rid))
    if req.payments:
        return ch, fail(req.payments, msg.reason[:64])
    why = {t.index: t.reason[:64] for t in msg.takes}
    return ch, tuple(NotifyTakeFailed(s, why.get(i, msg.reason[:64])) for i, s in enumerate(req.takes))


def drop_request(ch: Channel, rid: int, reason: str) -> Result:
    """My request `rid` fails for good (I refused the state carrying it): nothing of it was signed."""
    req = next((r for r in ch.requests if r.rid == rid), None)
    if req is None:
        return ch, ()
    ch = replace(ch, requests=tuple(r for r in ch.requests if r.rid != rid))
    return ch, (*fail(req.payments, reason), *fail_takes(req.takes, reason))


def fail_requests(ch: Channel, reason: str) -> Result:
    """Every request still outstanding fails: nothing I will sign can carry it any more."""
    effects: list[Effect] = []
    for r in ch.requests:
        effects += [*fail(r.payments, reason), *fail_takes(r.takes, reason)]
    return replace(ch, requests=()), tuple(effects)


# ------------------------------------------------------------------ the leader's proposals


def _check_proposal(
    ch: Channel, msg: m.Propose | m.ProposeSwap | m.ProposeFill
) -> tuple[State, Signature, bytes] | SendMessage:
    """The checks every proposal passes before its content: role, version, base, signature. Returns the
    state, its signature and digest, or the repeated Accept of a retransmission."""
    state, sig, base = msg.state.to_state(), m.signature(msg.sig), msg.base
    if ch.me != FOLLOWER:
        raise RemoteError(Reason.WRONG_ROLE, "the follower proposes no states")
    if ch.latest is None:
        raise RemoteError(Reason.WRONG_PHASE, "no pre-fund state yet")
    if state.channel_id != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "proposal is for another channel")
    if state.version <= ch.signed_upto:
        if state == ch.latest.state:  # a retransmission: answer again, idempotently
            mine = ch.latest.sig_a if ch.me == 0 else ch.latest.sig_b
            return SendMessage(m.Accept(ch.channel_id, state.version, mine.to_bytes()))
        raise RemoteError(Reason.STALE_VERSION, f"version {state.version} <= {ch.signed_upto}, the highest I signed")
    if base != ch.latest.state.version:
        raise RemoteError(Reason.BAD_BASE, f"built on version {base}, my latest is {ch.latest.state.version}")
    if state.assets != ch.latest.state.assets or state.app_data != ch.latest.state.app_data:
        raise RemoteError(Reason.ILLEGAL_MOVE, "assets and app data may not change")
    if ch.final_signed and not state.is_final:
        raise RemoteError(Reason.CLOSING, "I signed a final state: nothing else")
    digest = ch.digest(state)
    ch.check_peer_sig(state, sig, digest)
    return state, sig, digest


def on_propose(ch: Channel, msg: m.Propose, key: PrivateKey) -> Result:
    checked = _check_proposal(ch, msg)
    if isinstance(checked, SendMessage):
        return ch, (checked,)
    state, sig, digest = checked
    assert ch.latest is not None
    latest = ch.latest.state
    if state.is_final:
        if msg.requests or state.transfers != latest.transfers:
            raise RemoteError(Reason.ILLEGAL_MOVE, "a final state repeats the latest transfers")
        if ch.phase not in (Phase.OPEN, Phase.CLOSING, Phase.DISPUTE):
            raise RemoteError(Reason.WRONG_PHASE, f"no final state while {ch.phase}")
        ch, effects = countersign(ch, state, sig, digest, key)
        ch, failed = fail_requests(replace(ch, final_signed=True), str(Reason.CLOSING))
        out = [*effects, *failed]
        if ch.phase is Phase.OPEN:
            ch = replace(ch, phase=Phase.CLOSING)
            out.append(NotifyPhase(Phase.CLOSING))
        return ch, tuple(out)
    if ch.phase is Phase.FUNDING:
        if msg.requests or state.transfers != latest.transfers:
            raise RemoteError(Reason.ILLEGAL_MOVE, "while funding only the post-fund state may be proposed")
        proposal = Proposal(state, sig, Kind.POSTFUND, msg.pid, msg.base)
        if not ch.fully_funded():  # countersigned once I see every deposit myself
            return replace(ch, deferred=proposal), ()
        return postfund(ch, proposal, key)
    if ch.phase not in (Phase.OPEN, Phase.CLOSING):
        raise RemoteError(Reason.WRONG_PHASE, f"no payments while {ch.phase}")
    return _on_pay(ch, state, sig, digest, msg, key)


def postfund(ch: Channel, p: Proposal, key: PrivateKey) -> Result:
    ch, effects = countersign(replace(ch, deferred=None), p.state, p.sig, ch.digest(p.state), key)
    return replace(ch, phase=Phase.OPEN), (*effects, NotifyPhase(Phase.OPEN))


def _on_pay(ch: Channel, state: State, sig: Signature, digest: bytes, msg: m.Propose, key: PrivateKey) -> Result:
    """A payment update: it carries my requests `msg.requests` whole, and what else it moves must move
    towards me (the leader's own payment, listed per payment in `msg.paid`). Nobody may end overdrawn."""
    assert ch.latest is not None
    rids = msg.requests
    mine = {r.rid: r for r in ch.requests}
    if len(set(rids)) != len(rids):
        raise RemoteError(Reason.UNKNOWN_REQUEST, "a request carried twice")
    carried = []
    for rid in rids:
        r = mine.get(rid)
        if r is None or not r.amounts:
            raise RemoteError(Reason.UNKNOWN_REQUEST, f"request {rid} is none of my payment requests", request=rid)
        carried.append(r)
    asked = {a: 0 for a in ch.assets}
    for r in carried:
        for asset, amount in r.amounts:
            asked[asset] += amount
    received = []
    for asset, t0, t1 in zip(ch.assets, ch.latest.state.transfers, state.transfers, strict=True):
        to_me = (t1 - t0) + asked[asset]  # A pays B: the transfer rises; my requests lower it
        if to_me < 0:
            raise RemoteError(Reason.ILLEGAL_MOVE, "the proposal moves value away from me beyond my requests")
        if to_me:
            received.append((asset, to_me))
    for pair in ch.balances(state):
        if min(pair) < 0:
            raise RemoteError(Reason.INSUFFICIENT_FUNDS, "the proposal overdraws a participant")
    listed = m.unpack_paid(ch.assets, msg.paid, dict(received)) if msg.paid else tuple(received)
    counts = m.unpack_counts(msg.paid, msg.counts)
    ch, effects = countersign(ch, state, sig, digest, key)
    done = {r.rid for r in carried}
    ch = replace(ch, requests=tuple(r for r in ch.requests if r.rid not in done))
    out: list[Effect] = [*effects]
    payments = tuple(p for r in carried for p in r.payments)
    if payments:
        out.append(NotifySent(payments, state.version))
    if received:
        out.append(NotifyReceived(tuple(received), state.version, listed, counts))
    return ch, tuple(out)


def on_swap(ch: Channel, msg: m.ProposeSwap, key: PrivateKey, now_ms: int) -> Result:
    """The leader takes my quotes: checked against them by my clock, as the maker."""
    checked = _check_proposal(ch, msg)
    if isinstance(checked, SendMessage):
        return ch, (checked,)
    state, sig, digest = checked
    assert ch.latest is not None
    takes = msg.to_swaps()
    ch = swaps.accept_takes(ch, ch.latest.state, state, takes, now_ms)
    ch, effects = countersign(ch, state, sig, digest, key)
    ch, fills = filled(ch, takes, True, state.version)
    return ch, (*effects, *fills)


def on_fill(ch: Channel, msg: m.ProposeFill, key: PrivateKey) -> Result:
    """The leader carries my take request: exactly the takes it names, at its quotes; the rest refused."""
    checked = _check_proposal(ch, msg)
    if isinstance(checked, SendMessage):
        return ch, (checked,)
    state, sig, digest = checked
    assert ch.latest is not None
    if ch.phase not in (Phase.OPEN, Phase.CLOSING):
        raise RemoteError(Reason.WRONG_PHASE, f"no swaps while {ch.phase}")
    req = next((r for r in ch.requests if r.rid == msg.request and r.takes), None)
    if req is None:
        raise RemoteError(Reason.UNKNOWN_REQUEST, f"{msg.request} is none of my take requests", request=msg.request)
    taken = list(msg.taken)
    refused = {t.index: t for t in msg.refused}
    if (
        not taken
        or taken != sorted(set(taken))
        or set(taken) & set(refused)
        or set(taken) | set(refused) != set(range(len(req.takes)))
    ):
        raise RemoteError(Reason.BAD_MESSAGE, "every take must be either taken or refused, once", request=req.rid)
    transfers = ch.latest.state.transfers
    for i in taken:
        transfers = apply_swap(ch.assets, transfers, req.takes[i], LEADER)
    if state.transfers != transfers:
        raise RemoteError(Reason.ALTERED, "the proposed state is not my takes at their quotes", request=req.rid)
    for pair in ch.balances(state):
        if min(pair) < 0:
            raise RemoteError(Reason.INSUFFICIENT_FUNDS, "the takes overdraw a participant", request=req.rid)
    ch, effects = countersign(ch, state, sig, digest, key)
    ch = replace(ch, requests=tuple(r for r in ch.requests if r.rid != req.rid))
    ch, fills = filled(ch, tuple(req.takes[i] for i in taken), False, state.version)
    failed = [NotifyTakeFailed(req.takes[i], refused[i].reason) for i in sorted(refused)]
    return ch, (*effects, *fills, *failed)


def on_sync(ch: Channel, msg: m.Sync) -> Result:
    """The leader's latest can only be mine or older; newer, it is a state I signed and lost (a restored
    disk): both signatures prove it, so it becomes my latest."""
    signed = SignedState(msg.state.to_state(), m.signature(msg.sig_a), m.signature(msg.sig_b))
    ch.check_signed(signed)
    if ch.latest is None or signed.state.version <= ch.latest.state.version:
        return ch, ()
    return replace(ch, latest=signed, signed_upto=max(ch.signed_upto, signed.state.version)), ()


def resync(ch: Channel) -> tuple[Effect, ...]:
    """After a (re)connect: my latest, then my requests again (the leader takes each in once)."""
    effects: list[Effect] = []
    sync = sync_message(ch)
    if sync is not None:
        effects.append(sync)
    effects.extend(SendMessage(_wire(ch, r)) for r in ch.requests)
    if ch.close_wanted and not ch.final_signed:
        effects.append(SendMessage(m.CloseRequest(ch.channel_id)))
    return tuple(effects)

"""Withdrawing while open: both sign a `Withdrawal`, then the participant submits it. The counterparty
signs only what the participant's balance under the newest state covers, and from then on both treat the
amount as gone, so no later state can overdraw (see docs/protocol.md)."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core.channel import Channel, PendingWithdrawal, Phase
from statechannel.core.crypto import PrivateKey, recover
from statechannel.core.eip712 import withdrawal_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import ActionWithdraw, Effect, SendMessage, SubmitTxWithdraw
from statechannel.core.types import Withdrawal

Result = tuple[Channel, tuple[Effect, ...]]


def withdraw(ch: Channel, action: ActionWithdraw, key: PrivateKey) -> Result:
    if action.asset not in ch.assets:
        raise LocalError(Reason.BAD_ASSETS, "asset is not in this channel")
    if action.amount > ch.lowest_balance(ch.me, action.asset):
        raise LocalError(Reason.INSUFFICIENT_FUNDS, "withdrawal exceeds this side's balance")
    nonce = (ch.latest.state.version if ch.latest else 0) << 64 | ch.withdraw_nonce
    w = Withdrawal(ch.channel_id, ch.me, action.asset, action.amount, nonce)
    sig = key.sign_digest(withdrawal_digest(ch.domain, w))
    pw = PendingWithdrawal(w, sig if ch.me == 0 else None, sig if ch.me == 1 else None)
    new = replace(ch, withdrawals=(*ch.withdrawals, pw), withdraw_nonce=ch.withdraw_nonce + 1)
    request = m.WithdrawRequest(
        ch.channel_id, ch.me, action.asset, m.u256(action.amount), m.u256(nonce), sig.to_bytes()
    )
    return new, (SendMessage(request),)


def on_request(ch: Channel, msg: m.WithdrawRequest, key: PrivateKey) -> Result:
    if msg.participant != ch.peer or ch.phase is not Phase.OPEN:
        raise RemoteError(Reason.ILLEGAL_MOVE, "the peer may only withdraw its own funds while open")
    try:
        w = Withdrawal(ch.channel_id, msg.participant, msg.asset, m.from_u256(msg.amount), m.from_u256(msg.nonce))
    except LocalError as exc:
        raise RemoteError(exc.reason, exc.detail) from exc
    for p in ch.withdrawals:
        if p.withdrawal.nonce == w.nonce and p.withdrawal.participant == w.participant:
            mine_before = p.sig_a if ch.me == 0 else p.sig_b
            if p.withdrawal == w and mine_before is not None:  # a resent request: answer again
                return ch, (SendMessage(m.WithdrawAccept(ch.channel_id, msg.nonce, mine_before.to_bytes())),)
            raise RemoteError(Reason.ILLEGAL_MOVE, "reused withdrawal nonce")
    if msg.asset not in ch.assets:
        raise RemoteError(Reason.ILLEGAL_MOVE, "asset is not in this channel")
    # the peer must afford it under every state that may still end up signed: our proposals
    # in flight pay it, but until it countersigns them they must not count
    if ch.lowest_balance(ch.peer, w.asset) < w.amount:
        raise RemoteError(Reason.INSUFFICIENT_FUNDS, "withdrawal exceeds the peer's balance")
    theirs = m.signature(msg.sig)
    d = withdrawal_digest(ch.domain, w)
    if recover(d, theirs) != ch.peer_address:
        raise RemoteError(Reason.WRONG_SIGNER, "withdrawal is not signed by the peer")
    mine = key.sign_digest(d)
    sig_a, sig_b = (mine, theirs) if ch.me == 0 else (theirs, mine)
    new = replace(ch, withdrawals=(*ch.withdrawals, PendingWithdrawal(w, sig_a, sig_b)))
    return new, (SendMessage(m.WithdrawAccept(ch.channel_id, msg.nonce, mine.to_bytes())),)


def on_accept(ch: Channel, msg: m.WithdrawAccept) -> Result:
    nonce = m.from_u256(msg.nonce)
    for i, p in enumerate(ch.withdrawals):
        if p.withdrawal.nonce == nonce and p.withdrawal.participant == ch.me:
            theirs = m.signature(msg.sig)
            if recover(withdrawal_digest(ch.domain, p.withdrawal), theirs) != ch.peer_address:
                raise RemoteError(Reason.WRONG_SIGNER, "withdrawal acceptance is not the peer's")
            done = replace(p, sig_a=p.sig_a or theirs, sig_b=p.sig_b or theirs)
            assert done.sig_a is not None and done.sig_b is not None
            ws = (*ch.withdrawals[:i], done, *ch.withdrawals[i + 1 :])
            return replace(ch, withdrawals=ws), (SubmitTxWithdraw(p.withdrawal, done.sig_a, done.sig_b),)
    return ch, ()


def resend(ch: Channel) -> tuple[SendMessage, ...]:
    """After a reconnect: my requests still waiting for the peer's signature."""
    out = []
    for pw in ch.withdrawals:
        w, mine = pw.withdrawal, (pw.sig_a if ch.me == 0 else pw.sig_b)
        if w.participant == ch.me and mine is not None and (pw.sig_a is None or pw.sig_b is None):
            request = m.WithdrawRequest(
                ch.channel_id, w.participant, w.asset, m.u256(w.amount), m.u256(w.nonce), mine.to_bytes()
            )
            out.append(SendMessage(request))
    return tuple(out)

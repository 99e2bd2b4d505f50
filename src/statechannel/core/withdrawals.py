"""Withdrawing while open: both sign a `Withdrawal`, then the participant submits it. The contract pays
only from the participant's own funded amount, so a withdrawal is signed only of what it will pay: at
most the participant's funded amount less its withdrawals already signed, and at most its balance under
every state that may still be signed. From then on both treat the amount as gone, so no later state can
overdraw. Each withdrawal has a deadline (chain time): past it, it can never execute, and both sides
stop holding it back, whatever became of its transaction (see docs/protocol.md)."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core.channel import Channel, PendingWithdrawal, Phase
from statechannel.core.crypto import PrivateKey, Signature, recover
from statechannel.core.eip712 import withdrawal_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import ActionWithdraw, Effect, SendMessage, SubmitTxWithdraw
from statechannel.core.types import Withdrawal

Result = tuple[Channel, tuple[Effect, ...]]


WITHDRAW_TTL = 3_600
"""Seconds of chain time a withdrawal stays valid: enough to get it mined."""
MAX_WITHDRAW_TTL = 2 * WITHDRAW_TTL
"""The longest deadline a counterparty signs (the two sides' views of chain time differ a little)."""


def payable(ch: Channel, who: int, asset: bytes) -> int:
    """What the contract would pay `who` of `asset` now: its own funded amount less what it is already
    withdrawing, and never more than its balance under any state that may still be signed."""
    own = ch.funded[ch.assets.index(asset)][who] - ch.withdrawing(who, asset)
    return max(0, min(own, ch.lowest_balance(who, asset)))


def withdraw(ch: Channel, action: ActionWithdraw, key: PrivateKey) -> Result:
    if action.asset not in ch.assets:
        raise LocalError(Reason.BAD_ASSETS, "asset is not in this channel")
    if not isinstance(action.amount, int) or isinstance(action.amount, bool) or action.amount <= 0:
        raise LocalError(Reason.BAD_AMOUNT, "withdrawal amount must be a positive int")
    if action.amount > payable(ch, ch.me, action.asset):
        raise LocalError(
            Reason.INSUFFICIENT_FUNDS,
            f"withdrawal exceeds what the contract would pay: {payable(ch, ch.me, action.asset)} "
            "(own funded amount less pending withdrawals, within the balance)",
        )
    if ch.now <= 0:
        raise LocalError(Reason.WRONG_PHASE, "chain time is not known yet: no deadline can be set")
    nonce = (ch.latest.state.version if ch.latest else 0) << 64 | ch.withdraw_nonce
    w = Withdrawal(ch.channel_id, ch.me, action.asset, action.amount, nonce, ch.now + WITHDRAW_TTL)
    sig = key.sign_digest(withdrawal_digest(ch.domain, w))
    pw = PendingWithdrawal(w, sig if ch.me == 0 else None, sig if ch.me == 1 else None)
    new = replace(ch, withdrawals=(*ch.withdrawals, pw), withdraw_nonce=ch.withdraw_nonce + 1)
    return new, (SendMessage(_request(w, sig)),)


def _request(w: Withdrawal, sig: Signature) -> m.WithdrawRequest:
    return m.WithdrawRequest(
        w.channel_id, w.participant, w.asset, m.u256(w.amount), m.u256(w.nonce), w.deadline, sig.to_bytes()
    )


def on_request(ch: Channel, msg: m.WithdrawRequest, key: PrivateKey) -> Result:
    if msg.participant != ch.peer or ch.phase is not Phase.OPEN:
        raise RemoteError(Reason.ILLEGAL_MOVE, "the peer may only withdraw its own funds while open")
    try:
        w = Withdrawal(
            ch.channel_id, msg.participant, msg.asset, m.from_u256(msg.amount), m.from_u256(msg.nonce), msg.deadline
        )
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
    # the contract pays it only from the peer's own funds, and the peer must afford it under every state
    # that may still end up signed: my proposals in flight pay it, but until it countersigns they do not count
    if payable(ch, ch.peer, w.asset) < w.amount:
        raise RemoteError(Reason.INSUFFICIENT_FUNDS, "withdrawal exceeds what the contract would pay the peer")
    if not ch.now < w.deadline <= ch.now + MAX_WITHDRAW_TTL:
        raise RemoteError(
            Reason.BAD_PARAMS, f"withdrawal deadline {w.deadline} is not within the next {MAX_WITHDRAW_TTL} s"
        )
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
            out.append(SendMessage(_request(w, mine)))
    return tuple(out)


def expire(ch: Channel) -> Channel:
    """Withdrawals whose deadline the chain has passed can never execute: stop holding them back."""
    live = tuple(p for p in ch.withdrawals if p.withdrawal.deadline >= ch.now)
    return ch if len(live) == len(ch.withdrawals) else replace(ch, withdrawals=live)


def on_tx_failed(ch: Channel, tx: SubmitTxWithdraw, reason: str) -> Channel:
    """A withdrawal that reverted because the channel is no longer open can never execute: dropped. Any
    other revert keeps it counted until its deadline (anyone may still submit it until then)."""
    if "not open" not in reason:
        return ch
    return replace(ch, withdrawals=tuple(p for p in ch.withdrawals if p.withdrawal != tx.withdrawal))

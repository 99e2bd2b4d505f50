"""Small pieces every part of the channel machine uses: the result type, failures as effects, the fills
that move positions, and the wire form of a proposal."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core import positions
from statechannel.core.channel import Channel, Kind, Proposal
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import (
    Effect,
    NotifyFailed,
    NotifyFilled,
    NotifyTakeFailed,
    Payment,
    SendMessage,
)
from statechannel.core.quotes import Swap
from statechannel.core.types import State

Result = tuple[Channel, tuple[Effect, ...]]


def check_payment(ch: Channel, p: Payment) -> None:
    """One of my payments (or batches) before it is asked for or proposed: an asset of the channel, a
    positive int amount, and a count from 1 up to the amount (every payment in a batch is at least one unit)."""
    if p.asset not in ch.assets:
        raise LocalError(Reason.BAD_ASSETS, f"asset 0x{p.asset.hex()} is not in this channel")
    if not isinstance(p.amount, int) or isinstance(p.amount, bool) or p.amount <= 0:
        raise LocalError(Reason.BAD_AMOUNT, f"payment {p.payment_id}: amount must be a positive int")
    if type(p.count) is not int or not 1 <= p.count <= min(p.amount, m.MAX_COUNT):
        raise LocalError(Reason.BAD_AMOUNT, f"payment {p.payment_id}: a batch of 1 to `amount` payments")


def fail(payments: tuple[Payment, ...], reason: str) -> tuple[Effect, ...]:
    return (NotifyFailed(payments, reason),) if payments else ()


def fail_takes(takes: tuple[Swap, ...], reason: str) -> tuple[Effect, ...]:
    return tuple(NotifyTakeFailed(swap, reason) for swap in takes)


def filled(ch: Channel, takes: tuple[Swap, ...], maker: bool, version: int) -> tuple[Channel, list[Effect]]:
    """Takes both signed: told, and counted in the positions in the same transition."""
    if not takes:
        return ch, []
    ch = replace(ch, positions=positions.record_fills(ch.positions, [(swap, maker) for swap in takes]))
    return ch, [NotifyFilled(swap, maker, version) for swap in takes]


def wire(p: Proposal) -> m.Message:
    if p.kind is Kind.SWAP:
        return m.ProposeSwap.of(p.state, p.sig, p.pid, p.base, p.swaps)
    if p.kind is Kind.FILL:
        refused = [m.TakeRefusal(r.index, r.reason, r.detail) for r in p.refused]
        return m.ProposeFill(
            m.WireState.of(p.state), p.sig.to_bytes(), p.pid, p.base, p.requests[0].rid, list(p.taken), refused
        )
    paid = m.pack_paid(p.state.assets, ((x.asset, x.amount) for x in p.payments))
    counts = m.pack_counts(x.count for x in p.payments)
    state = m.WireState.of(p.state)
    return m.Propose(state, p.sig.to_bytes(), p.pid, p.base, [r.rid for r in p.requests], paid, counts)


def sync_message(ch: Channel) -> SendMessage | None:
    if ch.latest is None:
        return None
    s = ch.latest
    return SendMessage(m.Sync(m.WireState.of(s.state), s.sig_a.to_bytes(), s.sig_b.to_bytes()))


def countersign(ch: Channel, state: State, theirs: Signature, digest: bytes, key: PrivateKey) -> Result:
    """Sign the peer's state: it becomes my latest, and my highest signed version (invariant 3)."""
    mine = key.sign_digest(digest)
    new = replace(ch, latest=ch.signed(state, mine, theirs), signed_upto=state.version)
    return new, (SendMessage(m.Accept(ch.channel_id, state.version, mine.to_bytes())),)

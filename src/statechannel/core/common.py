"""Small pieces every part of the channel machine uses: the result type, failures as effects, the fills
that move positions, and the wire form of a proposal."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core import positions
from statechannel.core.channel import Channel, Kind, Proposal
from statechannel.core.crypto import PrivateKey, Signature
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
    return m.Propose(m.WireState.of(p.state), p.sig.to_bytes(), p.pid, p.base, [r.rid for r in p.requests], paid)


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

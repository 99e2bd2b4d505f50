"""A channel restored from a backup after its node lost its data (issue 12).

The backup may be older than what the node last signed, so the node must never sign again on this channel:
it might sign a second state of a version it already used (invariant 3). It only learns: a both-signed
state newer than its own, from the peer's Sync (or a tower), is proof, and becomes its latest; then it
closes with the highest state it can prove. Anything the peer holds above that was signed by both and
wins a challenge on chain: whatever the chain pays, the node reports from the chain (closing.py)."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase
from statechannel.core.common import Result
from statechannel.core.io import SignedState


def restore(ch: Channel) -> Channel:
    """A channel as a backup held it, ready to recover (a concluded one needs nothing)."""
    if ch.phase in (Phase.CLOSED, Phase.OPENING) or ch.latest is None:
        return ch
    if ch.phase is Phase.DISPUTE:  # the chain already holds the dispute: the watcher re-reads it and acts
        return replace(ch, signs_nothing=True, pending=(), requests=(), close_wanted=False, deferred=None)
    # what was in flight stays known (the peer may hold it countersigned) but is never sent again
    mine = tuple(sorted((*ch.pending, *ch.rolled), key=lambda p: p.state.version))
    return replace(
        ch,
        phase=Phase.RECOVERING,
        signs_nothing=True,
        pending=(),
        rolled=mine,
        requests=(),
        close_wanted=False,
        deferred=None,
    )


def adopt(ch: Channel, signed: SignedState) -> Result:
    """A both-signed state newer than mine is proof: it becomes my latest (and the highest I signed)."""
    ch.check_signed(signed)
    if signed.state.channel_id != ch.channel_id or ch.latest is None or signed.state.version <= ch.latest.state.version:
        return ch, ()
    v = signed.state.version
    rolled = tuple(p for p in ch.rolled if p.state.version > v)
    return replace(ch, latest=signed, signed_upto=max(ch.signed_upto, v), rolled=rolled), ()


def on_sync(ch: Channel, msg: m.Sync) -> Result:
    return adopt(ch, SignedState(msg.state.to_state(), m.signature(msg.sig_a), m.signature(msg.sig_b)))

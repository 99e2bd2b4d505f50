"""A channel's durable form: one JSON document per channel (msgspec), so a
restarted node rebuilds every channel exactly. JSON, not msgpack, because
amounts and signature scalars exceed 64 bits.

The node encodes a channel on every change, and a change keeps the same `Proposal`
objects in flight (up to MAX_IN_FLIGHT, each a state, a signature, payments, swaps),
building only a new tuple around them. So the JSON of each proposal in flight is kept,
per channel and side, keyed by the object's identity, and spliced into the document as
`msgspec.Raw`: an encode costs about what changed, not the depth of the pipeline. What
is kept is exactly the pipeline last encoded for that channel (nothing outlives it), so
memory follows the proposals in flight. The output is byte for byte what encoding the
whole `Channel` dataclass gives: msgspec writes a dataclass as an object
of all its fields in order, as it writes the mirror struct `_Document`."""

from __future__ import annotations

import dataclasses
import operator

import msgspec

from statechannel.core.channel import Channel
from statechannel.core.errors import LocalError, Reason

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Channel] = msgspec.json.Decoder(Channel)

_FIELDS = tuple(f.name for f in dataclasses.fields(Channel))
_values = operator.attrgetter(*_FIELDS)
_PENDING = _FIELDS.index("pending")
_Document = msgspec.defstruct("_ChannelDocument", [(name, object) for name in _FIELDS])
"""Channel's fields, same names, same order, every one written: only ever encoded."""

SPLICE_FROM = 2
"""Fewer proposals in flight than this: the plain encode, which is as cheap there (the cache
pays only when a proposal's JSON is used more than once)."""

MAX_PIPELINES = 100_000
"""Channels whose pipeline JSON is kept, at most; past it everything is dropped and re-encoded
once (a guard, not a policy: a node keeps a channel's entry only while two or more proposals
of it are in flight)."""

_Entry = tuple[object, msgspec.Raw]
_pipelines: dict[tuple[bytes, int], dict[int, _Entry]] = {}
"""(channel id, me) -> id(proposal) -> (the proposal, its JSON). Holding the proposal keeps it
alive while its entry is here, so its id cannot be reused by another object meanwhile; the
`is` check on every hit is a second guard. A proposal is a frozen value (frozen dataclasses,
tuples, ints, bytes, str all the way down), so its JSON never changes. Both sides of one
channel may live in one process (tests, benchmarks), hence the side in the key."""


def encode_channel(ch: Channel) -> bytes:
    pending = ch.pending
    key = (ch.channel_id, ch.me)
    if len(pending) < SPLICE_FROM:
        _pipelines.pop(key, None)
        return _encoder.encode(ch)
    before = _pipelines.get(key) or {}
    now: dict[int, _Entry] = {}
    for p in pending:
        hit = before.get(id(p))
        if hit is None or hit[0] is not p:
            hit = (p, msgspec.Raw(_encoder.encode(p)))
        now[id(p)] = hit
    if key not in _pipelines and len(_pipelines) >= MAX_PIPELINES:
        _pipelines.clear()
    _pipelines[key] = now
    values = list(_values(ch))
    values[_PENDING] = [entry[1] for entry in now.values()] if len(now) == len(pending) else _raws(pending, now)
    return _encoder.encode(_Document(*values))


def _raws(pending: tuple[object, ...], entries: dict[int, _Entry]) -> list[msgspec.Raw]:
    """In pipeline order, when one proposal object sits in the pipeline twice (never in the node)."""
    return [entries[id(p)][1] for p in pending]


def clear_cache() -> None:
    """Drop every kept encoding (tests and benchmarks; or to release the memory)."""
    _pipelines.clear()


def decode_channel(raw: bytes) -> Channel:
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, LocalError) as exc:
        raise LocalError(Reason.BAD_MESSAGE, f"stored channel is unreadable: {exc}") from exc

"""A channel's durable form: one JSON document per channel (msgspec), so a
restarted node rebuilds every channel exactly. JSON, not msgpack, because
amounts and signature scalars exceed 64 bits."""

from __future__ import annotations

import msgspec

from statechannel.core.channel import Channel
from statechannel.core.errors import LocalError, Reason

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Channel] = msgspec.json.Decoder(Channel)


def encode_channel(ch: Channel) -> bytes:
    return _encoder.encode(ch)


def decode_channel(raw: bytes) -> Channel:
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, LocalError) as exc:
        raise LocalError(Reason.BAD_MESSAGE, f"stored channel is unreadable: {exc}") from exc

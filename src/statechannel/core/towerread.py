"""Recovery without a backup (issue 12, decision 0011), the pure part: what a tower read asks, and which of
the states a tower or the peer shows a node that lost its disk are proof.

A state is proof only if it names the channel whose parameters hash to the id on chain, on this chain and
contract, and both participants signed exactly it: anything else (a forged signature, another channel's
state, parameters that do not hash to the id) is refused with the reason, never believed."""

from __future__ import annotations

from dataclasses import dataclass

from statechannel.core.errors import Reason, RemoteError, StatechannelError
from statechannel.core.hashing import keccak
from statechannel.core.io import SignedState
from statechannel.core.tower import check_pushed
from statechannel.core.types import ChannelParams, Domain

READ_TAG = keccak(b"statechannel-tower-read")


def read_request(channel_id: bytes) -> bytes:
    """What a read asks for, as the 32 bytes a participant signs (with the tower, the channel and a time)."""
    if len(channel_id) != 32:
        raise RemoteError(Reason.BAD_PARAMS, "a channel id is 32 bytes")
    return keccak(READ_TAG + channel_id)


@dataclass(frozen=True, slots=True)
class Refused:
    source: str
    version: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Proven:
    """The highest state proven, where it came from, and every state shown that was not proof."""

    best: SignedState | None
    source: str
    refused: tuple[Refused, ...]


def check_params(domain: Domain, params: ChannelParams, channel_id: bytes) -> None:
    """Parameters someone tells (a tower, the peer, the open transaction) count only if they hash to the id."""
    if params.channel_id(domain.chain_id, domain.adjudicator) != channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "the parameters do not hash to the channel id on chain")


def prove(domain: Domain, params: ChannelParams, shown: list[tuple[str, SignedState]]) -> Proven:
    """The highest both-signed state of this channel among those shown (source, state); ties keep the first
    source named. Each state that is not proof is listed with why."""
    best: SignedState | None = None
    source = ""
    refused: list[Refused] = []
    for where, signed in shown:
        try:
            check_pushed(domain, params, signed)
        except StatechannelError as exc:
            refused.append(Refused(where, signed.state.version, exc.reason.value, exc.detail))
            continue
        if best is None or signed.state.version > best.state.version:
            best, source = signed, where
    return Proven(best, source, tuple(refused))

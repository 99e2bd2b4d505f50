"""Frames a hostile channel participant can build with its own key: each valid on the wire and signed where
it needs to be, and each one the victim must refuse with a named reason, changing nothing.

Built from the victim's own Sync (what it sends on every connect), so the attacker knows exactly the latest
both-signed state, as a real counterparty would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import msgspec

from statechannel.core import messages as m
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import state_digest
from statechannel.core.funding import open_channel
from statechannel.core.io import SendMessage
from statechannel.core.types import ETH, ChannelParams, Domain, State

GARBAGE = b"\xc1\xff\x00 not msgpack"
UNKNOWN_TYPE = msgspec.msgpack.encode(["teleport", b"\x00" * 32, 1])
"""A well-formed msgpack frame of a message type that does not exist."""


@dataclass(frozen=True)
class Hostile:
    domain: Domain
    key: PrivateKey
    """The hostile party's own key: it is participant A (the leader) of the channel in `sync`."""
    sync: m.Sync
    """The channel's latest both-signed state, as the victim sent it on connect."""

    @property
    def latest(self) -> State:
        return self.sync.state.to_state()

    def sign(self, state: State) -> bytes:
        return self.key.sign_digest(state_digest(self.domain, state)).to_bytes()

    def propose(self, state: State, sig: bytes | None = None, base: int | None = None, pid: int = 1) -> bytes:
        base = self.latest.version if base is None else base
        return m.encode(m.Propose(m.WireState.of(state), self.sign(state) if sig is None else sig, pid, base))

    def moved(self, version: int, extra: int = 1) -> State:
        """The latest state with `extra` more wei moved to B, at `version`."""
        s = self.latest
        return dataclasses.replace(s, version=version, transfers=(s.transfers[0] + extra, *s.transfers[1:]))

    def conflicting(self) -> bytes:
        """A second, different state at the latest version: what 'one state per version' forbids."""
        return self.propose(self.moved(self.latest.version), base=self.latest.version - 1)

    def older(self) -> bytes:
        """A state at version 1, long superseded."""
        return self.propose(self.moved(1), base=0)

    def replayed_sync(self) -> bytes:
        return m.encode(self.sync)

    def bad_signature(self) -> bytes:
        """The next version, as the rules allow, under a signature that is not A's."""
        state = self.moved(self.latest.version + 1)
        sig = bytearray(self.sign(state))
        sig[5] ^= 0xFF
        return self.propose(state, sig=bytes(sig))

    def other_channel(self, channel_id: bytes) -> bytes:
        """A proposal on someone else's channel, signed by us."""
        s = self.latest
        state = State(channel_id, s.version + 1, s.assets, s.transfers)
        return self.propose(state)

    def open_request(self, victim: bytes, nonce: int) -> bytes:
        params = ChannelParams(self.key.address, victim, 600, nonce)
        _, effects = open_channel(params, self.domain, (ETH,), ((10**15, 0),), self.key)
        message = next(e.message for e in effects if isinstance(e, SendMessage))
        return m.encode(message)

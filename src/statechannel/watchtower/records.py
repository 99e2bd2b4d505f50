"""What a tower keeps per channel, and its compact byte form.

One row per channel, whatever the number of updates: the parameters (to rebuild the challenge call) and what the
chain last recorded; beside it, a few of the best both-signed states of each participant, kept apart so that what
one pushes never displaces what the other pushed (at most twice `Quotas.states` per channel). The encodings are
fixed-width binary rather than JSON or msgpack because bytes per watched channel is the number that decides how many
channels one tower can hold."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from statechannel.chain.adjudicator import DisputeRecord
from statechannel.core.crypto import Signature
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObservedClose
from statechannel.core.types import MAX_ASSETS, ChannelParams, State


class CorruptRecord(Exception):
    """A stored row does not decode: the database was altered or written by something else."""


class TowerStatus(StrEnum):
    WATCHING = "watching"
    """Open on chain (as far as the tower has seen): nothing to do until someone closes."""
    CHALLENGED = "challenged"
    """A close (and maybe challenges) is recorded on chain: the dispute window is running or over."""
    CLOSED = "closed"
    """Concluded on chain: nothing can change any more."""


STATUS_CODE = {TowerStatus.WATCHING: 0, TowerStatus.CHALLENGED: 1, TowerStatus.CLOSED: 2}
STATUS_OF_CODE = {code: status for status, code in STATUS_CODE.items()}


@dataclass(frozen=True, slots=True)
class Dispute:
    """What the last Closed/Challenged event of a channel said, and where it was logged.

    The position (block, log index) orders events, so an event seen twice, or an older one re-read
    after a restart, changes nothing; the block hash lets a reorg be noticed."""

    version: int
    finalizes_at: int
    state_hash: bytes
    block_number: int
    block_hash: bytes
    log_index: int

    @classmethod
    def of(cls, event: ChainObservedClose) -> Dispute:
        o = event.origin
        return cls(event.version, event.finalizes_at, event.state_hash, o.block_number, o.block_hash, o.log_index)

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)

    @property
    def record(self) -> DisputeRecord:
        """What a challenge quotes back: the contract checks it against its stored commitment."""
        return DisputeRecord(self.version, self.finalizes_at, self.state_hash)


@dataclass(frozen=True, slots=True)
class HeldState:
    """A both-signed state, and which participant pushed it (0 = A, 1 = B)."""

    client: int
    signed: SignedState

    @property
    def version(self) -> int:
        return self.signed.state.version


@dataclass(frozen=True, slots=True)
class WatchedChannel:
    channel_id: bytes
    params: ChannelParams
    status: TowerStatus = TowerStatus.WATCHING
    states: tuple[HeldState, ...] = ()
    """Every participant's kept states, highest version first."""
    dispute: Dispute | None = None

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.states, key=lambda h: (-h.version, h.client)))
        if ordered != self.states:
            object.__setattr__(self, "states", ordered)

    def candidates(self) -> list[SignedState]:
        """The distinct states held, best (highest version) first: what a challenge tries, in order."""
        out: list[SignedState] = []
        for h in self.states:
            if h.signed not in out:
                out.append(h.signed)
        return out

    def of_client(self, client: int) -> list[SignedState]:
        return [h.signed for h in self.states if h.client == client]

    @property
    def latest(self) -> SignedState | None:
        """The highest version held, whoever pushed it."""
        return self.states[0].signed if self.states else None

    @property
    def version(self) -> int | None:
        return self.states[0].version if self.states else None


# ------------------------------------------------------------------ byte forms

_DISPUTE_LEN = 6 + 8 + 32 + 8 + 32 + 4


def encode_params(p: ChannelParams) -> bytes:
    """a, b, period (4 bytes), then the nonce in as few bytes as it needs (usually one)."""
    return p.a + p.b + p.challenge_period.to_bytes(4, "big") + p.nonce.to_bytes((p.nonce.bit_length() + 7) // 8, "big")


def decode_params(raw: bytes) -> ChannelParams:
    if not 44 <= len(raw) <= 76:
        raise CorruptRecord(f"channel parameters of {len(raw)} bytes")
    return ChannelParams(raw[:20], raw[20:40], int.from_bytes(raw[40:44], "big"), int.from_bytes(raw[44:], "big"))


def encode_state(signed: SignedState) -> bytes:
    """Everything of a signed state but its channel id and version, which are columns of the row."""
    s = signed.state
    return b"".join(
        (
            bytes((int(s.is_final), len(s.assets))),
            *s.assets,
            *(t.to_bytes(32, "big", signed=True) for t in s.transfers),
            s.app_data,
            signed.sig_a.to_bytes(),
            signed.sig_b.to_bytes(),
        )
    )


def decode_state(channel_id: bytes, version: int, raw: bytes) -> SignedState:
    if len(raw) < 2 or raw[0] > 1 or raw[1] > MAX_ASSETS or len(raw) != 2 + 52 * raw[1] + 32 + 130:
        raise CorruptRecord(f"a stored state of {len(raw)} bytes does not decode")
    n = raw[1]
    assets = tuple(raw[2 + 20 * i : 22 + 20 * i] for i in range(n))
    at = 2 + 20 * n
    transfers = tuple(int.from_bytes(raw[at + 32 * i : at + 32 * i + 32], "big", signed=True) for i in range(n))
    at += 32 * n
    state = State(channel_id, version, assets, transfers, is_final=raw[0] == 1, app_data=raw[at : at + 32])
    return SignedState(state, Signature.from_bytes(raw[at + 32 : at + 97]), Signature.from_bytes(raw[at + 97 :]))


def encode_dispute(d: Dispute) -> bytes:
    return b"".join(
        (
            d.version.to_bytes(6, "big"),
            d.finalizes_at.to_bytes(8, "big"),
            d.state_hash,
            d.block_number.to_bytes(8, "big"),
            d.block_hash,
            d.log_index.to_bytes(4, "big"),
        )
    )


def decode_dispute(raw: bytes) -> Dispute:
    if len(raw) != _DISPUTE_LEN:
        raise CorruptRecord(f"a stored dispute of {len(raw)} bytes does not decode")
    return Dispute(
        version=int.from_bytes(raw[0:6], "big"),
        finalizes_at=int.from_bytes(raw[6:14], "big"),
        state_hash=raw[14:46],
        block_number=int.from_bytes(raw[46:54], "big"),
        block_hash=raw[54:86],
        log_index=int.from_bytes(raw[86:90], "big"),
    )

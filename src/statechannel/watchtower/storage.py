"""What every tower store offers (SqliteTowerStore, PostgresTowerStore), and a channel's row form.

One row per channel and at most `Quotas.states` states per participant whatever the number of pushes:
storage is O(1) per watched channel. The
guarantees (a push is durable before it is answered, checks and writes are atomic) are in sqlbase."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from statechannel.core.io import SignedState
from statechannel.store.base import Checkpoint
from statechannel.watchtower.records import (
    STATUS_CODE,
    STATUS_OF_CODE,
    Dispute,
    HeldState,
    TowerStatus,
    WatchedChannel,
    decode_dispute,
    decode_params,
    decode_state,
    encode_dispute,
    encode_params,
    encode_state,
)

Row = tuple[Any, ...]


class TowerStoreError(Exception):
    """The store failed or refused; the operation did not happen."""


class StoreMismatch(TowerStoreError):
    """The database belongs to a tower of another chain or adjudicator."""


class TowerStoreClosed(TowerStoreError):
    pass


class QuotaExceeded(Exception):
    """The client would hold more than its quota; nothing was written."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """What one client (a participant's address) may make a tower hold."""

    channels: int = 10_000
    """Channels it registered first."""
    states: int = 3
    """States kept per channel for it: its best few, so one that turns out unusable leaves others."""
    bytes: int = 32 * 1024 * 1024
    """Bytes of its kept states, all channels together."""


class PutOutcome(StrEnum):
    ACCEPTED = "accepted"
    SAME = "same"
    """Exactly the state already held for this client (a retried push)."""
    STALE = "stale"
    """Older than every state kept for this client (with its slots full), or a different state of a version
    it already holds."""
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PutResult:
    outcome: PutOutcome
    channel: WatchedChannel | None
    """The row after the operation (None only for UNKNOWN)."""


class TowerStore(Protocol):
    """What the tower codes against; see sqlbase.SqlTowerStore for the guarantees."""

    def get(self, channel_id: bytes) -> WatchedChannel | None: ...

    def disputed(self) -> list[WatchedChannel]: ...

    def checkpoint(self) -> Checkpoint | None: ...

    def count(self) -> int: ...

    async def register(
        self, channel: WatchedChannel, client: bytes | None = None, quotas: Quotas | None = None
    ) -> tuple[bool, WatchedChannel]: ...

    async def put_state(
        self, signed: SignedState, client: int, client_address: bytes, quotas: Quotas | None = None
    ) -> PutResult: ...

    def client_usage(self, client: bytes) -> tuple[int, int]: ...

    async def apply_close(self, channel_id: bytes, dispute: Dispute) -> tuple[bool, WatchedChannel | None]: ...

    async def apply_concluded(self, channel_id: bytes) -> tuple[bool, WatchedChannel | None]: ...

    async def set_dispute(
        self, channel_id: bytes, status: TowerStatus, dispute: Dispute | None
    ) -> WatchedChannel | None: ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def bulk_register(self, channels: Sequence[WatchedChannel]) -> int: ...

    async def close(self) -> None: ...


class Tx(Protocol):
    """The writer's view of the open transaction."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def run_count(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Rows changed by all the statements together."""
        ...


def row_to_channel(row: Row, states: Sequence[Row] = ()) -> WatchedChannel:
    """A channel row (channel_id, params, status, dispute) and its state rows (client, version, state)."""
    cid, params, status, dispute = row
    cid = bytes(cid)
    return WatchedChannel(
        channel_id=cid,
        params=decode_params(bytes(params)),
        status=STATUS_OF_CODE[int(status)],
        states=tuple(HeldState(int(c), decode_state(cid, int(v), bytes(blob))) for c, v, blob in states),
        dispute=None if dispute is None else decode_dispute(bytes(dispute)),
    )


def channel_to_row(ch: WatchedChannel) -> tuple[Any, ...]:
    return (
        ch.channel_id,
        encode_params(ch.params),
        STATUS_CODE[ch.status],
        None if ch.dispute is None else encode_dispute(ch.dispute),
    )


def state_rows(ch: WatchedChannel) -> list[tuple[Any, ...]]:
    return [(ch.channel_id, h.client, h.version, encode_state(h.signed)) for h in ch.states]

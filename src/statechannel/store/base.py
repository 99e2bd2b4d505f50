"""What every store holds and promises, shared by the SQLite and the in-memory backends.

The store is deliberately ignorant of channel encoding: a channel is an opaque blob
the node encodes, so the store never has to change when the state format does.
Records are checked at the store boundary (in `save`), not in their constructors,
because callers also build throwaway records that are never persisted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

CHANNEL_ID_LEN = 32
BLOCK_HASH_LEN = 32
ASSET_LEN = 20
DIRECTIONS = frozenset({"out", "in"})
STATUSES = frozenset({"pending", "sent", "failed", "received"})
NEW_STATUSES = frozenset({"pending", "received"})
"""A record with one of these is a new payment: stored if its id is new, else left as it is. Any other
status is an outcome: it changes only the status, version and reason of the payment's row."""
MAX_INT64 = 2**63 - 1  # SQLite INTEGER is signed 64-bit; larger counters would silently turn into floats
MAX_UINT256 = 2**256 - 1  # what the contract can hold; also keeps one absurd amount from failing a shared batch


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last block the chain watcher fully processed, so a restart resumes there (and can detect a reorg)."""

    block_number: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One payment as the user sees it. Kept apart from channel state so history can be pruned freely.
    With `count` > 1 the row is a batch of that many payments and `amount` is their total (decision 0012)."""

    payment_id: str
    channel_id: bytes
    direction: str
    asset: bytes
    amount: int
    status: str
    version: int
    reason: str
    created_ms: int
    count: int = 1


PageKey = tuple[int, int]
"""Where a page of payment rows ends: (created_ms, insertion order) of its last row, the order
history is listed in."""


@dataclass(frozen=True, slots=True)
class StoredQuote:
    """A quote this node signed and sent, kept until it expires so a restarted maker still lists it.
    `blob` is the node's own encoding; the store only keys it."""

    channel_id: bytes
    quote_id: int
    expires_at_ms: int
    blob: bytes


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class InvalidRecord(StoreError, ValueError):
    """The caller handed the store something it must not persist; nothing was queued."""


class StoreClosed(StoreError):
    """The store was closed; it accepts no more reads or writes."""


class CommitFailed(StoreError):
    """The transaction holding this save did not commit, so none of that batch is durable.

    Every save in the failed batch gets its own instance; the database error is the `__cause__`."""


class SchemaMismatch(StoreError):
    """The file was written by an incompatible version of this store; refuse rather than guess."""


class Store(Protocol):
    """The interface the node codes against; `SqliteStore` and `MemoryStore` both satisfy it."""

    def load_channels(self) -> dict[bytes, bytes]: ...

    def load_checkpoint(self) -> Checkpoint | None: ...

    async def save(self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()) -> None: ...

    def save_nowait(
        self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()
    ) -> asyncio.Future[None]:
        """`save` without a coroutine: queued at once (in call order with every other save) and the future
        resolves once it is durable, so the caller can act in that future's callback, with no task."""
        ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def forget(self, channel_id: bytes) -> None:
        """Drop a channel's row for good (one that never opened and holds nothing); its payments stay."""
        ...

    def payments(self, channel_id: bytes | None = None, limit: int = 100, offset: int = 0) -> list[PaymentRecord]:
        """Newest first, optionally of one channel; skips the newest `offset` (a page)."""
        ...

    def payment(self, payment_id: str) -> PaymentRecord | None:
        """The stored row of `payment_id` (ids are unique across channels), if kept."""
        ...

    def has_payments_under(self, prefix: str) -> bool:
        """Whether a stored row's id starts with `prefix` (the rows `<batch id>:<i>` of a batch)."""
        ...

    def payments_before(
        self, channel_id: bytes | None, limit: int, before: PageKey | None
    ) -> tuple[list[PaymentRecord], PageKey | None]:
        """Newest first, optionally of one channel, only rows older than `before` (a page key this
        returned; None: from the newest). Returns the page and the key of its last row (None if the
        page is empty). Rows that arrive meanwhile are newer than any key given out, so paging by key
        neither skips nor repeats a row however many are added."""
        ...

    def pruned(self, channel_id: bytes | None = None) -> int:
        """How many rows (of one channel, or in all) the retention bound has deleted so far."""
        ...

    @property
    def max_payments(self) -> int:
        """The retention bound: the newest this many payment rows are kept."""
        ...

    async def save_quote(self, quote: StoredQuote, now_ms: int) -> None:
        """Keep `quote` (replacing one of the same channel and id) and forget those expired by `now_ms`."""
        ...

    def load_quotes(self, now_ms: int) -> list[StoredQuote]:
        """The quotes kept that have not expired by `now_ms`, oldest id first."""
        ...

    def stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


def _check_int(name: str, value: object, maximum: int = MAX_INT64, kind: str = "a signed 64-bit integer") -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRecord(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise InvalidRecord(f"{name} must be non-negative, got {value}")
    if value > maximum:
        raise InvalidRecord(f"{name} {value} does not fit in {kind}")


def _check_bytes(name: str, value: object, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidRecord(f"{name} must be {length} bytes, got {shown}")


def check_channel(channel_id: object, blob: object) -> None:
    _check_bytes("channel_id", channel_id, CHANNEL_ID_LEN)
    if not isinstance(blob, bytes):
        raise InvalidRecord(f"channel blob must be bytes, got {type(blob).__name__}")


def check_payment(record: object) -> None:
    if (  # the common, valid case in one expression: the store checks every payment row it is given
        type(record) is PaymentRecord
        and type(record.payment_id) is str
        and record.payment_id
        and type(record.channel_id) is bytes
        and len(record.channel_id) == CHANNEL_ID_LEN
        and type(record.asset) is bytes
        and len(record.asset) == ASSET_LEN
        and record.direction in DIRECTIONS
        and record.status in STATUSES
        and type(record.amount) is int
        and 0 <= record.amount <= MAX_UINT256
        and type(record.version) is int
        and 0 <= record.version <= MAX_INT64
        and type(record.created_ms) is int
        and 0 <= record.created_ms <= MAX_INT64
        and type(record.reason) is str
        and type(record.count) is int
        and 1 <= record.count <= MAX_INT64
    ):
        return
    _explain_payment(record)


def _explain_payment(record: object) -> None:
    """The slow path: find what is wrong and say so."""
    if not isinstance(record, PaymentRecord):
        raise InvalidRecord(f"payments must be PaymentRecord, got {type(record).__name__}")
    if not isinstance(record.payment_id, str) or not record.payment_id:
        raise InvalidRecord("payment_id must be a non-empty str")
    where = f"payment {record.payment_id!r}"
    _check_bytes(f"{where}: channel_id", record.channel_id, CHANNEL_ID_LEN)
    _check_bytes(f"{where}: asset", record.asset, ASSET_LEN)
    if record.direction not in DIRECTIONS:
        raise InvalidRecord(f"{where}: direction must be one of {sorted(DIRECTIONS)}, got {record.direction!r}")
    if record.status not in STATUSES:
        raise InvalidRecord(f"{where}: status must be one of {sorted(STATUSES)}, got {record.status!r}")
    _check_int(f"{where}: amount", record.amount, MAX_UINT256, "a uint256")
    _check_int(f"{where}: version", record.version)
    _check_int(f"{where}: created_ms", record.created_ms)
    if not isinstance(record.reason, str):
        raise InvalidRecord(f"{where}: reason must be a str, got {type(record.reason).__name__}")
    _check_int(f"{where}: count", record.count)
    if record.count < 1:
        raise InvalidRecord(f"{where}: count must be at least 1 (one payment), got {record.count}")


def check_quote(quote: object, now_ms: object) -> None:
    if not isinstance(quote, StoredQuote):
        raise InvalidRecord(f"expected a StoredQuote, got {type(quote).__name__}")
    _check_bytes("quote channel_id", quote.channel_id, CHANNEL_ID_LEN)
    _check_int("quote_id", quote.quote_id)
    _check_int("quote expires_at_ms", quote.expires_at_ms)
    _check_int("now_ms", now_ms)
    if not isinstance(quote.blob, bytes):
        raise InvalidRecord(f"quote blob must be bytes, got {type(quote.blob).__name__}")


def check_checkpoint(checkpoint: object) -> None:
    if not isinstance(checkpoint, Checkpoint):
        raise InvalidRecord(f"expected a Checkpoint, got {type(checkpoint).__name__}")
    _check_int("checkpoint block_number", checkpoint.block_number)
    _check_bytes("checkpoint block_hash", checkpoint.block_hash, BLOCK_HASH_LEN)


def check_page_key(key: object) -> None:
    if key is None:
        return
    if not isinstance(key, tuple) or len(key) != 2 or not all(type(v) is int and 0 <= v <= MAX_INT64 for v in key):
        raise InvalidRecord(f"a page key is two ints of 0 to 2**63-1, got {key!r}")


def check_limit(limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidRecord(f"limit must be a non-negative int, got {limit!r}")


DEFAULT_HISTORY = 100_000
"""Payment rows kept unless `node start --history N` says otherwise."""


def check_max_payments(max_payments: object) -> None:
    if not isinstance(max_payments, int) or isinstance(max_payments, bool) or max_payments < 0:
        raise InvalidRecord(f"max_payments must be a non-negative int, got {max_payments!r}")

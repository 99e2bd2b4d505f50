"""Durable state: one row per channel (its latest blob), a chain checkpoint, a bounded payment history,
and the quotes this node sent until they expire.

`SqliteStore` is the durable backend (WAL, synchronous=FULL, group commit);
`MemoryStore` has the same interface without durability, for protocol tests."""

from statechannel.store.base import (
    Checkpoint,
    CommitFailed,
    InvalidRecord,
    PaymentRecord,
    SchemaMismatch,
    Store,
    StoreClosed,
    StoredQuote,
    StoreError,
)
from statechannel.store.memory import MemoryStore
from statechannel.store.sqlite import SqliteStore

__all__ = [
    "Checkpoint",
    "CommitFailed",
    "InvalidRecord",
    "MemoryStore",
    "PaymentRecord",
    "SchemaMismatch",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoredQuote",
]

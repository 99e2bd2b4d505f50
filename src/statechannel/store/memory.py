"""A store with the `SqliteStore` interface and semantics but no durability, for protocol tests.

It validates exactly as the SQLite store does and orders history the same way, so a
test that passes here does not depend on something the real store would reject.
A save applies before it returns and never yields, which keeps tests deterministic."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from statechannel.store.base import (
    DEFAULT_HISTORY,
    NEW_STATUSES,
    Checkpoint,
    PageKey,
    PaymentRecord,
    StoreClosed,
    StoredQuote,
    check_channel,
    check_checkpoint,
    check_limit,
    check_max_payments,
    check_page_key,
    check_payment,
    check_quote,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """Everything lives in dicts; each save counts as its own commit."""

    def __init__(self, path: str | Path | None = None, max_payments: int = DEFAULT_HISTORY) -> None:
        """`path` is accepted only so the two stores construct alike; nothing is written there."""
        check_max_payments(max_payments)
        self._max_payments = max_payments
        self._channels: dict[bytes, bytes] = {}
        self._checkpoint: Checkpoint | None = None
        self._quotes: dict[tuple[bytes, int], StoredQuote] = {}
        # payment_id -> (first-insertion sequence, record): the sequence breaks created_ms ties, as rowid does in SQLite
        self._payments: dict[str, tuple[int, PaymentRecord]] = {}
        self._oldest: list[tuple[int, int, str]] = []  # heap of (created_ms, seq, id): pruning is O(log n) a row
        self._seq = 0
        self._pruned: dict[bytes, int] = {}
        self._closed = False
        self._stats = {
            "commits": 0,
            "saves": 0,
            "checkpoint_saves": 0,
            "payment_upserts": 0,
            "quote_saves": 0,
            "failed_commits": 0,
            "largest_batch": 0,
            "payments_stored": 0,
        }

    def load_channels(self) -> dict[bytes, bytes]:
        self._check_open()
        return dict(self._channels)

    def load_checkpoint(self) -> Checkpoint | None:
        self._check_open()
        return self._checkpoint

    @property
    def max_payments(self) -> int:
        return self._max_payments

    def pruned(self, channel_id: bytes | None = None) -> int:
        self._check_open()
        return sum(self._pruned.values()) if channel_id is None else self._pruned.get(channel_id, 0)

    def payments(self, channel_id: bytes | None = None, limit: int = 100, offset: int = 0) -> list[PaymentRecord]:
        """Newest first (by created_ms, then by first insertion), optionally of one channel."""
        self._check_open()
        check_limit(limit)
        check_limit(offset)
        rows = (row for row in self._payments.values() if channel_id is None or row[1].channel_id == channel_id)
        ordered = sorted(rows, key=lambda row: (row[1].created_ms, row[0]), reverse=True)
        return [record for _, record in ordered[offset : offset + limit]]

    def payment(self, payment_id: str) -> PaymentRecord | None:
        self._check_open()
        row = self._payments.get(payment_id)
        return None if row is None else row[1]

    def has_payments_under(self, prefix: str) -> bool:
        self._check_open()
        return any(pid.startswith(prefix) for pid in self._payments)

    def payments_before(
        self, channel_id: bytes | None, limit: int, before: PageKey | None
    ) -> tuple[list[PaymentRecord], PageKey | None]:
        self._check_open()
        check_limit(limit)
        check_page_key(before)
        keyed = (
            ((r.created_ms, seq), r)
            for seq, r in self._payments.values()
            if (channel_id is None or r.channel_id == channel_id) and (before is None or (r.created_ms, seq) < before)
        )
        page = sorted(keyed, key=lambda row: row[0], reverse=True)[:limit]
        return [r for _, r in page], (page[-1][0] if page else None)

    def load_quotes(self, now_ms: int) -> list[StoredQuote]:
        self._check_open()
        return sorted((q for q in self._quotes.values() if q.expires_at_ms > now_ms), key=lambda q: q.quote_id)

    async def save_quote(self, quote: StoredQuote, now_ms: int) -> None:
        check_quote(quote, now_ms)
        self._check_open()
        self._quotes = {k: q for k, q in self._quotes.items() if q.expires_at_ms > now_ms}
        self._quotes[(quote.channel_id, quote.quote_id)] = quote
        self._stats["commits"] += 1
        self._stats["quote_saves"] += 1

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def save(self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()) -> None:
        self._save(channel_id, blob, payments)

    def save_nowait(
        self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()
    ) -> asyncio.Future[None]:
        """Applied before it returns, as `save`; the future is already resolved."""
        self._save(channel_id, blob, payments)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _save(self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord]) -> None:
        check_channel(channel_id, blob)
        records = tuple(payments)
        for record in records:
            check_payment(record)
        self._check_open()
        self._channels[channel_id] = blob
        for record in {r.payment_id: r for r in records}.values():  # the last record of an id wins, as in a batch
            old = self._payments.get(record.payment_id)
            if old is None:
                self._seq += 1
                self._payments[record.payment_id] = (self._seq, record)
                heapq.heappush(self._oldest, (record.created_ms, self._seq, record.payment_id))
            elif record.status not in NEW_STATUSES:  # an outcome changes only status, version and reason
                kept = replace(old[1], status=record.status, version=record.version, reason=record.reason)
                self._payments[record.payment_id] = (old[0], kept)
        self._prune()
        self._count(saves=1, payment_upserts=len({r.payment_id for r in records}))

    async def forget(self, channel_id: bytes) -> None:
        check_channel(channel_id, b"")
        self._check_open()
        self._channels.pop(channel_id, None)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        check_checkpoint(checkpoint)
        self._check_open()
        self._checkpoint = checkpoint
        self._count(checkpoint_saves=1)

    async def close(self) -> None:
        self._closed = True

    def _prune(self) -> None:
        while len(self._payments) > self._max_payments:
            _, record = self._payments.pop(heapq.heappop(self._oldest)[2])
            self._pruned[record.channel_id] = self._pruned.get(record.channel_id, 0) + 1

    def _count(self, saves: int = 0, checkpoint_saves: int = 0, payment_upserts: int = 0) -> None:
        stats = self._stats
        stats["commits"] += 1
        stats["saves"] += saves
        stats["checkpoint_saves"] += checkpoint_saves
        stats["payment_upserts"] += payment_upserts
        stats["largest_batch"] = max(stats["largest_batch"], 1)
        stats["payments_stored"] = len(self._payments)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("memory store is closed")

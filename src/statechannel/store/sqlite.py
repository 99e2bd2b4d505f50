"""The node's durable store: SQLite in WAL mode with `synchronous=FULL` and group commit.

Invariant 3 (save before you sign or send) puts a durable write on the path of every
update, so an fsync per save would cap a node at a few hundred updates per second.
Instead one writer thread drains everything queued while the previous commit was
flushing and writes it as one transaction: under load many saves share one fsync,
and an idle node still commits a lone save immediately (no batching delay).

Storage grows with channels, not with updates: one row per channel holding its latest
blob, one checkpoint row, and a payment history pruned to `max_payments` rows."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from statechannel.store.base import (
    DEFAULT_HISTORY,
    NEW_STATUSES,
    Checkpoint,
    CommitFailed,
    PageKey,
    PaymentRecord,
    SchemaMismatch,
    StoreClosed,
    StoredQuote,
    StoreError,
    check_channel,
    check_checkpoint,
    check_limit,
    check_max_payments,
    check_page_key,
    check_payment,
    check_quote,
)

__all__ = ["DURABILITY_MODES", "Checkpoint", "PaymentRecord", "SqliteStore"]

# What a committed save survives, by mode. The default is the only power-cut-safe one.
#  - "fsync": WAL with synchronous=FULL, every commit is fsynced before `save` returns: survives a
#    power cut or an OS crash (invariant 3 holds against every failure the disk itself survives);
#  - "process-crash-safe": WAL with synchronous=NORMAL, a commit is in the OS page cache when `save`
#    returns and is fsynced at the next checkpoint: survives the node process crashing or being killed,
#    NOT a power cut or an OS crash, which may lose the last commits (a version this node signed may be
#    missing after a reboot; the peer or the chain may hold a newer state than we recover). Opt-in only.
DURABILITY_MODES = {"fsync": "FULL", "process-crash-safe": "NORMAL"}
DEFAULT_DURABILITY = "fsync"

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0  # another process may hold the write lock briefly (a second node tool, a backup)
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # truncate the WAL after checkpoints so it cannot grow without bound

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS channels (
        channel_id BLOB PRIMARY KEY,
        blob BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        block_number INTEGER NOT NULL,
        block_hash BLOB NOT NULL
    )""",
    # amount is decimal TEXT: token amounts exceed 64 bits and must never pass through a float
    """CREATE TABLE IF NOT EXISTS payments (
        seq INTEGER PRIMARY KEY,
        payment_id TEXT NOT NULL UNIQUE,
        channel_id BLOB NOT NULL,
        direction TEXT NOT NULL,
        asset BLOB NOT NULL,
        amount TEXT NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        count INTEGER NOT NULL DEFAULT 1
    )""",
    "CREATE INDEX IF NOT EXISTS payments_by_time ON payments (created_ms, seq)",
    "CREATE INDEX IF NOT EXISTS payments_by_channel ON payments (channel_id, created_ms, seq)",
    # how many payment rows of each channel the retention bound deleted: a listing says so, never silent
    "CREATE TABLE IF NOT EXISTS pruned (channel_id BLOB PRIMARY KEY, rows INTEGER NOT NULL)",
    # the quotes this node sent, until they expire (added after schema 1 shipped: IF NOT EXISTS is the migration)
    """CREATE TABLE IF NOT EXISTS quotes (
        channel_id BLOB NOT NULL,
        quote_id INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (channel_id, quote_id)
    )""",
)

_UPSERT_CHANNEL = (
    "INSERT INTO channels (channel_id, blob) VALUES (?, ?) ON CONFLICT (channel_id) DO UPDATE SET blob = excluded.blob"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoint (one, block_number, block_hash) VALUES (1, ?, ?) "
    "ON CONFLICT (one) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash"
)
# Upsert in two statements so the rowcount of the second tells exactly how many rows are new,
# which keeps the history size known without a COUNT(*) per commit.
# Only the columns a payment's outcome changes: setting an indexed column (even to its own value)
# would rewrite that index's entry too.
_UPDATE_OUTCOME = "UPDATE payments SET status = ?, version = ?, reason = ? WHERE payment_id IN ({})"
_INSERT_PAYMENTS = (
    "INSERT INTO payments (channel_id, direction, asset, amount, status, version, reason, created_ms, payment_id, "
    "count) "
    "VALUES {} ON CONFLICT (payment_id) DO NOTHING"
)
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
ROWS_PER_STATEMENT = 500  # 5,000 parameters: well inside SQLite's limit of 32,766
IDS_PER_STATEMENT = 2_000
_Row = tuple[bytes, str, bytes, str, str, int, str, int, str, int]
_COUNT_PRUNED = (
    "INSERT INTO pruned (channel_id, rows) SELECT channel_id, COUNT(*) FROM "
    "(SELECT channel_id FROM payments ORDER BY created_ms, seq LIMIT ?) WHERE true GROUP BY channel_id "
    "ON CONFLICT (channel_id) DO UPDATE SET rows = rows + excluded.rows"
)
_PRUNE_PAYMENTS = "DELETE FROM payments WHERE seq IN (SELECT seq FROM payments ORDER BY created_ms, seq LIMIT ?)"
_SELECT_PAYMENTS = (
    "SELECT payment_id, channel_id, direction, asset, amount, status, version, reason, created_ms, count FROM payments"
)
_NEWEST_FIRST = " ORDER BY created_ms DESC, seq DESC LIMIT ? OFFSET ?"
_SELECT_PAYMENTS_KEYED = (
    "SELECT payment_id, channel_id, direction, asset, amount, status, version, reason, created_ms, count, seq "
    "FROM payments"
)
_NEWEST_FIRST_KEYED = " ORDER BY created_ms DESC, seq DESC LIMIT ?"
_UPSERT_QUOTE = (
    "INSERT INTO quotes (channel_id, quote_id, expires_at_ms, blob) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (channel_id, quote_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms, blob = excluded.blob"
)
_EXPIRE_QUOTES = "DELETE FROM quotes WHERE expires_at_ms <= ?"


_DELETE_CHANNEL = "DELETE FROM channels WHERE channel_id = ?"


class _Save(NamedTuple):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    channel_id: bytes
    blob: bytes
    payments: tuple[PaymentRecord, ...]
    checkpoint: Checkpoint | None  # set only by save_checkpoint, which carries no channel
    quote: tuple[StoredQuote, int] | None = None  # set only by save_quote: the quote and the time it was saved
    forget: bool = False  # set only by forget: delete the channel


class _Stop(NamedTuple):
    done: concurrent.futures.Future[None]


class SqliteStore:
    """Durable store; `save` returns only after the transaction holding it committed (and fsynced)."""

    def __init__(
        self, path: str | Path, max_payments: int = DEFAULT_HISTORY, durability: str = DEFAULT_DURABILITY
    ) -> None:
        check_max_payments(max_payments)
        if durability not in DURABILITY_MODES:
            raise ValueError(f"unknown durability mode {durability!r}: expected one of {sorted(DURABILITY_MODES)}")
        self.path = Path(path)
        self.durability = durability
        self._max_payments = max_payments
        self._writer = _connect(self.path, DURABILITY_MODES[durability])
        try:
            self._payment_count = _init_schema(self._writer, self.path, max_payments)
            self._reader: sqlite3.Connection | None = _connect(self.path)
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._writer.close()
            raise
        self._read_lock = threading.Lock()  # the reader may be used from the loop and from worker threads
        self._submit_lock = threading.Lock()  # orders "is it closed?" against the stop marker in the queue
        self._stopped: concurrent.futures.Future[None] | None = None
        self._queue: queue.SimpleQueue[_Save | _Stop] = queue.SimpleQueue()
        self.on_commit: Callable[[float, int, bool], None] | None = None
        """Called on the writer thread after each transaction: (seconds, saves in it, committed)."""
        self._stats_lock = threading.Lock()
        self._stats = {
            "commits": 0,
            "saves": 0,
            "checkpoint_saves": 0,
            "payment_upserts": 0,
            "quote_saves": 0,
            "failed_commits": 0,
            "largest_batch": 0,
            "payments_stored": self._payment_count,
        }
        # daemon: a process that exits without close() must not hang; unawaited saves promised nothing
        self._thread = threading.Thread(target=self._run, name=f"store-writer:{self.path.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ reads

    def load_channels(self) -> dict[bytes, bytes]:
        return dict(self._read("SELECT channel_id, blob FROM channels", ()))

    def load_checkpoint(self) -> Checkpoint | None:
        rows = self._read("SELECT block_number, block_hash FROM checkpoint WHERE one = 1", ())
        return Checkpoint(rows[0][0], rows[0][1]) if rows else None

    @property
    def max_payments(self) -> int:
        return self._max_payments

    def pruned(self, channel_id: bytes | None = None) -> int:
        if channel_id is None:
            rows = self._read("SELECT COALESCE(SUM(rows), 0) FROM pruned", ())
        else:
            rows = self._read("SELECT COALESCE(SUM(rows), 0) FROM pruned WHERE channel_id = ?", (channel_id,))
        return int(rows[0][0])

    def payments(self, channel_id: bytes | None = None, limit: int = 100, offset: int = 0) -> list[PaymentRecord]:
        """Newest first (by created_ms, then by first insertion), optionally of one channel."""
        check_limit(limit)
        check_limit(offset)
        if channel_id is None:
            rows = self._read(_SELECT_PAYMENTS + _NEWEST_FIRST, (limit, offset))
        else:
            rows = self._read(_SELECT_PAYMENTS + " WHERE channel_id = ?" + _NEWEST_FIRST, (channel_id, limit, offset))
        return [
            PaymentRecord(pid, cid, d, asset, int(amt), st, v, why, ms, n)
            for pid, cid, d, asset, amt, st, v, why, ms, n in rows
        ]

    def payment(self, payment_id: str) -> PaymentRecord | None:
        rows = self._read(_SELECT_PAYMENTS + " WHERE payment_id = ?", (payment_id,))
        return next(
            (PaymentRecord(p, c, d, a, int(amt), st, v, why, ms, n) for p, c, d, a, amt, st, v, why, ms, n in rows),
            None,
        )

    def has_payments_under(self, prefix: str) -> bool:
        # a range of the unique index: ids from `prefix` up to it with its last character's successor
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
        if end is None:
            return bool(self._read("SELECT 1 FROM payments LIMIT 1", ()))
        rows = self._read("SELECT 1 FROM payments WHERE payment_id >= ? AND payment_id < ? LIMIT 1", (prefix, end))
        return bool(rows)

    def payments_before(
        self, channel_id: bytes | None, limit: int, before: PageKey | None
    ) -> tuple[list[PaymentRecord], PageKey | None]:
        check_limit(limit)
        check_page_key(before)
        where: list[str] = []
        params: list[object] = []
        if channel_id is not None:
            where.append("channel_id = ?")
            params.append(channel_id)
        if before is not None:
            where.append("(created_ms, seq) < (?, ?)")
            params.extend(before)
        sql = _SELECT_PAYMENTS_KEYED + (" WHERE " + " AND ".join(where) if where else "") + _NEWEST_FIRST_KEYED
        rows = self._read(sql, (*params, limit))
        page = [
            PaymentRecord(pid, cid, d, a, int(amt), st, v, why, ms, n)
            for pid, cid, d, a, amt, st, v, why, ms, n, _ in rows
        ]
        return page, ((rows[-1][8], rows[-1][10]) if rows else None)

    def load_quotes(self, now_ms: int) -> list[StoredQuote]:
        rows = self._read(
            "SELECT channel_id, quote_id, expires_at_ms, blob FROM quotes WHERE expires_at_ms > ? ORDER BY quote_id",
            (now_ms,),
        )
        return [StoredQuote(cid, qid, expires, blob) for cid, qid, expires, blob in rows]

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._read_lock:
            if self._reader is None:
                raise StoreClosed(f"store {self.path} is closed")
            try:
                # fetchall ends the read transaction at once, so no stale snapshot pins the WAL
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"reading {self.path} failed: {exc}") from exc

    # ----------------------------------------------------------------- writes

    async def save(self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()) -> None:
        """Durably replace a channel's blob and upsert its payment records, atomically.

        Saves are applied in the order they are called (tasks: the order they start), so the
        last save of a channel wins. Cancelling the awaiting task does not withdraw the save."""
        await self.save_nowait(channel_id, blob, payments)

    def save_nowait(
        self, channel_id: bytes, blob: bytes, payments: Sequence[PaymentRecord] = ()
    ) -> asyncio.Future[None]:
        """`save` queued at once, in call order; the future is resolved by the writer's one hand-off per
        group commit (no task in between, so the caller's done callback runs in the loop turn after it)."""
        check_channel(channel_id, blob)
        records = tuple(payments)
        for record in records:
            check_payment(record)
        return self._enqueue(channel_id, blob, records, None)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        check_checkpoint(checkpoint)
        await self._enqueue(b"", b"", (), checkpoint)

    async def forget(self, channel_id: bytes) -> None:
        check_channel(channel_id, b"")
        await self._enqueue(channel_id, b"", (), None, forget=True)

    async def save_quote(self, quote: StoredQuote, now_ms: int) -> None:
        check_quote(quote, now_ms)
        await self._enqueue(b"", b"", (), None, (quote, now_ms))

    async def close(self) -> None:
        """Commit everything already queued, then stop the writer and release the file. Idempotent."""
        with self._submit_lock:
            if self._stopped is None:
                self._stopped = concurrent.futures.Future()
                self._queue.put(_Stop(self._stopped))
            stopped = self._stopped
        await asyncio.wrap_future(stopped)
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _enqueue(
        self,
        channel_id: bytes,
        blob: bytes,
        records: tuple[PaymentRecord, ...],
        checkpoint: Checkpoint | None,
        quote: tuple[StoredQuote, int] | None = None,
        *,
        forget: bool = False,
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._submit_lock:
            if self._stopped is not None:
                raise StoreClosed(f"store {self.path} is closed; the save was not queued")
            self._queue.put(_Save(loop, future, channel_id, blob, records, checkpoint, quote, forget))
        return future

    # ---------------------------------------------------------- writer thread

    def _run(self) -> None:
        """Group commit: whatever queued up during the last fsync becomes the next transaction."""
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            saves = [op for op in batch if isinstance(op, _Save)]
            if saves:
                self._commit(saves)
            for op in batch:
                if isinstance(op, _Stop):  # nothing follows it: _enqueue refuses once the stop is queued
                    try:
                        self._writer.close()
                    finally:
                        op.done.set_result(None)
                    return

    def _commit(self, saves: list[_Save]) -> None:
        channels: dict[bytes, bytes | None] = {}  # None: forget it
        payments: dict[str, PaymentRecord] = {}
        checkpoint: Checkpoint | None = None
        quotes: dict[tuple[bytes, int], StoredQuote] = {}
        now_ms = 0
        for op in saves:
            if op.checkpoint is not None:
                checkpoint = op.checkpoint
            elif op.quote is not None:
                quote, at = op.quote
                quotes[(quote.channel_id, quote.quote_id)] = quote
                now_ms = max(now_ms, at)
            else:
                channels[op.channel_id] = None if op.forget else op.blob  # later saves overwrite earlier ones
            for record in op.payments:
                payments[record.payment_id] = record
        error: Exception | None = None
        started = time.perf_counter()
        try:
            count = self._transact(channels, payments.values(), checkpoint, quotes.values(), now_ms)
        except Exception as exc:  # any failure belongs to the callers; the writer keeps serving
            error = exc
        if self.on_commit is not None:
            with contextlib.suppress(Exception):  # metrics must never fail a commit
                self.on_commit(time.perf_counter() - started, len(saves), error is None)
        with self._stats_lock:
            stats = self._stats
            if error is None:
                self._payment_count = stats["payments_stored"] = count
                stats["commits"] += 1
                stats["checkpoint_saves"] += sum(op.checkpoint is not None for op in saves)
                stats["quote_saves"] += sum(op.quote is not None for op in saves)
                stats["saves"] += sum(op.checkpoint is None and op.quote is None for op in saves)
                stats["payment_upserts"] += len(payments)
                stats["largest_batch"] = max(stats["largest_batch"], len(saves))
            else:
                stats["failed_commits"] += 1
        _settle(saves, error)

    def _transact(
        self,
        channels: dict[bytes, bytes | None],
        payments: Iterable[PaymentRecord],
        checkpoint: Checkpoint | None,
        quotes: Iterable[StoredQuote] = (),
        now_ms: int = 0,
    ) -> int:
        """One transaction for the whole batch; returns the payment history size it leaves."""
        conn = self._writer
        count = self._payment_count
        conn.execute("BEGIN IMMEDIATE")
        try:
            if channels:
                conn.executemany(_UPSERT_CHANNEL, [(c, b) for c, b in channels.items() if b is not None])
                conn.executemany(_DELETE_CHANNEL, [(c,) for c, b in channels.items() if b is None])
            rows = [
                (
                    r.channel_id,
                    r.direction,
                    r.asset,
                    str(r.amount),
                    r.status,
                    r.version,
                    str(r.reason),
                    r.created_ms,
                    r.payment_id,
                    r.count,
                )
                for r in payments
            ]
            if rows:
                # A pending or received record is new: one insert. A final one (sent, failed) mostly
                # finishes a pending row: one update, and inserts only when some had no row to update
                # (pending and final in one batch, or the pending row pruned). One statement a record
                # on the common path, and the inserts' rowcount still says how many rows are new.
                new = [row for row in rows if row[4] in NEW_STATUSES]
                done = [row for row in rows if row[4] not in NEW_STATUSES]
                if new:
                    count += _insert_payments(conn, new)
                if done and _update_outcomes(conn, done) < len(done):
                    count += _insert_payments(conn, done)
                count -= _prune(conn, count, self._max_payments)
            if checkpoint is not None:
                conn.execute(_UPSERT_CHECKPOINT, (checkpoint.block_number, checkpoint.block_hash))
            quote_rows = [(q.channel_id, q.quote_id, q.expires_at_ms, q.blob) for q in quotes]
            if quote_rows:
                conn.execute(_EXPIRE_QUOTES, (now_ms,))
                conn.executemany(_UPSERT_QUOTE, quote_rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return count


def _settle(saves: list[_Save], error: Exception | None) -> None:
    """Wake the waiters: one hop per event loop, not one per save."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for op in saves:
        by_loop.setdefault(op.loop, []).append(op.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, futures, error, len(saves))


def _resolve(futures: list[asyncio.Future[None]], error: Exception | None, batch: int) -> None:
    for future in futures:
        if future.done():  # the waiter was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            failure = CommitFailed(f"the transaction holding this save (one of {batch}) rolled back: {error}")
            failure.__cause__ = error
            future.set_exception(failure)


def _chunks(items: list[_Row], size: int) -> Iterable[list[_Row]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _insert_payments(conn: sqlite3.Connection, rows: list[_Row]) -> int:
    """Insert rows not there yet, many to a statement: one statement is one step of the engine (and
    one release of the GIL) for hundreds of rows, where executemany takes one per row. Returns how
    many were new."""
    new = 0
    for chunk in _chunks(rows, ROWS_PER_STATEMENT):
        values = ", ".join([_ROW_PLACEHOLDERS] * len(chunk))
        new += conn.execute(_INSERT_PAYMENTS.format(values), [v for row in chunk for v in row]).rowcount
    return new


def _update_outcomes(conn: sqlite3.Connection, rows: list[_Row]) -> int:
    """Record the outcome (status, version, reason) of payments with a row, one statement per outcome
    (the payments of one update share theirs). Returns how many rows were updated."""
    by_outcome: dict[tuple[object, object, object], list[object]] = {}
    for row in rows:
        by_outcome.setdefault((row[4], row[5], row[6]), []).append(row[8])
    updated = 0
    for (status, version, reason), ids in by_outcome.items():
        for i in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = ids[i : i + IDS_PER_STATEMENT]
            sql = _UPDATE_OUTCOME.format(", ".join("?" * len(chunk)))
            updated += conn.execute(sql, [status, version, reason, *chunk]).rowcount
    return updated


def _prune(conn: sqlite3.Connection, count: int, max_payments: int) -> int:
    """Drop the oldest rows beyond the bound; only when over it, so a steady node pays nothing."""
    excess = count - max_payments
    if excess <= 0:
        return 0
    conn.execute(_COUNT_PRUNED, (excess,))
    return conn.execute(_PRUNE_PAYMENTS, (excess,)).rowcount


def _connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly one transaction
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {path} cannot use WAL mode (got {mode!r}); durability would be unsafe")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _init_schema(conn: sqlite3.Connection, path: Path, max_payments: int) -> int:
    """Create or check the schema and enforce the history bound; returns the history size."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SchemaMismatch(f"store {path} has schema version {version}, this code reads {SCHEMA_VERSION}")
            for statement in _SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(payments)")}
            if "count" not in columns:  # written before batches (decision 0012): every old row is one payment
                conn.execute("ALTER TABLE payments ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            count: int = conn.execute("SELECT COUNT(*) FROM payments").fetchone()[0]
            count -= _prune(conn, count, max_payments)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prepare the schema of {path}: {exc}") from exc
    return count

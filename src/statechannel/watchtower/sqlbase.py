"""The SQL tower store: one writer thread, group commit, each operation a read-then-write in the batch.

A receipt promises that the tower holds a state, so a push is answered only after its transaction
committed. One writer thread turns everything queued during the previous commit into the next
transaction: under load many pushes share one fsync, idle pushes commit at once. Running each check
and its write in that one transaction makes "only if newer" atomic without row locks. The SQL is
shared; each backend supplies its connections, schema and transaction calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, NamedTuple, TypeVar

from statechannel.core.io import SignedState
from statechannel.store.base import Checkpoint
from statechannel.watchtower.records import (
    STATUS_CODE,
    Dispute,
    TowerStatus,
    WatchedChannel,
    decode_state,
    encode_dispute,
    encode_state,
)
from statechannel.watchtower.storage import (
    PutOutcome,
    PutResult,
    Row,
    StoreMismatch,
    TowerStoreClosed,
    TowerStoreError,
    Tx,
    channel_to_row,
    row_to_channel,
)

T = TypeVar("T")
SELECT_ONE = "SELECT channel_id, params, status, version, state, dispute FROM tw_channels WHERE channel_id = ?"
SELECT_BY_STATUS = "SELECT channel_id, params, status, version, state, dispute FROM tw_channels WHERE status = ?"
INSERT_NEW = (
    "INSERT INTO tw_channels (channel_id, params, status, version, state, dispute) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (channel_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    fn: Callable[[Tx], T] | None
    """The operation, run inside the batch's transaction; None for a push (`put`), which runs batched."""
    count_delta: Callable[[T], int]
    put: SignedState | None = None


class _Stop(NamedTuple):
    done: concurrent.futures.Future[None]


def _no_delta(_: object) -> int:
    return 0


class SqlTowerStore:
    """Group-committed operations over a DB-API connection; subclasses pick the database.

    Reads go through a second connection, so they see only committed rows and never wait for an fsync."""

    db_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, name: str, chain_id: int, adjudicator: bytes) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[_Op[Any] | _Stop] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._stopped: concurrent.futures.Future[None] | None = None
        self._closed_reader = False
        self._bind(chain_id, adjudicator)
        self._count = int(self._read("SELECT COUNT(*) FROM tw_channels")[0][0])
        self._thread = threading.Thread(target=self._run, name=f"tower-store:{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ backend hooks

    def _writer_tx(self) -> Tx:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _reader_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    def _close_connections(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ reads

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._read_lock:
            if self._closed_reader:
                raise TowerStoreClosed(f"store {self.name} is closed")
            try:
                return self._reader_rows(sql, params)
            except self.db_errors as exc:
                raise TowerStoreError(f"reading {self.name} failed: {exc}") from exc

    def get(self, channel_id: bytes) -> WatchedChannel | None:
        rows = self._read(SELECT_ONE, (channel_id,))
        return row_to_channel(rows[0]) if rows else None

    def disputed(self) -> list[WatchedChannel]:
        """Channels with a close on record: the only ones a restarted tower may have to act on."""
        code = STATUS_CODE[TowerStatus.CHALLENGED]
        return [row_to_channel(r) for r in self._read(SELECT_BY_STATUS, (code,))]

    def checkpoint(self) -> Checkpoint | None:
        rows = self._read("SELECT block_number, block_hash FROM tw_checkpoint WHERE one = 1")
        return Checkpoint(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def count(self) -> int:
        """Kept by the writer, so /info never counts a million rows."""
        return self._count

    def _bind(self, chain_id: int, adjudicator: bytes) -> None:
        rows = self._read("SELECT chain_id, adjudicator FROM tw_meta WHERE one = 1")
        if not rows:
            raise TowerStoreError(f"{self.name} has no tower identity row (the schema was not created)")
        if (int(rows[0][0]), bytes(rows[0][1])) != (chain_id, adjudicator):
            raise StoreMismatch(
                f"{self.name} belongs to adjudicator 0x{bytes(rows[0][1]).hex()} on chain {rows[0][0]}, "
                f"not 0x{adjudicator.hex()} on chain {chain_id}"
            )

    # ------------------------------------------------------------ operations

    async def register(self, channel: WatchedChannel) -> tuple[bool, WatchedChannel]:
        """Insert if absent; (created, the stored row). An existing row is left exactly as it is."""

        def op(tx: Tx) -> tuple[bool, WatchedChannel]:
            created = tx.run_count(
                INSERT_NEW,
                channel_to_row(channel),
            )
            if created:
                return True, channel
            return False, row_to_channel(tx.run(SELECT_ONE, (cid,))[0])

        cid = channel.channel_id
        return await self._submit(op, lambda r: int(r[0]))

    async def put_state(self, signed: SignedState) -> PutResult:
        """Keep `signed` if it is newer than the held state; the check and the write are one step.

        Pushes queued together are checked against one read of their rows and written with one
        statement (see _put_run): per-push statements would make the writer thread wait for the GIL
        once per statement while the loop thread is busy serving the requests."""
        return await self._submit(None, put=signed)

    async def apply_close(self, channel_id: bytes, dispute: Dispute) -> tuple[bool, WatchedChannel | None]:
        """Record what a Closed/Challenged event said, unless the row already reflects it or a later
        event: (changed, row). None for a channel nobody registered."""

        def op(tx: Tx) -> tuple[bool, WatchedChannel | None]:
            rows = tx.run(SELECT_ONE, (channel_id,))
            if not rows:
                return False, None
            ch = row_to_channel(rows[0])
            if ch.status is TowerStatus.CLOSED or (ch.dispute is not None and ch.dispute.position >= dispute.position):
                return False, ch
            return True, _set_dispute(tx, ch, TowerStatus.CHALLENGED, dispute)

        return await self._submit(op)

    async def apply_concluded(self, channel_id: bytes) -> tuple[bool, WatchedChannel | None]:
        def op(tx: Tx) -> tuple[bool, WatchedChannel | None]:
            rows = tx.run(SELECT_ONE, (channel_id,))
            if not rows:
                return False, None
            ch = row_to_channel(rows[0])
            if ch.status is TowerStatus.CLOSED:
                return False, ch
            return True, _set_dispute(tx, ch, TowerStatus.CLOSED, ch.dispute)

        return await self._submit(op)

    async def set_dispute(
        self, channel_id: bytes, status: TowerStatus, dispute: Dispute | None
    ) -> WatchedChannel | None:
        """Overwrite what the chain is said to record: after a reorg, from a fresh read of the chain."""

        def op(tx: Tx) -> WatchedChannel | None:
            rows = tx.run(SELECT_ONE, (channel_id,))
            return _set_dispute(tx, row_to_channel(rows[0]), status, dispute) if rows else None

        return await self._submit(op)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        def op(tx: Tx) -> None:
            tx.run_count(
                "INSERT INTO tw_checkpoint (one, block_number, block_hash) VALUES (1, ?, ?) ON CONFLICT (one) "
                "DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash",
                (checkpoint.block_number, checkpoint.block_hash),
            )

        await self._submit(op)

    async def bulk_register(self, channels: Sequence[WatchedChannel]) -> int:
        """Many registrations in one statement (imports, benchmarks); returns how many were new."""

        def op(tx: Tx) -> int:
            return tx.run_many(INSERT_NEW, (channel_to_row(ch) for ch in channels))

        return await self._submit(op, lambda n: n)

    async def close(self) -> None:
        """Commit what is queued, then release the database. Idempotent."""
        with self._submit_lock:
            if self._stopped is None:
                self._stopped = concurrent.futures.Future()
                self._queue.put(_Stop(self._stopped))
            stopped = self._stopped
        await asyncio.wrap_future(stopped)

    async def _submit(
        self, fn: Callable[[Tx], T] | None, count_delta: Callable[[T], int] = _no_delta, put: SignedState | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._submit_lock:
            if self._stopped is not None:
                raise TowerStoreClosed(f"store {self.name} is closed")
            self._queue.put(_Op(loop, future, fn, count_delta, put))
        return await future

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            ops = [op for op in batch if isinstance(op, _Op)]
            if ops:
                self._transact(ops)
            for item in batch:
                if isinstance(item, _Stop):
                    with self._read_lock:
                        self._closed_reader = True
                        try:
                            self._close_connections()
                        finally:
                            item.done.set_result(None)
                    return

    def _transact(self, ops: list[_Op[Any]]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            self._begin()
            tx = self._writer_tx()
            i = 0
            while i < len(ops):
                if ops[i].put is not None:
                    j = i
                    while j < len(ops) and ops[j].put is not None:
                        j += 1
                    results.extend(_put_run(tx, ops[i:j]))
                    i = j
                    continue
                fn = ops[i].fn
                assert fn is not None
                try:
                    results.append((fn(tx), None))
                except self.db_errors:
                    raise
                except Exception as exc:  # one bad row (say, a corrupt blob) fails its own op only
                    results.append((None, exc))
                i += 1
            self._commit()
        except Exception as exc:  # the database failed: nothing of this batch is durable
            with contextlib.suppress(Exception):
                self._rollback()
            failure = TowerStoreError(f"the transaction of {len(ops)} operations on {self.name} failed: {exc}")
            failure.__cause__ = exc
            results = [(None, failure)] * len(ops)
        else:
            self._count += sum(op.count_delta(r) for op, (r, e) in zip(ops, results, strict=True) if e is None)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for op, (result, error) in zip(ops, results, strict=True):
            by_loop.setdefault(op.loop, []).append((op.future, result, error))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_resolve, items)


def _put_run(tx: Tx, ops: list[_Op[Any]]) -> list[tuple[Any, BaseException | None]]:
    """Consecutive pushes: one read of their rows, the version rule applied in queue order (so two
    pushes of one channel in a batch behave as if committed one after the other), one write."""
    ids = list(dict.fromkeys(op.put.state.channel_id for op in ops if op.put is not None))
    rows: dict[bytes, Row] = {}
    for lo in range(0, len(ids), 500):
        chunk = ids[lo : lo + 500]
        marks = ", ".join("?" * len(chunk))  # placeholders only: the ids travel as parameters
        sql = (
            f"SELECT channel_id, params, status, version, state, dispute FROM tw_channels WHERE channel_id IN ({marks})"  # noqa: S608
        )
        rows.update((bytes(r[0]), r) for r in tx.run(sql, chunk))
    held: dict[bytes, tuple[int | None, bytes | None]] = {
        cid: (r[3], None if r[4] is None else bytes(r[4])) for cid, r in rows.items()
    }
    writes: dict[bytes, tuple[int, bytes, bytes]] = {}
    out: list[tuple[Any, BaseException | None]] = []
    for op in ops:
        signed = op.put
        assert signed is not None
        cid, version = signed.state.channel_id, signed.state.version
        row = rows.get(cid)
        if row is None:
            out.append((PutResult(PutOutcome.UNKNOWN, None), None))
            continue
        try:
            blob = encode_state(signed)
            held_version, held_blob = held[cid]
            base = row_to_channel((*row[:3], None, None, row[5]))
            if held_version is None or held_version < version:
                held[cid] = (version, blob)
                writes[cid] = (version, blob, cid)
                out.append((PutResult(PutOutcome.ACCEPTED, replace(base, latest=signed)), None))
                continue
            assert held_blob is not None
            outcome = PutOutcome.SAME if held_version == version and held_blob == blob else PutOutcome.STALE
            latest = decode_state(cid, held_version, held_blob)
            out.append((PutResult(outcome, replace(base, latest=latest)), None))
        except Exception as exc:  # a corrupt stored state fails this push only
            out.append((None, exc))
    if writes:
        tx.run_many("UPDATE tw_channels SET version = ?, state = ? WHERE channel_id = ?", writes.values())
    return out


def _set_dispute(tx: Tx, ch: WatchedChannel, status: TowerStatus, dispute: Dispute | None) -> WatchedChannel:
    tx.run_count(
        "UPDATE tw_channels SET status = ?, dispute = ? WHERE channel_id = ?",
        (STATUS_CODE[status], None if dispute is None else encode_dispute(dispute), ch.channel_id),
    )
    return WatchedChannel(ch.channel_id, ch.params, status, ch.latest, dispute)


def _resolve(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # the waiter was cancelled; the operation still happened
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

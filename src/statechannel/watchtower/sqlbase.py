"""The SQL tower store: one writer thread, group commit, each operation a read-then-write in the batch.

A receipt promises that the tower holds a state, so a push is answered only after its transaction committed. A
channel is one row of tw_channels; its states are rows of tw_states keyed by (channel, client, version), so each
participant's few best states are kept apart; tw_clients counts what each client holds. One writer thread turns
everything queued during the previous commit into the next transaction: under load many pushes share one fsync, idle
pushes commit at once. Running each check and its write in that one transaction makes "only if newer" atomic without
row locks. The SQL is shared; each backend supplies its connections, schema and transaction calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from statechannel.core.io import SignedState
from statechannel.store.base import Checkpoint
from statechannel.watchtower.records import (
    STATUS_CODE,
    Dispute,
    TowerStatus,
    WatchedChannel,
    encode_dispute,
    encode_state,
)
from statechannel.watchtower.storage import (
    PutOutcome,
    PutResult,
    QuotaExceeded,
    Quotas,
    Row,
    StoreMismatch,
    TowerStoreClosed,
    TowerStoreError,
    Tx,
    channel_to_row,
    row_to_channel,
    state_rows,
)

T = TypeVar("T")
SCHEMA_VERSION = 4
"""4: tw_credit, what each payee channel credited (payments pruned unread are reconciled by balance); 3: a paid
tower's tw_accounts and tw_payments (schema 2 and 3 databases are upgraded in place: they only gain tables);
2: states per client in tw_states (1 kept one state per channel in tw_channels)."""
UPGRADE = (
    # a schema 2/3 tower credited rows without per-channel tallies: marked, so reconciling credits no old row again
    "INSERT INTO tw_credit (channel_id, credited, reconciled) SELECT '*', '0', -1 FROM tw_meta "
    "WHERE schema_version IN (2, 3) ON CONFLICT (channel_id) DO NOTHING",
    "UPDATE tw_meta SET schema_version = 4 WHERE schema_version IN (2, 3)",
)
SELECT_ONE = "SELECT channel_id, params, status, dispute FROM tw_channels WHERE channel_id = ?"
SELECT_BY_STATUS = "SELECT channel_id, params, status, dispute FROM tw_channels WHERE status = ?"
SELECT_STATES = "SELECT client, version, state FROM tw_states WHERE channel_id = ?"
INSERT_NEW = (
    "INSERT INTO tw_channels (channel_id, params, status, dispute) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (channel_id) DO NOTHING"
)
INSERT_STATE = "INSERT INTO tw_states (channel_id, client, version, state) VALUES (?, ?, ?, ?)"
ADD_USAGE = (
    "INSERT INTO tw_clients (address, channels, bytes) VALUES (?, ?, ?) ON CONFLICT (address) DO UPDATE SET "
    "channels = tw_clients.channels + excluded.channels, bytes = tw_clients.bytes + excluded.bytes"
)


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    fn: Callable[[Tx], T]
    """The operation, run inside the batch's transaction."""
    count_delta: Callable[[T], int]


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
        return row_to_channel(rows[0], self._read(SELECT_STATES, (channel_id,))) if rows else None

    def disputed(self) -> list[WatchedChannel]:
        """Channels with a close on record: the only ones a restarted tower may have to act on."""
        code = STATUS_CODE[TowerStatus.CHALLENGED]
        return [row_to_channel(r, self._read(SELECT_STATES, (r[0],))) for r in self._read(SELECT_BY_STATUS, (code,))]

    def client_usage(self, client: bytes) -> tuple[int, int]:
        """(channels it registered first, bytes of its kept states)."""
        rows = self._read("SELECT channels, bytes FROM tw_clients WHERE address = ?", (client,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def checkpoint(self) -> Checkpoint | None:
        rows = self._read("SELECT block_number, block_hash FROM tw_checkpoint WHERE one = 1")
        return Checkpoint(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def count(self) -> int:
        """Kept by the writer, so /info never counts a million rows."""
        return self._count

    def _bind(self, chain_id: int, adjudicator: bytes) -> None:
        rows = self._read("SELECT chain_id, adjudicator, schema_version FROM tw_meta WHERE one = 1")
        if not rows:
            raise TowerStoreError(f"{self.name} has no tower identity row (the schema was not created)")
        if int(rows[0][2]) != SCHEMA_VERSION:
            raise StoreMismatch(f"{self.name} has tower schema {rows[0][2]}, this tower reads {SCHEMA_VERSION}")
        if (int(rows[0][0]), bytes(rows[0][1])) != (chain_id, adjudicator):
            raise StoreMismatch(
                f"{self.name} belongs to adjudicator 0x{bytes(rows[0][1]).hex()} on chain {rows[0][0]}, "
                f"not 0x{adjudicator.hex()} on chain {chain_id}"
            )

    def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A committed read for modules keeping their own tables here (billing.py)."""
        return self._read(sql, params)

    async def run_op(self, fn: Callable[[Tx], T]) -> T:
        """`fn` inside the writer's next transaction (billing.py); durable when this returns."""
        return await self._submit(fn)

    # ------------------------------------------------------------ operations

    async def register(
        self, channel: WatchedChannel, client: bytes | None = None, quotas: Quotas | None = None
    ) -> tuple[bool, WatchedChannel]:
        """Insert if absent; (created, the stored row). An existing row is left exactly as it is. A new channel
        counts against `client`'s channel quota (QuotaExceeded, nothing written, once it is full)."""

        def op(tx: Tx) -> tuple[bool, WatchedChannel]:
            rows = tx.run(SELECT_ONE, (cid,))
            if rows:
                return False, row_to_channel(rows[0], tx.run(SELECT_STATES, (cid,)))
            if client is not None:
                used = tx.run("SELECT channels FROM tw_clients WHERE address = ?", (client,))
                if quotas is not None and used and int(used[0][0]) >= quotas.channels:
                    raise QuotaExceeded(f"the client already registered {quotas.channels} channels, its quota")
                tx.run_count(ADD_USAGE, (client, 1, 0))
            tx.run_count(INSERT_NEW, channel_to_row(channel))
            if channel.states:
                tx.run_many(INSERT_STATE, state_rows(channel))
            return True, channel

        cid = channel.channel_id
        return await self._submit(op, lambda r: int(r[0]))

    async def put_state(
        self, signed: SignedState, client: int, client_address: bytes, quotas: Quotas | None = None
    ) -> PutResult:
        """Keep `signed` among `client`'s best `quotas.states` states of the channel; the check and the write
        are one step. The other participant's states are never read for the decision nor touched."""
        q = quotas or Quotas()

        def op(tx: Tx) -> PutResult:
            cid, version = signed.state.channel_id, signed.state.version
            rows = tx.run(SELECT_ONE, (cid,))
            if not rows:
                return PutResult(PutOutcome.UNKNOWN, None)
            held = tx.run(SELECT_STATES, (cid,))
            mine = sorted(
                ((int(v), bytes(blob)) for c, v, blob in held if int(c) == client), key=lambda vb: vb[0], reverse=True
            )
            blob = encode_state(signed)
            for v, b in mine:
                if v == version:
                    outcome = PutOutcome.SAME if b == blob else PutOutcome.STALE
                    return PutResult(outcome, row_to_channel(rows[0], held))
            evict = mine[q.states - 1 :] if len(mine) >= q.states else []
            if evict and version < evict[0][0]:
                return PutResult(PutOutcome.STALE, row_to_channel(rows[0], held))
            delta = len(blob) - sum(len(b) for _, b in evict)
            used = tx.run("SELECT bytes FROM tw_clients WHERE address = ?", (client_address,))
            if delta > 0 and (int(used[0][0]) if used else 0) + delta > q.bytes:
                raise QuotaExceeded(f"the client's states would take over {q.bytes} bytes, its quota")
            if evict:
                tx.run_many(
                    "DELETE FROM tw_states WHERE channel_id = ? AND client = ? AND version = ?",
                    [(cid, client, v) for v, _ in evict],
                )
            tx.run_count(INSERT_STATE, (cid, client, version, blob))
            tx.run_count(ADD_USAGE, (client_address, 0, delta))
            gone = {v for v, _ in evict}
            kept = [h for h in held if not (int(h[0]) == client and int(h[1]) in gone)]
            return PutResult(PutOutcome.ACCEPTED, row_to_channel(rows[0], [*kept, (client, version, blob)]))

        return await self._submit(op)

    async def apply_close(self, channel_id: bytes, dispute: Dispute) -> tuple[bool, WatchedChannel | None]:
        """Record what a Closed/Challenged event said, unless the row already reflects it or a later
        event: (changed, row). None for a channel nobody registered."""

        def op(tx: Tx) -> tuple[bool, WatchedChannel | None]:
            rows = tx.run(SELECT_ONE, (channel_id,))
            if not rows:
                return False, None
            ch = row_to_channel(rows[0], tx.run(SELECT_STATES, (channel_id,)))
            if ch.status is TowerStatus.CLOSED or (ch.dispute is not None and ch.dispute.position >= dispute.position):
                return False, ch
            return True, _set_dispute(tx, ch, TowerStatus.CHALLENGED, dispute)

        return await self._submit(op)

    async def apply_concluded(self, channel_id: bytes) -> tuple[bool, WatchedChannel | None]:
        def op(tx: Tx) -> tuple[bool, WatchedChannel | None]:
            rows = tx.run(SELECT_ONE, (channel_id,))
            if not rows:
                return False, None
            ch = row_to_channel(rows[0], tx.run(SELECT_STATES, (channel_id,)))
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
            if not rows:
                return None
            return _set_dispute(tx, row_to_channel(rows[0], tx.run(SELECT_STATES, (channel_id,))), status, dispute)

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
            created = tx.run_many(INSERT_NEW, (channel_to_row(ch) for ch in channels))
            tx.run_many(INSERT_STATE, (row for ch in channels for row in state_rows(ch)))
            return created

        return await self._submit(op, lambda n: n)

    async def close(self) -> None:
        """Commit what is queued, then release the database. Idempotent."""
        with self._submit_lock:
            if self._stopped is None:
                self._stopped = concurrent.futures.Future()
                self._queue.put(_Stop(self._stopped))
            stopped = self._stopped
        await asyncio.wrap_future(stopped)

    async def _submit(self, fn: Callable[[Tx], T], count_delta: Callable[[T], int] = _no_delta) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._submit_lock:
            if self._stopped is not None:
                raise TowerStoreClosed(f"store {self.name} is closed")
            self._queue.put(_Op(loop, future, fn, count_delta))
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
            for op in ops:
                try:
                    results.append((op.fn(tx), None))
                except self.db_errors:
                    raise
                except Exception as exc:  # a refusal or one bad row (a corrupt blob) fails its own op only
                    results.append((None, exc))
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


def _set_dispute(tx: Tx, ch: WatchedChannel, status: TowerStatus, dispute: Dispute | None) -> WatchedChannel:
    tx.run_count(
        "UPDATE tw_channels SET status = ?, dispute = ? WHERE channel_id = ?",
        (STATUS_CODE[status], None if dispute is None else encode_dispute(dispute), ch.channel_id),
    )
    return WatchedChannel(ch.channel_id, ch.params, status, ch.states, dispute)


def _resolve(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # the waiter was cancelled; the operation still happened
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

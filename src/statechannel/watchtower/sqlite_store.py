"""The default tower store: one SQLite file in WAL mode, `synchronous=FULL` (a receipt is a promise).

Rows live in a WITHOUT ROWID table keyed by the channel id, so a channel costs one B-tree entry and
no second index; a partial index finds the few channels in dispute without scanning the rest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from statechannel.watchtower.sqlbase import SCHEMA_VERSION, UPGRADE, SqlTowerStore
from statechannel.watchtower.storage import Row, TowerStoreError, Tx

BUSY_TIMEOUT_S = 10.0
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tw_channels (
        channel_id BLOB PRIMARY KEY,
        params BLOB NOT NULL,
        status INTEGER NOT NULL,
        dispute BLOB
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS tw_disputed ON tw_channels (status) WHERE status = 1",
    """CREATE TABLE IF NOT EXISTS tw_states (
        channel_id BLOB NOT NULL,
        client INTEGER NOT NULL,
        version INTEGER NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (channel_id, client, version)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tw_clients (
        address BLOB PRIMARY KEY,
        channels BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tw_accounts (
        address BLOB PRIMARY KEY,
        paid TEXT NOT NULL,
        states BIGINT NOT NULL,
        start BIGINT,
        short_since BIGINT
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tw_payments (
        payment_id TEXT PRIMARY KEY,
        address BLOB NOT NULL,
        amount TEXT NOT NULL,
        at BIGINT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tw_credit (
        channel_id TEXT PRIMARY KEY,
        credited TEXT NOT NULL,
        reconciled BIGINT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tw_checkpoint (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        block_number INTEGER NOT NULL,
        block_hash BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tw_meta (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        chain_id TEXT NOT NULL,
        adjudicator BLOB NOT NULL,
        schema_version INTEGER NOT NULL
    )""",
)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def run_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self._conn.executemany(sql, rows).rowcount


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise TowerStoreError(f"{path} cannot use WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise TowerStoreError(f"cannot open {path}: {exc}") from exc
    return conn


class SqliteTowerStore(SqlTowerStore):
    db_errors = (sqlite3.Error,)

    def __init__(self, path: str | Path, chain_id: int, adjudicator: bytes) -> None:
        self.path = Path(path)
        self._writer = _connect(self.path)
        self._reader: sqlite3.Connection | None = None
        try:
            self._writer.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                self._writer.execute(statement)
            self._writer.execute(
                "INSERT INTO tw_meta (one, chain_id, adjudicator, schema_version) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (one) DO NOTHING",
                (str(chain_id), adjudicator, SCHEMA_VERSION),
            )
            for statement in UPGRADE:  # 2 -> 4 and 3 -> 4 only add tables, created above
                self._writer.execute(statement)
            self._writer.execute("COMMIT")
            self._reader = _connect(self.path)
            self._reader.execute("PRAGMA query_only = ON")
            super().__init__(str(self.path), chain_id, adjudicator)
        except BaseException as exc:
            self._close_connections()
            if isinstance(exc, sqlite3.Error):
                raise TowerStoreError(f"cannot prepare {self.path}: {exc}") from exc
            raise

    def _writer_tx(self) -> Tx:
        return _SqliteTx(self._writer)

    def _begin(self) -> None:
        self._writer.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._writer.execute("COMMIT")

    def _rollback(self) -> None:
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")

    def _reader_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        assert self._reader is not None
        return self._reader.execute(sql, params).fetchall()

    def _close_connections(self) -> None:
        self._writer.close()
        if self._reader is not None:
            self._reader.close()

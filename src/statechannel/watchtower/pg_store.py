"""The tower store on PostgreSQL (psycopg 3), for towers that watch millions of channels.

The operations and their SQL are SqlTowerStore's; only the placeholders, the schema and the
transaction calls differ. One writer connection commits group-wise, a second one (autocommit) reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import psycopg

from statechannel.watchtower.sqlbase import SCHEMA_VERSION, UPGRADE, SqlTowerStore
from statechannel.watchtower.storage import Row, TowerStoreError, Tx

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tw_channels (
        channel_id BYTEA PRIMARY KEY,
        params BYTEA NOT NULL,
        status SMALLINT NOT NULL,
        dispute BYTEA
    )""",
    "CREATE INDEX IF NOT EXISTS tw_disputed ON tw_channels (status) WHERE status = 1",
    """CREATE TABLE IF NOT EXISTS tw_states (
        channel_id BYTEA NOT NULL,
        client SMALLINT NOT NULL,
        version BIGINT NOT NULL,
        state BYTEA NOT NULL,
        PRIMARY KEY (channel_id, client, version)
    )""",
    """CREATE TABLE IF NOT EXISTS tw_clients (
        address BYTEA PRIMARY KEY,
        channels BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tw_accounts (
        address BYTEA PRIMARY KEY,
        paid TEXT NOT NULL,
        states BIGINT NOT NULL,
        start BIGINT,
        short_since BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS tw_payments (
        payment_id TEXT PRIMARY KEY,
        address BYTEA NOT NULL,
        amount TEXT NOT NULL,
        at BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tw_credit (
        channel_id TEXT PRIMARY KEY,
        credited TEXT NOT NULL,
        reconciled BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tw_checkpoint (
        one SMALLINT PRIMARY KEY CHECK (one = 1),
        block_number BIGINT NOT NULL,
        block_hash BYTEA NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tw_meta (
        one SMALLINT PRIMARY KEY CHECK (one = 1),
        chain_id TEXT NOT NULL,
        adjudicator BYTEA NOT NULL,
        schema_version INTEGER NOT NULL
    )""",
)


@lru_cache(maxsize=64)
def _pg(sql: str) -> str:
    """The shared SQL is written with qmark placeholders; psycopg wants %s (and no other % appears)."""
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.execute(_pg(sql), params)
        return list(cur.fetchall()) if cur.description is not None else []

    def run_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(_pg(sql), params).rowcount

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self._conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
            return cur.rowcount


def safe_name(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    return f"postgresql://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class PostgresTowerStore(SqlTowerStore):
    db_errors = (psycopg.Error,)

    def __init__(self, dsn: str, chain_id: int, adjudicator: bytes) -> None:
        name = safe_name(dsn)
        try:
            self._writer: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=False)
        except psycopg.Error as exc:
            raise TowerStoreError(f"cannot connect to {name}: {exc}") from exc
        self._reader: psycopg.Connection[Any] | None = None
        try:
            for statement in SCHEMA:
                self._writer.execute(statement)
            self._writer.execute(
                "INSERT INTO tw_meta (one, chain_id, adjudicator, schema_version) VALUES (1, %s, %s, %s) "
                "ON CONFLICT (one) DO NOTHING",
                (str(chain_id), adjudicator, SCHEMA_VERSION),
            )
            for statement in UPGRADE:  # 2 -> 4 and 3 -> 4 only add tables, created above
                self._writer.execute(statement)
            self._writer.commit()
            self._reader = psycopg.connect(dsn, autocommit=True)
            super().__init__(name, chain_id, adjudicator)
        except BaseException as exc:
            self._close_connections()
            if isinstance(exc, psycopg.Error):
                raise TowerStoreError(f"cannot prepare {name}: {exc}") from exc
            raise

    def _writer_tx(self) -> Tx:
        return _PgTx(self._writer)

    def _begin(self) -> None:
        """psycopg opens the transaction with the first statement."""

    def _commit(self) -> None:
        self._writer.commit()

    def _rollback(self) -> None:
        self._writer.rollback()

    def _reader_rows(self, sql: str, params: Sequence[Any]) -> list[Row]:
        assert self._reader is not None
        cur = self._reader.execute(_pg(sql), params)
        return list(cur.fetchall())

    def _close_connections(self) -> None:
        self._writer.close()
        if self._reader is not None:
            self._reader.close()

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statechannel.watchtower.pg_store import PostgresTowerStore
from statechannel.watchtower.sqlbase import SqlTowerStore
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from tests.watchtower.pg import Postgres

StoreFactory = Callable[[int, bytes], SqlTowerStore]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens the tower store of one backend (again and again: a reopen sees the same database)."""
    if request.param == "sqlite":
        path = tmp_path / "tower.db"
        return lambda chain_id, adjudicator: SqliteTowerStore(path, chain_id, adjudicator)
    server: Postgres = request.getfixturevalue("postgres")
    dsn = server.new_database()
    return lambda chain_id, adjudicator: PostgresTowerStore(dsn, chain_id, adjudicator)

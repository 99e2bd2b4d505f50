"""The tower process: chain client, store, tower and HTTP API in one asyncio loop.

It advertises itself in `<data-dir>/tower.json` (pid, address, API url, chain, adjudicator) once it
serves, and removes the file after a clean shutdown on SIGTERM/SIGINT. A lock file, not tower.json,
keeps two towers off one data directory, since tower.json outlives a killed process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import uvicorn

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import ChainError
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import domain_separator
from statechannel.core.types import to_checksum
from statechannel.runtime import (
    QuietServer,
    exclusive,
    limit_recursion,
    loopback_for,
    private_data_dir,
    signals_set,
    step,
)
from statechannel.watchtower.billing import Billing, NodePayments, Terms
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.sender import BumpingSender
from statechannel.watchtower.service import MIN_CHALLENGE_PERIOD, Tower
from statechannel.watchtower.sqlbase import SqlTowerStore
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from statechannel.watchtower.storage import Quotas, TowerStoreError

limit_recursion()  # py_ecc and py-evm, imported now or later (key, chain), raise it: see runtime.SAFE_RECURSION_LIMIT

log = logging.getLogger(__name__)
TOWER_FILE = "tower.json"
LOCK_FILE = "tower.lock"
DB_FILE = "tower.db"
STEP_TIMEOUT = 15.0
API_STARTUP_TIMEOUT = 10.0


class TowerDaemonError(Exception):
    """The tower cannot start; one line meant for whoever started it."""


@dataclass(frozen=True, slots=True)
class TowerConfig:
    rpc: str
    adjudicator: bytes
    data_dir: Path
    api: tuple[str, int] = ("127.0.0.1", 0)
    db: str = "sqlite"
    """'sqlite' (data_dir/tower.db) or a postgresql:// URL."""
    confirmations: int = 0
    poll_interval: float = 0.5
    bump_after: float = 3.0
    """Seconds a challenge may wait unmined before it is resent with higher fees."""
    min_challenge_period: int = MIN_CHALLENGE_PERIOD
    """Seconds: channels with a shorter window are refused at registration (shown in /info)."""
    quotas: Quotas = field(default_factory=Quotas)
    terms: Terms | None = None
    """A paid tower's terms (billing.py); None: a free tower."""
    payee_api: str = ""
    """The API url of the operator's node that `terms.pay_to` names: payments are read from it."""
    payee_token: str = ""


@dataclass(frozen=True, slots=True)
class TowerFile:
    pid: int
    address: str
    api: str
    chain_id: int
    adjudicator: str

    def write(self, data_dir: Path) -> None:
        tmp = data_dir / (TOWER_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self)) + "\n")
        tmp.replace(data_dir / TOWER_FILE)  # readers never see half a file


def _connect(config: TowerConfig) -> RpcChain:
    try:
        chain = RpcChain(config.rpc)
        adj = Adjudicator(chain, config.adjudicator)
        found = adj.domain_separator()
    except ChainError as exc:
        raise TowerDaemonError(f"chain at {config.rpc}: {exc}") from None
    except Exception:  # no contract there: nothing decodable came back
        found = b""
    if found != domain_separator(adj.domain):
        raise TowerDaemonError(f"no statechannel adjudicator at {to_checksum(config.adjudicator)} on {config.rpc}")
    return chain


def open_store(db: str, data_dir: Path, chain_id: int, adjudicator: bytes) -> SqlTowerStore:
    try:
        if db == "sqlite":
            return SqliteTowerStore(data_dir / DB_FILE, chain_id, adjudicator)
        if db.startswith(("postgresql://", "postgres://")):
            from statechannel.watchtower.pg_store import PostgresTowerStore

            return PostgresTowerStore(db, chain_id, adjudicator)
    except TowerStoreError as exc:
        raise TowerDaemonError(str(exc)) from None
    raise TowerDaemonError(f"--db must be 'sqlite' or a postgresql:// URL, got {db!r}")


def _billing(config: TowerConfig, store: SqlTowerStore) -> Billing | None:
    if config.terms is None:
        return None
    if not config.payee_api or not config.payee_token:
        raise TowerDaemonError("a paid tower needs its payee node's API url and token")
    return Billing(config.terms, store, NodePayments(config.payee_api, config.payee_token), clock=time.time)


async def run(
    config: TowerConfig,
    key: PrivateKey,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[TowerFile], None] | None = None,
) -> None:
    """Runs the tower until SIGINT/SIGTERM (or `stop`), then stops the API, the tower and the store."""
    limit_recursion()  # again, in case an import since this module's raised it
    data_dir = config.data_dir
    private_data_dir(data_dir)
    stop = stop or asyncio.Event()
    with exclusive(data_dir / LOCK_FILE, TowerDaemonError(f"another tower is running with data directory {data_dir}")):
        chain = await asyncio.to_thread(_connect, config)
        store = await asyncio.to_thread(open_store, config.db, data_dir, chain.chain_id, config.adjudicator)
        sender = BumpingSender(chain, key, bump_after=config.bump_after)
        tower = Tower(
            chain,
            config.adjudicator,
            key,
            store,
            sender,
            confirmations=config.confirmations,
            poll_interval=config.poll_interval,
            min_challenge_period=config.min_challenge_period,
            quotas=config.quotas,
            billing=_billing(config, store),
        )
        server: QuietServer | None = None
        serving: asyncio.Task[None] | None = None
        try:
            try:
                await tower.start()
            except ChainError as exc:
                raise TowerDaemonError(f"chain at {config.rpc}: {exc}") from None
            try:
                sock = socket.create_server(config.api)
            except OSError as exc:
                raise TowerDaemonError(f"cannot serve the API on {config.api[0]}:{config.api[1]}: {exc}") from None
            server = QuietServer(
                uvicorn.Config(
                    create_tower_app(tower),
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=2,
                )
            )
            serving = asyncio.create_task(server.serve(sockets=[sock]), name="tower-api")
            deadline = time.monotonic() + API_STARTUP_TIMEOUT
            while not server.started:
                if serving.done() or time.monotonic() > deadline:
                    raise TowerDaemonError("the API server did not start (see the log above)")
                await asyncio.sleep(0.01)
            info = TowerFile(
                os.getpid(),
                to_checksum(key.address),
                f"http://{loopback_for(config.api[0])}:{sock.getsockname()[1]}",
                chain.chain_id,
                to_checksum(config.adjudicator),
            )
            info.write(data_dir)
            log.info("tower %s: API at %s, watching %s", info.address, info.api, info.adjudicator)
            if on_ready is not None:
                on_ready(info)
            with signals_set(stop):
                waiter = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, serving}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if not stop.is_set():
                log.error("the API server stopped unexpectedly; shutting down")
        finally:
            if server is not None and serving is not None:
                server.should_exit = True
                await step("API server", serving, STEP_TIMEOUT)
            await step("tower", tower.stop(), STEP_TIMEOUT)
            await step("store", store.close(), STEP_TIMEOUT)
            with contextlib.suppress(FileNotFoundError):
                (data_dir / TOWER_FILE).unlink()
            log.info("tower stopped")

"""The node process: chain, store, peer transport, node and HTTP API in one asyncio loop.

Everything shares one loop so the API calls the node directly, with no locks and no second copy of any
state. The process advertises itself in `<data-dir>/node.json` (ports, API url, address, pid) so client
commands need only the data directory; a lock file, not node.json, guards against two nodes on one
database, because node.json outlives a killed process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from statechannel.api.app import create_app
from statechannel.api.auth import TokenFileError, load_or_create_token
from statechannel.api.discovery import NODE_FILE, NodeFile
from statechannel.api.metrics import NodeMetrics
from statechannel.api.routes import ApiContext
from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import Chain, ChainError
from statechannel.chain.metered import MeteredChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import domain_separator
from statechannel.core.errors import LocalError
from statechannel.core.machine import Terms
from statechannel.core.types import to_checksum
from statechannel.logs import redact
from statechannel.net.tcp import TcpTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.node.peers import PeerBook
from statechannel.node.towerpay import TowerPay
from statechannel.node.towers import TowerClient
from statechannel.node.towerstate import TowerPolicy
from statechannel.runtime import (
    QuietServer,
    exclusive,
    limit_recursion,
    loopback_for,
    private_data_dir,
    signals_set,
    step,
)
from statechannel.store.base import DEFAULT_HISTORY, StoreError
from statechannel.store.sqlite import SqliteStore

limit_recursion()  # py_ecc and py-evm, imported now or later (key, chain), raise it: see runtime.SAFE_RECURSION_LIMIT

log = logging.getLogger(__name__)
LOCK_FILE = "node.lock"
DB_FILE = "node.db"
OUTBOX_FILE = "outbox.json"
"""The node's transactions not yet known mined (chain/outbox.py): a restart resumes them, never repeats them."""
PEERS_FILE = "peers.json"
TOWERS_FILE = "towers.db"
TOWERPAY_FILE = "towerpay.json"
EMBEDDED = "embedded"
EMBEDDED_FUNDS = 1000 * 10**18
STOP_TIMEOUT = 15.0
API_STARTUP_TIMEOUT = 10.0


class DaemonError(Exception):
    """The node cannot start; the message is one line meant for the person who started it."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    rpc: str
    """A JSON-RPC url, or 'embedded' for a throwaway in-process chain with a freshly deployed adjudicator."""
    adjudicator: bytes | None
    data_dir: Path
    listen: tuple[str, int] = ("127.0.0.1", 0)
    api: tuple[str, int] = ("127.0.0.1", 0)
    confirmations: int = 0
    poll_interval: float = 0.2
    towers: tuple[str, ...] = ()
    """Watchtower URLs this node pushes its channels' newest states to."""
    tower_policy: TowerPolicy = field(default_factory=TowerPolicy)
    tower_budget: int | None = None
    """The most this node ever pays paid towers, in all (smallest unit of their asset); None: it pays none."""
    tower_accept_terms: bool = False
    """Take each paid tower's terms at its next hello as agreed (consent to a raise); what was spent stays."""
    terms: Terms = field(default_factory=Terms)
    """The challenge periods this node accepts in channels opened with it (and opens with)."""
    recovery_wait: float = 20.0
    weigh_gas: bool = True
    history: int = DEFAULT_HISTORY
    """Payment rows kept (the newest); older ones are pruned and the API says how many."""
    durability: str = "fsync"
    """store/sqlite.py DURABILITY_MODES: "fsync" (power-cut safe, the default) or "process-crash-safe"."""
    """Settle and challenge only where the amount at stake is worth the gas (node/onchain.py: weigh)."""
    """Seconds a channel restored from a backup waits for the peer's proof of a newer state, then closes."""


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _connect_chain(config: DaemonConfig, key: PrivateKey) -> tuple[Chain, bytes]:
    if config.rpc == EMBEDDED:
        if config.adjudicator is not None:
            raise DaemonError("--adjudicator needs --rpc URL: the embedded chain deploys its own adjudicator")
        if (config.data_dir / DB_FILE).exists():
            raise DaemonError(
                f"{config.data_dir} holds channels of an earlier chain; the embedded chain starts empty each "
                "time, so use a fresh --data-dir"
            )
        from statechannel.chain.embedded import EmbeddedChain

        embedded = EmbeddedChain()
        embedded.fund(key.address, EMBEDDED_FUNDS)
        adj, _ = Adjudicator.deploy(embedded, key)
        return embedded, adj.address
    if config.adjudicator is None:
        raise DaemonError("--adjudicator is required with --rpc URL")
    from statechannel.chain.rpc import RpcChain

    try:
        chain = RpcChain(config.rpc, journal=config.data_dir / OUTBOX_FILE)
        adj = Adjudicator(chain, config.adjudicator)
        found = adj.domain_separator()
    except ChainError as exc:
        raise DaemonError(f"chain at {config.rpc}: {exc}") from None
    except Exception:
        found = b""  # no contract there: the call returned nothing decodable
    if found != domain_separator(adj.domain):
        raise DaemonError(f"no statechannel adjudicator at {to_checksum(config.adjudicator)} on {config.rpc}")
    return chain, config.adjudicator


def _connect_metered(config: DaemonConfig, key: PrivateKey) -> tuple[Chain, bytes, NodeMetrics]:
    """The chain, wrapped so that the node's metrics count every call to it."""
    chain, adjudicator = _connect_chain(config, key)
    metrics = NodeMetrics()
    return MeteredChain(chain, metrics.observe_chain), adjudicator, metrics


def _tower_client(config: DaemonConfig) -> TowerClient | None:
    if not config.towers:
        return None
    try:
        return TowerClient(config.towers, config.data_dir / TOWERS_FILE, config.tower_policy)
    except LocalError as exc:
        raise DaemonError(exc.detail) from None


def _tower_payer(config: DaemonConfig, node: Node) -> Node:
    """With --tower-budget, the node pays its paid towers (node/towerpay.py); returns the node."""
    if node.towers is not None and config.tower_budget is not None:
        try:
            journal = config.data_dir / TOWERPAY_FILE
            node.towers.payer = TowerPay(node, config.tower_budget, journal, accept_terms=config.tower_accept_terms)
        except LocalError as exc:
            raise DaemonError(exc.detail) from None
    return node


@dataclass(frozen=True, slots=True)
class _Api:
    server: QuietServer
    serving: asyncio.Task[None]
    ctx: ApiContext
    url: str


async def _start_api(node: Node, token: str, config: DaemonConfig, listen: str, metrics: NodeMetrics) -> _Api:
    try:
        sock = socket.create_server(config.api)
    except OSError as exc:
        raise DaemonError(f"cannot serve the API on {config.api[0]}:{config.api[1]}: {exc.strerror or exc}") from None
    redact(token)  # before anything could log it
    metrics.watch(node)
    app = create_app(node, token, peer_listen=listen, data_dir=config.data_dir, metrics=metrics)
    server = QuietServer(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=2)
    )
    api = _Api(
        server,
        asyncio.create_task(server.serve(sockets=[sock]), name="api-server"),
        app.state.ctx,
        f"http://{loopback_for(config.api[0])}:{sock.getsockname()[1]}",
    )
    deadline = time.monotonic() + API_STARTUP_TIMEOUT
    while not server.started:
        if api.serving.done() or time.monotonic() > deadline:
            await _shutdown_api(api)
            raise DaemonError("the API server did not start (see the log above)")
        await asyncio.sleep(0.01)
    return api


async def run(
    config: DaemonConfig,
    key: PrivateKey,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[NodeFile], None] | None = None,
) -> None:
    """Runs the node until SIGINT/SIGTERM (or `stop` is set), then shuts everything down in order."""
    limit_recursion()  # again, in case an import since this module's raised it
    data_dir = config.data_dir
    private_data_dir(data_dir)
    stop = stop or asyncio.Event()
    with exclusive(data_dir / LOCK_FILE, DaemonError(f"another node is running with data directory {data_dir}")):
        try:
            token = load_or_create_token(data_dir)
        except TokenFileError as exc:
            raise DaemonError(str(exc)) from None
        chain, adjudicator, metrics = await asyncio.to_thread(_connect_metered, config, key)
        try:
            store = SqliteStore(data_dir / DB_FILE, max_payments=config.history, durability=config.durability)
        except (StoreError, OSError) as exc:
            raise DaemonError(f"cannot open {data_dir / DB_FILE}: {exc}") from None
        chainio = ChainIO(chain, adjudicator, key)
        transport = TcpTransport(key, config.listen[0], config.listen[1])
        node = Node(
            key,
            chainio,
            store,
            transport,
            confirmations=config.confirmations,
            poll_interval=config.poll_interval,
            peer_book=PeerBook(data_dir / PEERS_FILE),
            towers=_tower_client(config),
            terms=config.terms,
            recovery_wait=config.recovery_wait,
            weigh_gas=config.weigh_gas,
        )
        transport.set_keep(_tower_payer(config, node).has_channels_with)
        api: _Api | None = None
        redial: asyncio.Task[None] | None = None
        try:
            await node.start()
            try:
                listen = f"{config.listen[0]}:{await transport.start()}"
            except OSError as exc:
                raise DaemonError(f"cannot listen for peers on {config.listen[0]}:{config.listen[1]}: {exc}") from None
            assert node.peer_book is not None
            redial = asyncio.create_task(node.peer_book.redial(transport.connect, transport.connected))
            api = await _start_api(node, token, config, listen, metrics)
            info = NodeFile(
                os.getpid(), to_checksum(key.address), api.url, listen, chain.chain_id, to_checksum(adjudicator)
            )
            info.write(data_dir)
            log.info("node %s: peers at %s, API at %s, data in %s", info.address, listen, info.api, data_dir)
            if on_ready is not None:
                on_ready(info)
            with signals_set(stop):
                waiter = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, api.serving}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if not stop.is_set():
                log.error("the API server stopped unexpectedly; shutting down")
        finally:
            if redial is not None:
                redial.cancel()
            await _shutdown(api, node, transport, store, chainio)
            if api is not None:
                with contextlib.suppress(FileNotFoundError):
                    (data_dir / NODE_FILE).unlink()
            log.info("node stopped")


async def _shutdown_api(api: _Api) -> None:
    await step("event streams", api.ctx.hub.close(), STOP_TIMEOUT)  # else open streams hold up the shutdown
    api.server.should_exit = True
    await step("API server", api.serving, STOP_TIMEOUT)


async def _shutdown(
    api: _Api | None,
    node: Node,
    transport: TcpTransport,
    store: SqliteStore,
    chainio: ChainIO,
) -> None:
    if api is not None:
        await _shutdown_api(api)
    await step("node", node.stop(), STOP_TIMEOUT)
    await step("peer transport", transport.close(), STOP_TIMEOUT)
    await step("store", store.close(), STOP_TIMEOUT)
    await step("chain worker", asyncio.to_thread(chainio.close), STOP_TIMEOUT)

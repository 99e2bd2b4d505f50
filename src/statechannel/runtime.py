"""Process plumbing shared by the node and the watchtower daemons: one process per
data directory, signals that stop cleanly, an HTTP server that leaves signals to
us, shutdown steps that cannot hang, and a recursion limit the C stack can afford."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import uvicorn

log = logging.getLogger(__name__)

SAFE_RECURSION_LIMIT = 1000
"""CPython's own default, at which no recursion in C (the json parser, repr, pickle) can exhaust the 8 MB
C stack: past it Python raises RecursionError, where at 100,000 the process dies of SIGSEGV. Our contract
calls nest at most ~3 deep in the EVM: the contract, chain, node and API tests on the embedded EVM, pytest's
own frames included, pass at a limit of 400 (not at 250)."""

RECURSION_RAISERS = ("py_ecc", "eth")
"""Libraries that raise the limit, once, when first imported: py_ecc (imported by eth-account) to 100,000,
py-evm's `eth` to 12,288 (for the EVM's 1,024 call frames)."""


def limit_recursion(preload: Iterable[str] = RECURSION_RAISERS) -> None:
    """Import the libraries in `preload` now, so that their one raise of the recursion limit is over, then
    put the limit back to `SAFE_RECURSION_LIMIT` for the rest of the process.

    Every entry point of ours calls this after its imports (the daemons, the demo, the CLI). Without it,
    any JSON a peer can send us (a request body, a JSON-RPC answer) nested 100,000 deep crashes the
    process instead of failing one request."""
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT)


def private_data_dir(data_dir: Path) -> None:
    """Make `data_dir` the owner's alone (0700, tightened if it existed looser) and have every file this
    process creates from now on (databases, their journals, node.json, the peer book) made 0600: the
    directory holds the API token and everything the node signed."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = data_dir.stat().st_mode
    if mode & 0o077:
        log.warning("%s was accessible to other users (mode %o): made it 0700", data_dir, mode & 0o777)
        data_dir.chmod(0o700)


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: Exception) -> Iterator[IO[str]]:
    """Hold `lock_file` for the process's lifetime (the OS drops it however the process dies);
    raise `busy` if another process holds it."""
    f = lock_file.open("a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield f
    finally:
        f.close()


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the daemon owns SIGINT/SIGTERM, because stopping means
    closing stores too, and uvicorn would re-raise the signal afterwards."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (when the loop runs in the main thread; else the embedder stops us)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def step(what: str, awaitable: Any, timeout: float) -> None:
    """One shutdown step, bounded; a failure is logged and the remaining steps still run."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except Exception:
        log.exception("while stopping: %s", what)


def loopback_for(host: str) -> str:
    """Where a local client reaches a server bound to `host` (a wildcard is reachable on loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104 (recognising the wildcard, not binding it)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host

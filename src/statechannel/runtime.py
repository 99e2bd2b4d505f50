"""Process plumbing shared by the node and the watchtower daemons: one process per
data directory, signals that stop cleanly, an HTTP server that leaves signals to
us, and shutdown steps that cannot hang."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import uvicorn

log = logging.getLogger(__name__)


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

"""Where to reach each peer, kept across restarts: a node that dialled a peer
must dial it again after it restarts, or its channels could not resync."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)
Dial = Callable[[bytes, str, int], Awaitable[None]]


class PeerBook:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._peers: dict[str, tuple[str, int]] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                self._peers = {k: (str(v[0]), int(v[1])) for k, v in raw.items()}
            except (ValueError, KeyError, TypeError, IndexError):
                log.warning("ignoring an unreadable peer book at %s", path)

    def remember(self, address: bytes, host: str, port: int) -> None:
        self._peers[address.hex()] = (host, port)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._peers))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old book or the new one

    def forget(self, address: bytes) -> bool:
        if self._peers.pop(address.hex(), None) is None:
            return False
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._peers))
        os.replace(tmp, self.path)
        return True

    def known(self) -> dict[bytes, tuple[str, int]]:
        return {bytes.fromhex(k): v for k, v in self._peers.items()}

    async def redial(self, dial: Dial, connected: Callable[[bytes], bool], stop_after: float | None = None) -> None:
        """Dial every known peer until each is connected, with capped backoff."""

        async def one(address: bytes, host: str, port: int) -> None:
            delay = 0.1
            while not connected(address):
                try:
                    await dial(address, host, port)
                except Exception as exc:  # unreachable for now, or refused: try again later
                    log.info("peer 0x%s at %s:%d not reachable yet: %s", address.hex()[:12], host, port, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        await asyncio.gather(*(one(a, h, p) for a, (h, p) in self.known().items()))

"""The transport interface the node codes against, so TCP and the in-memory pair are interchangeable."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

FrameHandler = Callable[[bytes, bytes], Awaitable[None]]
"""(peer_address20, frame). Awaited before the next frame from that peer is read: that is the backpressure."""

ConnectHandler = Callable[[bytes], Awaitable[None]]
"""(peer_address20). Awaited after every successful (re)connect and handshake, on both sides, before the first
frame of that connection is delivered; frames sent on an earlier connection may have been lost, so resync here.
It must not wait for a frame from the same peer (delivery of that peer's frames waits for it)."""

MAX_FRAME = 1 << 20
"""The largest frame (plaintext bytes) either side accepts; a peer announcing more is disconnected."""


class PeerUnreachable(Exception):
    """send() found no live, authenticated connection to the peer (never connected, dropped, or closed)."""


class HandshakeFailed(Exception):
    """The peer could not prove the expected Ethereum address over this session, or broke the handshake protocol."""


class FrameTooLarge(Exception):
    """A frame above MAX_FRAME: refused locally at send(), before anything is written."""

    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds MAX_FRAME ({MAX_FRAME} bytes)")
        self.size = size


class Transport(Protocol):
    """Ordered, authenticated frame delivery between nodes identified by their 20-byte Ethereum addresses."""

    address: bytes

    def set_handlers(self, on_frame: FrameHandler, on_connect: ConnectHandler) -> None: ...

    async def send(self, peer: bytes, frame: bytes) -> None: ...

    def send_nowait(self, peer: bytes, frame: bytes) -> bool:
        """Queue `frame` at once if that needs no wait: True once it is queued whole (in order with every
        other send to `peer`), False when it would wait (buffers full, or a send before it still waiting):
        then nothing was queued and the caller awaits `send`. Raises as `send` does."""
        ...

    def connected(self, peer: bytes) -> bool: ...

    async def close(self) -> None: ...


async def run_handler(awaitable: Awaitable[None], name: str, peer: bytes) -> None:
    """A failing handler is the caller's bug, not the peer's: log it and keep delivering."""
    try:
        await awaitable
    except Exception:
        logging.getLogger(__name__).exception("%s handler failed for %s", name, hex_address(peer))


def hex_address(address: bytes) -> str:
    """For error messages: addresses are bytes everywhere else."""
    return "0x" + address.hex()

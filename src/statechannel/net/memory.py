"""Two transports wired to each other in memory, so protocol tests run without sockets yet see the same
semantics as TCP: per-peer order, one handler call at a time, bounded buffering, and drops that lose frames
still in flight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from statechannel.core.crypto import PrivateKey
from statechannel.net.base import (
    MAX_FRAME,
    ConnectHandler,
    FrameHandler,
    FrameTooLarge,
    PeerUnreachable,
    hex_address,
    run_handler,
)

QUEUE_FRAMES = 256  # stands in for the socket buffers: a sender blocks once this many frames are unread


@dataclass(eq=False)
class _Link:
    """The pair's shared wire. `generation` counts connections: frames of an older one are dropped unseen."""

    up: bool = True
    generation: int = 0


@dataclass(frozen=True, slots=True)
class _Delivery:
    generation: int
    frame: bytes | None  # None: the connection came (back) up, call on_connect
    done: asyncio.Future[None] | None = None


class MemoryTransport:
    """One end of an in-memory pair. Build with MemoryTransport.pair(); the pair starts connected and, as no
    handler can be set before pair() returns, on_connect is not called for that first connection."""

    def __init__(self, key: PrivateKey, link: _Link) -> None:
        self.address: bytes = key.address
        self._link = link
        self._other: MemoryTransport | None = None
        self._inbox: asyncio.Queue[_Delivery] = asyncio.Queue(QUEUE_FRAMES)
        self._ready = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._sending = 0  # sends waiting for room in the other end's inbox
        self._on_frame: FrameHandler | None = None
        self._on_connect: ConnectHandler | None = None

    @classmethod
    def pair(cls, key_a: PrivateKey, key_b: PrivateKey) -> tuple[MemoryTransport, MemoryTransport]:
        if key_a.address == key_b.address:
            raise ValueError("a pair needs two different addresses")
        link = _Link()
        a, b = cls(key_a, link), cls(key_b, link)
        a._other, b._other = b, a
        return a, b

    def set_handlers(self, on_frame: FrameHandler, on_connect: ConnectHandler) -> None:
        self._on_frame = on_frame
        self._on_connect = on_connect
        self._ready.set()  # frames sent before this wait in the inbox

    async def send(self, peer: bytes, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(len(frame))
        other = self._live_other(peer)
        self._sending += 1
        try:
            await other._deliver(_Delivery(self._link.generation, bytes(frame)))
        finally:
            self._sending -= 1

    def send_nowait(self, peer: bytes, frame: bytes) -> bool:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(len(frame))
        other = self._live_other(peer)
        if self._sending or other._inbox.full():  # a waiting send goes first: order is per peer
            return False
        other._deliver_nowait(_Delivery(self._link.generation, bytes(frame)))
        return True

    def connected(self, peer: bytes) -> bool:
        return self._other is not None and peer == self._other.address and self._link.up and not self._closed

    async def close(self) -> None:
        self._closed = True
        self._link.up = False
        self._link.generation += 1
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    async def disconnect(self) -> None:
        """Test hook: the link drops for both ends; frames not yet handled are lost, sends raise PeerUnreachable."""
        self._link.up = False
        self._link.generation += 1

    async def reconnect(self) -> None:
        """Test hook: a new connection comes up; returns after on_connect has run on both ends.

        Like TCP, each end's on_connect runs before any frame of the new connection is handled there.
        """
        other = self._other
        if other is None or self._closed or other._closed:
            raise PeerUnreachable("cannot reconnect a closed transport")
        self._link.up = True
        self._link.generation += 1
        loop = asyncio.get_running_loop()
        done = [loop.create_future(), loop.create_future()]
        await self._deliver(_Delivery(self._link.generation, None, done[0]))
        await other._deliver(_Delivery(self._link.generation, None, done[1]))
        await asyncio.gather(*done)

    def _live_other(self, peer: bytes) -> MemoryTransport:
        other = self._other
        if other is None or peer != other.address:
            raise PeerUnreachable(f"{hex_address(peer)} is not the other end of this pair")
        if not self.connected(peer):
            raise PeerUnreachable(f"link to {hex_address(peer)} is down")
        return other

    async def _deliver(self, item: _Delivery) -> None:
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run())
        await self._inbox.put(item)

    def _deliver_nowait(self, item: _Delivery) -> None:
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run())
        self._inbox.put_nowait(item)

    async def _run(self) -> None:
        """One handler call at a time, in order: the same contract as a TCP connection's read loop."""
        await self._ready.wait()
        assert self._on_frame is not None and self._on_connect is not None and self._other is not None
        peer = self._other.address
        while True:
            item = await self._inbox.get()
            try:
                if item.generation != self._link.generation:
                    continue  # sent on a connection that has since dropped
                if item.frame is None:
                    await run_handler(self._on_connect(peer), "on_connect", peer)
                else:
                    await run_handler(self._on_frame(peer, item.frame), "on_frame", peer)
            finally:
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)

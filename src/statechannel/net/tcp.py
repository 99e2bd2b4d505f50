"""The TCP transport: one authenticated, encrypted connection per peer, redialled after a drop.

Exactly one connection per peer is kept, and both sides agree on which without an extra round trip: the
responder decides, before anything but the handshake has crossed the connection. A responder whose address is
the higher one always accepts, because the lower side's dial wins a simultaneous dial. A lower responder
refuses a dial (Verdict.DUPLICATE) while its own dial to that peer is in its handshake or already holds the
connection, since the other side will accept that one. A dialler whose TCP connect completes while the peer
already connected to it hangs up before the handshake. So no frame is ever sent on a connection the other side
throws away; a new connection only replaces one that its dialler gave up as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from statechannel.aio import wait_set
from statechannel.core.crypto import PrivateKey
from statechannel.net.base import (
    MAX_FRAME,
    ConnectHandler,
    FrameHandler,
    FrameTooLarge,
    HandshakeFailed,
    PeerUnreachable,
    hex_address,
    run_handler,
)
from statechannel.net.secure import ProtocolError, SecureChannel, Verdict, accept_handshake, dial_handshake

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a connection may take from TCP connect to a proven address: a stalled handshake is hung up."""
MAX_HANDSHAKES = 64
"""Inbound connections at once still in their handshake (each costs a socket and, unproven, nothing to
its maker); one more is hung up at once, so stalled handshakes cannot use up the node's file descriptors.
Honest diallers retry with backoff."""
MAX_STRANGERS = 256
"""Proven inbound connections kept at once from peers we have no reason to keep: peers we never dialled and
with which the node holds no channel (an address costs its maker nothing, so any number can prove one). One
more such connection hangs up the stranger that has been silent longest; peers we dial and peers with a
channel are never counted or hung up for this."""
FRAME_TIMEOUT = 30.0
"""Seconds a frame may take from its first byte to its last (a 1 MiB frame needs far less on any link
a channel can use); a peer stalling mid-frame is dropped."""
SEND_TIMEOUT = 30.0
"""Seconds a send may wait for the peer to read: a peer that stops reading is dropped (its frames are
resent on reconnect), so it cannot hold our sends, and what waits on them, forever."""
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0

_DROPPED = (ProtocolError, HandshakeFailed, asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError)


@dataclass(eq=False)
class _Conn:
    channel: SecureChannel
    dialled_by_us: bool
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    heard: float = 0.0  # loop time of the last frame (or of the handshake) from the peer


@dataclass(eq=False)
class _Peer:
    """Everything per peer address that outlives a single connection."""

    address: bytes
    conn: _Conn | None = None
    dialling: bool = False  # our dial is past TCP connect and in its handshake
    up: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sending: int = 0  # sends holding or waiting for send_lock: send_nowait never overtakes one
    deliver_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    maintainer: asyncio.Task[None] | None = None
    host: str = ""
    port: int = 0


class TcpTransport:
    """Transport over asyncio TCP with Noise XX encryption and Ethereum-address authentication."""

    def __init__(
        self,
        key: PrivateKey,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_handshakes: int = MAX_HANDSHAKES,
        frame_timeout: float = FRAME_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
        max_strangers: int = MAX_STRANGERS,
    ) -> None:
        self.address: bytes = key.address
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.frame_timeout = frame_timeout
        self.send_timeout = send_timeout
        self.max_strangers = max_strangers
        self._keep: Callable[[bytes], bool] = lambda _peer: False
        self._handshaking = 0  # inbound connections not yet proven
        self._key = key
        self._static = secrets.token_bytes(32)  # per-node Noise key; identity comes from the Ethereum proof
        self._host = host
        self._port = port
        self._peers: dict[bytes, _Peer] = {}
        self._strangers: set[_Peer] = set()  # peers whose connection came in as a stranger's (some may be kept now)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._on_frame: FrameHandler | None = None
        self._on_connect: ConnectHandler | None = None

    def set_handlers(self, on_frame: FrameHandler, on_connect: ConnectHandler) -> None:
        self._on_frame = on_frame
        self._on_connect = on_connect

    def set_keep(self, keep: Callable[[bytes], bool]) -> None:
        """`keep(peer)` says the node has a reason to keep `peer`'s connection (a channel with it): such a peer
        is never a stranger, however many strangers connect."""
        self._keep = keep

    def strangers(self) -> int:
        """Connections now held from strangers (see MAX_STRANGERS)."""
        return len(self._held_strangers(None))

    async def start(self) -> int:
        """Listens; returns the bound port (useful with port 0)."""
        self._require_ready()
        self._server = await asyncio.start_server(self._on_inbound, self._host, self._port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def connect(self, peer: bytes, host: str, port: int, timeout: float = 10.0) -> None:
        """Dials `peer` and keeps the connection up (redialling after drops) until close().

        Returns once connected (by this dial or by the peer dialling us). The first call for a peer raises
        HandshakeFailed if the node at host:port proves another address or breaks the protocol, or
        PeerUnreachable if no connection came up within `timeout`, and then stops dialling. Later calls update
        where to dial and wait the same way, but a timeout there leaves the redialling running.
        """
        self._require_ready()
        state = self._peer(peer)
        state.host, state.port = host, port
        first = state.maintainer is None or state.maintainer.done()
        if first:
            state.maintainer = self._spawn(self._maintain(state))
        maintainer = state.maintainer
        assert maintainer is not None
        if state.conn is not None:
            return
        up = asyncio.ensure_future(state.up.wait())
        try:
            done, _ = await asyncio.wait({up, maintainer}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
        if state.conn is not None:
            return
        failure = maintainer.exception() if maintainer in done and not maintainer.cancelled() else None
        if first or failure is not None:
            maintainer.cancel()
            state.maintainer = None
        if failure is not None:
            raise failure
        raise PeerUnreachable(f"no connection to {hex_address(peer)} at {host}:{port} within {timeout} s")

    async def send(self, peer: bytes, frame: bytes) -> None:
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(len(frame))
        state = self._peers.get(peer)
        if state is None or state.conn is None:
            raise PeerUnreachable(f"no live connection to {hex_address(peer)}")
        state.sending += 1
        try:
            async with state.send_lock:
                conn = state.conn  # the connection may have been replaced while we queued: use the current one
                if conn is None:
                    raise PeerUnreachable(f"connection to {hex_address(peer)} dropped")
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await conn.channel.send_frame(frame)  # buffered whole before the wait: never half a frame
                except TimeoutError:
                    log.info("dropping %s: it read nothing for %s s", hex_address(peer), self.send_timeout)
                    self._drop(state, conn)
                    raise PeerUnreachable(f"{hex_address(peer)} stopped reading; connection dropped") from None
                except (ConnectionError, OSError) as exc:
                    self._drop(state, conn)
                    raise PeerUnreachable(f"connection to {hex_address(peer)} dropped while sending") from exc
        finally:
            state.sending -= 1

    def send_nowait(self, peer: bytes, frame: bytes) -> bool:
        """Writes the frame into the socket's buffer with no await while that buffer is below its high-water
        mark and no other send waits; past the mark `send` takes over, with its drain and its timeout."""
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(len(frame))
        state = self._peers.get(peer)
        conn = None if state is None else state.conn
        if state is None or conn is None:
            raise PeerUnreachable(f"no live connection to {hex_address(peer)}")
        if state.sending or conn.channel.must_drain():
            return False
        try:
            conn.channel.write_frame(frame)
        except (ConnectionError, OSError) as exc:
            self._drop(state, conn)
            raise PeerUnreachable(f"connection to {hex_address(peer)} dropped while sending") from exc
        return True

    async def hang_up(self, peer: bytes) -> bool:
        """Stop dialling `peer` and drop its connection (it may dial again: refusing it is another matter).
        Whether there was anything to drop."""
        state = self._peers.get(peer)
        if state is None:
            return False
        had = state.conn is not None or state.maintainer is not None
        if state.maintainer is not None:
            state.maintainer.cancel()
            await asyncio.gather(state.maintainer, return_exceptions=True)
            state.maintainer = None
        if state.conn is not None:
            self._drop(state, state.conn)
        return had

    def connected(self, peer: bytes) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.conn is not None

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for state in self._peers.values():
            if state.conn is not None:
                self._drop(state, state.conn)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ---- internals ---------------------------------------------------------------------------------------

    def _require_ready(self) -> None:
        if self._on_frame is None or self._on_connect is None:
            raise RuntimeError("call set_handlers() before start() or connect()")
        if self._closing:
            raise RuntimeError("transport is closed")

    def _peer(self, address: bytes) -> _Peer:
        state = self._peers.get(address)
        if state is None:
            state = self._peers[address] = _Peer(address)
        return state

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))
        return task

    async def _maintain(self, state: _Peer) -> None:
        """Dials whenever the peer is not connected. Pauses after a drop or a failed dial (capped exponential
        backoff) so a peer that keeps failing is not hammered; the pause ends early if the peer dials us."""
        delay = BACKOFF_MIN
        connected_once = False
        while not self._closing:
            if state.conn is not None:
                connected_once, delay = True, BACKOFF_MIN
                await state.conn.closed.wait()
            else:
                try:
                    await self._dial(state)
                except HandshakeFailed as exc:
                    if not connected_once:
                        raise
                    log.warning("redial of %s failed: %s", hex_address(state.address), exc)
                except (ConnectionError, OSError, TimeoutError) as exc:
                    log.debug("dial of %s failed: %r", hex_address(state.address), exc)
                if state.conn is not None:
                    continue
            if state.conn is None:
                await wait_set(state.up, delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _dial(self, state: _Peer) -> None:
        async with asyncio.timeout(self.handshake_timeout):
            reader, writer = await asyncio.open_connection(state.host, state.port)
        if state.conn is not None or self._closing:  # the peer dialled us meanwhile: keep that connection
            writer.transport.abort()
            return
        state.dialling = True
        try:
            async with asyncio.timeout(self.handshake_timeout):
                channel, verdict = await dial_handshake(reader, writer, self._key, self._static, state.address)
        except BaseException:
            writer.transport.abort()
            raise
        finally:
            state.dialling = False
        if verdict is not Verdict.ACCEPT or self._closing:
            log.debug("%s kept another connection to us", hex_address(state.address))
            writer.transport.abort()
            return
        conn = self._register(state, channel, dialled_by_us=True)
        self._spawn(self._run(state, conn))

    def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Runs the connection in a task of our own: close() cancels it, which asyncio 3.11 would log as an
        error had it been the server's own callback task."""
        if self._handshaking >= self.max_handshakes:
            log.warning("refused inbound connection: %d handshakes already under way", self._handshaking)
            writer.transport.abort()
            return
        self._handshaking += 1
        self._spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                inbound = await accept_handshake(reader, writer, self._key, self._static)
        except TimeoutError:
            log.info("refused inbound connection: handshake not done within %s s", self.handshake_timeout)
            writer.transport.abort()
            return
        except _DROPPED as exc:
            log.info("refused inbound connection: %r", exc)
            writer.transport.abort()
            return
        except BaseException:
            writer.transport.abort()
            raise
        finally:
            self._handshaking -= 1
        peer = inbound.channel.peer
        state = self._peer(peer)
        verdict = self._verdict(state, inbound.wanted)
        inbound.answer(verdict)
        if verdict is not Verdict.ACCEPT:
            log.debug("answered %s to %s", verdict.name, hex_address(peer))
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        if self._is_stranger(state):
            self._make_room_for_stranger(state)
            self._strangers.add(state)
        conn = self._register(state, inbound.channel, dialled_by_us=False)
        try:
            await self._run(state, conn)
        finally:
            if state.conn is None:
                self._strangers.discard(state)
                if state.maintainer is None and self._peers.get(peer) is state:
                    del self._peers[peer]  # a stranger that left leaves nothing behind

    def _is_stranger(self, state: _Peer) -> bool:
        return state.maintainer is None and not self._keep(state.address)

    def _held_strangers(self, newcomer: _Peer | None) -> list[_Peer]:
        """Strangers now connected, other than `newcomer`; forgets those the node has since come to keep."""
        held = []
        for state in list(self._strangers):
            if state.conn is None or not self._is_stranger(state):
                self._strangers.discard(state)
            elif state is not newcomer:
                held.append(state)
        return held

    def _make_room_for_stranger(self, newcomer: _Peer) -> None:
        held = self._held_strangers(newcomer)
        if len(held) < self.max_strangers:
            return
        quietest = min(held, key=lambda s: s.conn.heard if s.conn is not None else 0.0)
        assert quietest.conn is not None
        log.info(
            "hung up on %s: %d connections from peers without a channel, it was silent longest",
            hex_address(quietest.address),
            len(held),
        )
        self._drop(quietest, quietest.conn)

    def _verdict(self, state: _Peer, wanted: bytes) -> Verdict:
        if wanted != self.address:
            return Verdict.NOT_ME
        if self._closing:
            return Verdict.DUPLICATE
        if self.address < state.address and (state.dialling or (state.conn is not None and state.conn.dialled_by_us)):
            return Verdict.DUPLICATE
        return Verdict.ACCEPT

    def _register(self, state: _Peer, channel: SecureChannel, dialled_by_us: bool) -> _Conn:
        """Makes `channel` the peer's connection. Synchronous, so the tie-break decision stays valid."""
        if state.conn is not None:
            log.info("new connection from %s replaces one it gave up", hex_address(state.address))
            self._drop(state, state.conn)
        conn = _Conn(channel, dialled_by_us, heard=asyncio.get_running_loop().time())
        state.conn = conn
        state.up.set()
        return conn

    def _drop(self, state: _Peer, conn: _Conn) -> None:
        if state.conn is conn:
            state.conn = None
            state.up.clear()
        conn.closed.set()
        conn.channel.abort()

    async def _run(self, state: _Peer, conn: _Conn) -> None:
        """Delivers on_connect, then the connection's frames one at a time, until the connection ends."""
        assert self._on_frame is not None and self._on_connect is not None
        peer = state.address
        try:
            async with state.deliver_lock:
                if state.conn is conn:
                    await run_handler(self._on_connect(peer), "on_connect", peer)
            while True:
                frame = await conn.channel.recv_frame(self.frame_timeout)
                conn.heard = asyncio.get_running_loop().time()
                async with state.deliver_lock:
                    if state.conn is not conn:
                        break
                    await run_handler(self._on_frame(peer, frame), "on_frame", peer)
        except _DROPPED as exc:
            log.info("connection to %s ended: %r", hex_address(peer), exc)
        finally:
            self._drop(state, conn)


def _forget(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """Done callback: untrack the task and mark its exception retrieved (connect() reports the one that matters)."""

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, HandshakeFailed):
            log.debug("task %s ended with %r", task.get_name(), failure)
        elif failure is not None:
            log.error("task %s failed", task.get_name(), exc_info=failure)

    return done

"""TcpTransport between two nodes on 127.0.0.1: order, limits, drops and redial, simultaneous dials."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from functools import partial

import pytest

from statechannel.net import MAX_FRAME, FrameTooLarge, HandshakeFailed, PeerUnreachable, TcpTransport, Transport
from tests.net.helpers import Node, eventually, key, node

FRAMES = 2000


def frame_sizes() -> list[int]:
    """Mostly small frames, every 50th up to 200 KiB, plus an empty one and one of exactly MAX_FRAME."""
    sizes = []
    for i in range(FRAMES):
        spread = 200 * 1024 if i % 50 == 7 else 2048
        sizes.append(int.from_bytes(hashlib.sha256(i.to_bytes(4, "big")).digest()[:4], "big") % (spread + 1))
    sizes[0] = 0
    sizes[FRAMES // 2] = MAX_FRAME
    return sizes


async def connected_pair() -> tuple[Node, Node]:
    a, b = await node("alice"), await node("bob")
    await a.transport.connect(b.address, "127.0.0.1", b.port)
    await b.recorder.until(lambda: len(b.recorder.connects) == 1)
    return a, b


def has_frames(dst: Node, count: int) -> bool:
    return len(dst.recorder.frames) >= count


def conn_of(transport: TcpTransport, peer: bytes) -> asyncio.StreamWriter:
    """The live connection's writer: reached into, to simulate drops and to identify sockets."""
    conn = transport._peers[peer].conn
    assert conn is not None
    return conn.channel.writer


def test_tcp_transport_satisfies_the_protocol() -> None:
    transport: Transport = TcpTransport(key("alice"))
    assert transport.address == key("alice").address


def test_frames_both_ways_in_order() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        assert a.recorder.connects == [b.address] and b.recorder.connects == [a.address]
        sizes = frame_sizes()
        sent: dict[bytes, list[bytes]] = {a.address: [], b.address: []}

        async def pump(src: Node, dst: Node) -> None:
            for size in sizes:
                frame = os.urandom(size)
                sent[src.address].append(hashlib.sha256(frame).digest())
                await src.transport.send(dst.address, frame)

        await asyncio.wait_for(asyncio.gather(pump(a, b), pump(b, a)), 120)
        for src, dst in ((a, b), (b, a)):
            await dst.recorder.until(partial(has_frames, dst, FRAMES))
            assert {peer for peer, _ in dst.recorder.frames} == {src.address}
            assert [hashlib.sha256(f).digest() for _, f in dst.recorder.frames] == sent[src.address]
            assert [len(f) for _, f in dst.recorder.frames] == sizes
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_frame_above_max_raises_and_connection_survives() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        with pytest.raises(FrameTooLarge, match="exceeds MAX_FRAME"):
            await a.transport.send(b.address, bytes(MAX_FRAME + 1))
        await a.transport.send(b.address, b"still fine")
        await b.recorder.until(lambda: b.recorder.frames == [(a.address, b"still fine")])
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_send_to_unknown_peer_raises() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        with pytest.raises(PeerUnreachable):
            await a.transport.send(key("carol").address, b"hello")
        assert not a.transport.connected(key("carol").address)
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_dialer_reconnects_after_server_drops_the_socket() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        await a.transport.send(b.address, b"before")
        await b.recorder.until(lambda: len(b.recorder.frames) == 1)
        conn_of(b.transport, a.address).close()  # abrupt drop on the server side
        await a.recorder.until(lambda: len(a.recorder.connects) == 2)
        await b.recorder.until(lambda: len(b.recorder.connects) == 2)
        assert a.transport.connected(b.address) and b.transport.connected(a.address)
        await a.transport.send(b.address, b"after")
        await b.transport.send(a.address, b"reply")
        await b.recorder.until(lambda: [f for _, f in b.recorder.frames] == [b"before", b"after"])
        await a.recorder.until(lambda: [f for _, f in a.recorder.frames] == [b"reply"])
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_send_while_dropped_raises_peer_unreachable() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        await b.transport.close()
        await eventually(lambda: not a.transport.connected(b.address))
        with pytest.raises(PeerUnreachable):
            await a.transport.send(b.address, b"nobody home")
        await a.transport.close()

    asyncio.run(main())


def test_simultaneous_dials_keep_one_connection_and_lose_nothing() -> None:
    async def main() -> None:
        for round_ in range(10):
            a, b = await node(f"a{round_}"), await node(f"b{round_}")
            await asyncio.gather(
                a.transport.connect(b.address, "127.0.0.1", b.port),
                b.transport.connect(a.address, "127.0.0.1", a.port),
            )
            for src, dst in ((a, b), (b, a)):
                for i in range(100):
                    await src.transport.send(dst.address, i.to_bytes(2, "big"))
            for src, dst in ((a, b), (b, a)):
                await dst.recorder.until(partial(has_frames, dst, 100))
                assert dst.recorder.frames == [(src.address, i.to_bytes(2, "big")) for i in range(100)]
            # both ends hold the two ends of the same socket
            a_sock = conn_of(a.transport, b.address).get_extra_info("sockname")
            b_peer = conn_of(b.transport, a.address).get_extra_info("peername")
            a_peer = conn_of(a.transport, b.address).get_extra_info("peername")
            b_sock = conn_of(b.transport, a.address).get_extra_info("sockname")
            assert (a_sock, a_peer) == (b_peer, b_sock)
            assert len(a.recorder.connects) == len(b.recorder.connects) == 1
            await a.transport.close()
            await b.transport.close()

    asyncio.run(main())


def test_connect_to_nothing_times_out_with_peer_unreachable() -> None:
    async def main() -> None:
        with socket.socket() as probe:  # a port that was free a moment ago and has no listener
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        a = await node("alice")
        with pytest.raises(PeerUnreachable, match="no connection"):
            await a.transport.connect(key("bob").address, "127.0.0.1", port, timeout=0.3)
        await a.transport.close()

    asyncio.run(main())


def test_connect_to_the_wrong_node_fails_the_handshake() -> None:
    async def main() -> None:
        a, b = await node("alice"), await node("bob")
        carol = key("carol").address
        with pytest.raises(HandshakeFailed, match="proved"):
            await a.transport.connect(carol, "127.0.0.1", b.port)
        assert not a.transport.connected(carol) and not a.transport.connected(b.address)
        assert not b.transport.connected(a.address)
        assert a.recorder.connects == [] and b.recorder.connects == []
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_send_nowait_keeps_order_with_awaited_sends_and_waits_only_past_the_high_water_mark() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        frames = [os.urandom(64 * 1024 - 4) for _ in range(200)]  # 12.5 MiB: far more than a socket buffers
        waited = 0
        for i, frame in enumerate(frames):
            if i % 7 == 3:  # awaited sends mixed in: each goes behind every frame queued before it
                await a.transport.send(b.address, frame)
            elif not a.transport.send_nowait(b.address, frame):
                waited += 1  # the buffer is full: nothing was queued, the caller awaits the send instead
                await a.transport.send(b.address, frame)
        assert waited > 0  # backpressure reached send_nowait: it declined rather than buffer without bound
        await b.recorder.until(partial(has_frames, b, len(frames)))
        assert [f for _, f in b.recorder.frames] == frames
        with pytest.raises(FrameTooLarge):
            a.transport.send_nowait(b.address, bytes(MAX_FRAME + 1))
        with pytest.raises(PeerUnreachable):
            a.transport.send_nowait(key("carol").address, b"x")
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())


def test_send_nowait_never_overtakes_a_send_waiting_for_a_peer_that_stopped_reading() -> None:
    async def main() -> None:
        a, b = await connected_pair()
        gate = asyncio.Event()
        got: list[bytes] = []

        async def slow(peer: bytes, frame: bytes) -> None:
            await gate.wait()  # b reads nothing more until the gate opens: a's socket buffers fill
            got.append(frame)

        b.transport.set_handlers(slow, b.recorder.on_connect)
        big = [bytes([i]) * (512 * 1024) for i in range(40)]  # 20 MiB: more than both sockets buffer
        sends = [asyncio.ensure_future(a.transport.send(b.address, f)) for f in big]
        await eventually(lambda: any(s.done() for s in sends))  # all started; the later ones wait for b to read
        assert not all(s.done() for s in sends)
        assert not a.transport.send_nowait(b.address, b"small")  # declined: sends are waiting before it
        gate.set()
        await asyncio.gather(*sends)
        await a.transport.send(b.address, b"last")
        await eventually(lambda: len(got) == len(big) + 1)
        assert got == [*big, b"last"]
        await a.transport.close()
        await b.transport.close()

    asyncio.run(main())

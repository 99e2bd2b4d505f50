"""MemoryTransport: the same contract as TCP, plus the drop and reconnect hooks protocol tests rely on."""

from __future__ import annotations

import asyncio

import pytest

from statechannel.net import MAX_FRAME, FrameTooLarge, MemoryTransport, PeerUnreachable, Transport
from statechannel.net.memory import QUEUE_FRAMES
from tests.net.helpers import Recorder, key


def pair() -> tuple[MemoryTransport, MemoryTransport, Recorder, Recorder]:
    a, b = MemoryTransport.pair(key("alice"), key("bob"))
    rec_a, rec_b = Recorder(), Recorder()
    a.set_handlers(rec_a.on_frame, rec_a.on_connect)
    b.set_handlers(rec_b.on_frame, rec_b.on_connect)
    return a, b, rec_a, rec_b


def test_memory_transport_satisfies_the_protocol() -> None:
    a, _ = MemoryTransport.pair(key("alice"), key("bob"))
    transport: Transport = a
    assert transport.address == key("alice").address


def test_frames_both_ways_in_order() -> None:
    async def main() -> None:
        a, b, rec_a, rec_b = pair()
        assert a.connected(b.address) and b.connected(a.address)

        async def pump(src: MemoryTransport, dst: MemoryTransport) -> None:
            for i in range(1000):
                await src.send(dst.address, i.to_bytes(2, "big"))

        await asyncio.wait_for(asyncio.gather(pump(a, b), pump(b, a)), 30)
        await rec_a.until(lambda: len(rec_a.frames) == 1000)
        await rec_b.until(lambda: len(rec_b.frames) == 1000)
        assert rec_a.frames == [(b.address, i.to_bytes(2, "big")) for i in range(1000)]
        assert rec_b.frames == [(a.address, i.to_bytes(2, "big")) for i in range(1000)]
        assert rec_a.connects == rec_b.connects == []  # the pair starts connected, no handler saw it come up
        await a.close()
        await b.close()

    asyncio.run(main())


def test_limits_and_unknown_peers() -> None:
    async def main() -> None:
        a, b, _, rec_b = pair()
        with pytest.raises(FrameTooLarge):
            await a.send(b.address, bytes(MAX_FRAME + 1))
        with pytest.raises(PeerUnreachable):
            await a.send(key("carol").address, b"x")
        assert not a.connected(key("carol").address)
        await a.send(b.address, bytes(MAX_FRAME))
        await rec_b.until(lambda: len(rec_b.frames) == 1)
        await a.close()
        await b.close()

    asyncio.run(main())


def test_disconnect_and_reconnect() -> None:
    async def main() -> None:
        a, b, rec_a, rec_b = pair()
        await a.send(b.address, b"one")
        await rec_b.until(lambda: len(rec_b.frames) == 1)
        await b.disconnect()
        assert not a.connected(b.address) and not b.connected(a.address)
        with pytest.raises(PeerUnreachable, match="down"):
            await a.send(b.address, b"lost")
        with pytest.raises(PeerUnreachable, match="down"):
            await b.send(a.address, b"lost")
        await a.reconnect()
        assert rec_a.connects == [b.address] and rec_b.connects == [a.address]
        assert a.connected(b.address) and b.connected(a.address)
        await a.send(b.address, b"two")
        await b.send(a.address, b"back")
        await rec_b.until(lambda: [f for _, f in rec_b.frames] == [b"one", b"two"])
        await rec_a.until(lambda: [f for _, f in rec_a.frames] == [b"back"])
        await a.close()
        await b.close()

    asyncio.run(main())


def test_frames_in_flight_at_a_drop_are_lost_not_reordered() -> None:
    async def main() -> None:
        a, b = MemoryTransport.pair(key("alice"), key("bob"))
        rec_a, rec_b = Recorder(), Recorder()
        a.set_handlers(rec_a.on_frame, rec_a.on_connect)
        entered, gate = asyncio.Event(), asyncio.Event()

        async def slow(peer: bytes, frame: bytes) -> None:
            entered.set()
            await gate.wait()
            await rec_b.on_frame(peer, frame)

        b.set_handlers(slow, rec_b.on_connect)
        await a.send(b.address, b"\x00")
        await asyncio.wait_for(entered.wait(), 30)  # the first frame is in the handler when the link drops
        for i in range(1, 5):  # these wait in the buffer
            await a.send(b.address, bytes([i]))
        await a.disconnect()
        gate.set()
        await asyncio.wait_for(a.reconnect(), 30)
        await a.send(b.address, b"new")
        await rec_b.until(lambda: (a.address, b"new") in rec_b.frames)
        assert [f for _, f in rec_b.frames] == [b"\x00", b"new"]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_close_makes_the_peer_unreachable() -> None:
    async def main() -> None:
        a, b, _, _ = pair()
        await b.close()
        assert not a.connected(b.address)
        with pytest.raises(PeerUnreachable):
            await a.send(b.address, b"x")
        with pytest.raises(PeerUnreachable):
            await a.reconnect()
        await a.close()

    asyncio.run(main())


def test_send_nowait_declines_when_the_inbox_is_full_and_never_jumps_a_waiting_send() -> None:
    async def main() -> None:
        a, b = MemoryTransport.pair(key("alice"), key("bob"))
        rec_a, rec_b = Recorder(), Recorder()
        a.set_handlers(rec_a.on_frame, rec_a.on_connect)  # b reads nothing until its handlers are set
        queued = 0
        while a.send_nowait(b.address, queued.to_bytes(4, "big")):  # the inbox fills
            queued += 1
        assert queued == QUEUE_FRAMES
        waiting = asyncio.ensure_future(a.send(b.address, queued.to_bytes(4, "big")))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()  # that send waits for room
        first = b._inbox.get_nowait()  # the reader takes one: there is room, but the waiting send is not in yet
        assert not a.send_nowait(b.address, b"late")  # declined: it would overtake the waiting send
        await waiting
        b.set_handlers(rec_b.on_frame, rec_b.on_connect)
        await rec_b.until(lambda: len(rec_b.frames) >= 1)
        assert a.send_nowait(b.address, (queued + 1).to_bytes(4, "big"))  # room, and no send waiting
        await rec_b.until(lambda: len(rec_b.frames) == queued + 1)
        got = [first.frame, *(f for _, f in rec_b.frames)]
        assert got == [i.to_bytes(4, "big") for i in range(queued + 2)]
        await a.disconnect()
        with pytest.raises(PeerUnreachable):
            a.send_nowait(b.address, b"x")
        await a.close()
        await b.close()

    asyncio.run(main())

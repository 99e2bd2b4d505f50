"""A hostile peer against the transport's resource limits: handshakes that stall, frames that stop half-way,
a peer that never reads. Each is cut off by a bound, and the transport keeps serving honest peers."""

from __future__ import annotations

import asyncio
import functools
import operator
import socket

import pytest

from statechannel.net import PeerUnreachable, TcpTransport
from tests.net.helpers import Node, Recorder, eventually, hangup, key, raw_handshake, record
from tests.net.test_security import assert_still_serves

LONG = 300.0  # a bound the test must never reach: what it checks is cut off by another one
QUICK = 20.0


async def node_with(name: str, **limits: float) -> Node:
    transport = TcpTransport(key(name), **limits)  # type: ignore[arg-type]
    recorder = Recorder()
    transport.set_handlers(recorder.on_frame, recorder.on_connect)
    return Node(transport, recorder, await transport.start())


async def stalled(port: int, sent: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    await writer.drain()
    return reader, writer


def test_handshakes_past_the_bound_are_hung_up_at_once_and_honest_peers_still_get_in() -> None:
    async def main() -> None:
        server = await node_with("bob", max_handshakes=4, handshake_timeout=LONG)
        # four that stall: one says nothing, one sends half a length, one half a record, one a first message only
        stalls = [
            await stalled(server.port),
            await stalled(server.port, b"\x00\x00"),
            await stalled(server.port, b"\x00\x00\x00\x40" + b"x" * 10),
            await stalled(server.port, record(b"\x01" * 32)),
        ]
        await eventually(lambda: server.transport._handshaking == 4)
        reader, writer = await stalled(server.port)
        assert await asyncio.wait_for(hangup(reader), QUICK) == b""  # the fifth: refused at once, not at LONG
        writer.close()
        for _, w in stalls:
            w.close()
        await eventually(lambda: server.transport._handshaking == 0)
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_a_stalled_handshake_is_hung_up_after_the_handshake_timeout() -> None:
    async def main() -> None:
        server = await node_with("bob", handshake_timeout=0.5)
        reader, writer = await stalled(server.port, record(b"\x01" * 32))
        assert await asyncio.wait_for(hangup(reader), QUICK) != b""  # its answer to message 1, then the hangup
        writer.close()
        assert server.transport._handshaking == 0
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


@pytest.mark.parametrize("where", ["inside a record", "between the records of a frame"])
def test_a_peer_stalling_half_way_through_a_frame_is_dropped(where: str) -> None:
    async def main() -> None:
        server = await node_with("bob", frame_timeout=0.5)
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        await asyncio.wait_for(client.recv_plain(), QUICK)
        await server.recorder.until(lambda: server.recorder.connects == [alice.address])
        if where == "inside a record":
            sealed = client.noise.encrypt((5).to_bytes(4, "big") + b"hello")
            client.writer.write(record(sealed)[:10])  # the record's length and a few bytes of it, then nothing
        else:
            client.send_plain((100_000).to_bytes(4, "big") + b"x" * 1000)  # announces 100 kB, sends 1 kB
        await client.writer.drain()
        await asyncio.wait_for(hangup(client.reader), QUICK)
        await eventually(lambda: not server.transport.connected(alice.address))
        assert server.recorder.frames == []
        client.writer.close()
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_a_silent_peer_between_frames_is_kept() -> None:
    """The frame timeout runs from a frame's first byte: an idle connection is not a stalled one."""

    async def main() -> None:
        server = await node_with("bob", frame_timeout=0.2)
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        await asyncio.wait_for(client.recv_plain(), QUICK)
        await server.recorder.until(lambda: server.recorder.connects == [alice.address])
        await asyncio.sleep(1.0)
        client.send_frame(b"still here")
        await server.recorder.until(lambda: server.recorder.frames == [(alice.address, b"still here")])
        assert server.transport.connected(alice.address)
        client.writer.close()
        await server.transport.close()

    asyncio.run(main())


def test_a_peer_that_stops_reading_is_dropped_and_sends_to_it_fail() -> None:
    async def main() -> None:
        server = await node_with("bob", send_timeout=0.5)
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.wait_for(client.recv_plain(), QUICK)
        await server.recorder.until(lambda: server.recorder.connects == [alice.address])

        async def flood() -> int:
            sent = 0
            while True:  # the client reads nothing: the buffers fill, then the send times out
                try:
                    await server.transport.send(alice.address, b"z" * 65536)
                except PeerUnreachable:
                    return sent
                sent += 1

        sent = await asyncio.wait_for(flood(), QUICK)
        assert sent > 0
        assert not server.transport.connected(alice.address)
        client.writer.close()
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_many_throwaway_addresses_cannot_crowd_out_a_peer_with_a_channel_or_grow_without_bound() -> None:
    """Proving an address costs nothing, so an attacker can hold any number of authenticated connections. Past
    `max_strangers`, each new one hangs up the stranger silent longest; a peer with a channel is never counted
    nor hung up, and a stranger that left leaves no per-peer state behind."""

    async def main() -> None:
        server = await node_with("bob", max_strangers=3)
        friend = key("friend")
        server.transport.set_keep(lambda peer: peer == friend.address)
        kept = await raw_handshake(server.port, friend, friend.address, server.address)
        await asyncio.wait_for(kept.recv_plain(), QUICK)
        throwaways = []
        for i in range(8):
            k = key(f"throwaway {i}")
            client = await raw_handshake(server.port, k, k.address, server.address)
            await asyncio.wait_for(client.recv_plain(), QUICK)
            await eventually(functools.partial(server.transport.connected, k.address))
            throwaways.append((k, client))
            if i == 5:  # stranger 4 speaks after 5 connected: 5 is now the quieter of the two
                k4, client4 = throwaways[4]
                client4.send_frame(b"alive")
                await server.recorder.until(
                    functools.partial(operator.contains, server.recorder.frames, (k4.address, b"alive"))
                )
        await eventually(lambda: server.transport.strangers() == 3)
        connected = [i for i, (k, _) in enumerate(throwaways) if server.transport.connected(k.address)]
        assert connected == [4, 6, 7]  # 5 was silent longer than 4, which spoke after 5 connected
        assert server.transport.connected(friend.address)
        for i, (_, client) in enumerate(throwaways):
            if i not in connected:
                assert await asyncio.wait_for(hangup(client.reader), QUICK) == b""
            client.writer.close()
        await eventually(lambda: server.transport.strangers() == 0)
        await eventually(lambda: set(server.transport._peers) == {friend.address})
        kept.send_frame(b"still served")
        await server.recorder.until(lambda: (friend.address, b"still served") in server.recorder.frames)
        kept.writer.close()
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())

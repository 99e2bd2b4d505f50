"""What a hostile peer or a wire tap can do to a TcpTransport: forge an identity, send garbage, read traffic."""

from __future__ import annotations

import asyncio
import os
from functools import partial

from statechannel.net import MAX_FRAME
from tests.net.helpers import Node, eventually, hangup, key, node, raw_handshake

MARKER = b"TOP-SECRET-PLAINTEXT-MARKER"


async def assert_still_serves(server: Node) -> None:
    """A bad input changes nothing else: an honest client still gets in afterwards."""
    honest = key("honest")
    client = await raw_handshake(server.port, honest, honest.address, server.address)
    reply = await asyncio.wait_for(client.recv_plain(), 30)
    assert reply[:20] == server.address and reply[-1] == 0  # proof of the server's address, then ACCEPT
    client.send_frame(b"hi")
    await server.recorder.until(lambda: (honest.address, b"hi") in server.recorder.frames)
    client.writer.close()


def has_two_frames(dst: Node) -> bool:
    return len(dst.recorder.frames) == 2


def test_peer_claiming_an_address_it_cannot_sign_for_is_refused() -> None:
    async def main() -> None:
        server = await node("bob")
        victim, mallory = key("alice"), key("mallory")
        client = await raw_handshake(server.port, mallory, victim.address, server.address)
        assert await hangup(client.reader) == b""  # closed without ever sending its own proof
        assert not server.transport.connected(victim.address)
        assert not server.transport.connected(mallory.address)
        assert server.recorder.connects == []
        client.writer.close()
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_proof_over_a_static_key_noise_did_not_see_is_refused() -> None:
    async def main() -> None:
        server = await node("bob")
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address, signed_static=os.urandom(32))
        assert await hangup(client.reader) == b""
        assert not server.transport.connected(alice.address)
        assert server.recorder.connects == []
        client.writer.close()
        await server.transport.close()

    asyncio.run(main())


def test_frame_announcing_more_than_max_frame_disconnects() -> None:
    async def main() -> None:
        server = await node("bob")
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        await asyncio.wait_for(client.recv_plain(), 30)
        await server.recorder.until(lambda: server.recorder.connects == [alice.address])
        client.send_plain((MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 100)
        await hangup(client.reader)
        await eventually(lambda: not server.transport.connected(alice.address))
        assert server.recorder.frames == []
        client.writer.close()
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_tampered_record_disconnects() -> None:
    async def main() -> None:
        server = await node("bob")
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        await asyncio.wait_for(client.recv_plain(), 30)
        sealed = bytearray(client.noise.encrypt((2).to_bytes(4, "big") + b"ok"))
        sealed[5] ^= 1
        client.writer.write(len(sealed).to_bytes(4, "big") + bytes(sealed))
        await hangup(client.reader)
        await eventually(lambda: not server.transport.connected(alice.address))
        assert server.recorder.frames == []
        client.writer.close()
        await server.transport.close()

    asyncio.run(main())


def test_garbage_before_the_handshake_is_dropped() -> None:
    async def main() -> None:
        server = await node("bob")
        for junk in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x05hello", os.urandom(1000)):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(junk)
            await hangup(reader)
            writer.close()
        assert server.recorder.connects == []
        await assert_still_serves(server)
        await server.transport.close()

    asyncio.run(main())


def test_a_wire_tap_sees_no_plaintext() -> None:
    async def main() -> None:
        a, b = await node("alice"), await node("bob")
        captured = bytearray()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    captured.extend(data)
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", b.port)
            await asyncio.gather(
                pipe(client_reader, server_writer), pipe(server_reader, client_writer), return_exceptions=True
            )

        tap = await asyncio.start_server(relay, "127.0.0.1", 0)
        tap_port = tap.sockets[0].getsockname()[1]
        await a.transport.connect(b.address, "127.0.0.1", tap_port)
        big = MARKER * (300_000 // len(MARKER))  # several Noise records
        for src, dst in ((a, b), (b, a)):
            await src.transport.send(dst.address, MARKER)
            await src.transport.send(dst.address, big)
        for dst in (a, b):
            await dst.recorder.until(partial(has_two_frames, dst))
            assert [f for _, f in dst.recorder.frames] == [MARKER, big]
        assert len(captured) > 2 * len(big)
        assert MARKER not in captured
        assert a.address not in captured and b.address not in captured  # identities travel encrypted too
        await a.transport.close()
        await b.transport.close()
        tap.close()
        await tap.wait_closed()

    asyncio.run(main())

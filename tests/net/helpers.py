"""Shared pieces of the net tests: keys, a recording handler pair, and a hand-written Noise client.

The client is written from the wire description, not from statechannel.net.secure, so the tests also pin the
wire format and can misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from eth_hash.auto import keccak
from noise.connection import Keypair, NoiseConnection

from statechannel.core.crypto import PrivateKey
from statechannel.net import TcpTransport

TIMEOUT = 60.0
DOMAIN = b"statechannel-net-v1"


def key(name: str) -> PrivateKey:
    return PrivateKey(keccak(name.encode()))


class Recorder:
    """Handlers that record what arrives and fail the test if the transport ever overlaps two calls."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.connects: list[bytes] = []
        self._busy = False
        self._changed = asyncio.Condition()

    async def on_frame(self, peer: bytes, frame: bytes) -> None:
        assert not self._busy, "handlers overlapped"
        self._busy = True
        await asyncio.sleep(0)  # give an overlapping delivery the chance to show itself
        self.frames.append((peer, frame))
        self._busy = False
        await self._notify()

    async def on_connect(self, peer: bytes) -> None:
        assert not self._busy, "handlers overlapped"
        self.connects.append(peer)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """For state with no event to wait on (a socket going away): poll, bounded."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@dataclass
class Node:
    transport: TcpTransport
    recorder: Recorder
    port: int

    @property
    def address(self) -> bytes:
        return self.transport.address


async def node(name: str) -> Node:
    transport = TcpTransport(key(name))
    recorder = Recorder()
    transport.set_handlers(recorder.on_frame, recorder.on_connect)
    port = await transport.start()
    return Node(transport, recorder, port)


# ---- a hand-written client --------------------------------------------------------------------------------


def record(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def read_record(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(length)


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    noise: NoiseConnection

    def send_plain(self, plaintext: bytes) -> None:
        self.writer.write(record(self.noise.encrypt(plaintext)))

    async def recv_plain(self) -> bytes:
        return bytes(self.noise.decrypt(await read_record(self.reader)))

    def send_frame(self, frame: bytes) -> None:
        data = len(frame).to_bytes(4, "big") + frame
        for start in range(0, len(data), 65519):
            self.send_plain(data[start : start + 65519])


async def raw_handshake(
    port: int, signer: PrivateKey, claimed: bytes, expected: bytes, signed_static: bytes | None = None
) -> RawClient:
    """Runs Noise XX, then claims `claimed` with a signature by `signer` over `signed_static` (default: the
    static key this client really uses). Honest when signer.address == claimed and signed_static is None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    noise = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_BLAKE2s")
    noise.set_as_initiator()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, secrets.token_bytes(32))
    noise.set_prologue(DOMAIN)
    noise.start_handshake()
    own_static = bytes(noise.noise_protocol.handshake_state.s.public_bytes)
    writer.write(record(bytes(noise.write_message())))
    noise.read_message(await read_record(reader))
    writer.write(record(bytes(noise.write_message())))
    handshake_hash = bytes(noise.get_handshake_hash())
    static = own_static if signed_static is None else signed_static
    signature = signer.sign_digest(keccak(DOMAIN + handshake_hash + static)).to_bytes()
    client = RawClient(reader, writer, noise)
    client.send_plain(claimed + signature + expected)
    await writer.drain()
    return client


async def hangup(reader: asyncio.StreamReader) -> bytes:
    """Reads until the other side hangs up (EOF or reset), bounded; returns what arrived before that."""
    received = bytearray()
    try:
        async with asyncio.timeout(TIMEOUT):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    return bytes(received)

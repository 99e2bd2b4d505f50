"""Noise XX over one TCP stream, plus the proof that binds an Ethereum address to the Noise session.

Noise alone authenticates an X25519 key that nobody else knows about. Peers are known by their Ethereum
addresses, so once the Noise handshake completes each side signs, with its Ethereum key, the handshake hash
and the static key Noise saw for it. The hash is unique to the session, so a proof cannot be replayed on
another connection, and a man in the middle cannot forward one because its own static key would differ.

Wire format: every record is a 4-byte big-endian length and then a Noise message (at most 65535 bytes, the
Noise limit). A frame is sent as a 4-byte plaintext length followed by the frame, cut into as many records as
needed; a record never carries bytes of two frames, so the receiver can reject a bad announcement at once.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from noise.connection import Keypair, NoiseConnection

from statechannel.core.crypto import PrivateKey, Signature, recover
from statechannel.core.errors import RemoteError
from statechannel.core.hashing import keccak
from statechannel.net.base import MAX_FRAME, HandshakeFailed, hex_address

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
DOMAIN = b"statechannel-net-v1"
LENGTH_BYTES = 4
MAX_RECORD = 65535
TAG_BYTES = 16
CHUNK = MAX_RECORD - TAG_BYTES
ADDRESS_BYTES = 20
SIGNATURE_BYTES = 65
PROOF_BYTES = ADDRESS_BYTES + SIGNATURE_BYTES


class ProtocolError(Exception):
    """After the handshake the peer sent bytes that break framing or authentication; the connection is dropped."""


class Verdict(enum.IntEnum):
    """The responder's answer, so a dialler can tell a duplicate connection from a refusal."""

    ACCEPT = 0
    DUPLICATE = 1  # the responder keeps another connection to the dialler (simultaneous dial); retry later
    NOT_ME = 2  # the dialler expected a different address


@dataclass(frozen=True, slots=True)
class Proof:
    """A node's claim of its Ethereum address for one Noise session."""

    address: bytes
    signature: bytes

    @classmethod
    def make(cls, key: PrivateKey, handshake_hash: bytes, static_public: bytes) -> Proof:
        return cls(key.address, key.sign_digest(proof_digest(handshake_hash, static_public)).to_bytes())

    def encode(self) -> bytes:
        return self.address + self.signature

    @classmethod
    def decode(cls, raw: bytes) -> Proof:
        if len(raw) != PROOF_BYTES:
            raise HandshakeFailed(f"address proof must be {PROOF_BYTES} bytes, got {len(raw)}")
        return cls(raw[:ADDRESS_BYTES], raw[ADDRESS_BYTES:])

    def verify(self, handshake_hash: bytes, static_public: bytes) -> bytes:
        """The proven address, or HandshakeFailed: the signer must be the claimed address, over the key Noise saw."""
        try:
            signer = recover(proof_digest(handshake_hash, static_public), Signature.from_bytes(self.signature))
        except RemoteError as exc:
            raise HandshakeFailed(f"bad address proof signature: {exc}") from exc
        if signer != self.address:
            raise HandshakeFailed(f"peer claims {hex_address(self.address)} but cannot sign for it")
        return self.address


def proof_digest(handshake_hash: bytes, static_public: bytes) -> bytes:
    return keccak(DOMAIN + handshake_hash + static_public)


def encode_record(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


async def read_record(reader: asyncio.StreamReader) -> bytes:
    """One length-prefixed Noise message; a zero, tiny or oversized length is garbage, never waited on."""
    return await read_record_body(reader, await reader.readexactly(LENGTH_BYTES))


async def read_record_body(reader: asyncio.StreamReader, header: bytes) -> bytes:
    length = int.from_bytes(header, "big")
    if not TAG_BYTES <= length <= MAX_RECORD:
        raise ProtocolError(f"record length {length} outside {TAG_BYTES}..{MAX_RECORD}")
    return await reader.readexactly(length)


class _Noise:
    """The few NoiseConnection calls used here, with every library error turned into HandshakeFailed.

    The library forgets the remote static key when the handshake completes, so the handshake state is kept
    from the start to read it afterwards: the proof must be checked against exactly that key.
    """

    def __init__(self, static_secret: bytes, initiator: bool) -> None:
        self.conn = NoiseConnection.from_name(PROTOCOL_NAME)
        if initiator:
            self.conn.set_as_initiator()
        else:
            self.conn.set_as_responder()
        self.conn.set_keypair_from_private_bytes(Keypair.STATIC, static_secret)
        self.conn.set_prologue(DOMAIN)
        self.conn.start_handshake()
        self._state = self.conn.noise_protocol.handshake_state

    def write(self) -> bytes:
        try:
            return bytes(self.conn.write_message())
        except Exception as exc:  # the library raises several unrelated types
            raise HandshakeFailed(f"noise handshake: {exc!r}") from exc

    def read(self, message: bytes) -> None:
        try:
            payload = self.conn.read_message(message)
        except Exception as exc:
            raise HandshakeFailed(f"noise handshake: {exc!r}") from exc
        if payload:
            raise HandshakeFailed("unexpected payload in a noise handshake message")

    def local_static(self) -> bytes:
        return bytes(self._state.s.public_bytes)

    def remote_static(self) -> bytes:
        return bytes(self._state.rs.public_bytes)

    def handshake_hash(self) -> bytes:
        return bytes(self.conn.get_handshake_hash())

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self.conn.decrypt(ciphertext))
        except Exception as exc:
            raise ProtocolError(f"record failed authentication: {exc!r}") from exc

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(self.conn.encrypt(plaintext))


class SecureChannel:
    """An authenticated, encrypted frame stream to one proven peer. The caller serialises sends."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, noise: _Noise, peer: bytes, dialler: bytes
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.dialler = dialler
        self._noise = noise
        self._stalled = False  # the peer stopped half-way through a frame: the socket was dropped

    def write_frame(self, frame: bytes) -> None:
        """Encrypts and buffers a whole frame with no await in between, so a cancelled send never leaves half a
        frame on the wire. The caller has checked the size."""
        if self.writer.is_closing():
            raise ConnectionResetError("connection is closed")
        data = memoryview(len(frame).to_bytes(LENGTH_BYTES, "big") + frame)
        for start in range(0, len(data), CHUNK):
            self.writer.write(encode_record(self._noise.encrypt(bytes(data[start : start + CHUNK]))))

    def must_drain(self) -> bool:
        """Whether the socket's buffer is past its high-water mark: the next frame waits for the peer to read."""
        transport = self.writer.transport
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

    async def send_frame(self, frame: bytes) -> None:
        self.write_frame(frame)
        await self.writer.drain()

    async def recv_frame(self, timeout: float) -> bytes:
        """The next frame. Between frames a peer may stay silent as long as it likes, but once the first byte
        of a frame has come the whole frame must follow within `timeout` seconds, or ProtocolError: a peer
        that stalls half-way through a frame is dropped rather than holding its connection open."""
        header = await self.reader.readexactly(LENGTH_BYTES)
        # a bare timer that drops the socket, not asyncio.timeout: that costs ~15 us a frame, this ~2
        loop = asyncio.get_running_loop()
        stall = loop.call_at(loop.time() + timeout, self._stalled_mid_frame)
        try:
            return await self._recv_rest(header)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._stalled:
                raise ProtocolError(f"frame not complete within {timeout} s of its first byte") from None
            raise
        finally:
            stall.cancel()

    def _stalled_mid_frame(self) -> None:
        self._stalled = True
        self.abort()

    async def _recv_rest(self, header: bytes) -> bytes:
        first = self._noise.decrypt(await read_record_body(self.reader, header))
        if len(first) < LENGTH_BYTES:
            raise ProtocolError("first record of a frame is shorter than its length header")
        total = int.from_bytes(first[:LENGTH_BYTES], "big")
        if total > MAX_FRAME:
            raise ProtocolError(f"peer announced a frame of {total} bytes, above MAX_FRAME ({MAX_FRAME})")
        parts = [first[LENGTH_BYTES:]]
        have = len(parts[0])
        while have < total:
            part = await self._recv_plain()
            if not part:
                raise ProtocolError("empty continuation record")
            parts.append(part)
            have += len(part)
        if have != total:
            raise ProtocolError(f"frame announced {total} bytes but its records carry {have}")
        return b"".join(parts)

    async def _recv_plain(self) -> bytes:
        return self._noise.decrypt(await read_record(self.reader))

    def abort(self) -> None:
        """Drops the socket at once: used for protocol violations, replaced connections and shutdown."""
        self.writer.transport.abort()


async def dial_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    key: PrivateKey,
    static_secret: bytes,
    expected: bytes,
) -> tuple[SecureChannel, Verdict]:
    """The initiator's side. Raises HandshakeFailed unless the responder proves `expected`."""
    noise = _Noise(static_secret, initiator=True)
    writer.write(encode_record(noise.write()))
    noise.read(await _read_handshake_record(reader))
    writer.write(encode_record(noise.write()))
    handshake_hash = noise.handshake_hash()
    mine = Proof.make(key, handshake_hash, noise.local_static())
    writer.write(encode_record(noise.encrypt(mine.encode() + expected)))
    await writer.drain()
    reply = await _read_encrypted(reader, noise)
    if len(reply) != PROOF_BYTES + 1:
        raise HandshakeFailed(f"responder reply must be {PROOF_BYTES + 1} bytes, got {len(reply)}")
    proven = Proof.decode(reply[:PROOF_BYTES]).verify(handshake_hash, noise.remote_static())
    if proven != expected:
        raise HandshakeFailed(f"dialled {hex_address(expected)} but the peer proved {hex_address(proven)}")
    try:
        verdict = Verdict(reply[PROOF_BYTES])
    except ValueError as exc:
        raise HandshakeFailed(f"unknown responder verdict {reply[PROOF_BYTES]}") from exc
    if verdict is Verdict.NOT_ME:
        raise HandshakeFailed(f"{hex_address(proven)} proved itself yet says it is not the peer we dialled")
    return SecureChannel(reader, writer, noise, proven, key.address), verdict


@dataclass(frozen=True, slots=True)
class Inbound:
    """A dialler that has proved its address and is waiting for our proof and verdict."""

    channel: SecureChannel
    wanted: bytes  # the address the dialler expects us to be
    reply: bytes  # our proof, encrypted by answer()

    def answer(self, verdict: Verdict) -> None:
        """Synchronous on purpose: the caller decides, answers and registers with no await in between."""
        self.channel.writer.write(encode_record(self.channel._noise.encrypt(self.reply + bytes([verdict]))))


async def accept_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: PrivateKey, static_secret: bytes
) -> Inbound:
    """The responder's side, up to the verdict. Our proof is only sent once the dialler has proved its own."""
    noise = _Noise(static_secret, initiator=False)
    noise.read(await _read_handshake_record(reader))
    writer.write(encode_record(noise.write()))
    await writer.drain()
    noise.read(await _read_handshake_record(reader))
    handshake_hash = noise.handshake_hash()
    claim = await _read_encrypted(reader, noise)
    if len(claim) != PROOF_BYTES + ADDRESS_BYTES:
        raise HandshakeFailed(f"dialler proof must be {PROOF_BYTES + ADDRESS_BYTES} bytes, got {len(claim)}")
    proven = Proof.decode(claim[:PROOF_BYTES]).verify(handshake_hash, noise.remote_static())
    if proven == key.address:
        raise HandshakeFailed("the dialler proved our own address")
    mine = Proof.make(key, handshake_hash, noise.local_static())
    channel = SecureChannel(reader, writer, noise, proven, proven)
    return Inbound(channel, claim[PROOF_BYTES:], mine.encode())


async def _read_handshake_record(reader: asyncio.StreamReader) -> bytes:
    try:
        return await read_record(reader)
    except ProtocolError as exc:
        raise HandshakeFailed(str(exc)) from exc
    except asyncio.IncompleteReadError as exc:  # a network failure, not a failed proof: the dialler may retry
        raise ConnectionResetError("connection closed during the handshake") from exc


async def _read_encrypted(reader: asyncio.StreamReader, noise: _Noise) -> bytes:
    record = await _read_handshake_record(reader)
    try:
        return noise.decrypt(record)
    except ProtocolError as exc:
        raise HandshakeFailed(str(exc)) from exc

"""The transport cipher on `cryptography`'s ChaCha20-Poly1305 directly is wire-compatible with the noise
library's own per-message path, both ways, and rejects what that path rejects."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from noise.connection import Keypair, NoiseConnection

from statechannel.net.secure import DOMAIN, PROTOCOL_NAME, ProtocolError, TransportCipher, _Noise
from tests.net.helpers import eventually, key, node, raw_handshake


def library_side(initiator: bool) -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, secrets.token_bytes(32))
    conn.set_prologue(DOMAIN)
    conn.start_handshake()
    return conn


def handshake(ours: _Noise, theirs: NoiseConnection, we_initiate: bool) -> None:
    """Noise XX between our wrapper and a bare library connection, in memory."""
    if we_initiate:
        theirs.read_message(ours.write())
        ours.read(bytes(theirs.write_message()))
        theirs.read_message(ours.write())
    else:
        ours.read(bytes(theirs.write_message()))
        theirs.read_message(ours.write())
        ours.read(bytes(theirs.write_message()))
    assert theirs.handshake_finished and ours.conn.handshake_finished


@pytest.mark.parametrize("we_initiate", [True, False])
def test_direct_cipher_and_library_path_read_each_other_both_ways(we_initiate: bool) -> None:
    ours, theirs = _Noise(secrets.token_bytes(32), we_initiate), library_side(not we_initiate)
    handshake(ours, theirs, we_initiate)
    assert ours.handshake_hash() == bytes(theirs.get_handshake_hash())
    for i in range(300):  # many messages: the nonces advance in step on both paths
        message = secrets.token_bytes(i * 7 % 1000)
        assert bytes(theirs.decrypt(ours.encrypt(message))) == message
        assert ours.decrypt(bytes(theirs.encrypt(message))) == message
    big = secrets.token_bytes(65535 - 16)  # the largest record
    assert bytes(theirs.decrypt(ours.encrypt(big))) == big


def test_a_tampered_record_is_rejected_and_does_not_advance_the_nonce() -> None:
    ours, theirs = _Noise(secrets.token_bytes(32), False), library_side(True)
    handshake(ours, theirs, False)
    sealed = bytearray(theirs.encrypt(b"pay 1"))
    for i in (0, len(sealed) - 1):  # a flipped bit in the ciphertext or in the tag
        tampered = bytearray(sealed)
        tampered[i] ^= 1
        with pytest.raises(ProtocolError, match="authentication"):
            ours.decrypt(bytes(tampered))
    with pytest.raises(ProtocolError):
        ours.decrypt(bytes(sealed[:15]))  # shorter than a tag
    assert ours.decrypt(bytes(sealed)) == b"pay 1"  # the genuine record still opens: the count did not move
    with pytest.raises(ProtocolError):
        ours.decrypt(bytes(sealed))  # and cannot be replayed: the next nonce is expected now


def test_a_record_under_another_nonce_is_rejected() -> None:
    ours, theirs = _Noise(secrets.token_bytes(32), False), library_side(True)
    handshake(ours, theirs, False)
    theirs.encrypt(b"skipped")
    with pytest.raises(ProtocolError):
        ours.decrypt(bytes(theirs.encrypt(b"second")))  # sent as message 1 while 0 is expected


def test_the_last_nonce_is_never_used() -> None:
    cipher = TransportCipher(secrets.token_bytes(32), 2**64 - 2)
    cipher.encrypt(b"last one")
    with pytest.raises(ProtocolError, match="used up"):
        cipher.encrypt(b"one too many")


def test_frames_cross_between_the_library_client_and_the_direct_path_server() -> None:
    async def main() -> None:
        server = await node("bob")
        alice = key("alice")
        client = await raw_handshake(server.port, alice, alice.address, server.address)
        reply = await asyncio.wait_for(client.recv_plain(), 30)  # bob's proof, sealed by the direct path
        assert reply[:20] == server.address
        frames = [secrets.token_bytes(n) for n in (1, 100, 70_000, 5)]  # one spans two records
        for frame in frames:
            client.send_frame(frame)
        await client.writer.drain()
        await eventually(lambda: len(server.recorder.frames) == len(frames))
        assert [f for _, f in server.recorder.frames] == frames
        await server.transport.send(alice.address, b"back")
        plain = await asyncio.wait_for(client.recv_plain(), 30)
        assert plain == (4).to_bytes(4, "big") + b"back"
        client.writer.close()
        await server.transport.close()

    asyncio.run(main())

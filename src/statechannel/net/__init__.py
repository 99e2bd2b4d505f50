"""Peer transport: framed, authenticated (each side proves its Ethereum address), Noise-encrypted TCP, and an
in-memory pair with the same semantics for tests. See base.py for the contract."""

from statechannel.net.base import (
    MAX_FRAME,
    ConnectHandler,
    FrameHandler,
    FrameTooLarge,
    HandshakeFailed,
    PeerUnreachable,
    Transport,
)
from statechannel.net.memory import MemoryTransport
from statechannel.net.tcp import TcpTransport

__all__ = [
    "MAX_FRAME",
    "ConnectHandler",
    "FrameHandler",
    "FrameTooLarge",
    "HandshakeFailed",
    "MemoryTransport",
    "PeerUnreachable",
    "TcpTransport",
    "Transport",
]

"""keccak256 for the whole package, through eth-hash's pysha3 backend (safe-pysha3, in C).

`eth_hash.auto` picks the pycryptodome backend first, which costs about four times as much per call; an
off-chain update hashes about a dozen times, so the backend is chosen here, once. Tests hash through
`eth_hash.auto` and eth-account, so every hash here is checked against another implementation."""

from __future__ import annotations

from eth_hash.backends.pysha3 import keccak256 as keccak

__all__ = ["keccak"]

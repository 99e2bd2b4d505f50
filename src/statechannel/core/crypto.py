"""secp256k1 signing and recovery with coincurve; 65-byte (r, s, v), low-s only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import coincurve

from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.hashing import keccak

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2


@dataclass(frozen=True, slots=True)
class Signature:
    r: int
    s: int
    v: int

    def __post_init__(self) -> None:
        if not 0 < self.r < SECP256K1_N or not 0 < self.s < SECP256K1_N:
            raise RemoteError(Reason.BAD_SIGNATURE, "r or s out of range")
        if self.s > HALF_N:
            raise RemoteError(Reason.BAD_SIGNATURE, "s is not low (malleable signature)")
        if self.v not in (27, 28):
            raise RemoteError(Reason.BAD_SIGNATURE, f"v must be 27 or 28, got {self.v}")

    def to_bytes(self) -> bytes:
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([self.v])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Signature:
        if not isinstance(raw, bytes) or len(raw) != 65:
            raise RemoteError(Reason.BAD_SIGNATURE, "signature must be 65 bytes")
        return cls(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64])

    def as_abi(self) -> tuple[bytes, bytes, int]:
        return (self.r.to_bytes(32, "big"), self.s.to_bytes(32, "big"), self.v)


def _public_to_address(public: coincurve.PublicKey) -> bytes:
    return _address_of(public.format(compressed=False))


@lru_cache(maxsize=1024)
def _address_of(uncompressed: bytes) -> bytes:
    """Cached: a node recovers the same few peers' keys on every update."""
    return keccak(uncompressed[1:])[-20:]


class PrivateKey:
    """A signing key. Never printed: repr shows the address only."""

    __slots__ = ("_key", "address")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise LocalError(Reason.BAD_PARAMS, "a private key is 32 bytes")
        try:
            self._key = coincurve.PrivateKey(secret)
        except ValueError as exc:
            raise LocalError(Reason.BAD_PARAMS, "not a valid secp256k1 private key") from exc
        self.address: bytes = _public_to_address(self._key.public_key)

    def __repr__(self) -> str:
        return f"PrivateKey(address=0x{self.address.hex()})"

    @property
    def secret(self) -> bytes:
        return self._key.secret

    def sign_digest(self, digest: bytes) -> Signature:
        if len(digest) != 32:
            raise LocalError(Reason.BAD_PARAMS, "digest must be 32 bytes")
        raw = self._key.sign_recoverable(digest, hasher=None)  # libsecp256k1 emits low-s
        return Signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64] + 27)


def recover(digest: bytes, sig: Signature) -> bytes:
    """The address that signed `digest`; raises RemoteError if no key matches."""
    raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v - 27])
    try:
        public = coincurve.PublicKey.from_signature_and_message(raw, digest, hasher=None)
    except Exception as exc:  # coincurve raises bare Exception on an unrecoverable signature
        raise RemoteError(Reason.BAD_SIGNATURE, "signature does not recover to a key") from exc
    return _public_to_address(public)


def verify_signer(digest: bytes, sig: Signature, expected: bytes, who: str) -> None:
    if recover(digest, sig) != expected:
        raise RemoteError(Reason.WRONG_SIGNER, f"signature is not from {who} (0x{expected.hex()})")

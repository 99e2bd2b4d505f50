"""The protocol's values: frozen, validated on construction, amounts as ints.

A state moves value as a signed net transfer per asset from A to B, applied on
top of what each participant has funded on chain (see docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi.abi import encode as abi_encode

from statechannel.core.errors import LocalError, Reason
from statechannel.core.hashing import keccak

ETH: bytes = bytes(20)
"""The asset id of ether: the zero address, as in the contract."""

MAX_ASSETS = 8
MAX_VERSION = 2**48 - 1
MAX_CHALLENGE_PERIOD = 2**32 - 1
MAX_TIMESTAMP = 2**40 - 1
INT256_MIN = -(2**255)
INT256_MAX = 2**255 - 1
UINT256_MAX = 2**256 - 1


def _check_address(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 20:
        raise LocalError(Reason.BAD_ADDRESS, f"{what} must be 20 bytes, got {value!r}")
    return value


def _check_uint(value: object, what: str, limit: int = UINT256_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise LocalError(Reason.BAD_AMOUNT, f"{what} must be an int in [0, {limit}], got {value!r}")
    return value


def address_from_hex(text: str) -> bytes:
    """Parse a 0x-prefixed 40-hex-digit address (checksum not required)."""
    raw = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        out = bytes.fromhex(raw)
    except ValueError as exc:
        raise LocalError(Reason.BAD_ADDRESS, f"not hex: {text!r}") from exc
    return _check_address(out, "address")


def to_checksum(address: bytes) -> str:
    """EIP-55 mixed-case form."""
    hexed = _check_address(address, "address").hex()
    digest = keccak(hexed.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hexed))


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """What both participants agree before opening; hashed into the channel id."""

    a: bytes
    b: bytes
    challenge_period: int
    nonce: int

    def __post_init__(self) -> None:
        _check_address(self.a, "participant a")
        _check_address(self.b, "participant b")
        if ETH in (self.a, self.b):
            raise LocalError(Reason.BAD_PARAMS, "a participant is the zero address")
        if self.a == self.b:
            raise LocalError(Reason.BAD_PARAMS, "participants are equal")
        if not isinstance(self.challenge_period, int) or not 0 < self.challenge_period <= MAX_CHALLENGE_PERIOD:
            raise LocalError(Reason.BAD_PARAMS, f"challenge period out of range: {self.challenge_period!r}")
        _check_uint(self.nonce, "nonce")

    def channel_id(self, chain_id: int, adjudicator: bytes) -> bytes:
        """keccak256(abi.encode(chainId, adjudicator, a, b, challengePeriod, nonce)), as on chain."""
        return keccak(
            abi_encode(
                ["uint256", "address", "address", "address", "uint256", "uint256"],
                [chain_id, adjudicator, self.a, self.b, self.challenge_period, self.nonce],
            )
        )

    def as_abi(self) -> tuple[str, str, int, int]:
        return (to_checksum(self.a), to_checksum(self.b), self.challenge_period, self.nonce)


@dataclass(frozen=True, slots=True)
class State:
    """One version of a channel. Counts only when both participants signed it."""

    channel_id: bytes
    version: int
    assets: tuple[bytes, ...]
    transfers: tuple[int, ...]
    is_final: bool = False
    app_data: bytes = bytes(32)

    def __post_init__(self) -> None:
        if not isinstance(self.channel_id, bytes) or len(self.channel_id) != 32:
            raise LocalError(Reason.BAD_CHANNEL_ID, "channel id must be 32 bytes")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or not 0 <= self.version <= MAX_VERSION:
            raise LocalError(Reason.BAD_VERSION, f"version must be an int in [0, 2**48), got {self.version!r}")
        if len(self.assets) != len(self.transfers):
            raise LocalError(Reason.BAD_ASSETS, "assets and transfers differ in length")
        if len(self.assets) > MAX_ASSETS:
            raise LocalError(Reason.BAD_ASSETS, f"at most {MAX_ASSETS} assets")
        previous = -1
        for asset in self.assets:
            key = int.from_bytes(_check_address(asset, "asset"), "big")
            if key <= previous:
                raise LocalError(Reason.BAD_ASSETS, "assets must be strictly ascending")
            previous = key
        for t in self.transfers:
            if not isinstance(t, int) or isinstance(t, bool) or not INT256_MIN <= t <= INT256_MAX:
                raise LocalError(Reason.BAD_AMOUNT, f"transfer must be an int256, got {t!r}")
        if not isinstance(self.app_data, bytes) or len(self.app_data) != 32:
            raise LocalError(Reason.BAD_PARAMS, "app data must be 32 bytes")

    def transfer_of(self, asset: bytes) -> int:
        for a, t in zip(self.assets, self.transfers, strict=True):
            if a == asset:
                return t
        return 0

    def as_abi(self) -> tuple[int, bool, list[str], list[int], bytes]:
        return (self.version, self.is_final, [to_checksum(a) for a in self.assets], list(self.transfers), self.app_data)


def payout(funded_a: int, funded_b: int, transfer: int) -> tuple[int, int]:
    """What A and B receive for one asset; raises when the transfer overdraws a side."""
    _check_uint(funded_a, "funded a")
    _check_uint(funded_b, "funded b")
    if transfer > funded_a or -transfer > funded_b:
        raise LocalError(Reason.BAD_AMOUNT, f"transfer {transfer} exceeds funds ({funded_a}, {funded_b})")
    return funded_a - transfer, funded_b + transfer


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """Both-signed permission to pay `amount` of `asset` to one participant while open."""

    channel_id: bytes
    participant: int
    asset: bytes
    amount: int
    nonce: int
    deadline: int
    """The last block timestamp at which the contract pays it: after that it can never execute, so both
    sides stop holding the amount back (a withdrawal that reverted or was never sent does not freeze it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.channel_id, bytes) or len(self.channel_id) != 32:
            raise LocalError(Reason.BAD_CHANNEL_ID, "channel id must be 32 bytes")
        if self.participant not in (0, 1):
            raise LocalError(Reason.BAD_PARAMS, "participant must be 0 or 1")
        _check_address(self.asset, "asset")
        _check_uint(self.amount, "amount")
        if self.amount == 0:
            raise LocalError(Reason.BAD_AMOUNT, "withdrawal of zero")
        _check_uint(self.nonce, "nonce")
        _check_uint(self.deadline, "deadline", MAX_TIMESTAMP)

    def as_abi(self) -> tuple[int, str, int, int, int]:
        return (self.participant, to_checksum(self.asset), self.amount, self.nonce, self.deadline)


@dataclass(frozen=True, slots=True)
class Domain:
    """The EIP-712 domain: one deployment of the adjudicator on one chain."""

    chain_id: int
    adjudicator: bytes
    name: str = "statechannel"
    version: str = "1"

    def __post_init__(self) -> None:
        _check_uint(self.chain_id, "chain id")
        _check_address(self.adjudicator, "adjudicator")

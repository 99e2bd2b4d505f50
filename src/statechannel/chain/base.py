"""The one small seam every chain backend fits behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from statechannel.core.crypto import PrivateKey

ERROR_SELECTOR = bytes.fromhex("08c379a0")


class ChainError(Exception):
    """The node refused or could not carry out a request."""


class TransactionReverted(ChainError):
    """The EVM reverted; `reason` is the contract's revert string ('' if none)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"reverted: {reason}" if reason else "reverted without a reason")
        self.reason = reason


def decode_revert(data: bytes) -> str:
    """The string of an Error(string) revert payload, or '' for anything else."""
    if data[:4] != ERROR_SELECTOR or len(data) < 68:
        return ""
    length = int.from_bytes(data[36:68], "big")
    return data[68 : 68 + length].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Log:
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: bytes
    log_index: int
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: bytes
    gas_used: int
    fee: int
    """gas_used times the effective gas price, in wei: what the sender paid."""
    block_number: int
    logs: tuple[Log, ...]
    contract_address: bytes | None


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: bytes
    timestamp: int


class Chain(Protocol):
    """An Ethereum chain we can transact on. Transactions are signed locally."""

    chain_id: int

    def send_transaction(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None
    ) -> Receipt:
        """Sign, send and wait for inclusion; raise TransactionReverted on revert."""
        ...

    def nudge(self, key: PrivateKey) -> None:
        """The transactions of `key` still out are stuck in the way of one that must go now (a challenge):
        each is replaced at higher fees, or sent again if the pool lost it, without waiting for it."""
        ...

    def resend_lost(self, key: PrivateKey) -> None:
        """Blocks were replaced: the transactions of `key` they held and the new ones lack go out again
        under their own nonces (so each still executes at most once)."""
        ...

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes: ...

    def call_many(self, calls: Sequence[tuple[bytes, bytes]]) -> list[bytes | TransactionReverted]:
        """Several (to, data) calls against one view of the latest block, in one round trip where the
        backend can; each answer is its return data or its revert. ChainError if the node cannot answer."""
        ...

    def get_logs(self, address: bytes, from_block: int, to_block: int) -> list[Log]: ...

    def pending(self, address: bytes) -> int:
        """How many transactions of `address` were sent but are not mined yet."""
        ...

    def transaction(self, tx_hash: bytes) -> tuple[bytes | None, bytes]:
        """(to, input) of a mined transaction: what it called, with which calldata."""
        ...

    def block(self, number: int | None = None) -> Block:
        """The block at `number`, or the latest one."""
        ...

    def balance(self, address: bytes) -> int: ...

    def fund(self, address: bytes, wei: int) -> None:
        """Give an account ether (development chains only)."""
        ...

    def advance_time(self, seconds: int) -> None:
        """Mine a block `seconds` later than the latest (development chains only)."""
        ...

    def mine(self, blocks: int = 1) -> None: ...

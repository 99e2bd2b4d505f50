"""In-process chain: py-evm through eth-tester. The default for the demo and unit tests."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionFailed
from eth_utils.exceptions import ValidationError

from statechannel.chain.base import Block, ChainError, Log, Receipt, TransactionReverted, decode_revert
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum

PRIORITY_FEE = 10**9
F = TypeVar("F", bound=Callable[..., Any])


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(str(value).removeprefix("0x"))


def _reason(exc: TransactionFailed) -> str:
    """The revert string, whichever of its three shapes eth-tester chose to raise."""
    arg = exc.args[0] if exc.args else ""
    if isinstance(arg, Exception) and arg.args:  # the estimator wraps py-evm's Revert(bytes)
        arg = arg.args[0]
    if isinstance(arg, bytes):
        return decode_revert(arg) or arg.decode("utf-8", errors="replace")
    text = str(arg)
    if text.startswith("0x08c379a0"):
        return decode_revert(_bytes(text))
    return text.removeprefix("execution reverted: ")


def _locked(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: EmbeddedChain, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, wrapper)


class EmbeddedChain:
    """A fresh chain in this process; time and blocks move only when asked.

    eth-tester is not thread-safe, and several nodes (each with its own chain
    thread) may share one embedded chain, so every call holds one lock.

    `block_time` (0: off) models a full chain for tests of timing under load: each transaction is
    then mined in its own block, `block_time` seconds after the block before it."""

    def __init__(self, block_time: int = 0) -> None:
        self.block_time = block_time
        self._lock = threading.RLock()
        self._backend = PyEVMBackend()
        self._tester = EthereumTester(self._backend, auto_mine_transactions=True)
        self.chain_id: int = self._backend.chain.chain_id
        self._faucet = PrivateKey(self._backend.account_keys[0].to_bytes())
        self._nonces: dict[bytes, int] = {}

    def _tx(self, to: bytes | None, data: bytes, value: int, sender: bytes) -> dict[str, Any]:
        tx: dict[str, Any] = {"from": to_checksum(sender), "data": _hex(data), "value": value}
        if to is not None:
            tx["to"] = to_checksum(to)
        return tx

    @_locked
    def send_transaction(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None
    ) -> Receipt:
        if gas is None:
            try:
                gas = self._tester.estimate_gas(self._tx(to, data, value, key.address))
            except TransactionFailed as exc:
                raise TransactionReverted(_reason(exc)) from exc
            except ValidationError as exc:  # e.g. the sender cannot pay value plus gas
                raise ChainError(str(exc)) from exc
        nonce = self._nonces.get(key.address)
        if nonce is None:
            nonce = self._tester.get_nonce(to_checksum(key.address))
        base_fee = int(self._tester.get_block_by_number("latest")["base_fee_per_gas"])
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": 2 * base_fee + PRIORITY_FEE,
            "maxPriorityFeePerGas": PRIORITY_FEE,
            "value": value,
            "data": data,
        }
        if to is not None:
            tx["to"] = to_checksum(to)
        raw = Account.sign_transaction(tx, key.secret).raw_transaction
        if self.block_time > 0:  # time_travel(t) mines an empty block at t - 1; this one lands at t
            self._tester.time_travel(self.block().timestamp + self.block_time)
        try:
            tx_hash = self._tester.send_raw_transaction(_hex(bytes(raw)))
        except TransactionFailed as exc:
            raise TransactionReverted(_reason(exc)) from exc
        except Exception as exc:  # eth-tester validation errors: bad nonce, funds
            self._nonces.pop(key.address, None)
            raise ChainError(str(exc)) from exc
        self._nonces[key.address] = nonce + 1
        r = self._tester.get_transaction_receipt(tx_hash)
        if r["status"] != 1:
            raise TransactionReverted(self._replay_reason(to, data, value, key.address))
        return Receipt(
            tx_hash=_bytes(r["transaction_hash"]),
            gas_used=int(r["gas_used"]),
            fee=int(r["gas_used"]) * int(r["effective_gas_price"]),
            block_number=int(r["block_number"]),
            logs=tuple(self._log(entry) for entry in r["logs"]),
            contract_address=_bytes(r["contract_address"]) if r["contract_address"] else None,
        )

    def _replay_reason(self, to: bytes | None, data: bytes, value: int, sender: bytes) -> str:
        """Why a mined transaction reverted: run it again as a call (a revert changed nothing)."""
        try:
            self._tester.call(self._tx(to, data, value, sender), "latest")
        except TransactionFailed as exc:
            return _reason(exc)
        return ""

    @staticmethod
    def _log(entry: dict[str, Any]) -> Log:
        return Log(
            address=_bytes(entry["address"]),
            topics=tuple(_bytes(t) for t in entry["topics"]),
            data=_bytes(entry["data"]),
            block_number=int(entry["block_number"]),
            block_hash=_bytes(entry["block_hash"]),
            log_index=int(entry["log_index"]),
            tx_hash=_bytes(entry["transaction_hash"]),
        )

    @_locked
    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes:
        tx = self._tx(to, data, 0, sender or self._faucet.address)
        try:
            return _bytes(self._tester.call(tx, "latest"))
        except TransactionFailed as exc:
            raise TransactionReverted(_reason(exc)) from exc

    @_locked
    def call_many(self, calls: Sequence[tuple[bytes, bytes]]) -> list[bytes | TransactionReverted]:
        out: list[bytes | TransactionReverted] = []
        for to, data in calls:  # under one lock: no block can come between them
            try:
                out.append(self.call(to, data))
            except TransactionReverted as exc:
                out.append(exc)
        return out

    @_locked
    def get_logs(self, address: bytes, from_block: int, to_block: int) -> list[Log]:
        entries = self._tester.get_logs(from_block=from_block, to_block=to_block, address=to_checksum(address))
        return [self._log(e) for e in entries]

    def pending(self, address: bytes) -> int:
        return 0  # every transaction is mined as it is sent

    def nudge(self, key: PrivateKey) -> None:
        """Nothing is ever out: each transaction is mined as it is sent."""

    def resend_lost(self, key: PrivateKey) -> None:
        """This chain never reorganises."""

    @_locked
    def transaction(self, tx_hash: bytes) -> tuple[bytes | None, bytes]:
        tx = self._tester.get_transaction_by_hash(_hex(tx_hash))
        to = tx.get("to")
        return (_bytes(to) if to else None), _bytes(tx["data"])

    @_locked
    def block(self, number: int | None = None) -> Block:
        try:
            b = self._tester.get_block_by_number("latest" if number is None else number)
        except BlockNotFound as exc:
            raise ChainError(f"no block {number}") from exc
        return Block(number=int(b["number"]), hash=_bytes(b["hash"]), timestamp=int(b["timestamp"]))

    @_locked
    def balance(self, address: bytes) -> int:
        return int(self._tester.get_balance(to_checksum(address)))

    @_locked
    def fund(self, address: bytes, wei: int) -> None:
        self.send_transaction(self._faucet, address, b"", value=wei, gas=21000)

    @_locked
    def advance_time(self, seconds: int) -> None:
        # eth-tester's time_travel(t) mines a block stamped t - 1
        self._tester.time_travel(self.block().timestamp + seconds + 1)

    @_locked
    def mine(self, blocks: int = 1) -> None:
        self._tester.mine_blocks(blocks)

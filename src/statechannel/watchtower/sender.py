"""Getting a challenge mined in time: explicit nonces, and same-nonce replacements with higher fees.

`Chain.send_transaction` sends once and waits, which is right for a node but not for a tower: a
challenge priced for a calm block can sit in the pool while the window runs out. On a JSON-RPC chain
the tower therefore signs its own EIP-1559 transactions, and when one is not mined within a few seconds
(or the node says it is underpriced) sends the same nonce again with both fees raised by at least
12.5%, the bump pools demand of a replacement. Whichever of the versions is mined ends the wait."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account

from statechannel.chain.base import Chain, ChainError, Receipt, TransactionReverted
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum

log = logging.getLogger(__name__)
DEFAULT_PRIORITY_FEE = 10**9
GAS_MARGIN_PERCENT = 25
MAX_ATTEMPTS = 20
RECEIPT_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class SentTx:
    """One version of a transaction handed to the chain."""

    tx_hash: bytes
    nonce: int
    max_fee: int
    priority_fee: int
    attempt: int


OnSent = Callable[[SentTx], None]


class Sender(Protocol):
    def send(
        self, to: bytes, data: bytes, *, timeout: float, on_sent: OnSent | None = None, cancel: threading.Event
    ) -> Receipt:
        """Send and wait for inclusion; TransactionReverted if it reverts (or would), ChainError otherwise."""
        ...

    def reset(self) -> None:
        """Forget what was assumed about the key's nonces (after a reorg)."""
        ...


def bump_fee(fee: int) -> int:
    """At least 12.5% more, rounded up, and never the same (a zero fee still rises)."""
    return fee + max(1, -(-fee // 8))


class PlainSender:
    """For chains that mine each transaction at once (the embedded EVM): nothing can sit in a pool."""

    def __init__(self, chain: Chain, key: PrivateKey) -> None:
        self.chain = chain
        self.key = key

    def send(
        self, to: bytes, data: bytes, *, timeout: float, on_sent: OnSent | None = None, cancel: threading.Event
    ) -> Receipt:
        receipt = self.chain.send_transaction(self.key, to, data)
        if on_sent is not None:
            on_sent(SentTx(receipt.tx_hash, -1, 0, 0, 1))
        return receipt

    def reset(self) -> None:
        """The chain client re-reads nonces after any failure by itself."""


class BumpingSender:
    """Sends through `RpcChain`'s JSON-RPC; safe to use from several threads (nonces are handed out
    under a lock, one per transaction, and re-read from the chain after any failure)."""

    def __init__(self, chain: RpcChain, key: PrivateKey, bump_after: float = 3.0) -> None:
        self.chain = chain
        self.key = key
        self.bump_after = bump_after
        self._nonce_lock = threading.Lock()
        self._next_nonce: int | None = None

    def _rpc(self, method: str, params: list[Any]) -> Any:
        return self.chain._rpc(method, params)

    def _call_tx(self, to: bytes, data: bytes) -> dict[str, Any]:
        return {"from": to_checksum(self.key.address), "to": to_checksum(to), "data": "0x" + data.hex()}

    def _take_nonce(self) -> int:
        with self._nonce_lock:
            if self._next_nonce is None:
                self._next_nonce = int(
                    self._rpc("eth_getTransactionCount", [to_checksum(self.key.address), "pending"]), 16
                )
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    def reset(self) -> None:
        self._forget_nonce()

    def _forget_nonce(self) -> None:
        with self._nonce_lock:
            self._next_nonce = None

    def _fees(self) -> tuple[int, int]:
        base = int(self._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        try:
            priority = int(self._rpc("eth_maxPriorityFeePerGas", []), 16)
        except ChainError:  # not every node answers it
            priority = DEFAULT_PRIORITY_FEE
        priority = max(priority, 1)
        return 2 * base + priority, priority

    def send(
        self, to: bytes, data: bytes, *, timeout: float, on_sent: OnSent | None = None, cancel: threading.Event
    ) -> Receipt:
        # Estimating first also dry-runs it: a challenge that would revert (someone was faster) costs nothing.
        estimate = int(self._rpc("eth_estimateGas", [self._call_tx(to, data)]), 16)
        gas = estimate + estimate * GAS_MARGIN_PERCENT // 100
        max_fee, priority = self._fees()
        nonce = self._take_nonce()
        try:
            return self._send_until_mined(to, data, gas, nonce, max_fee, priority, timeout, on_sent, cancel)
        except BaseException:
            self._forget_nonce()
            raise

    def _send_until_mined(
        self,
        to: bytes,
        data: bytes,
        gas: int,
        nonce: int,
        max_fee: int,
        priority: int,
        timeout: float,
        on_sent: OnSent | None,
        cancel: threading.Event,
    ) -> Receipt:
        deadline = time.monotonic() + timeout
        sent: list[bytes] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            tx = {
                "type": 2,
                "chainId": self.chain.chain_id,
                "nonce": nonce,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": priority,
                "to": to_checksum(to),
                "value": 0,
                "data": data,
            }
            signed = Account.sign_transaction(tx, self.key.secret)
            tx_hash = bytes(signed.hash)
            problem = self._broadcast(bytes(signed.raw_transaction))
            if problem is None:
                sent.append(tx_hash)
                if on_sent is not None:
                    on_sent(SentTx(tx_hash, nonce, max_fee, priority, attempt))
            elif "already known" in problem:
                sent.append(tx_hash)
            elif "nonce too low" in problem and not sent:
                raise ChainError(f"nonce {nonce} was taken by another transaction of this key")
            elif "underpriced" in problem:  # no use waiting: the node will not take it at this price
                max_fee, priority = bump_fee(max_fee), bump_fee(priority)
                continue
            receipt = self._wait_any(sent, min(deadline, time.monotonic() + self.bump_after), cancel)
            if receipt is not None:
                return self._finish(receipt, to, data)
            if cancel.is_set():
                raise ChainError("stopped before the transaction was mined")
            if time.monotonic() >= deadline:
                raise ChainError(f"not mined within {timeout:.0f}s after {attempt} attempts")
            max_fee, priority = bump_fee(max_fee), bump_fee(priority)
        raise ChainError(f"not mined after {MAX_ATTEMPTS} fee bumps")

    def _broadcast(self, raw: bytes) -> str | None:
        """None when the node took the transaction; the node's complaint when it is one a replacement
        (or a wait) answers: underpriced, already known, nonce too low. Anything else is raised."""
        try:
            self._rpc("eth_sendRawTransaction", ["0x" + raw.hex()])
        except TransactionReverted:
            raise
        except ChainError as exc:
            text = str(exc).lower()
            if not any(k in text for k in ("underpriced", "already known", "nonce too low")):
                raise
            log.info("challenge transaction not taken: %s", exc)
            return text
        return None

    def _wait_any(self, hashes: list[bytes], until: float, cancel: threading.Event) -> dict[str, Any] | None:
        """The receipt of whichever version got mined, polling until `until`."""
        while True:
            for h in hashes:
                r = self._rpc("eth_getTransactionReceipt", ["0x" + h.hex()])
                if r is not None:
                    return dict(r)
            if time.monotonic() >= until or cancel.is_set():
                return None
            cancel.wait(RECEIPT_POLL_S)

    def _finish(self, r: dict[str, Any], to: bytes, data: bytes) -> Receipt:
        if int(r["status"], 16) != 1:
            raise TransactionReverted(self._revert_reason(r, to, data))
        return Receipt(
            tx_hash=bytes.fromhex(str(r["transactionHash"])[2:]),
            gas_used=int(r["gasUsed"], 16),
            fee=int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16),
            block_number=int(r["blockNumber"], 16),
            logs=tuple(RpcChain._log(e) for e in r["logs"]),
            contract_address=None,
        )

    def _revert_reason(self, r: dict[str, Any], to: bytes, data: bytes) -> str:
        """Why a mined transaction reverted: replay it as a call on the state it ran against."""
        try:
            self._rpc("eth_call", [self._call_tx(to, data), hex(int(r["blockNumber"], 16) - 1)])
        except TransactionReverted as exc:
            return exc.reason
        return ""

"""A key's transactions on a JSON-RPC chain until they are mined, whatever the pool or a reorg does.

Ethereum executes at most one transaction per (sender, nonce). So a transaction is never sent again
under a new nonce while an earlier copy could still be mined: a retry of the same call (same target,
calldata and value) resumes the copy that is out, on its own nonce. While one waits, it is pushed:
sent again when the node no longer knows it (dropped from the pool, or its block reorged away), and
replaced at the same nonce with both fees raised by 12.5% (what pools demand of a replacement) when it
sits unmined. A transaction undone by a reorg is sent again (its nonce makes that safe) before anything
newer of the key, unless it would now revert: then its nonce is filled with an empty transfer, so
nothing behind it is stuck. Every nonce is read from the chain, never remembered past a send. One
lock per key serialises what it sends."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account

from statechannel.chain.base import ChainError, TransactionReverted
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum

log = logging.getLogger(__name__)
PRIORITY_FEE = 10**9
KEEP = 32
"""Mined transactions remembered per key (by nonce), to send again if a reorg undoes them."""
POLL_S = 0.25


class TransactionPending(ChainError):
    """Sent, not mined in time. It is still out: sending the same call again resumes it."""


class RpcUnavailable(ChainError):
    """The request got no answer (connection refused, reset, timed out): it may or may not have
    reached the node."""


def bump(fee: int) -> int:
    """At least 12.5% more, rounded up: the least a pool takes as a replacement."""
    return fee + max(1, -(-fee // 8))


@dataclass(eq=False)
class Sent:
    """One transaction of a key: every version sent under its nonce (rising fees), newest last."""

    nonce: int
    to: bytes | None
    data: bytes
    value: int
    gas: int
    max_fee: int
    priority: int
    raw: bytes = b""
    hashes: list[bytes] = field(default_factory=list)
    receipt: dict[str, Any] | None = None
    delivered: bool = False
    """Whether a caller got its receipt; until then a retry of the same call is this transaction."""

    def same_call(self, to: bytes | None, data: bytes, value: int) -> bool:
        return (self.to, self.data, self.value) == (to, data, value)


Rpc = Callable[[str, list[Any]], Any]


class Outbox:
    def __init__(self, rpc: Rpc, chain_id: int, receipt_timeout: float, bump_after: float) -> None:
        self._rpc = rpc
        self.chain_id = chain_id
        self.receipt_timeout = receipt_timeout
        self.bump_after = bump_after
        self._sent: dict[bytes, list[Sent]] = {}
        self._locks: dict[bytes, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, address: bytes) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    def _count(self, address: bytes, tag: str) -> int:
        return int(self._rpc("eth_getTransactionCount", [to_checksum(address), tag]), 16)

    def send(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int, gas: Callable[[], int]
    ) -> dict[str, Any]:
        """The receipt of this call, mined once; TransactionPending when it is not mined in time.
        `gas` is asked only for a new transaction (a resumed one has its own)."""
        with self._lock(key.address):
            deadline = time.monotonic() + self.receipt_timeout
            records = self._sent.setdefault(key.address, [])
            mined = self._count(key.address, "latest")
            records[:] = [r for r in records if r.nonce >= mined - KEEP]
            for r in records:
                if r.nonce >= mined and r.receipt is not None:
                    r.receipt = None  # mined once, undone by a reorg: out again below
            waiting = [r for r in records if r.nonce >= mined]
            same = next((r for r in records if not r.delivered and r.same_call(to, data, value)), None)
            for r in waiting:
                if same is not None and r.nonce >= same.nonce:
                    break
                self._push(key, r, deadline)  # in the way of this one: mined first
            if same is not None:
                return self._deliver(same, self._push(key, same, deadline))
            limit = gas()
            nonce = max(self._count(key.address, "pending"), records[-1].nonce + 1 if records else 0)
            max_fee, priority = self._fees()
            r = Sent(nonce, to, data, value, limit, max_fee, priority)
            self._sign(key, r)
            records.append(r)
            try:
                self._broadcast(r)
            except RpcUnavailable:
                pass  # it may have reached the node: waited for like any other (and sent again if not)
            except ChainError:
                records.remove(r)  # refused outright: never out
                raise
            return self._deliver(r, self._push(key, r, deadline, resumed=False))

    @staticmethod
    def _deliver(r: Sent, receipt: dict[str, Any]) -> dict[str, Any]:
        r.delivered = True
        return receipt

    def resend_lost(self, key: PrivateKey) -> None:
        """After a reorg: every mined transaction of the key it undid goes out again (or its nonce is
        filled), without waiting for them to be mined."""
        with self._lock(key.address):
            records = self._sent.get(key.address, [])
            mined = self._count(key.address, "latest")
            for r in list(records):
                if r.nonce >= mined and r.receipt is not None:
                    r.receipt = None
                    last = r is records[-1]
                    self._revive(key, r, drop_if_void=last)

    def _fees(self) -> tuple[int, int]:
        base = int(self._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        return 2 * base + PRIORITY_FEE, PRIORITY_FEE

    def _sign(self, key: PrivateKey, r: Sent) -> None:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": r.nonce,
            "gas": r.gas,
            "maxFeePerGas": r.max_fee,
            "maxPriorityFeePerGas": r.priority,
            "value": r.value,
            "data": r.data,
        }
        if r.to is not None:
            tx["to"] = to_checksum(r.to)
        signed = Account.sign_transaction(tx, key.secret)
        r.raw = bytes(signed.raw_transaction)
        r.hashes.append(bytes(signed.hash))

    def _broadcast(self, r: Sent) -> str | None:
        """None when the node took it; its complaint when a wait or a bump answers it."""
        try:
            self._rpc("eth_sendRawTransaction", ["0x" + r.raw.hex()])
        except RpcUnavailable:
            raise
        except ChainError as exc:
            text = str(exc).lower()
            if any(k in text for k in ("already known", "underpriced", "nonce too low")):
                return text
            raise
        return None

    def _receipt(self, r: Sent) -> dict[str, Any] | None:
        for h in reversed(r.hashes):
            found = self._rpc("eth_getTransactionReceipt", ["0x" + h.hex()])
            if found is not None:
                r.receipt = dict(found)
                return r.receipt
        return None

    def _known(self, r: Sent) -> bool:
        return any(self._rpc("eth_getTransactionByHash", ["0x" + h.hex()]) is not None for h in r.hashes[-1:])

    def _push(self, key: PrivateKey, r: Sent, deadline: float, resumed: bool = True) -> dict[str, Any]:
        """Wait for `r`, sending it again or replacing it at higher fees as it needs."""
        last = time.monotonic()
        delay = 0.002
        if resumed and self._receipt(r) is None and not self._known(r):  # dropped, or undone by a reorg
            self._revive(key, r)
        while True:
            try:
                receipt = self._receipt(r)
                if receipt is not None:
                    return receipt
                now = time.monotonic()
                if now >= deadline:
                    raise TransactionPending(
                        f"transaction 0x{r.hashes[-1].hex()} (nonce {r.nonce}) not mined after "
                        f"{self.receipt_timeout:.0f}s: still out, a retry resumes it"
                    )
                if now - last >= self.bump_after:
                    last = now
                    if self._count(key.address, "latest") > r.nonce and self._receipt(r) is None:
                        self._sent[key.address].remove(r)
                        raise ChainError(f"nonce {r.nonce} was used by another transaction of this key")
                    if self._known(r):
                        self._replace(key, r)
                    else:
                        self._revive(key, r)
            except RpcUnavailable:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, POLL_S)

    def _replace(self, key: PrivateKey, r: Sent) -> None:
        for _ in range(8):
            r.max_fee, r.priority = bump(r.max_fee), bump(r.priority)
            self._sign(key, r)
            problem = self._broadcast(r)
            if problem is None or "underpriced" not in problem:
                log.info("nonce %d not mined: sent again at max fee %d", r.nonce, r.max_fee)
                return

    def _revive(self, key: PrivateKey, r: Sent, drop_if_void: bool = False) -> None:
        """`r` is unknown to the node: out again as it was if it still does what it did (so a deposit
        undone by a reorg goes back in). If it would now revert it is forgotten when nothing of mine
        waits behind its nonce (`drop_if_void`), else the nonce carries an empty transfer to myself: a
        challenge that lost its point costs no more than 21,000 gas, and nothing behind it is stuck."""
        call: dict[str, Any] = {"from": to_checksum(key.address), "data": "0x" + r.data.hex(), "value": hex(r.value)}
        if r.to is not None:
            call["to"] = to_checksum(r.to)
        try:
            self._rpc("eth_call", [call, "latest"])
        except TransactionReverted as exc:
            if drop_if_void:
                log.info("nonce %d: its transaction would now revert (%s): not sent again", r.nonce, exc)
                self._sent[key.address].remove(r)
                return
            log.warning("nonce %d: its transaction would now revert (%s): filled with an empty one", r.nonce, exc)
            r.to, r.data, r.value, r.gas = key.address, b"", 0, 21_000
        base, _ = self._fees()
        r.max_fee, r.priority = max(bump(r.max_fee), base), bump(r.priority)
        self._sign(key, r)
        log.info("nonce %d was not on chain nor in the pool: sent again", r.nonce)
        self._broadcast(r)

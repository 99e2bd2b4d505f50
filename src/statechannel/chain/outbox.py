"""A key's transactions on a JSON-RPC chain until they are mined, whatever the pool or a reorg does.

Ethereum executes at most one transaction per (sender, nonce). So a transaction is never sent again
under a new nonce while an earlier copy could still be mined: a retry of the same call (same target,
calldata and value) resumes the copy that is out, on its own nonce. While one waits, it is pushed:
sent again when the node no longer knows it (dropped from the pool, or its block reorged away), and
replaced at the same nonce with both fees raised by 12.5% (what pools demand of a replacement) when it
sits unmined. A transaction undone by a reorg is sent again (its nonce makes that safe) before anything
newer of the key, unless it would now revert: then its nonce is filled with an empty transfer, so
nothing behind it is stuck. Every nonce is read from the chain, never remembered past a send. One
lock per key serialises what it sends.

With a `journal` file the records survive a restart: every transaction is written there (atomically,
0600) after it is signed and before it is broadcast, and again when it is replaced, mined or handed
to its caller. A node killed while its transaction waits finds it on start, so its retry of the same
call resumes that transaction (same nonce) instead of sending a second, conflicting one."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


MAX_VERSIONS = 20
"""Versions of one transaction at rising fees (12.5% each: the last offers about 10.5 times the first); past
this the last version is left to be mined (a node's and a tower's sender alike)."""


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

    def dump(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "to": self.to.hex() if self.to is not None else None,
            "data": self.data.hex(),
            "value": str(self.value),
            "gas": self.gas,
            "max_fee": str(self.max_fee),
            "priority": str(self.priority),
            "raw": self.raw.hex(),
            "hashes": [h.hex() for h in self.hashes],
            "receipt": self.receipt,
            "delivered": self.delivered,
        }

    @classmethod
    def load(cls, d: dict[str, Any]) -> Sent:
        to = d["to"]
        receipt = d["receipt"]
        if receipt is not None and not isinstance(receipt, dict):
            raise ValueError(f"receipt {receipt!r:.60} is no object")
        sent = cls(
            nonce=int(d["nonce"]),
            to=bytes.fromhex(to) if to is not None else None,
            data=bytes.fromhex(d["data"]),
            value=int(d["value"]),
            gas=int(d["gas"]),
            max_fee=int(d["max_fee"]),
            priority=int(d["priority"]),
            raw=bytes.fromhex(d["raw"]),
            hashes=[bytes.fromhex(h) for h in d["hashes"]],
            receipt=receipt,
            delivered=bool(d["delivered"]),
        )
        if sent.nonce < 0 or sent.value < 0 or (sent.to is not None and len(sent.to) != 20) or not sent.hashes:
            raise ValueError(f"record of nonce {sent.nonce} is malformed")
        if any(len(h) != 32 for h in sent.hashes):
            raise ValueError(f"record of nonce {sent.nonce} has a hash that is not 32 bytes")
        return sent


class JournalError(ChainError):
    """The outbox journal can not be read (corrupt, or of another chain): nothing is sent until it is
    mended, since sending without it could repeat a transaction that is still out."""


Rpc = Callable[[str, list[Any]], Any]


class Outbox:
    def __init__(
        self, rpc: Rpc, chain_id: int, receipt_timeout: float, bump_after: float, journal: Path | None = None
    ) -> None:
        self._rpc = rpc
        self.chain_id = chain_id
        self.receipt_timeout = receipt_timeout
        self.bump_after = bump_after
        self.journal = journal
        self._sent: dict[bytes, list[Sent]] = {}
        self._locks: dict[bytes, threading.Lock] = {}
        self._guard = threading.Lock()
        self._writing = threading.Lock()
        if journal is not None and journal.exists():
            self._sent = self._read(journal)

    def _read(self, path: Path) -> dict[bytes, list[Sent]]:
        try:
            doc = json.loads(path.read_text())
            if int(doc["chain_id"]) != self.chain_id:
                raise JournalError(f"{path} holds transactions of chain {doc['chain_id']}, not {self.chain_id}")
            out: dict[bytes, list[Sent]] = {}
            for address, records in doc["keys"].items():
                key = bytes.fromhex(address)
                if len(key) != 20:
                    raise ValueError(f"{address!r:.50} is no address")
                out[key] = sorted((Sent.load(r) for r in records), key=lambda r: r.nonce)
        except JournalError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JournalError(f"{path} can not be read ({type(exc).__name__}: {exc}): mend or remove it") from None
        if out:
            waiting = sum(1 for records in out.values() for r in records if r.receipt is None)
            log.info("outbox journal %s: %d transactions remembered, %d not seen mined", path, len(out), waiting)
        return out

    def _save(self) -> None:
        """The records, written atomically (a temporary file renamed over the journal), 0600."""
        if self.journal is None:
            return
        with self._writing:
            doc = {
                "chain_id": self.chain_id,
                "keys": {a.hex(): [r.dump() for r in list(rs)] for a, rs in list(self._sent.items())},
            }
            tmp = self.journal.with_name(self.journal.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(doc).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.journal)
            dfd = os.open(self.journal.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

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
            if any(r.nonce < mined - KEEP for r in records):
                records[:] = [r for r in records if r.nonce >= mined - KEEP]
                self._save()
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
            self._sign(key, r, save=False)
            records.append(r)
            self._save()  # before it is out: a node killed from here on finds it
            try:
                self._broadcast(r)
            except RpcUnavailable:
                pass  # it may have reached the node: waited for like any other (and sent again if not)
            except ChainError:
                records.remove(r)  # refused outright: never out
                self._save()
                raise
            return self._deliver(r, self._push(key, r, deadline, resumed=False))

    def _deliver(self, r: Sent, receipt: dict[str, Any]) -> dict[str, Any]:
        r.delivered = True
        self._save()
        return receipt

    def nudge(self, key: PrivateKey) -> None:
        """Each transaction of the key still out, replaced at higher fees (sent again if the pool lost it),
        without waiting for any: something that must go now (a challenge) waits behind them, and only a retry
        of their own calls pushed them before. Never waits for the key's lock: a send under way pushes them."""
        lock = self._lock(key.address)
        if not lock.acquire(blocking=False):
            return
        try:
            mined = self._count(key.address, "latest")
            for r in list(self._sent.get(key.address, [])):
                if r.nonce >= mined and self._receipt(r) is None:
                    if self._known(r):
                        self._replace(key, r)
                    else:
                        self._revive(key, r)
        finally:
            lock.release()

    def resend_lost(self, key: PrivateKey) -> None:
        """After a reorg: every mined transaction of the key it undid goes out again (or its nonce is
        filled), without waiting for them to be mined. It never waits for the key's lock: a send under
        way (perhaps hanging on a slow node) holds it, and the watcher that calls this must not wait
        behind it; that send, or the next, finds the undone transactions itself and sends them first."""
        lock = self._lock(key.address)
        if not lock.acquire(blocking=False):
            log.info("a send is under way: the transactions a reorg undid go out with it")
            return
        try:
            records = self._sent.get(key.address, [])
            mined = self._count(key.address, "latest")
            for r in list(records):
                if r.nonce >= mined and r.receipt is not None:
                    r.receipt = None
                    last = r is records[-1]
                    self._revive(key, r, drop_if_void=last)
        finally:
            lock.release()

    def _fees(self) -> tuple[int, int]:
        base = int(self._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        return 2 * base + PRIORITY_FEE, PRIORITY_FEE

    def _sign(self, key: PrivateKey, r: Sent, save: bool = True) -> None:
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
        if save:
            self._save()  # a replacement is remembered before it is out

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
                        self._save()
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
        floor = 0
        if len(r.hashes) >= MAX_VERSIONS:  # no more bidding: it stays out as it is while the chain can mine it,
            floor, _ = self._fees()  # and follows the base fee when that rises past what it offers
            if r.max_fee >= (floor - PRIORITY_FEE) // 2 + r.priority:  # the base fee and its own tip
                return
        for _ in range(8):
            r.max_fee, r.priority = max(bump(r.max_fee), floor), bump(r.priority)
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
                self._save()
                return
            log.warning("nonce %d: its transaction would now revert (%s): filled with an empty one", r.nonce, exc)
            r.to, r.data, r.value, r.gas = key.address, b"", 0, 21_000
        base, _ = self._fees()
        if len(r.hashes) < MAX_VERSIONS:
            r.max_fee, r.priority = max(bump(r.max_fee), base), bump(r.priority)
        else:  # no higher tip; the base fee is the chain's, not a bid: without it the pool will not take it
            r.max_fee = max(r.max_fee, base)
        self._sign(key, r)
        log.info("nonce %d was not on chain nor in the pool: sent again", r.nonce)
        self._broadcast(r)

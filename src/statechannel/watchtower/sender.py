"""Getting many challenges mined in time from one key: local nonces, no waiting, same-nonce replacements.

`Chain.send_transaction` sends once and waits, which is right for a node but not for a tower: under a
flood of disputes, a tower that waits for each transaction before sending the next answers one dispute
per block. The tower's sender therefore hands out consecutive nonces itself and broadcasts each
challenge as soon as it is decided; `poll` then reads every receipt in one batch, and any transaction
not mined within `bump_after` seconds (or refused as underpriced) is sent again at the same nonce with
both fees raised by at least 12.5%, the bump pools demand of a replacement. A challenge that is no
longer wanted (someone answered, the window ended) is `abandon`ed: its nonce is filled with a cheap
transfer to the tower itself, so the nonces after it are not stuck behind a gap.

Blocking calls, meant for one worker thread (none of this is thread-safe)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from eth_account import Account

from statechannel.chain.base import Chain, ChainError, Receipt, TransactionReverted
from statechannel.chain.outbox import MAX_VERSIONS, RpcUnavailable
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum

log = logging.getLogger(__name__)
DEFAULT_PRIORITY_FEE = 10**9
GAS_MARGIN_PERCENT = 25
FEE_TTL_S = 2.0
TRANSFER_GAS = 21_000
KNOWN = ("already known", "already imported", "known transaction")
"""How nodes say they hold this very transaction (geth, anvil, older clients)."""
MAX_GAS = 1 << 32
"""No block holds this much gas: an estimate above it is a node's junk, not a reason to sign."""


@dataclass(frozen=True, slots=True)
class SentTx:
    """One version of a transaction handed to the chain."""

    tx_hash: bytes
    nonce: int
    max_fee: int
    priority_fee: int
    attempt: int


OnSent = Callable[[SentTx], None]


@dataclass(frozen=True, slots=True)
class Call:
    """One transaction to send: its target, calldata, and who to tell of each version broadcast."""

    to: bytes
    data: bytes
    on_sent: OnSent | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """How one submitted transaction ended."""

    ticket: int
    receipt: Receipt | None
    """Set when it was mined and succeeded."""
    error: ChainError | None = None
    """TransactionReverted when it was mined and reverted; another ChainError when its nonce went to
    another transaction of this key; None with no receipt when it was abandoned and its filler mined."""


class Sender(Protocol):
    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        """Dry-run, sign and broadcast with this key's next nonce; a ticket, at once (not waiting for it
        to be mined). TransactionReverted if the dry run reverts (nothing is sent), ChainError if it
        could not be sent."""
        ...

    def submit_many(self, calls: Sequence[Call]) -> list[int | ChainError]:
        """`submit` for each call, at consecutive nonces in the order given, as few round trips as the chain
        allows; per call its ticket, or the error `submit` would have raised (nothing sent for that one)."""
        ...

    def poll(self) -> list[Settled]:
        """Look at everything in flight, replace what waits too long with higher fees; what ended."""
        ...

    def abandon(self, ticket: int) -> None:
        """No longer wanted: fill its nonce with a transfer to self (it may still be mined first)."""
        ...

    def in_flight(self) -> int: ...

    def reset(self) -> None:
        """Forget what was assumed about the key's nonces (after a reorg)."""
        ...


def estimated_gas(answer: Any) -> int:
    """A node's answer to eth_estimateGas, checked: a hex quantity from a transfer's gas up to MAX_GAS.
    ChainError otherwise (nothing is signed on a junk estimate)."""
    gas = -1
    if isinstance(answer, str) and answer.startswith("0x"):
        with contextlib.suppress(ValueError):
            gas = int(answer, 16)
    if not TRANSFER_GAS <= gas <= MAX_GAS:
        raise ChainError(f"eth_estimateGas: the node answered {answer!r:.80}, not a gas amount")
    return gas


def bump_fee(fee: int) -> int:
    """At least 12.5% more, rounded up, and never the same (a zero fee still rises)."""
    return fee + max(1, -(-fee // 8))


class OneByOne:
    """`submit_many` as one `submit` after another, for senders with nothing to gain from batching."""

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        raise NotImplementedError

    def submit_many(self, calls: Sequence[Call]) -> list[int | ChainError]:
        out: list[int | ChainError] = []
        for c in calls:
            try:
                out.append(self.submit(c.to, c.data, on_sent=c.on_sent))
            except ChainError as exc:
                out.append(exc)
        return out


class PlainSender(OneByOne):
    """For chains that mine each transaction at once (the embedded EVM): nothing can sit in a pool."""

    def __init__(self, chain: Chain, key: PrivateKey) -> None:
        self.chain = chain
        self.key = key
        self._tickets = itertools.count(1)
        self._done: list[Settled] = []

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        ticket = next(self._tickets)
        try:
            receipt = self.chain.send_transaction(self.key, to, data)
        except TransactionReverted:
            raise
        if on_sent is not None:
            on_sent(SentTx(receipt.tx_hash, -1, 0, 0, 1))
        self._done.append(Settled(ticket, receipt))
        return ticket

    def poll(self) -> list[Settled]:
        done, self._done = self._done, []
        return done

    def abandon(self, ticket: int) -> None:
        """Already mined: nothing to fill."""

    def in_flight(self) -> int:
        return len(self._done)

    def reset(self) -> None:
        """The chain client re-reads nonces after any failure by itself."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    ticket: int
    nonce: int
    to: bytes
    data: bytes
    gas: int
    max_fee: int
    priority: int
    hashes: tuple[bytes, ...] = ()
    """Every version broadcast, oldest first; a filler's versions come after `filled_from`."""
    filled_from: int | None = None
    """Set once abandoned: versions from this index on are the transfer to self."""
    fill: bool = False
    """Abandoned, its filler not sent yet: it goes out with the next poll's batch."""
    sent_at: float = 0.0
    versions: int = 0
    taken_seen: int = 0
    """Polls that found the nonce used with none of our versions mined (two in a row settle it)."""
    on_sent: OnSent | None = None


class BumpingSender:
    """Many transactions in flight through `RpcChain`'s JSON-RPC, at consecutive nonces."""

    def __init__(self, chain: RpcChain, key: PrivateKey, bump_after: float = 3.0) -> None:
        self.chain = chain
        self.key = key
        self.bump_after = bump_after
        self._next_nonce: int | None = None
        self._flight: dict[int, _InFlight] = {}
        self._tickets = itertools.count(1)
        self._fees_cache: tuple[float, int, int] | None = None
        self._stale = False
        """A `reset` asked for, not yet done."""

    def _rpc(self, method: str, params: list[Any]) -> Any:
        return self.chain._rpc(method, params)

    def _call_tx(self, to: bytes, data: bytes) -> dict[str, Any]:
        return {"from": to_checksum(self.key.address), "to": to_checksum(to), "data": "0x" + data.hex()}

    def in_flight(self) -> int:
        return len(self._flight)

    def reset(self) -> None:
        """Taken up by the next submission: the watcher calls this from its own thread, and a reset between
        two nonces of a batch would make the rest re-read a count that does not hold the batch yet."""
        self._stale = True

    def _forget(self) -> None:
        """On the sender's thread: nonces and fees are read again from the node."""
        self._stale = False
        self._next_nonce = None
        self._fees_cache = None

    def _take_nonce(self) -> int:
        if self._next_nonce is None:
            self._next_nonce = int(self._rpc("eth_getTransactionCount", [to_checksum(self.key.address), "pending"]), 16)
            taken = [tx.nonce for tx in self._flight.values()]
            if taken:
                self._next_nonce = max(self._next_nonce, max(taken) + 1)
        nonce = self._next_nonce
        self._next_nonce += 1
        return nonce

    def _fees(self) -> tuple[int, int]:
        now = time.monotonic()
        if self._fees_cache is not None and now - self._fees_cache[0] < FEE_TTL_S:
            return self._fees_cache[1], self._fees_cache[2]
        base = int(self._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        try:
            priority = int(self._rpc("eth_maxPriorityFeePerGas", []), 16)
        except ChainError:  # not every node answers it
            priority = DEFAULT_PRIORITY_FEE
        priority = max(priority, 1)
        self._fees_cache = (now, 2 * base + priority, priority)
        return 2 * base + priority, priority

    # ------------------------------------------------------------ sending

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        if self._stale:
            self._forget()
        # Estimating first also dry-runs it: a challenge that would revert (someone was faster) costs nothing.
        estimate = estimated_gas(self._rpc("eth_estimateGas", [self._call_tx(to, data)]))
        max_fee, priority = self._fees()
        nonce = self._take_nonce()
        tx = _InFlight(
            next(self._tickets), nonce, to, data, estimate + estimate * GAS_MARGIN_PERCENT // 100, max_fee, priority
        )
        tx = replace(tx, on_sent=on_sent)
        try:
            tx = self._broadcast(tx)
        except ChainError:
            self._give_back(nonce)
            raise
        self._flight[tx.ticket] = tx
        return tx.ticket

    def submit_many(self, calls: Sequence[Call]) -> list[int | ChainError]:
        """Under a flood a tower must send hundreds of challenges before the next block: one batch of dry
        runs (gas estimates), every transaction signed here at consecutive nonces, one batch of broadcasts.
        A broadcast the node refused is retried alone through `_broadcast` (fee bumps, nonce checks), and a
        nonce that could not be used is filled, so no later challenge is stuck behind a gap."""
        if not calls:
            return []
        if self._stale:
            self._forget()
        estimates = self.chain.rpc_batch([("eth_estimateGas", [self._call_tx(c.to, c.data)]) for c in calls])
        max_fee, priority = self._fees()
        out: list[int | ChainError] = []
        signed: list[tuple[int, _InFlight]] = []  # (index in out, tx)
        for c, answer in zip(calls, estimates, strict=True):
            try:  # checked before a nonce is taken: a junk answer fails its call alone, leaving no gap
                if isinstance(answer, ChainError):  # TransactionReverted: the dry run failed, nothing is sent
                    raise answer
                gas = estimated_gas(answer)
            except ChainError as exc:
                out.append(exc)
                continue
            tx = _InFlight(
                next(self._tickets),
                self._take_nonce(),
                c.to,
                c.data,
                gas + gas * GAS_MARGIN_PERCENT // 100,
                max_fee,
                priority,
                on_sent=c.on_sent,
            )
            out.append(tx.ticket)
            signed.append((len(out) - 1, tx))
        results = list(zip(signed, self._send_all([tx for _, tx in signed]), strict=True))
        for (i, tx), sent in reversed(results):  # the highest first: unused nonces at the end are handed back
            if isinstance(sent, ChainError):
                self._give_back(tx.nonce)
                out[i] = sent
            else:
                self._flight[tx.ticket] = sent
        return out

    def _send_all(self, txs: list[_InFlight]) -> list[_InFlight | ChainError]:
        """Each of `txs` signed at its fees and broadcast in one batch; per tx its updated record, or the
        ChainError `_broadcast` would have raised for it. Those refused as underpriced go again together at
        bumped fees (a node's price floor must not cost a round trip per challenge); one refused otherwise
        (known, nonce too low...) is sent again alone through `_broadcast`, which knows what to do about each."""
        out: list[_InFlight | ChainError | None] = [None] * len(txs)
        todo = list(enumerate(txs))
        for _ in range(MAX_VERSIONS):
            if not todo:
                break
            signed = [(i, tx, *self._sign(tx)) for i, tx in todo]
            try:
                answers: list[Any] = self.chain.rpc_batch(
                    [("eth_sendRawTransaction", ["0x" + raw.hex()]) for _, _, _, raw in signed]
                )
            except ChainError as exc:
                # No answer per transaction (none at all, one error for the whole batch, a short list, a later
                # chunk lost after an earlier one was taken): the node may hold any of them, and their nonces
                # are taken. Each is followed as sent; poll finds its receipt, or sends it again with bumped fees.
                log.info("a batch of %d transactions got no usable answer (%s): following them as sent", len(todo), exc)
                answers = [None] * len(todo)
            todo = []
            for (i, tx, tx_hash, _), answer in zip(signed, answers, strict=True):
                if not isinstance(answer, ChainError) or isinstance(answer, RpcUnavailable):
                    out[i] = self._sent(tx, tx_hash)
                elif tx_hash in tx.hashes and any(k in str(answer).lower() for k in KNOWN):
                    out[i] = replace(tx, sent_at=time.monotonic())  # a version sent again: the node holds it
                elif "underpriced" in str(answer).lower() and not isinstance(answer, TransactionReverted):
                    todo.append((i, replace(tx, max_fee=bump_fee(tx.max_fee), priority=bump_fee(tx.priority))))
                else:
                    try:
                        out[i] = self._broadcast(tx)
                    except ChainError as exc:
                        out[i] = exc
        for i, tx in todo:
            out[i] = ChainError(f"nonce {tx.nonce}: still underpriced after {MAX_VERSIONS} fee bumps")
        return [r if r is not None else ChainError("not sent") for r in out]

    def _sign(self, tx: _InFlight) -> tuple[bytes, bytes]:
        fields = {
            "type": 2,
            "chainId": self.chain.chain_id,
            "nonce": tx.nonce,
            "gas": tx.gas,
            "maxFeePerGas": tx.max_fee,
            "maxPriorityFeePerGas": tx.priority,
            "to": to_checksum(tx.to),
            "value": 0,
            "data": tx.data,
        }
        signed = Account.sign_transaction(fields, self.key.secret)
        return bytes(signed.hash), bytes(signed.raw_transaction)

    def _sent(self, tx: _InFlight, tx_hash: bytes) -> _InFlight:
        """`tx` with one more version handed to the chain (and its owner told); its last version sent again
        (to a node that had dropped it) is no new version."""
        if tx.hashes and tx.hashes[-1] == tx_hash:
            return replace(tx, sent_at=time.monotonic())
        tx = replace(tx, hashes=(*tx.hashes, tx_hash), sent_at=time.monotonic(), versions=tx.versions + 1)
        if tx.on_sent is not None:
            tx.on_sent(SentTx(tx_hash, tx.nonce, tx.max_fee, tx.priority, tx.versions))
        return tx

    def _give_back(self, nonce: int) -> None:
        """A nonce taken but not used: handed out again if it was the last, else filled (a gap would
        hold every later transaction of this key)."""
        if self._next_nonce == nonce + 1:
            self._next_nonce = nonce
            return
        max_fee, priority = self._fees()
        filler = _InFlight(next(self._tickets), nonce, self.key.address, b"", TRANSFER_GAS, max_fee, priority)
        try:
            self._flight[filler.ticket] = self._broadcast(replace(filler, filled_from=0))
        except ChainError as exc:
            log.warning("could not fill nonce %d (re-reading nonces): %s", nonce, exc)
            self._forget()

    def abandon(self, ticket: int) -> None:
        """Marked to be filled; the filler goes out in the next `poll`'s batch with the fee bumps, so a flood of
        challenges made moot at once (the attacker answering its own channels) costs one round trip, not one
        each, before the next challenge can be sent."""
        tx = self._flight.get(ticket)
        if tx is None or tx.filled_from is not None:
            return
        self._flight[ticket] = replace(tx, fill=True)

    def _filler(self, tx: _InFlight) -> _InFlight:
        """A transfer to self at `tx`'s nonce, priced to replace it."""
        return replace(
            tx,
            to=self.key.address,
            data=b"",
            gas=TRANSFER_GAS,
            max_fee=bump_fee(tx.max_fee),
            priority=bump_fee(tx.priority),
            filled_from=len(tx.hashes),
            on_sent=None,
            fill=False,
        )

    def _broadcast(self, tx: _InFlight) -> _InFlight:
        """Sign and send `tx` at its fees (raised while the node calls them too low); the updated record.
        ChainError when no node took any version."""
        for _ in range(MAX_VERSIONS):
            tx_hash, raw = self._sign(tx)
            try:
                self._rpc("eth_sendRawTransaction", ["0x" + raw.hex()])
                problem = ""
            except TransactionReverted:
                raise
            except RpcUnavailable as exc:
                # No answer (timeout, reset, a proxy's 5xx): the node may hold it. Counted as sent, so the
                # nonce is not given back to another transaction; poll finds its receipt, or resends it
                # with bumped fees after bump_after if the node never had it.
                log.info("sending the transaction at nonce %d got no answer (%s): following it as sent", tx.nonce, exc)
                problem = ""
            except ChainError as exc:
                problem = str(exc).lower()
                if not any(k in problem for k in ("underpriced", "nonce too low", *KNOWN)):
                    raise
                log.info("transaction at nonce %d not taken: %s", tx.nonce, exc)
            if "underpriced" in problem:  # no use waiting: the node will not take it at this price
                tx = replace(tx, max_fee=bump_fee(tx.max_fee), priority=bump_fee(tx.priority))
                continue
            if "nonce too low" in problem:
                if tx.hashes:
                    return tx  # one of the versions sent before was mined: poll finds its receipt
                if self._mined(tx_hash):  # this very version, taken by an earlier send whose answer was an error
                    return self._sent(tx, tx_hash)
                self._forget()
                raise ChainError(f"nonce {tx.nonce} was taken by another transaction of this key")
            if problem and tx_hash in tx.hashes:  # known: the node holds this very version, its owner was told
                return replace(tx, sent_at=time.monotonic())
            return self._sent(tx, tx_hash)  # taken now, or before by a send whose answer was an error
        raise ChainError(f"nonce {tx.nonce}: still underpriced after {MAX_VERSIONS} fee bumps")

    def _mined(self, tx_hash: bytes) -> bool:
        try:
            return self._rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()]) is not None
        except ChainError:
            return False

    # ------------------------------------------------------------ following

    def poll(self) -> list[Settled]:
        if not self._flight:
            return []
        flight = list(self._flight.values())
        # the mined nonce first: a receipt read after it cannot miss a transaction counted in it
        requests: list[tuple[str, list[Any]]] = [("eth_getTransactionCount", [to_checksum(self.key.address), "latest"])]
        for tx in flight:
            requests.extend(("eth_getTransactionReceipt", ["0x" + h.hex()]) for h in tx.hashes)
        answers = self.chain.rpc_batch(requests)
        if isinstance(answers[0], ChainError):
            raise answers[0]
        mined_nonce = int(answers[0], 16)
        done, at = [], 1
        due: list[_InFlight] = []  # new versions to send: fillers of abandoned ones, bumps of those waiting
        for tx in flight:
            found = None
            for i, answer in enumerate(answers[at : at + len(tx.hashes)]):
                if answer is not None and not isinstance(answer, ChainError):
                    found = (i, answer)
            at += len(tx.hashes)
            if found is not None:
                try:
                    settled = self._settled(tx, found[0], dict(found[1]))
                except (KeyError, TypeError, ValueError) as exc:  # junk: read again next poll, lose no other
                    log.warning("the receipt of the transaction at nonce %d is unreadable: %r", tx.nonce, exc)
                    continue
                del self._flight[tx.ticket]
                done.append(settled)
            elif mined_nonce > tx.nonce:
                if tx.taken_seen >= 1:
                    del self._flight[tx.ticket]
                    done.append(Settled(tx.ticket, None, ChainError(f"nonce {tx.nonce} went to another transaction")))
                else:
                    self._flight[tx.ticket] = replace(tx, taken_seen=1)
            elif tx.fill:
                due.append(self._filler(tx))
            elif time.monotonic() - tx.sent_at >= self.bump_after and tx.versions < MAX_VERSIONS:
                due.append(replace(tx, max_fee=bump_fee(tx.max_fee), priority=bump_fee(tx.priority)))
            elif time.monotonic() - tx.sent_at >= self.bump_after:
                followed = self._following_base(tx)
                if followed is not None:
                    due.append(followed)
        for tx, sent in zip(due, self._send_all(due), strict=True):
            if isinstance(sent, ChainError):  # kept as it was: bumped (or filled) again next poll
                log.warning("replacing the transaction at nonce %d failed: %s", tx.nonce, sent)
            else:
                self._flight[tx.ticket] = sent
        return done

    def _following_base(self, tx: _InFlight) -> _InFlight | None:
        """Past its last version a transaction bids no more, but a base fee that rose past what it offers (its
        tip on top) is the chain's price, not a bid: without following it no block could ever include the
        challenge, and its window would end unanswered. Its replacement offers twice the base fee and the
        least higher tip a pool takes. While it can pay both, its last version as it is (sent again: a node
        that dropped it from its pool, restarted or evicting, would never see that nonce again); None when
        the fees can not be read now (a failure here must not lose the receipts this poll already took)."""
        try:
            fee, priority = self._fees()
        except (ChainError, KeyError, TypeError, ValueError) as exc:  # a node's junk block as well
            log.warning("reading the base fee failed (the transaction at nonce %d waits as it is): %r", tx.nonce, exc)
            return None
        base = (fee - priority) // 2
        if tx.max_fee >= base + tx.priority:
            return tx  # its last version again, as it is: a node that dropped it from its pool holds it again
        tip = bump_fee(tx.priority)
        return replace(tx, max_fee=max(bump_fee(tx.max_fee), 2 * base + tip), priority=tip)

    def _settled(self, tx: _InFlight, index: int, r: dict[str, Any]) -> Settled:
        if tx.filled_from is not None and index >= tx.filled_from:
            return Settled(tx.ticket, None)
        if int(r["status"], 16) != 1:
            return Settled(tx.ticket, None, TransactionReverted(self._revert_reason(r, tx.to, tx.data)))
        return Settled(
            tx.ticket,
            Receipt(
                tx_hash=bytes.fromhex(str(r["transactionHash"])[2:]),
                gas_used=int(r["gasUsed"], 16),
                fee=int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16),
                block_number=int(r["blockNumber"], 16),
                logs=tuple(RpcChain._log(e) for e in r["logs"]),
                contract_address=None,
            ),
        )

    def _revert_reason(self, r: dict[str, Any], to: bytes, data: bytes) -> str:
        """Why a mined transaction reverted: replay it as a call on the state it ran against."""
        try:
            self._rpc("eth_call", [self._call_tx(to, data), hex(int(r["blockNumber"], 16) - 1)])
        except TransactionReverted as exc:
            return exc.reason
        except ChainError:
            return ""
        return ""

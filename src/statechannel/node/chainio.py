"""Everything the node does with the chain, on two worker threads: one sends, one reads.

Submissions go through the send thread, one at a time (so nonces never race); the watcher's reads
and every other query go through the read thread, so a send that hangs (a node that takes minutes to
answer `eth_sendRawTransaction`, a transaction waiting for its receipt) never delays seeing a
counterparty's close. On a backend that is not thread-safe (the embedded EVM: no `concurrent`
attribute) both threads take one lock, so its calls never run side by side. The watcher reads events
from a checkpoint, turns the ones about our channels into machine inputs, and notices reorgs."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from statechannel.chain.adjudicator import Adjudicator, Status, Token
from statechannel.chain.base import Chain, ChainError, Receipt, TransactionReverted
from statechannel.core.channel import Channel
from statechannel.core.crypto import PrivateKey
from statechannel.core.io import (
    ChainConcluded,
    ChainDisputeRecorded,
    ChainFunded,
    ChainOpened,
    ChainWithdrawn,
    Input,
    SubmitTxChallenge,
    SubmitTxClose,
    SubmitTxCloseCooperative,
    SubmitTxDeposit,
    SubmitTxOpen,
    SubmitTxSettle,
    SubmitTxWithdraw,
)
from statechannel.core.observed import (
    ChainObserved,
    ChainObservedClose,
    ChainObservedConcluded,
    ChainObservedDeposit,
    ChainObservedOpened,
    ChainObservedPayoutDeferred,
    ChainObservedWithdrawal,
)
from statechannel.core.types import ETH

log = logging.getLogger(__name__)
T = TypeVar("T")
SubmitTx = (
    SubmitTxOpen
    | SubmitTxDeposit
    | SubmitTxCloseCooperative
    | SubmitTxClose
    | SubmitTxChallenge
    | SubmitTxSettle
    | SubmitTxWithdraw
)
RETRIES = 5
REORG_DEPTH = 12
FINAL_FAILURES = ("insufficient funds", "not have enough balance", "gas required exceeds")
"""Words of a chain's refusal that no retry can change (the wallet cannot pay): failed at once."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one submission: `receipt` if mined; else `reverted` (the contract's reason) or
    `failed` (why it never got mined)."""

    receipt: Receipt | None
    reverted: str | None
    failed: str | None


@dataclass(frozen=True, slots=True)
class Checkpointed:
    number: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Poll:
    events: list[ChainObserved]
    mark: Checkpointed
    timestamp: int
    reorged: bool
    undone: frozenset[bytes]
    """Channels with events in blocks a reorg replaced."""


class ChainIO:
    def __init__(self, chain: Chain, adjudicator: bytes, key: PrivateKey) -> None:
        self.chain = chain
        self.adj = Adjudicator(chain, adjudicator)
        self.key = key
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-read")
        self._send_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-send")
        self._serial = None if getattr(chain, "concurrent", False) else threading.Lock()
        self._recent: list[Checkpointed] = []
        self._read_time = 0  # timestamp of the last block whose events were read
        self._touched: dict[int, set[bytes]] = {}  # block -> channels with events in it (recent blocks)
        self.gas_used: list[tuple[str, int]] = []  # (what, gas) of every mined submission, for reports

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn` on the read thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._serialised(fn))

    async def run_send(self, fn: Callable[[], T]) -> T:
        """`fn` on the send thread: it may wait long (a receipt), never delaying `run`."""
        return await asyncio.get_running_loop().run_in_executor(self._send_pool, self._serialised(fn))

    def _serialised(self, fn: Callable[[], T]) -> Callable[[], T]:
        lock = self._serial
        if lock is None:
            return fn

        def locked() -> T:
            with lock:
                return fn()

        return locked

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._send_pool.shutdown(wait=True)

    # ------------------------------------------------------------ submissions

    async def submit(self, ch: Channel, tx: SubmitTx) -> Receipt | None:
        """Send one transaction, retrying transport failures; a revert is logged, not retried
        (it is how the chain says the work was already done, e.g. by the peer)."""
        receipt, _ = await self.submit_checked(ch, tx)
        return receipt

    async def submit_checked(self, ch: Channel, tx: SubmitTx) -> tuple[Receipt | None, str | None]:
        """As `submit`, also saying why it reverted (None: mined, or it never got a verdict)."""
        verdict = await self.submit_verdict(ch, tx)
        return verdict.receipt, verdict.reverted

    async def submit_verdict(self, ch: Channel, tx: SubmitTx) -> Verdict:
        """As `submit`, with the whole verdict: mined, reverted (and why), or failed otherwise (and why:
        the chain refused it, say for funds, or never answered)."""
        delay = 0.2
        failure = "not sent"
        for attempt in range(RETRIES):
            try:
                if isinstance(tx, SubmitTxChallenge | SubmitTxSettle) and await self._pending():
                    # one of mine is not mined yet (perhaps this very one, sent before a timeout): another would
                    # only be mined after it and revert, paying gas; the machine asks again later
                    log.info(
                        "%s for 0x%s not sent: a transaction of mine is pending (its fees raised)",
                        type(tx).__name__,
                        ch.channel_id.hex()[:12],
                    )
                    try:  # a stuck deposit of another channel must not hold the challenge for the window
                        await self.run_send(lambda: self.chain.nudge(self.key))
                    except ChainError as exc:
                        log.warning("raising the fees of my pending transactions failed: %s", exc)
                    return Verdict(None, None, "a transaction of mine is pending")
                receipt = await self.run_send(lambda: self._send(ch, tx))
                self.gas_used.append((type(tx).__name__.removeprefix("SubmitTx"), receipt.gas_used))
                return Verdict(receipt, None, None)
            except TransactionReverted as exc:
                log.info("%s for channel 0x%s reverted: %s", type(tx).__name__, ch.channel_id.hex()[:12], exc.reason)
                return Verdict(None, exc.reason, None)
            except ChainError as exc:
                failure = str(exc)
                if any(word in failure.lower() for word in FINAL_FAILURES):  # asking again cannot help
                    log.warning("%s for channel 0x%s refused: %s", type(tx).__name__, ch.channel_id.hex()[:12], exc)
                    return Verdict(None, None, failure)
                log.warning("%s failed (attempt %d): %s", type(tx).__name__, attempt + 1, exc)
                await asyncio.sleep(delay)
                delay *= 2
            except Exception as exc:  # a bug or an unexpected backend error: say so, never die silently
                log.exception("%s for channel 0x%s failed", type(tx).__name__, ch.channel_id.hex()[:12])
                return Verdict(None, None, f"{type(exc).__name__}: {exc}")
        log.error("%s for channel 0x%s gave up after %d attempts", type(tx).__name__, ch.channel_id.hex(), RETRIES)
        return Verdict(None, None, f"gave up after {RETRIES} attempts: {failure}")

    async def _pending(self) -> bool:
        me = self.key.address
        return await self.run(lambda: self.chain.pending(me)) > 0

    def _send(self, ch: Channel, tx: SubmitTx) -> Receipt:
        adj, key, cid = self.adj, self.key, ch.channel_id
        match tx:
            case SubmitTxOpen():
                return adj.open(key, ch.params, tx.eth_deposit)
            case SubmitTxDeposit():
                if tx.asset == ETH:
                    return adj.deposit(key, cid, ch.me, tx.amount)
                Token(self.chain, tx.asset).approve(key, adj.address, tx.amount)
                return adj.deposit_token(key, cid, ch.me, tx.asset, tx.amount)
            case SubmitTxCloseCooperative():
                s = tx.signed
                return adj.close_cooperative(key, ch.params, s.state, s.sig_a, s.sig_b)
            case SubmitTxClose():
                s = tx.signed
                return adj.close(key, ch.params, s.state, s.sig_a, s.sig_b)
            case SubmitTxChallenge():
                s = tx.signed
                return adj.challenge(key, ch.params, s.state, s.sig_a, s.sig_b)  # the contract reads the record
            case SubmitTxSettle():
                return adj.settle(key, ch.params, tx.state, tx.finalizes_at)
            case SubmitTxWithdraw():
                return adj.withdraw(key, ch.params, tx.withdrawal, tx.sig_a, tx.sig_b)

    # ------------------------------------------------------------ watching

    def poll(self, since: int, confirmations: int) -> Poll:
        """Events in (since, head - confirmations], the new checkpoint, the timestamp of the last
        block read (what the channels' clocks may rely on: a withdrawal past its deadline there can
        never execute), and whether a reorg replaced a block we had already read: then the channels
        whose events were in the replaced blocks are named (their funds and status must be read
        again: the new branch may lack a deposit or a close), and my transactions those blocks held
        go out again under their nonces (`Chain.resend_lost`)."""
        head = self.chain.block()
        reorged = False
        undone: set[bytes] = set()
        if self._recent:
            mark = self._recent[-1]
            if self._hash_at(mark.number) != mark.hash:
                reorged = True
                while self._recent and self._hash_at(self._recent[-1].number) != self._recent[-1].hash:
                    self._recent.pop()
                since = self._recent[-1].number if self._recent else max(0, since - REORG_DEPTH)
                for number in [n for n in self._touched if n > since]:
                    undone |= self._touched.pop(number)
                try:
                    self.chain.resend_lost(self.key)
                except ChainError as exc:  # tried again by the next send of mine
                    log.warning("could not resend my transactions after a reorg: %s", exc)
        to = head.number - confirmations
        if to <= since:
            cp = self._recent[-1] if self._recent else Checkpointed(since, b"")
            if not self._read_time:
                self._read_time = self.chain.block(max(0, to)).timestamp
            return Poll([], cp, self._read_time, reorged, frozenset(undone))
        events = _pair_deferred([self._with_state(e) for e in self.adj.events(since + 1, to)])
        block = self.chain.block(to)
        cp = Checkpointed(block.number, block.hash)
        self._recent = [*self._recent[-REORG_DEPTH:], cp]
        self._read_time = block.timestamp
        for e in events:
            cid = getattr(e, "channel_id", None)
            if cid is not None:
                self._touched.setdefault(e.origin.block_number, set()).add(cid)
        for number in [n for n in self._touched if n < to - 4 * REORG_DEPTH]:
            del self._touched[number]
        return Poll(events, cp, block.timestamp, reorged, frozenset(undone))

    def _hash_at(self, number: int) -> bytes | None:
        """None past the head: a reorg (or `evm_revert`) can make the chain shorter, and the watcher
        must notice that at once, not wait blind until the chain grows back."""
        if number > self.chain.block().number:
            return None
        return self.chain.block(number).hash

    def is_open(self, channel_id: bytes) -> bool:
        return self.adj.channel(channel_id).status is Status.OPEN

    def _with_state(self, event: ChainObserved) -> ChainObserved:
        """A close or challenge carries only the recorded state's hash: its calldata has the state, so a
        node that never held it (an old state settled while it was away) can still say what was paid."""
        if not isinstance(event, ChainObservedClose):
            return event
        try:
            return replace(event, state=self.adj.recorded_state(event))
        except Exception as exc:  # the state is a bonus: never let it stop the watcher
            log.warning("could not read the state of close 0x%s: %s", event.origin.tx_hash.hex()[:12], exc)
            return event

    def read_funds(self, ch: Channel) -> list[ChainFunded]:
        """Every funded amount of a channel as the chain holds it now."""
        out: list[ChainFunded] = []
        info = self.adj.channel(ch.channel_id)
        for asset in ch.assets:
            if asset == ETH:
                if info.status is Status.OPEN:
                    out += [ChainFunded(ETH, 0, info.funded_a), ChainFunded(ETH, 1, info.funded_b)]
            else:
                fa, fb = self.adj.token_funds(ch.channel_id, asset)
                out += [ChainFunded(asset, 0, fa), ChainFunded(asset, 1, fb)]
        return out


def _pair_deferred(events: list[ChainObserved]) -> list[ChainObserved]:
    """Attach each PayoutDeferred to the Concluded it belongs to, so the channel learns it. They name no
    channel: in one transaction (which may conclude several), a conclusion logs its deferred payouts just
    before its Concluded, and a withdrawal logs its one just after its Withdrawn."""
    if not any(isinstance(e, ChainObservedPayoutDeferred) for e in events):
        return events
    out: list[ChainObserved] = []
    held: list[tuple[bytes, bytes, int]] = []
    tx = b""
    withdrawn: ChainObservedWithdrawal | None = None
    for event in sorted(events, key=lambda e: (e.origin.block_number, e.origin.log_index)):
        if event.origin.tx_hash != tx:
            tx, held, withdrawn = event.origin.tx_hash, [], None
        if isinstance(event, ChainObservedPayoutDeferred):
            if withdrawn is not None and (event.asset, event.amount) == (withdrawn.asset, withdrawn.amount):
                withdrawn = None  # the withdrawal's own payout
            else:
                held.append((event.account, event.asset, event.amount))
        elif isinstance(event, ChainObservedConcluded):
            event = replace(event, deferred=tuple(held))  # noqa: PLW2901
            held, withdrawn = [], None
        else:
            withdrawn = event if isinstance(event, ChainObservedWithdrawal) else None
        out.append(event)
    return out


def to_inputs(event: ChainObserved) -> tuple[bytes, list[Input]] | None:
    """The channel an event is about and the machine inputs it becomes."""
    match event:
        case ChainObservedOpened():
            return event.channel_id, [ChainOpened()]
        case ChainObservedDeposit():
            return event.channel_id, [ChainFunded(event.asset, event.participant, event.funded)]
        case ChainObservedWithdrawal():
            return event.channel_id, [ChainWithdrawn(event.asset, event.participant, event.funded, event.nonce)]
        case ChainObservedClose():
            record = ChainDisputeRecorded(
                event.version, event.finalizes_at, event.state_hash, event.challenge, event.state
            )
            return event.channel_id, [record]
        case ChainObservedConcluded():
            return event.channel_id, [ChainConcluded(event.version, event.deferred)]
    return None


Runner = Callable[[], Awaitable[None]]

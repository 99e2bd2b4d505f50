"""Answering disputes in time under a flood: earliest window end first, many challenges in flight.

A tower that answers first come, first served and waits for each transaction to be mined can be made
late by anyone who opens many channels and closes them all just before a victim's channel is closed
stale. Here disputes wait in one queue ordered by the end of their window; each turn the dispatcher
takes as many as there is room for in flight, has the tower re-check each just before it is sent (its
decision, the chain's record, what the channel holds), and sends them all at consecutive nonces without
waiting. The sender is polled for receipts; a challenge that became moot while in flight is abandoned
(its nonce filled), and a dispute whose record moved meanwhile is queued again."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from statechannel.aio import wait_set
from statechannel.chain.base import ChainError, Receipt, TransactionReverted
from statechannel.watchtower.records import Dispute
from statechannel.watchtower.sender import Call, OnSent, Sender, SentTx, Settled

log = logging.getLogger(__name__)
T = TypeVar("T")
LOUD_AFTER_TRIES = 5
"""Failed sends in a row after which each further failure is logged as an error (the tower keeps trying)."""
RETRY_DELAY_S = (1.0, 5.0)
"""The first retry's delay after a failed send, doubling up to the second: the window's end is the only limit."""
MAX_IN_FLIGHT = 512


@dataclass(frozen=True, slots=True)
class Prepared:
    """One challenge ready to send: what it quotes and what it says, for the re-check while in flight."""

    channel_id: bytes
    to: bytes
    data: bytes
    version: int
    dispute: Dispute


class Answerer(Protocol):
    """The tower's side of the dispatcher."""

    async def prepare(self, channel_ids: list[bytes]) -> list[Prepared]:
        """The challenges still worth sending now, for these disputes, in the order given."""
        ...

    def still_wanted(self, p: Prepared) -> bool:
        """Whether a challenge in flight would still replace the chain's record (else it is abandoned)."""
        ...

    def sent(self, p: Prepared, tx: SentTx) -> None: ...

    def ended(self, p: Prepared, outcome: str, reason: str, receipt: Receipt | None) -> None:
        """The challenge was mined, reverted, failed or abandoned; the tower may consider the channel again."""
        ...


class Run(Protocol):
    """Runs one blocking call of the sender off the event loop (always on the same thread)."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


class DeadlineQueue:
    """Channels waiting to be answered, earliest window end first (ties in arrival order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, bytes]] = []
        self._deadline: dict[bytes, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._deadline)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._deadline

    def push(self, channel_id: bytes, deadline: int) -> None:
        """Queue (or move to its new deadline) one channel; each channel is in the queue once."""
        if self._deadline.get(channel_id) == deadline:
            return
        self._deadline[channel_id] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), channel_id))

    def pop(self, n: int) -> list[tuple[bytes, int]]:
        """Up to `n` (channel, deadline), earliest deadline first."""
        out: list[tuple[bytes, int]] = []
        while self._heap and len(out) < n:
            deadline, _, cid = heapq.heappop(self._heap)
            if self._deadline.get(cid) == deadline:  # else an entry superseded by a later push
                del self._deadline[cid]
                out.append((cid, deadline))
        return out


class Dispatcher:
    """Owns the queue and the transactions in flight; one task, driven by `want` and a poll timer."""

    def __init__(
        self,
        sender: Sender,
        answerer: Answerer,
        run: Run,
        *,
        poll_interval: float = 0.5,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.sender = sender
        self.answerer = answerer
        self._run = run
        self.poll_interval = poll_interval
        self.max_in_flight = max_in_flight
        self.queue = DeadlineQueue()
        self._flight: dict[int, Prepared] = {}
        self._abandoned: set[int] = set()
        self._busy: set[bytes] = set()
        """Channels with a challenge in flight: wanted again, they are looked at once it ends."""
        self._again: dict[bytes, int] = {}
        self._tries: dict[bytes, int] = {}
        self.retry_delay = RETRY_DELAY_S
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tower-dispatch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def busy(self) -> bool:
        return bool(self.queue) or bool(self._flight)

    def want(self, channel_id: bytes, deadline: int) -> None:
        """Answer this channel's dispute (idempotent); `deadline` is its window's end."""
        if channel_id in self._busy:
            self._again[channel_id] = deadline
            return
        self.queue.push(channel_id, deadline)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            failed = False
            try:
                await self._turn()
            except asyncio.CancelledError:
                raise
            except ChainError as exc:
                failed = True
                log.warning("a turn of the challenge dispatcher failed (retrying): %s", exc)
            except Exception:
                failed = True
                log.exception("unexpected failure in the challenge dispatcher (retrying)")
            if not failed and self.queue and len(self._flight) < self.max_in_flight:
                continue
            await wait_set(self._wake, self.poll_interval if (self._flight or failed) else None)

    async def _turn(self) -> None:
        if self._flight:
            # the moot ones first: their fillers go out in the poll's one batch, with the fee bumps
            for ticket, p in list(self._flight.items()):
                if ticket not in self._abandoned and not self.answerer.still_wanted(p):
                    log.info("channel 0x%s: the challenge in flight is moot; filling its nonce", p.channel_id.hex())
                    await self._run(partial(self.sender.abandon, ticket))
                    self._abandoned.add(ticket)
            try:
                settled = await self._run(self.sender.poll)
            except ChainError as exc:  # the receipts can wait a turn; the challenges waiting to go out cannot
                log.warning("reading the receipts of %d challenges failed (sending anyway): %s", len(self._flight), exc)
                settled = []
            except Exception:
                log.exception("reading the receipts of %d challenges failed (sending anyway)", len(self._flight))
                settled = []
            for s in settled:
                self._end(s)
        room = self.max_in_flight - len(self._flight)
        if room <= 0 or not self.queue:
            return
        jobs = self.queue.pop(room)
        self._busy.update(cid for cid, _ in jobs)
        try:
            prepared = await self.answerer.prepare([cid for cid, _ in jobs])
        except BaseException:
            for cid, deadline in jobs:  # looked at again next turn
                self._busy.discard(cid)
                self.queue.push(cid, self._again.pop(cid, deadline))
            raise
        chosen = {p.channel_id for p in prepared}
        for cid, _ in jobs:
            if cid not in chosen:  # nothing to send now; a later event may change that
                self._busy.discard(cid)
                again = self._again.pop(cid, None)
                if again is not None:
                    self.queue.push(cid, again)
        await self._send(prepared)

    async def _send(self, prepared: list[Prepared]) -> None:
        """All of this turn's challenges in one go (one batch of dry runs and one of broadcasts on a real
        node): a flood of N disputes costs a few round trips, not N, before the next block."""
        if not prepared:
            return
        loop = asyncio.get_running_loop()

        def told(p: Prepared) -> OnSent:
            def sent(tx: SentTx) -> None:  # called on the sender's thread
                loop.call_soon_threadsafe(self.answerer.sent, p, tx)

            return sent

        calls = [Call(p.to, p.data, told(p)) for p in prepared]
        try:
            tickets = await self._run(partial(self.sender.submit_many, calls))
        except ChainError as exc:  # the batch itself failed: nothing was sent
            tickets = [exc] * len(prepared)
        except Exception as exc:  # a node's junk the sender did not expect: these channels must not stay busy
            log.exception("sending %d challenges failed unexpectedly (re-reading nonces)", len(prepared))
            await self._run(self.sender.reset)
            tickets = [ChainError(f"the sender failed: {exc!r:.200}")] * len(prepared)
        for p, ticket in zip(prepared, tickets, strict=True):
            if isinstance(ticket, TransactionReverted):  # the dry run: someone was first, or the window ended
                log.info("channel 0x%s: challenge would revert: %s", p.channel_id.hex(), ticket.reason)
                self._close(p, "reverted", ticket.reason, None)
            elif isinstance(ticket, ChainError):
                log.warning("channel 0x%s: challenge not sent: %s", p.channel_id.hex(), ticket)
                self._close(p, "failed", str(ticket), None, retry=True)
            else:
                self._flight[ticket] = p

    def _end(self, s: Settled) -> None:
        p = self._flight.pop(s.ticket, None)
        abandoned = s.ticket in self._abandoned
        self._abandoned.discard(s.ticket)
        if p is None:
            return  # a filler of a nonce nobody was waiting on
        if s.receipt is not None:
            log.info("channel 0x%s: challenge mined in block %d", p.channel_id.hex(), s.receipt.block_number)
            self._tries.pop(p.channel_id, None)
            self._close(p, "mined", "", s.receipt)
        elif isinstance(s.error, TransactionReverted):  # never retried: someone was first, or too late
            log.info("channel 0x%s: challenge reverted: %s", p.channel_id.hex(), s.error.reason)
            self._close(p, "reverted", s.error.reason, None)
        elif s.error is not None:
            self._close(p, "failed", str(s.error), None, retry=not abandoned)
        else:
            self._close(p, "abandoned", "the dispute no longer needed this challenge", None)

    def _close(self, p: Prepared, outcome: str, reason: str, receipt: Receipt | None, *, retry: bool = False) -> None:
        cid = p.channel_id
        self._busy.discard(cid)
        again = self._again.pop(cid, None)
        if retry:  # until the window ends (the answerer's decision): an outage must not end the protection
            tries = self._tries.get(cid, 0) + 1
            self._tries[cid] = tries
            if tries >= LOUD_AFTER_TRIES:
                log.error("channel 0x%s: %d sends of its challenge failed in a row; still trying", cid.hex(), tries)
            first, most = self.retry_delay
            delay = min(first * 2.0 ** min(tries - 1, 32), most)
            asyncio.get_running_loop().call_later(delay, self.want, cid, p.dispute.finalizes_at)
        elif outcome != "failed":
            self._tries.pop(cid, None)
        self.answerer.ended(p, outcome, reason, receipt)
        if again is not None:
            self.want(cid, again)

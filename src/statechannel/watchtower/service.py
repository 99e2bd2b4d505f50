"""The tower: takes both-signed states, follows the chain, and challenges closes that record older ones.

One asyncio loop owns the tower; chain reads run on worker threads, and the sender on one thread of its
own. Disputes are answered by a `Dispatcher` (dispatch.py): earliest window end first, many challenges in
flight at once, each decision taken again just before it is sent. Event handling
and registration take one lock, so a channel registered while its close is being read is either in
the store when the close is handled or sees the close when it reads the chain. Decisions come from
`core.tower.decide`; everything here is getting its inputs right and carrying its output out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.base import Chain, ChainError, TransactionReverted
from statechannel.chain.base import Receipt as TxReceipt
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import state_digest
from statechannel.core.errors import StatechannelError
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObserved, ChainObservedClose, ChainObservedConcluded
from statechannel.core.tower import (
    Action,
    ClientAuth,
    Receipt,
    check_client,
    check_pushed,
    decide,
    push_request,
    receipt_for,
    register_request,
)
from statechannel.core.types import ChannelParams
from statechannel.store.base import Checkpoint
from statechannel.watchtower.billing import Billing
from statechannel.watchtower.chainwatch import ChainWatch
from statechannel.watchtower.dispatch import Dispatcher, Prepared
from statechannel.watchtower.errors import TowerError, TowerReason, from_core
from statechannel.watchtower.records import Dispute, TowerStatus, WatchedChannel
from statechannel.watchtower.sender import Sender, SentTx
from statechannel.watchtower.storage import PutOutcome, QuotaExceeded, Quotas, TowerStore, TowerStoreError

log = logging.getLogger(__name__)
T = TypeVar("T")
RECEIPT_POLL_S = 0.25
MIN_CHALLENGE_PERIOD = 60
"""Seconds: the shortest window a tower takes on by default (a few blocks to see a close and get an answer in)."""
RECORD_REVERTS = frozenset(
    {
        "challenge window is over",
        "channel not closing",
        "stale version",
        "unknown channel",
    }
)
"""Revert reasons about the chain's record, not the state offered: another candidate would fare no better."""
UNEXPLAINED_TRIES = 3
"""Mined challenges of one state that fail with no reason (out of gas, say: its replay passes) before it gives
way to the next state: no reason is no verdict on the state, and the next one pays its owner less."""


@dataclass(frozen=True, slots=True)
class ChallengeAttempt:
    """The tower's latest challenge of one channel, as reported by the API."""

    version: int
    """The version the tower answered with."""
    against: int
    """The version the chain recorded."""
    outcome: str
    """pending, mined, reverted, failed, or abandoned (moot while in flight: its nonce was filled)."""
    tx_hashes: tuple[bytes, ...] = ()
    """Every version sent (same nonce, rising fees); at most one is mined."""
    reason: str = ""


class Tower:
    def __init__(
        self,
        chain: Chain,
        adjudicator: bytes,
        key: PrivateKey,
        store: TowerStore,
        sender: Sender,
        *,
        confirmations: int = 0,
        poll_interval: float = 0.5,
        min_challenge_period: int = MIN_CHALLENGE_PERIOD,
        quotas: Quotas | None = None,
        clock: Callable[[], float] = time.time,
        billing: Billing | None = None,
    ) -> None:
        self.chain = chain
        self.adj = Adjudicator(chain, adjudicator)
        self.domain = self.adj.domain
        self.key = key
        self.store = store
        self.sender = sender
        self.poll_interval = poll_interval
        self.min_challenge_period = min_challenge_period
        self.quotas = quotas or Quotas()
        self.clock = clock
        """Wall time, only to judge how fresh a client's signed request is (and a paid tower's accounts)."""
        self.billing = billing
        """A paid tower's accounts (billing.py); None: a free tower."""
        if billing is not None:
            billing.on_credit = self._reconsider  # a client that paid again is answered again
        self.unusable: dict[bytes, dict[bytes, str]] = {}
        """Per channel, the states (by digest) a dry run or a mined challenge showed the chain rejects, and why:
        against the dispute in `_unusable_against` only. A revert can come from the record moving under the
        challenge (the counterparty's own challenge mined first in the same block), so a new record tries every
        state again (a dry run each, which costs no gas)."""
        self._unusable_against: dict[bytes, Dispute] = {}
        self._unexplained: dict[bytes, dict[bytes, int]] = {}
        """Per channel, against the same dispute, how often each state's mined challenge failed with no reason."""
        self.watch = ChainWatch(chain, self.adj, confirmations)
        self.head = 0
        self.now = 0
        """The newest block's number and timestamp: the tower judges windows by chain time."""
        self.challenges: dict[bytes, ChallengeAttempt] = {}
        self._reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tower-chain")
        self._sends = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tower-send")
        self._lock = asyncio.Lock()
        self._unfunded: set[bytes] = set()
        self._sending: dict[bytes, SignedState] = {}
        self.receipt_hooks: list[Callable[[TxReceipt], None]] = []
        """Called with the receipt of each challenge mined (metrics)."""
        """The state each challenge in flight quotes, to mark it unusable if the chain rejects it."""
        self.dispatch = Dispatcher(sender, self, self._send, poll_interval=min(poll_interval, RECEIPT_POLL_S))
        self._checkpoint: Checkpoint | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def address(self) -> bytes:
        return self.key.address

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, partial(fn, *args))

    async def _send(self, fn: Callable[[], T]) -> T:
        """The sender's calls, on its one thread, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._sends, fn)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resume from the stored checkpoint (rewinding if it was reorged away while stopped), then watch."""
        cp, fork = await self._read(self.watch.resume, self.store.checkpoint())
        head = await self._read(self.chain.block)
        self.head, self.now = head.number, head.timestamp
        if fork is not None:
            log.warning("the checkpoint was reorged away while stopped; re-reading from block %d", fork)
            await self._recheck(fork)
        await self.store.save_checkpoint(cp)
        self._checkpoint = cp
        self.dispatch.start()
        self._watcher = asyncio.create_task(self._watch_loop(), name="tower-watch")
        if self.billing is not None:
            self.billing.start()  # reads payments from the payee node

    async def stop(self) -> None:
        """Challenges in flight stay in the pool; a restarted tower reads the disputes again."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.dispatch.stop()
        if self.billing is not None:
            await self.billing.stop()
        await asyncio.to_thread(self._reads.shutdown, True)
        await asyncio.to_thread(self._sends.shutdown, True)

    # ------------------------------------------------------------ requests

    def _client(self, params: ChannelParams, request: bytes, auth: ClientAuth) -> int:
        try:
            return check_client(self.domain, self.address, params, request, auth, int(self.clock()))
        except StatechannelError as exc:
            raise TowerError(TowerReason.UNAUTHORIZED, exc.detail) from exc

    async def register(self, params: ChannelParams, auth: ClientAuth) -> tuple[bool, WatchedChannel]:
        """Watch a channel that exists on chain, for a participant who proves it is one; (created, row).
        Registering again changes nothing."""
        self._client(params, register_request(params), auth)
        if params.challenge_period < self.min_challenge_period:
            raise TowerError(
                TowerReason.PERIOD_TOO_SHORT,
                f"challenge period {params.challenge_period} s is below the {self.min_challenge_period} s this "
                "tower protects",
            )
        cid = params.channel_id(self.domain.chain_id, self.domain.adjudicator)
        existing = self.row(cid)
        if existing is not None:
            return False, existing
        async with self._lock:
            try:
                info = await self._read(self.adj.channel, cid)
                status, dispute = TowerStatus.WATCHING, None
                if info.status is Status.NONE:
                    raise TowerError(TowerReason.UNKNOWN_CHANNEL, f"no channel 0x{cid.hex()} on chain")
                if info.status is not Status.OPEN:
                    status, dispute = await self._read(self.watch.find_dispute, cid, params.challenge_period)
            except ChainError as exc:
                raise TowerError(TowerReason.CHAIN_UNAVAILABLE, str(exc)) from exc
            row = WatchedChannel(cid, params, status, (), dispute)
            return await self._stored(self.store.register(row, auth.client, self.quotas))

    async def push(self, signed: SignedState, auth: ClientAuth) -> tuple[WatchedChannel, Receipt, Signature]:
        """Keep a both-signed state among the pushing participant's best few; returns the row and the signed
        receipt. What one participant pushes never replaces what the other pushed."""
        cid, version = signed.state.channel_id, signed.state.version
        ch = self.row(cid)
        if ch is None:
            raise TowerError(TowerReason.UNKNOWN_CHANNEL, f"channel 0x{cid.hex()} is not registered with this tower")
        client = self._client(ch.params, push_request(signed), auth)
        if self.billing is not None:
            self.billing.require(auth.client)  # 402: unpaid, or its grace period is over
        try:
            check_pushed(self.domain, ch.params, signed)
        except StatechannelError as exc:
            raise TowerError(from_core(exc.reason), exc.detail) from exc
        from_block = self.head
        result = await self._stored(self.store.put_state(signed, client, auth.client, self.quotas))
        if result.outcome is PutOutcome.UNKNOWN or result.channel is None:
            raise TowerError(TowerReason.UNKNOWN_CHANNEL, f"channel 0x{cid.hex()} is not registered with this tower")
        if result.outcome is PutOutcome.STALE:
            held = result.channel.of_client(client)
            if any(s.state.version == version for s in held):
                what = "a different state of that version from this client"
            else:
                what = f"{len(held)} higher versions from this client (up to {held[0].state.version})"
            raise TowerError(TowerReason.STALE_VERSION, f"the tower already holds {what}")
        if result.outcome is PutOutcome.ACCEPTED:
            if self.billing is not None:
                await self._stored(self.billing.charge(auth.client))
            self._consider(result.channel)  # a state pushed during a dispute may be the one to answer it
        receipt = receipt_for(self.address, signed, from_block)
        return result.channel, receipt, receipt.sign(self.key, self.domain)

    def candidates(self, channel_id: bytes) -> list[SignedState]:
        """Every state held for the channel, from either participant, best first (highest version), less those
        the chain is known to reject."""
        ch = self.row(channel_id)
        if ch is None:
            return []
        bad = self._marks(channel_id, ch.dispute)
        held = ch.candidates() if self.billing is None else self._paid_for(ch)
        return [s for s in held if state_digest(self.domain, s.state) not in bad]

    def _paid_for(self, ch: WatchedChannel) -> list[SignedState]:
        """A paid tower answers with a state only while the participant that pushed it is protected."""
        assert self.billing is not None
        ok = {i: self.billing.protects(who) for i, who in enumerate((ch.params.a, ch.params.b))}
        out: list[SignedState] = []
        for h in ch.states:
            if ok[h.client] and h.signed not in out:
                out.append(h.signed)
        return out

    def _marks(self, channel_id: bytes, dispute: Dispute | None) -> dict[bytes, str]:
        """The states known unusable against `dispute`; marks made against another record are forgotten."""
        if self._unusable_against.get(channel_id) != dispute:
            self.unusable.pop(channel_id, None)
            self._unexplained.pop(channel_id, None)
            self._unusable_against.pop(channel_id, None)
        return self.unusable.get(channel_id, {})

    def _worth_again(self, signed: SignedState, against: Dispute) -> bool:
        """Whether a state whose mined challenge failed with no reason is sent again (UNEXPLAINED_TRIES)."""
        cid = signed.state.channel_id
        self._marks(cid, against)
        self._unusable_against[cid] = against
        seen = self._unexplained.setdefault(cid, {})
        key = state_digest(self.domain, signed.state)
        seen[key] = seen.get(key, 0) + 1
        return seen[key] < UNEXPLAINED_TRIES

    def _mark_unusable(self, signed: SignedState, reason: str, against: Dispute | None) -> None:
        cid = signed.state.channel_id
        if against is None:
            return
        self._marks(cid, against)
        self._unusable_against[cid] = against
        self.unusable.setdefault(cid, {})[state_digest(self.domain, signed.state)] = reason
        log.warning("channel 0x%s: version %d is not usable on chain: %s", cid.hex(), signed.state.version, reason)

    def _challenge_call(self, ch: WatchedChannel, s: SignedState) -> bytes:
        assert ch.dispute is not None
        return self.adj.abi.encode_call(
            "challenge",
            ch.params.as_abi(),
            s.state.as_abi(),
            s.sig_a.as_abi(),
            s.sig_b.as_abi(),
        )  # nothing about the record is quoted: the contract compares versions with what it holds

    async def _reread_record(self, ch: WatchedChannel) -> None:
        """The chain holds another record than the one quoted: the counterparty challenged in a block not yet
        confirmed (or not yet read). Waiting for its event would let a counterparty with a stale version for
        every block keep each answer one record behind until the window ends, so the record is read from the
        chain as it is now and stored; the challenge's hand-off then answers it (a reorg re-reads it again)."""
        try:
            status, dispute = await self._read(self.watch.find_dispute, ch.channel_id, ch.params.challenge_period)
        except ChainError as exc:
            log.warning("channel 0x%s: reading the chain's record failed: %s", ch.channel_id.hex(), exc)
            return
        if dispute is None or dispute == ch.dispute:
            return
        async with self._lock:  # not between the watcher's read of a row and its write
            current = self.row(ch.channel_id)
            if current is None or current.dispute == dispute:
                return
            if current.dispute is not None and current.dispute.position > dispute.position:
                return  # the watcher has recorded a later event since: that one is answered
            log.info("channel 0x%s: the chain records version %d now", ch.channel_id.hex(), dispute.version)
            await self._stored(self.store.set_dispute(ch.channel_id, status, dispute))

    def row(self, channel_id: bytes) -> WatchedChannel | None:
        """What the tower holds about a channel (None if it was never registered)."""
        try:
            return self.store.get(channel_id)
        except TowerStoreError as exc:
            raise TowerError(TowerReason.STORE_UNAVAILABLE, str(exc)) from exc

    @staticmethod
    async def _stored(op: Awaitable[T]) -> T:
        try:
            return await op
        except QuotaExceeded as exc:
            raise TowerError(TowerReason.QUOTA_EXCEEDED, str(exc)) from exc
        except TowerStoreError as exc:
            raise TowerError(TowerReason.STORE_UNAVAILABLE, str(exc)) from exc

    # ------------------------------------------------------------ watching

    async def _watch_loop(self) -> None:
        """Poll, record, checkpoint; decide once caught up. A failure of any step is logged and the
        step retried with backoff: a tower that stopped watching would protect nobody."""
        touched: set[bytes] = set()
        review = True  # after a restart, every dispute on record is looked at again once caught up
        delay = self.poll_interval
        while True:
            try:
                caught_up = await self._watch_once(touched)
                if caught_up and review:
                    touched |= {ch.channel_id for ch in self.store.disputed()}
                    review = False
                if caught_up:  # decide only on the chain as it is now, not halfway through catching up
                    for cid in touched:
                        ch = self.store.get(cid)
                        if ch is not None:
                            self._consider(ch)
                    touched.clear()
            except (ChainError, TowerStoreError) as exc:
                log.warning("watching the chain failed (retrying in %.1fs): %s", delay, exc)
            except Exception:
                log.exception("unexpected failure while watching (retrying in %.1fs)", delay)
            else:
                delay = self.poll_interval
                if not caught_up:
                    continue
                await asyncio.sleep(self.poll_interval)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _watch_once(self, touched: set[bytes]) -> bool:
        """One range of blocks: recorded and checkpointed; whether the watcher is caught up."""
        assert self._checkpoint is not None
        poll = await self._read(self.watch.poll, self._checkpoint)
        self.head, self.now = poll.head.number, poll.head.timestamp
        async with self._lock:
            if poll.fork is not None:
                log.warning("reorg: blocks after %d were replaced; re-checking disputes", poll.fork)
                self.sender.reset()  # the transactions of this key may have changed with the blocks
                touched |= await self._recheck(poll.fork)
            touched |= await self._apply(poll.events)
            await self.store.save_checkpoint(poll.checkpoint)
            self._checkpoint = poll.checkpoint
        return poll.caught_up

    async def handle(self, events: list[ChainObserved]) -> set[bytes]:
        """Record `events` and act on what changed, as the watcher does; the ids of the changed channels.
        Safe to call with events already handled: nothing changes and no transaction is sent."""
        async with self._lock:
            touched = await self._apply(events)
        for cid in touched:
            ch = self.store.get(cid)
            if ch is not None:
                self._consider(ch)
        return touched

    async def _apply(self, events: list[ChainObserved]) -> set[bytes]:
        """Record the events about registered channels; the ids whose record changed. Handling an event
        again (a restart, a re-read after a reorg) changes nothing: the row keeps the latest position."""
        ops = []
        for ev in events:
            if isinstance(ev, ChainObservedClose):
                ops.append(self.store.apply_close(ev.channel_id, Dispute.of(ev)))
            elif isinstance(ev, ChainObservedConcluded):
                ops.append(self.store.apply_concluded(ev.channel_id))
        results = await asyncio.gather(*ops)  # queued in order, so one channel's events apply in order
        return {ch.channel_id for changed, ch in results if changed and ch is not None}

    async def _recheck(self, fork: int) -> set[bytes]:
        """Disputes recorded from blocks that a reorg replaced are read again from the chain itself."""
        touched = set()
        for ch in self.store.disputed():
            if ch.dispute is None or ch.dispute.block_number > fork:
                status, dispute = await self._read(self.watch.find_dispute, ch.channel_id, ch.params.challenge_period)
                await self.store.set_dispute(ch.channel_id, status, dispute)
                touched.add(ch.channel_id)
        return touched

    # ------------------------------------------------------------ acting

    def _consider(self, ch: WatchedChannel) -> None:
        """Hand a dispute worth answering to the dispatcher, which answers by the end of its window."""
        if ch.status is not TowerStatus.CHALLENGED or ch.dispute is None:
            return
        action = decide(self._best_version(ch.channel_id), ch.dispute.version, self.now, ch.dispute.finalizes_at)
        if action is Action.TOO_LATE:
            log.error("channel 0x%s: the window closed before the tower could answer", ch.channel_id.hex())
        if action is Action.CHALLENGE:
            self.dispatch.want(ch.channel_id, ch.dispute.finalizes_at)

    def _reconsider(self) -> None:
        for ch in self.store.disputed():
            self._consider(ch)

    def _best_version(self, channel_id: bytes) -> int | None:
        """The highest version among the states held for a channel that the chain is not known to reject."""
        best = self.candidates(channel_id)
        return best[0].state.version if best else None

    async def prepare(self, channel_ids: list[bytes]) -> list[Prepared]:
        """The decision taken again just before sending, on the freshest row and batched reads of the chain:
        the record must still be the one the chain holds, the window open, the channel must hold something
        (a channel funded with nothing pays nobody anything: answering it only burns gas), and the state sent
        is the best candidate, of either participant, whose dry run passes (one that reverts is remembered as
        unusable and the next one is tried: a counterparty's state can never displace a usable one)."""
        rows: list[tuple[WatchedChannel, Dispute, list[SignedState]]] = []
        for cid in channel_ids:
            ch = self.store.get(cid)
            if ch is None or ch.status is not TowerStatus.CHALLENGED or ch.dispute is None:
                continue
            d = ch.dispute
            beating = [c for c in self.candidates(cid) if c.state.version > d.version]
            held = beating[0].state.version if beating else None
            if not beating or decide(held, d.version, self.now, d.finalizes_at) is not Action.CHALLENGE:
                continue
            rows.append((ch, d, beating))
        if not rows:
            return []
        views = await self._read(self.adj.views, [(ch.channel_id, c[0].state.assets) for ch, _, c in rows])
        live: list[tuple[WatchedChannel, Dispute, list[SignedState]]] = []
        moved: list[WatchedChannel] = []
        for (ch, d, cands), view in zip(rows, views, strict=True):
            cid = ch.channel_id
            if view.info.status is not Status.CLOSING:
                continue  # concluded, or reorged back to open: its event will bring it back
            # a record the tower has not read (or not confirmed) is no reason to wait: the contract compares
            # versions, so the challenge lands unless the chain records a version as high (its dry run says)
            if not view.holds_anything:
                if cid not in self._unfunded:
                    self._unfunded.add(cid)
                    log.warning("channel 0x%s holds nothing: its dispute is not answered", cid.hex())
                continue
            live.append((ch, d, cands))
        out = []
        chosen = await self._dry_run(live, moved)
        await self._answer_moved(moved)
        for ch, d, s in chosen:
            cid = ch.channel_id
            log.info(
                "channel 0x%s: chain records version %d, challenging with %d", cid.hex(), d.version, s.state.version
            )
            self.challenges[cid] = ChallengeAttempt(s.state.version, d.version, "pending")
            self._sending[cid] = s
            out.append(Prepared(cid, self.adj.address, self._challenge_call(ch, s), s.state.version, d))
        return out

    async def _dry_run(
        self, rows: list[tuple[WatchedChannel, Dispute, list[SignedState]]], moved: list[WatchedChannel]
    ) -> list[tuple[WatchedChannel, Dispute, SignedState]]:
        """Each row's best candidate whose challenge passes an eth_call, all rows in one batch per round; a
        row whose dry run blames the record itself (answered already, window over) is dropped. A record that
        no longer matches the chain's is read again from the chain (the counterparty's challenge in a block not
        yet confirmed or read) and answered anew, so a stale version per block cannot keep us one behind."""
        chosen: list[tuple[WatchedChannel, Dispute, SignedState]] = []
        while rows:
            calls = [(self.adj.address, self._challenge_call(ch, cands[0])) for ch, _, cands in rows]
            try:
                answers = await self._read(self.chain.call_many, calls)
            except ChainError as exc:  # no answer: send the best ones anyway, the sender reports what happens
                log.warning("dry run of %d challenges failed, sending anyway: %s", len(rows), exc)
                chosen += [(ch, d, cands[0]) for ch, d, cands in rows]
                break
            again = []
            for (ch, d, cands), answer in zip(rows, answers, strict=True):
                if not isinstance(answer, TransactionReverted):
                    chosen.append((ch, d, cands[0]))
                elif answer.reason in RECORD_REVERTS:
                    log.info("channel 0x%s: dry run: %s", ch.channel_id.hex(), answer.reason)
                    if answer.reason == "stale version":
                        moved.append(ch)  # the chain records a version as high as ours: read it
                else:
                    self._mark_unusable(cands[0], answer.reason or "reverted", d)
                    if len(cands) > 1:
                        again.append((ch, d, cands[1:]))
            rows = again
        return chosen

    async def _answer_moved(self, moved: list[WatchedChannel]) -> None:
        """Disputes whose record on chain is not the one read: read it from the chain and answer that."""
        for ch in moved:
            await self._reread_record(ch)
            fresh = self.store.get(ch.channel_id)
            if fresh is not None and fresh.dispute != ch.dispute:
                self._consider(fresh)  # the dispatcher takes it up again, with the record the chain holds

    def still_wanted(self, p: Prepared) -> bool:
        fresh = self.store.get(p.channel_id)
        if fresh is None or fresh.dispute is None:
            return False  # answered (by us or another)
        # the record may have moved (the counterparty's own stale challenge): this one still lands while
        # its version is above the one recorded now, as the contract compares versions, not records
        return decide(p.version, fresh.dispute.version, self.now, fresh.dispute.finalizes_at) is Action.CHALLENGE

    def sent(self, p: Prepared, tx: SentTx) -> None:
        current = self.challenges.get(p.channel_id)
        if current is not None:
            self.challenges[p.channel_id] = replace(current, tx_hashes=(*current.tx_hashes, tx.tx_hash))

    def ended(self, p: Prepared, outcome: str, reason: str, receipt: TxReceipt | None) -> None:
        cid = p.channel_id
        current = self.challenges.get(cid)
        if current is not None:
            self.challenges[cid] = replace(current, outcome=outcome, reason=reason)
        if receipt is not None:
            for hook in self.receipt_hooks:
                hook(receipt)
        sent = self._sending.pop(cid, None)
        if outcome == "reverted" and reason not in RECORD_REVERTS and sent is not None:
            if not reason and self._worth_again(sent, p.dispute):
                log.warning(
                    "channel 0x%s: version %d failed on chain with no reason; sending it again", cid.hex(), p.version
                )
            else:
                self._mark_unusable(sent, reason or "reverted", p.dispute)  # fails against this record: the next
            fresh = self.store.get(cid)
            if fresh is not None:
                self._consider(fresh)
            return
        # if the record moved while this was in flight (say the cheater challenged with its own newer
        # stale state), answer the new record now rather than wait for an event that already passed
        fresh = self.store.get(cid)
        if fresh is not None and fresh.dispute is not None and fresh.dispute != p.dispute:
            self._consider(fresh)

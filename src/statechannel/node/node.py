"""The node: the shell around the pure channel machine, and the public Python API.

For every input: run `transition`, keep the new value, save it (group commit),
and only once it is durable carry out its effects, in order per channel (save
before you sign or send). Payments queued in the same moment ride in one update."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import itertools
import logging
import secrets
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from statechannel.chain.base import ChainError
from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason, RemoteError, StatechannelError
from statechannel.core.io import (
    ActionAbandon,
    ActionCloseCooperative,
    ActionCloseUnilateral,
    ActionPay,
    ActionWithdraw,
    ChainDisputeRecorded,
    ChainTime,
    ChainTxFailed,
    Effect,
    Input,
    NotifyAlert,
    NotifyConcluded,
    NotifyFailed,
    NotifyFilled,
    NotifyPhase,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    PeerConnected,
    SendMessage,
    SubmitTxChallenge,
    SubmitTxClose,
    SubmitTxCloseCooperative,
    SubmitTxDeposit,
    SubmitTxOpen,
    SubmitTxSettle,
    SubmitTxWithdraw,
)
from statechannel.core.machine import Terms, accept_open, open_channel, pending_work, receive, transition
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.types import ChannelParams, Domain, to_checksum
from statechannel.net.base import PeerUnreachable, Transport
from statechannel.node.chainio import ChainIO, SubmitTx, to_inputs
from statechannel.node.onchain import TxLog, TxOutcome, check_wallet, weigh
from statechannel.node.peers import PeerBook
from statechannel.node.swapdesk import Fill, SignedQuote, SwapDesk
from statechannel.node.towers import TowerClient
from statechannel.store.base import MAX_UINT256, Checkpoint, PageKey, PaymentRecord, Store

log = logging.getLogger(__name__)
FREEZE_FROM = 1_000
"""Loaded channels from which a start moves every object alive to the collector's permanent
generation (`gc.freeze`): a big node's channels are long-lived, and scanning them again and
again cost a 100k-channel node over a second each time the collector ran."""
MAX_BATCH = 512
"""Payments (or batches) one update carries: each is one entry of its `paid` list."""
HISTORY_MODES = ("batch", "per-payment")
"""What a batch writes to history (decision 0012): one row for the batch, or also one per payment."""
MAX_MEMBER_ROWS = 1_000_000
"""Payments of one batch paid with per-payment history: each is a row built in memory and written in
one save (as many as the API's per-payment requests make)."""
MAX_OUTCOMES_KEPT = 100_000
"""Outcome rows built at a commit and kept until the future is answered; a bound, not a policy."""
RECENT_IDS = 1_000_000
DEFAULT_CHALLENGE_PERIOD = 3600
MAX_UNFUNDED_PER_PEER = 8
"""Channels a peer may have opened with this node that hold no deposit yet: past it, its requests are
refused (a request costs the peer nothing, so without a bound it could fill the node for free)."""
RECOVERY_WAIT = 20.0
"""Seconds a channel restored from a backup waits for the peer to prove a newer state before it closes."""
MAX_UNFUNDED_TOTAL = 1024
"""Unfunded channels from all peers together: peer addresses cost nothing to make."""
UNFUNDED_TTL = 3600.0
"""Seconds an unfunded channel a peer opened with this node is kept before it is abandoned."""
MAX_BACKLOG = 256
"""Inputs of one channel not yet saved and carried out: past it, a frame from that channel's peer is
handled only once they are, so reading that peer's connection waits (the transport awaits each frame).
Far above an honest pipeline's depth; it bounds what a flood of messages can make the node hold."""
REFUSALS_KEPT = 10_000
"""(peer, reason) pairs whose refusals are counted for the log; past it the count starts again."""


_TX_FAILURES_FED = (SubmitTxOpen, SubmitTxDeposit, SubmitTxWithdraw, SubmitTxClose, SubmitTxCloseCooperative)
"""Reverts the machine may act on; the others (challenge, settle) are logged only."""


_ABANDON_HINT = " (a channel that cannot open can be given up: `statechannel channel abandon`)"


@dataclass(slots=True)
class _Pending:
    """One commit of a channel whose effects wait for its save (and for the commits before it)."""

    save: asyncio.Future[None]
    effects: tuple[Effect, ...]
    step: int = 0  # effects carried out so far
    waiting: asyncio.Future[None] | None = None  # a send of it that waits for the peer to read


_PASS_THE_FENCE = (SubmitTxChallenge, SubmitTxSettle, NotifyAlert, NotifyPhase, NotifyConcluded)
"""What a fenced channel (a save failed) still carries out: its answer to a close and its settlement, on
both-signed states (the chain gives them the same weight saved or not: an unsaved one is no less signed
by the peer), and what it says about the chain. Never a frame to the peer, nor an outcome of a payment."""


def _positive(v: object) -> bool:
    """A positive int amount or count (no bool, no float)."""
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


class NodeError(LocalError):
    """A request the node cannot carry out (unknown channel, wrong phase, ...)."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    kind: str  # "phase" | "sent" | "failed" | "received"
    channel_id: str
    data: dict[str, Any]


@dataclass
class _Subscriber:
    queue: asyncio.Queue[NodeEvent] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    dropped: int = 0


class Node:
    def __init__(
        self,
        key: PrivateKey,
        chainio: ChainIO,
        store: Store,
        transport: Transport,
        *,
        confirmations: int = 0,
        poll_interval: float = 0.2,
        peer_book: PeerBook | None = None,
        towers: TowerClient | None = None,
        terms: Terms | None = None,
        max_unfunded_per_peer: int = MAX_UNFUNDED_PER_PEER,
        unfunded_ttl: float = UNFUNDED_TTL,
        recovery_wait: float = RECOVERY_WAIT,
        weigh_gas: bool = False,
    ) -> None:
        self.recovery_wait = recovery_wait
        self.weigh_gas = weigh_gas  # settle and challenge only where the stake is worth the gas (the daemon's default)
        self.terms = terms or Terms()
        self.max_unfunded_per_peer = max_unfunded_per_peer
        self.unfunded_ttl = unfunded_ttl
        self._unfunded_since: dict[bytes, float] = {}  # peer-opened channels without deposits: when seen
        self.peer_book = peer_book
        self.towers = towers  # watchtower hook: offered each new fully signed state once it is durable
        self.key = key
        self.address = key.address
        self.chainio = chainio
        self.domain = Domain(chainio.chain.chain_id, chainio.adj.address)
        self.store = store
        self.transport = transport
        self.confirmations = confirmations
        self.poll_interval = poll_interval
        self.channels: dict[bytes, Channel] = {}
        self._by_peer: dict[bytes, set[bytes]] = defaultdict(set)  # peer -> its channels: O(1) on connect
        self._timed: set[bytes] = set()  # channels the chain's clock must reach (disputes, withdrawals)
        self._pending: dict[bytes, deque[_Pending]] = {}  # per channel: commits not yet carried out, in order
        self._idle_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._fenced: dict[bytes, BaseException] = {}  # channels whose save failed: nothing more leaves for them
        self._backlog: dict[bytes, int] = defaultdict(int)  # per channel: commits not yet carried out
        self.refusals: dict[tuple[bytes, str], int] = {}  # (peer, reason): messages refused, for the log
        self._queued: dict[bytes, list[tuple[Payment, asyncio.Future[PaymentRecord]]]] = defaultdict(list)
        self._flushing: set[bytes] = set()
        self._waiters: dict[str, asyncio.Future[PaymentRecord]] = {}
        self._records: dict[str, PaymentRecord] = {}  # payments queued or in flight
        self._outcomes: dict[int, tuple[Effect, list[PaymentRecord]]] = {}  # id(effect): its rows, until resolved
        self._members: dict[str, tuple[tuple[int, ...], int]] = {}  # batches with per-payment history
        self._named: set[str] = set()  # ids the caller chose, queued or in flight: written when proposed
        self._used_ids: OrderedDict[str, None] = OrderedDict()  # recent ids, so a retry never pays twice
        self._id_prefix, self._ids = secrets.token_hex(6), itertools.count(1)  # default payment ids
        self._subscribers: list[_Subscriber] = []
        self.effect_hooks: list[Callable[[bytes, Effect], None]] = []
        """Called with every effect as it is carried out (after its save): metrics watch the node here."""
        self.refusal_hooks: list[Callable[[bytes, str], None]] = []
        """Called with the reason of every payment this node refuses before proposing it (no funds, ...)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.chain_head = 0
        self.chain_time = 0
        self.txlog = TxLog()  # every submission's verdict, so the command that caused it can tell the truth

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Decoding makes ~13 tracked objects a channel and nothing cyclic: the cyclic collector would
        # rescan the growing heap over and over (over half of a 100k-channel start), so it waits, and
        # what was loaded is then frozen out of its way (a long-lived node keeps its channels).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for cid, blob in self.store.load_channels().items():
                ch = self.channels[cid] = decode_channel(blob)
                self._index(cid, ch)
                if ch.phase is Phase.FUNDING and ch.me == 1 and not any(a or b for a, b in ch.funded):
                    self._unfunded_since[cid] = time.monotonic()
        finally:
            if collecting:
                gc.enable()
        if len(self.channels) >= FREEZE_FROM:
            gc.freeze()
        if self.towers is not None:  # watchtower hook: resume its queue before anything new is signed
            await self.towers.start(
                self.domain,
                self.channels.values(),
                self.key,
                lambda: self.chain_head + self.confirmations if self.chain_head else 0,
            )
        self.transport.set_handlers(self._on_frame, self._on_connect)
        for cid, ch in self.channels.items():
            for effect in pending_work(ch):
                self._spawn(self._execute(cid, effect))
            if ch.phase is Phase.RECOVERING:
                self._spawn(self._recover(cid))
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        while self._pending:
            await self.idle(next(iter(self._pending)))
        if self.towers is not None:  # watchtower hook: flush (bounded) while the node is still whole
            await self.towers.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ public API

    def channel(self, channel_id: bytes) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise NodeError(Reason.WRONG_CHANNEL, f"no channel 0x{channel_id.hex()}") from None

    async def open_channel(
        self,
        peer: bytes,
        deposits: dict[bytes, tuple[int, int]],
        challenge_period: int = DEFAULT_CHALLENGE_PERIOD,
    ) -> bytes:
        """Propose a channel to a connected peer: {asset: (my deposit, peer's deposit)}."""
        if not self.transport.connected(peer):
            raise NodeError(Reason.BAD_PARAMS, f"peer {to_checksum(peer)} is not connected")
        self.terms.check(challenge_period)  # I would refuse it from a peer: I do not offer it either
        mine = {a: d[0] for a, d in deposits.items()}
        await self.chainio.run(lambda: check_wallet(self.chainio, self.address, mine))  # never a stuck channel
        assets = tuple(sorted(deposits))
        params = ChannelParams(self.address, peer, challenge_period, secrets.randbits(64))
        ch, effects = open_channel(params, self.domain, assets, tuple(deposits[a] for a in assets), self.key)
        self._commit(ch.channel_id, ch, effects)
        return ch.channel_id

    async def deposit(self, channel_id: bytes, asset: bytes, amount: int) -> None:
        ch = self.channel(channel_id)
        if asset not in ch.assets or amount <= 0:
            raise NodeError(Reason.BAD_AMOUNT, "deposit needs an asset of the channel and a positive amount")
        if ch.phase not in (Phase.FUNDING, Phase.OPEN) or ch.latest is None:
            raise NodeError(Reason.WRONG_PHASE, f"no deposits while {ch.phase}: nothing signed would return them")
        await self.chainio.run(lambda: check_wallet(self.chainio, self.address, {asset: amount}))
        tx = SubmitTxDeposit(asset, amount)
        outcome = self._told(channel_id, tx, await self.chainio.submit_verdict(ch, tx))
        if not outcome.ok:
            raise NodeError(Reason.TX_FAILED, f"the deposit did not go in: {outcome.reason}")
        try:
            await self._refresh_funds(channel_id)  # answer with the balances after it, not before
        except ChainError as exc:  # it is mined: a failed read must not say otherwise (the watcher reads it)
            log.info("channel 0x%s: funds not read after the deposit: %s", channel_id.hex()[:12], exc)

    def _told(self, channel_id: bytes, tx: SubmitTx, verdict: Any) -> TxOutcome:
        """Record, log and publish what became of one of my submissions."""
        outcome = self.txlog.record(channel_id, tx, verdict)
        # a settle or challenge that reverts was mostly done already (by the peer, or a tower): no alarm
        quiet = outcome.ok or isinstance(tx, SubmitTxSettle | SubmitTxChallenge)
        level = logging.INFO if quiet else logging.WARNING
        log.log(level, "channel 0x%s: %s", channel_id.hex()[:12], outcome.describe())
        data = {"step": outcome.what, "ok": outcome.ok, "reason": outcome.reason, "gas": outcome.gas}
        self._emit(NodeEvent("tx", "0x" + channel_id.hex(), {**data, "tx_hash": outcome.tx_hash}))
        return outcome

    async def wait_or_fail(
        self, channel_id: bytes, phase: Phase, timeout: float, since: int, steps: tuple[str, ...] = ()
    ) -> Channel:
        """The channel once it reaches `phase` (or as far as it got in `timeout`), failing at once with the
        chain's reason when one of my on-chain steps for it, after `since`, failed. With `steps`, also done
        as soon as each of those steps was mined."""
        deadline = time.monotonic() + timeout
        while True:
            ch = self.channel(channel_id)
            late = time.monotonic() >= deadline
            outcomes = self.txlog.since(channel_id, since)
            # a settle or challenge that reverted was mostly done by someone else: fatal only if, by the
            # deadline, the channel did not get where it was going
            failed = [o for o in outcomes if not o.ok and (o.what not in ("Settle", "Challenge") or late)]
            if failed and ch.phase is not phase:
                hint = _ABANDON_HINT if ch.phase in (Phase.OPENING, Phase.FUNDING) else ""
                raise NodeError(Reason.TX_FAILED, "; ".join(o.describe() for o in failed) + hint)
            mined = {o.what for o in outcomes if o.ok}
            if ch.phase is phase or (steps and mined.issuperset(steps)) or late:
                return ch
            await asyncio.sleep(0.02)

    async def withdraw(self, channel_id: bytes, asset: bytes, amount: int) -> None:
        self._tick(channel_id)  # the deadline is set in chain time
        self._feed(channel_id, ActionWithdraw(asset, amount))

    async def abandon(self, channel_id: bytes) -> str:
        """Give up a channel that cannot open. Never on chain: forgotten (not while a transaction of mine
        might still open it). Open on chain (a deposit failed): closed with the pre-fund state both signed,
        which returns every deposit once the challenge period is over. Says which it did."""
        ch = self.channel(channel_id)
        if ch.phase not in (Phase.OPENING, Phase.FUNDING):
            raise NodeError(Reason.WRONG_PHASE, f"the channel is {ch.phase}: only one that never opened is abandoned")
        on_chain = ch.opened or any(a or b for a, b in ch.funded)
        if not on_chain:
            info, pending = await self.chainio.run(
                lambda: (self.chainio.adj.channel(channel_id), self.chainio.chain.pending(self.address))
            )
            if pending:
                raise NodeError(Reason.WRONG_PHASE, "a transaction of mine is not mined yet: it may open the channel")
            on_chain = info.status != 0
        if not on_chain:
            self._feed(channel_id, ActionAbandon())
            return "abandoned: it never opened on chain and holds nothing"
        if ch.latest is None:
            raise NodeError(Reason.WRONG_PHASE, "open on chain, but I hold no both-signed state to close it with")
        self._feed(channel_id, ActionCloseUnilateral())
        return (
            f"closing on chain with the pre-fund state: every deposit comes back after the challenge period "
            f"({ch.params.challenge_period} s)"
        )

    async def settle(self, channel_id: bytes) -> None:
        """Settle a dispute whose window is over now (the node also does it by itself, on the next block)."""
        ch = self.channel(channel_id)
        d = ch.dispute
        if ch.phase is not Phase.DISPUTE or d is None:
            raise NodeError(Reason.WRONG_PHASE, f"only a channel in dispute is settled; this one is {ch.phase}")
        now = await self.chainio.run(lambda: self.chainio.chain.block().timestamp)
        if now < d.finalizes_at:
            raise NodeError(
                Reason.WRONG_PHASE,
                f"the challenge window is open for {d.finalizes_at - now} s more (until chain time "
                f"{d.finalizes_at}); the node settles by itself then",
            )
        if d.state is None:
            raise NodeError(Reason.WRONG_PHASE, "the recorded state is not known to this node: it cannot settle it")
        self._feed(channel_id, ChainTime(max(now, ch.now)))

    def _tick(self, channel_id: bytes) -> None:
        ch = self.channels.get(channel_id)
        if ch is not None and self.chain_time > ch.now:
            self._feed(channel_id, ChainTime(self.chain_time))

    async def close(self, channel_id: bytes, cooperative: bool = True) -> None:
        self._feed(channel_id, ActionCloseCooperative() if cooperative else ActionCloseUnilateral())

    def pay_nowait(
        self, channel_id: bytes, asset: bytes, amount: int, payment_id: str | None = None
    ) -> asyncio.Future[PaymentRecord]:
        """Queue a payment; the future resolves once both signed it (or it failed)."""
        ch = self.channel(channel_id)
        if ch.phase is not Phase.OPEN:
            raise NodeError(Reason.WRONG_PHASE, f"channel is {ch.phase}, not open")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise NodeError(Reason.BAD_AMOUNT, "amount must be a positive int")
        return self._enqueue(channel_id, Payment(self._new_id(payment_id), asset, amount))

    def _new_id(self, payment_id: str | None, members: int = 0) -> str:
        """A payment's id: the caller's (refused if in use: in flight, recent, or a row of history, such
        as a row `<batch id>:<i>` of a batch paid with per-payment history) or one chosen here. With
        `members`, it is a batch whose rows `<id>:0`.. must be free as well."""
        pid = payment_id or f"{self._id_prefix}{next(self._ids):x}"  # random per run, then counted: cheap
        if pid in self._used_ids or pid in self._waiters:
            raise NodeError(Reason.BAD_PARAMS, f"payment id {pid} already used")
        if payment_id:
            self._check_free(pid, members)
        used = self._used_ids
        used[pid] = None
        if len(used) > RECENT_IDS:
            used.popitem(last=False)
        if payment_id:
            self._named.add(pid)
        return pid

    def _check_free(self, pid: str, members: int) -> None:
        """A caller's id must name no row but its own: a shared row would take the other payment's outcome
        (the outcome updates the row by id) or keep it from being written."""
        batch, sep, index = pid.rpartition(":")
        if sep and index.isdigit() and index == str(int(index)):  # a row of an in-flight per-payment batch?
            listed = self._members.get(batch)
            if listed is not None and int(index) < len(listed[0]) * listed[1]:
                raise NodeError(Reason.BAD_PARAMS, f"payment id {pid} is a row of batch {batch}")
        if self.store.payment(pid) is not None:
            raise NodeError(Reason.BAD_PARAMS, f"payment id {pid} already used (its row is in history)")
        if members:
            used = self._used_ids
            if self.store.has_payments_under(pid + ":") or any(f"{pid}:{i}" in used for i in range(members)):
                raise NodeError(Reason.BAD_PARAMS, f"the rows {pid}:<i> of this batch would name other payments")

    def _enqueue(self, channel_id: bytes, payment: Payment) -> asyncio.Future[PaymentRecord]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PaymentRecord] = loop.create_future()
        self._waiters[payment.payment_id] = fut
        self._queued[channel_id].append((payment, fut))
        if channel_id not in self._flushing:
            self._flushing.add(channel_id)
            loop.call_soon(self._flush, channel_id)
        return fut

    def _spendable(self, ch: Channel, asset: bytes) -> int:
        """My lowest possible balance of `asset` less what is queued of it and not yet proposed."""
        queued = sum(p.amount for p, _ in self._queued.get(ch.channel_id, ()) if p.asset == asset)
        return ch.lowest_balance(ch.me, asset) - queued

    def pay_many_nowait(
        self, channel_id: bytes, asset: bytes, amount: int, count: int
    ) -> list[asyncio.Future[PaymentRecord]]:
        """Queue `count` equal payments, all or none: refused whole (nothing queued, nothing changed) when
        their total is more than my lowest possible balance of `asset` less what is already queued."""
        ch = self.channel(channel_id)
        if ch.phase is not Phase.OPEN:
            raise NodeError(Reason.WRONG_PHASE, f"channel is {ch.phase}, not open")
        if not _positive(amount) or not _positive(count):
            raise NodeError(Reason.BAD_AMOUNT, "amount and count must be positive ints")
        if asset not in ch.assets:
            raise NodeError(Reason.BAD_ASSETS, f"asset 0x{asset.hex()} is not in this channel")
        available = self._spendable(ch, asset)
        if amount * count > available:
            raise NodeError(
                Reason.INSUFFICIENT_FUNDS,
                f"{count} payments of {amount} total {amount * count}, more than the {max(available, 0)} "
                f"of asset 0x{asset.hex()} this side can spend: none was made",
            )
        return [self.pay_nowait(channel_id, asset, amount) for _ in range(count)]

    def pay_batch_nowait(
        self,
        channel_id: bytes,
        asset: bytes,
        amounts: Sequence[int] | None = None,
        *,
        each: int | None = None,
        count: int | None = None,
        batch_id: str | None = None,
        history: str = "batch",
    ) -> asyncio.Future[PaymentRecord]:
        """Queue a batch of payments as ONE payment of their total (decision 0012): `amounts`, or `count`
        payments of `each`. All or none: refused whole, nothing queued or changed, when an amount is not a
        positive int or the total is more than this side can spend. The batch rides in one update as one
        entry (its total and count); the future resolves with one record (`count`, `amount` the total)
        once both signed it, or fails whole. History: `"batch"` one row on each side; `"per-payment"`
        also one row per payment here (`<batch id>:<i>`), written with the outcome."""
        ch = self.channel(channel_id)
        if ch.phase is not Phase.OPEN:
            raise NodeError(Reason.WRONG_PHASE, f"channel is {ch.phase}, not open")
        if asset not in ch.assets:
            raise NodeError(Reason.BAD_ASSETS, f"asset 0x{asset.hex()} is not in this channel")
        if history not in HISTORY_MODES:
            raise NodeError(Reason.BAD_PARAMS, f"history must be one of {', '.join(HISTORY_MODES)}, not {history!r}")
        members: tuple[tuple[int, ...], int]  # the amounts, and how often each repeats
        if amounts is not None:
            if each is not None or count is not None:
                raise NodeError(Reason.BAD_PARAMS, "give amounts, or each and count: not both")
            listed = tuple(amounts)
            if not listed or not all(_positive(v) for v in listed):
                raise NodeError(Reason.BAD_AMOUNT, "a batch needs one or more amounts, each a positive int")
            total, n, members = sum(listed), len(listed), (listed, 1)
        else:
            if not _positive(each) or not _positive(count):
                raise NodeError(Reason.BAD_AMOUNT, "each and count must be positive ints")
            assert each is not None and count is not None
            total, n, members = each * count, count, ((each,), count)
        if n > m.MAX_COUNT or total > MAX_UINT256:
            raise NodeError(Reason.BAD_AMOUNT, f"a batch of {n} payments totalling {total} is beyond what a row holds")
        available = self._spendable(ch, asset)
        if total > available:
            raise NodeError(
                Reason.INSUFFICIENT_FUNDS,
                f"a batch of {n} payments totals {total}, more than the {max(available, 0)} of asset "
                f"0x{asset.hex()} this side can spend: none was made",
            )
        if history == "per-payment" and n > MAX_MEMBER_ROWS:
            raise NodeError(
                Reason.BAD_PARAMS, f"per-payment history writes a row per payment: at most {MAX_MEMBER_ROWS}, not {n}"
            )
        pid = self._new_id(batch_id, n if history == "per-payment" else 0)
        if history == "per-payment":
            self._members[pid] = members
        return self._enqueue(channel_id, Payment(pid, asset, total, n))

    async def pay(self, channel_id: bytes, asset: bytes, amount: int, payment_id: str | None = None) -> PaymentRecord:
        return await self.pay_nowait(channel_id, asset, amount, payment_id)

    def find_payment(self, channel_id: bytes, payment_id: str) -> PaymentRecord | None:
        """A payment of mine by id: queued or in flight, else among the channel's last 10,000 recorded."""
        if payment_id in self._records or payment_id in self._waiters:
            r = self._records.get(payment_id)
            if r is None:  # queued, not yet proposed: what it was asked to be (an idempotent retry compares it)
                queued = (p for p, _ in self._queued.get(channel_id, ()) if p.payment_id == payment_id)
                p = next(queued, None)
                asset, amount, count = (p.asset, p.amount, p.count) if p is not None else (b"", 0, 1)
                r = PaymentRecord(payment_id, channel_id, "out", asset, amount, "pending", 0, "", 0, count)
            return r
        return next((r for r in self.store.payments(channel_id, 10_000) if r.payment_id == payment_id), None)

    def payments(self, channel_id: bytes | None = None, limit: int = 100, offset: int = 0) -> list[PaymentRecord]:
        return list(self.store.payments(channel_id, limit, offset))

    def payments_before(
        self, channel_id: bytes | None, limit: int, before: PageKey | None
    ) -> tuple[list[PaymentRecord], PageKey | None]:
        """A page of history older than the key `before` (see Store.payments_before)."""
        return self.store.payments_before(channel_id, limit, before)

    def notify(self, kind: str, channel_id: bytes, data: dict[str, Any]) -> None:
        """An app's own event (a stream or schedule that stopped) on the node's event stream."""
        self._emit(NodeEvent(kind, "0x" + channel_id.hex(), data))

    async def subscribe(self) -> AsyncIterator[NodeEvent]:
        sub = _Subscriber()
        self._subscribers.append(sub)
        try:
            while True:
                yield await sub.queue.get()
        finally:
            self._subscribers.remove(sub)

    async def wait_for(self, channel_id: bytes, phase: Phase, timeout: float = 30.0) -> Channel:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ch = self.channels.get(channel_id)
            if ch is not None and ch.phase is phase:
                return ch
            await asyncio.sleep(0.02)
        have = self.channels[channel_id].phase if channel_id in self.channels else "absent"
        raise TimeoutError(f"channel 0x{channel_id.hex()[:12]} is {have}, not {phase}, after {timeout}s")

    async def idle(self, channel_id: bytes) -> None:
        """Wait until everything queued for a channel is durable and carried out (or dropped: a failed save)."""
        while channel_id in self._pending:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.setdefault(channel_id, []).append(waiter)
            await waiter

    # ------------------------------------------------------------ trading (node/swapdesk.py)

    @functools.cached_property
    def swaps(self) -> SwapDesk:
        """Quotes, takes and fills of two-asset swaps; made on first use."""
        return SwapDesk(self)

    async def send_quote(
        self,
        channel_id: bytes,
        base: bytes,
        quote: bytes,
        *,
        maker_sells: bool,
        base_unit: int,
        quote_unit: int,
        size: int,
        ttl_ms: int = 30_000,
    ) -> SignedQuote:
        """Sign a quote and send it to the peer: I sell (or buy) up to `size` of `base` at `quote_unit`
        of `quote` per `base_unit`, for `ttl_ms` milliseconds."""
        return await self.swaps.send_quote(
            channel_id,
            base,
            quote,
            maker_sells=maker_sells,
            base_unit=base_unit,
            quote_unit=quote_unit,
            size=size,
            ttl_ms=ttl_ms,
        )

    def take(self, channel_id: bytes, quote_id: int, base_amount: int) -> asyncio.Future[Fill]:
        """Take `base_amount` of the peer's quote in one swap; resolves with the fill once both signed."""
        return self.swaps.take(channel_id, quote_id, base_amount)

    def quotes(self, channel_id: bytes) -> list[SignedQuote]:
        """The peer's live quotes on a channel."""
        return self.swaps.quotes(channel_id)

    # ------------------------------------------------------------ core loop

    def _feed(self, channel_id: bytes, inp: Input, records: Iterable[PaymentRecord] = ()) -> None:
        new, effects = transition(self.channel(channel_id), inp, self.key)
        self._commit(channel_id, new, effects, records)

    def _commit(
        self, channel_id: bytes, new: Channel, effects: tuple[Effect, ...], records: Iterable[PaymentRecord] = ()
    ) -> None:
        old = self.channels.get(channel_id)
        self.channels[channel_id] = new
        if old is None or old.phase is not new.phase or old.withdrawals is not new.withdrawals:
            self._index(channel_id, new)
        recs = [*records, *self._payment_updates(channel_id, effects)]
        save: asyncio.Future[None]
        if new is old and not recs:  # a refusal: nothing to write, so a flood of them costs no disk
            save = asyncio.get_running_loop().create_future()
            save.set_result(None)
        else:
            try:
                save = self.store.save_nowait(channel_id, encode_channel(new), recs)
            except Exception as exc:  # refused or closed: a failed save, handled as one that rolled back
                save = asyncio.get_running_loop().create_future()
                save.set_exception(exc)
        # watchtower hook: a new fully signed state goes to the towers once it is durable
        if self.towers is not None and new.latest is not None and (old is None or old.latest != new.latest):
            save.add_done_callback(functools.partial(self._offer_to_towers, new))
        queue = self._pending.get(channel_id)
        if queue is None:
            queue = self._pending[channel_id] = deque()
        queue.append(_Pending(save, effects))
        self._backlog[channel_id] += 1
        if len(queue) == 1:  # the head: the callback that learns its save is durable carries it out
            save.add_done_callback(functools.partial(self._drain, channel_id))

    def _offer_to_towers(self, ch: Channel, save: asyncio.Future[None]) -> None:
        """Watchtower hook: only a durable state is offered (a failed save is reported by `_drain`)."""
        if self.towers is not None and not save.cancelled() and save.exception() is None:
            self.towers.offer(ch)

    def _drain(self, channel_id: bytes, _done: asyncio.Future[Any] | None = None) -> None:
        """Carry out the channel's commits whose saves are durable, in commit order, in this callback: the
        head's save (or a send that had to wait) calls it again when done; one such callback per channel."""
        queue = self._pending.get(channel_id)
        while queue:
            head = queue[0]
            if head.waiting is not None:  # resumed after a send that waited for the peer to read
                waited, head.waiting = head.waiting, None
                if not waited.cancelled() and waited.exception() is not None:
                    log.error("channel 0x%s: an effect failed", channel_id.hex(), exc_info=waited.exception())
                    head.step = len(head.effects)  # the rest of that commit is skipped, as after any failure
            elif head.step == 0:
                if not head.save.done():
                    head.save.add_done_callback(functools.partial(self._drain, channel_id))
                    return
                failure = asyncio.CancelledError() if head.save.cancelled() else head.save.exception()
                if failure is not None and channel_id not in self._fenced:
                    self._fence(channel_id, failure, len(queue) - 1)
                if channel_id in self._fenced:  # saved or not, nothing of it leaves the node but its defence
                    head.effects = tuple(e for e in head.effects if isinstance(e, _PASS_THE_FENCE))
            try:
                while head.step < len(head.effects):
                    effect = head.effects[head.step]
                    head.step += 1
                    waiting = self._carry_out(channel_id, effect)
                    if waiting is not None:  # a send waits for room: the rest follows it, in order
                        head.waiting = waiting
                        waiting.add_done_callback(functools.partial(self._drain, channel_id))
                        return
            except Exception:  # a bug in carrying out one effect: the rest of that commit is skipped
                log.exception("channel 0x%s: carrying out an effect failed", channel_id.hex())
            queue.popleft()
            self._backlog[channel_id] -= 1
        self._drained(channel_id)

    def _fence(self, channel_id: bytes, failure: BaseException, behind: int) -> None:
        """A save of this channel failed: what its commit decided is not durable, so nothing of it or of any
        later commit of the channel leaves the node (invariant 4), until a restart loads what the store holds.
        The later saves still go to the store; only their effects are dropped, all but the channel's defence
        on chain (`_PASS_THE_FENCE`): a stale close is still answered and the channel still settled."""
        self._fenced[channel_id] = failure
        log.error(
            "channel 0x%s: a save failed (%s): its effects, those of the %d updates queued behind it and of "
            "every later one are dropped; the channel carries out nothing more until the node restarts, but "
            "its defence on chain (challenge, settle)",
            channel_id.hex(),
            failure,
            behind,
        )
        self._publish(channel_id, NotifyAlert("save_failed", f"{failure}"))

    def _drained(self, channel_id: bytes) -> None:
        self._pending.pop(channel_id, None)
        for waiter in self._idle_waiters.pop(channel_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _execute(self, channel_id: bytes, effect: Effect) -> None:
        waiting = self._carry_out(channel_id, effect)
        if waiting is not None:
            await waiting

    def _carry_out(self, channel_id: bytes, effect: Effect) -> asyncio.Future[None] | None:
        """One effect, now; a send that must wait for the peer to read returns the task that finishes it."""
        ch = self.channels[channel_id]
        for hook in self.effect_hooks:
            hook(channel_id, effect)
        match effect:
            case SendMessage():
                frame = m.encode(effect.message)
                try:
                    if not self.transport.send_nowait(ch.peer_address, frame):
                        return asyncio.ensure_future(self._send_waiting(ch.peer_address, frame))
                except PeerUnreachable:  # resent on reconnect (PeerConnected)
                    pass
            case NotifySent() | NotifyFailed():
                self._resolve(channel_id, effect)
                self._publish(channel_id, effect)
                if self._queued.get(channel_id) and channel_id not in self._flushing:
                    self._flushing.add(channel_id)
                    asyncio.get_running_loop().call_soon(self._flush, channel_id)
                self.swaps.kick(channel_id)  # takes waiting for room in the pipeline
            case NotifyReceived() | NotifyPhase() | NotifyConcluded():
                self._publish(channel_id, effect)
            case NotifyAlert():
                log.warning("channel 0x%s: %s: %s", channel_id.hex()[:12], effect.kind, effect.detail)
                self._publish(channel_id, effect)
            case NotifyFilled() | NotifyTakeFailed():
                self.swaps.on_effect(channel_id, effect)
            case SubmitTxSettle() | SubmitTxChallenge():
                online = self.transport.connected(ch.peer_address)
                worth, why = weigh(ch, effect, self.txlog.gas_price, online) if self.weigh_gas else (True, "")
                if why:  # gas against the amount at stake, said in the log either way
                    log.info("channel 0x%s: %s", channel_id.hex()[:12], why)
                if worth:
                    self._spawn(self._submit(channel_id, effect))
            case _:
                self._spawn(self._submit(channel_id, effect))  # a SubmitTx*: mined in the background
        return None

    async def _send_waiting(self, peer: bytes, frame: bytes) -> None:
        with contextlib.suppress(PeerUnreachable):  # resent on reconnect (PeerConnected)
            await self.transport.send(peer, frame)

    async def _submit(self, channel_id: bytes, tx: SubmitTx) -> None:
        """Send a transaction; a revert goes back to the machine, which may have something to do about it
        (deposit after all when someone else opened first, drop a withdrawal that can never execute)."""
        verdict = await self.chainio.submit_verdict(self.channels[channel_id], tx)
        self._told(channel_id, tx, verdict)
        reverted = verdict.reverted
        if verdict.receipt is None and reverted is not None and isinstance(tx, _TX_FAILURES_FED):
            if isinstance(tx, SubmitTxOpen):  # what is funded decides what is missing: read it first
                await self._refresh_funds(channel_id)
            self._feed_quietly(channel_id, ChainTxFailed(tx, reverted))

    # ------------------------------------------------------------ payments

    def _flush(self, channel_id: bytes) -> None:
        self._flushing.discard(channel_id)
        queue = self._queued.get(channel_id)
        ch = self.channels.get(channel_id)
        if not queue or ch is None:
            return
        if ch.room() <= 0:
            return  # flushed again when an update is answered
        if len(queue) <= MAX_BATCH:
            batch, self._queued[channel_id] = queue, []
        else:
            batch, self._queued[channel_id] = queue[:MAX_BATCH], queue[MAX_BATCH:]
        try:
            self._pay_batch(channel_id, batch)
        except LocalError as exc:
            if exc.reason is Reason.INSUFFICIENT_FUNDS and len(batch) > 1:
                for one in batch:  # pay what fits, fail the rest (a batch entry fits or fails whole)
                    try:
                        self._pay_batch(channel_id, [one])
                    except LocalError as e:
                        self._fail_now(channel_id, one, e)
            else:
                for one in batch:
                    self._fail_now(channel_id, one, exc)
        if self._queued.get(channel_id) and channel_id not in self._flushing:
            self._flushing.add(channel_id)
            asyncio.get_running_loop().call_soon(self._flush, channel_id)

    def _pay_batch(self, channel_id: bytes, batch: list[tuple[Payment, asyncio.Future[PaymentRecord]]]) -> None:
        """Propose `batch` in one update. A payment whose id the caller chose gets its pending row in the
        same save (a caller retrying by that id after a crash must find it); one with an id the node
        chose is written once, with its outcome: nobody can ask for it by id before it has one, and
        the proposal carrying it is in the channel's saved state, so a restart still decides it."""
        now = int(time.time() * 1000)
        payments = tuple([p for p, _ in batch])
        records = [
            PaymentRecord(p.payment_id, channel_id, "out", p.asset, p.amount, "pending", 0, "", now, p.count)
            for p in payments
        ]
        named = self._named
        rows = [r for r in records if r.payment_id in named] if named else []
        self._feed(channel_id, ActionPay(payments), rows)
        self._records.update(zip([p.payment_id for p in payments], records, strict=True))

    def _fail_now(
        self, channel_id: bytes, item: tuple[Payment, asyncio.Future[PaymentRecord]], exc: StatechannelError
    ) -> None:
        p, fut = item
        for hook in self.refusal_hooks:
            hook(channel_id, exc.reason.value)
        self._waiters.pop(p.payment_id, None)
        self._members.pop(p.payment_id, None)
        self._named.discard(p.payment_id)
        if not fut.done():
            fut.set_exception(exc)

    def _payment_updates(self, channel_id: bytes, effects: tuple[Effect, ...]) -> list[PaymentRecord]:
        """The history rows an input's effects write, in the save that makes them durable. The outcome
        rows of my payments are built once here and kept for `_resolve`, which answers the futures with
        them after that save."""
        out: list[PaymentRecord] = []
        now = 0
        for e in effects:
            if isinstance(e, NotifySent | NotifyFailed):
                now = now or int(time.time() * 1000)
                outcome = self._outcome_rows(channel_id, e, now)
                out += outcome
                if len(self._outcomes) >= MAX_OUTCOMES_KEPT:  # only saves that failed leave entries behind
                    self._outcomes.clear()
                self._outcomes[id(e)] = (e, outcome)
                if self._members:
                    for rec in outcome:
                        out += self._member_rows(rec)
            elif isinstance(e, NotifyReceived):  # one row per payment or batch the peer listed (per asset if none)
                now = now or int(time.time() * 1000)
                listed = e.payments or e.amounts
                counts = e.counts if len(e.counts) == len(listed) else (1,) * len(listed)
                pre, v = f"in:{channel_id.hex()}:{e.version}:", e.version
                for i, ((asset, amount), n) in enumerate(zip(listed, counts, strict=True)):
                    out.append(PaymentRecord(f"{pre}{i}", channel_id, "in", asset, amount, "received", v, "", now, n))
        return out

    def _outcome_rows(self, channel_id: bytes, e: NotifySent | NotifyFailed, now: int) -> list[PaymentRecord]:
        """One row per payment (or batch) of `e`, in order, with its outcome."""
        if isinstance(e, NotifySent):
            status, version, reason = "sent", e.version, ""
        else:
            status, version, reason = "failed", 0, e.reason
        known = self._records.get
        return [
            PaymentRecord(
                p.payment_id,
                channel_id,
                "out",
                p.asset,
                p.amount,
                status,
                version,
                reason,
                r.created_ms if (r := known(p.payment_id)) is not None else now,
                p.count,
            )
            for p in e.payments
        ]

    def _member_rows(self, batch: PaymentRecord) -> list[PaymentRecord]:
        """A batch paid with history="per-payment": one row per payment, with the batch's outcome. Known
        only to the process that queued it: after a restart the batch's own row is its history."""
        members = self._members.get(batch.payment_id)
        if members is None:
            return []
        listed, repeat = members
        amounts = itertools.chain.from_iterable(itertools.repeat(v, repeat) for v in listed)
        return [
            dataclasses.replace(batch, payment_id=f"{batch.payment_id}:{i}", amount=v, count=1)
            for i, v in enumerate(amounts)
        ]

    def _resolve(self, channel_id: bytes, effect: NotifySent | NotifyFailed) -> None:
        kept = self._outcomes.pop(id(effect), None)
        if kept is not None and kept[0] is effect:
            outcome = kept[1]  # built with the save that made it durable
        else:  # an effect carried out without that (a restart's pending work)
            outcome = self._outcome_rows(channel_id, effect, int(time.time() * 1000))
        waiters, records, members, named = self._waiters, self._records, self._members, self._named
        reason: Reason | None = None
        for p, record in zip(effect.payments, outcome, strict=True):
            records.pop(p.payment_id, None)
            if members:
                members.pop(p.payment_id, None)
            if named:
                named.discard(p.payment_id)
            fut = waiters.pop(p.payment_id, None)
            if fut is None or fut.done():
                continue
            if isinstance(effect, NotifySent):
                fut.set_result(record)
            else:
                if reason is None:
                    known = effect.reason in Reason._value2member_map_
                    reason = Reason(effect.reason) if known else Reason.ILLEGAL_MOVE
                fut.set_exception(NodeError(reason, f"payment {p.payment_id} failed: {effect.reason}"))

    def _publish(self, channel_id: bytes, effect: Effect) -> None:
        if not self._subscribers:
            return
        data: dict[str, Any]
        match effect:
            case NotifyPhase():
                kind, data = "phase", {"phase": effect.phase}
            case NotifySent() | NotifyFailed():
                ids, count = [p.payment_id for p in effect.payments], sum(p.count for p in effect.payments)
                if isinstance(effect, NotifySent):  # count: the payments they are (a batch is one id of many)
                    kind, data = "sent", {"version": effect.version, "payments": ids, "count": count}
                else:
                    kind, data = "failed", {"reason": effect.reason, "payments": ids, "count": count}
            case NotifyReceived():
                kind = "received"
                data = {"version": effect.version, "amounts": {to_checksum(a): str(v) for a, v in effect.amounts}}
            case NotifyConcluded():
                o = effect.outcome
                paid = None if o.paid is None else [[str(a), str(b)] for a, b in o.paid]
                kind = "concluded"
                data = {
                    "version": o.version,
                    "cooperative": o.cooperative,
                    "challenged": o.challenged,
                    "paid": paid,
                    "loss": o.loss,
                }
            case NotifyAlert():
                kind, data = "alert", {"kind": effect.kind, "detail": effect.detail}
            case _:
                return
        self._emit(NodeEvent(kind, "0x" + channel_id.hex(), data))

    def _emit(self, event: NodeEvent) -> None:
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1

    # ------------------------------------------------------------ peers

    def _index(self, channel_id: bytes, ch: Channel) -> None:
        self._by_peer[ch.peer_address].add(channel_id)
        if ch.phase is Phase.DISPUTE or ch.withdrawals:
            self._timed.add(channel_id)
        else:
            self._timed.discard(channel_id)

    def channels_with(self, peer: bytes) -> list[bytes]:
        """The ids of every channel with `peer`, in any phase (the tower payer looks for one to pay through)."""
        return sorted(self._by_peer.get(peer, ()))

    def has_channels_with(self, peer: bytes) -> bool:
        """Whether any channel, in any phase, is with `peer` (the transport keeps such a peer's connection)."""
        return bool(self._by_peer.get(peer))

    async def _on_connect(self, peer: bytes) -> None:
        for cid in list(self._by_peer.get(peer, ())):
            if self.channels[cid].phase is not Phase.CLOSED:
                self._feed(cid, PeerConnected())

    async def _on_frame(self, peer: bytes, frame: bytes) -> None:
        """One frame from `peer`. Awaited by the transport before the next frame of that peer is read, so
        whatever this waits for (its answer sent, a backlog worked off) is the backpressure on that peer."""
        try:
            msg = m.decode(frame)
            if isinstance(msg, m.OpenRequest):
                answer = self._on_open_request(peer, msg)
                if answer is not None:  # sent before the next request is read: a peer that floods waits
                    with contextlib.suppress(PeerUnreachable):
                        await self.transport.send(peer, m.encode(answer))
                return
            if isinstance(msg, m.QuoteOffer):  # trading: node/swapdesk.py
                self.swaps.on_frame(peer, msg)
                return
            cid = m.channel_of(msg)
            ch = self.channels.get(cid)
            if ch is None or ch.peer_address != peer:
                raise RemoteError(Reason.WRONG_CHANNEL, f"no channel 0x{cid.hex()[:12]} with this peer")
            if isinstance(msg, m.WithdrawRequest):
                self._tick(cid)  # its deadline is judged in chain time
                ch = self.channels[cid]
            new, effects = receive(ch, msg, self.key, time.time_ns() // 1_000_000)
            for e in effects:
                if isinstance(e, SendMessage) and isinstance(e.message, m.Reject | m.Refuse):
                    self._refused(peer, e.message.reason, e.message.detail, type(msg).__name__)
            self._commit(cid, new, effects)
            if self._backlog[cid] > MAX_BACKLOG:
                await self.idle(cid)
        except StatechannelError as exc:
            self._refused(peer, str(exc.reason), exc.detail, "message")

    def _refused(self, peer: bytes, reason: str, detail: str, what: str) -> None:
        """Log a refusal with its reason: each (peer, reason) the first time, then at every power of ten, so
        a flood of bad messages cannot flood the log too."""
        k = (peer, reason)
        n = self.refusals.get(k, 0) + 1
        if n == 1 and len(self.refusals) >= REFUSALS_KEPT:
            self.refusals.clear()
        self.refusals[k] = n
        if n in (1, 10, 100, 1000) or n % 10_000 == 0:
            log.warning("refused a %s from 0x%s: %s: %s (%d so far)", what, peer.hex()[:12], reason, detail, n)

    def _on_open_request(self, peer: bytes, msg: m.OpenRequest) -> m.Message | None:
        """The answer owed now, if any (the Accept goes out as an effect, once the channel is saved)."""
        if msg.a != peer:
            raise RemoteError(Reason.BAD_PARAMS, "open request for a channel the sender is not A of")
        params = ChannelParams(msg.a, msg.b, msg.challenge_period, m.from_u256(msg.nonce))
        cid = params.channel_id(self.domain.chain_id, self.domain.adjudicator)
        try:
            existing = self.channels.get(cid)
            if existing is not None:  # A resent its request: the same Accept again, never a second signature
                return self._answer_again(existing, msg)
            if any(m.from_u256(d) for d in msg.deposits_b):
                raise RemoteError(Reason.BAD_PARAMS, "this node commits no deposit on request; deposit after opening")
            unfunded = sum(1 for c in self._by_peer.get(peer, ()) if c in self._unfunded_since)
            if unfunded >= self.max_unfunded_per_peer:
                raise RemoteError(
                    Reason.TOO_MANY_UNFUNDED, f"{unfunded} channels from this peer hold no deposit yet: fund those"
                )
            ch, effects = accept_open(msg, self.domain, self.key, self.terms)
            if len(self._unfunded_since) >= MAX_UNFUNDED_TOTAL:
                self._evict_oldest_unfunded()
        except StatechannelError as exc:  # tell A, so its channel does not wait forever
            self._refused(peer, str(exc.reason), exc.detail, "OpenRequest")
            return m.Reject(cid, 0, 0, str(exc.reason), exc.detail)
        self._unfunded_since[ch.channel_id] = time.monotonic()
        self._commit(ch.channel_id, ch, effects)
        return None

    def _answer_again(self, existing: Channel, msg: m.OpenRequest) -> m.Message:
        """Only the very request I accepted gets my pre-fund signature again: the channel id does not
        cover assets and deposits, and signing other terms would be a second state at version 0."""
        latest = existing.latest
        same = (
            list(existing.assets) == msg.assets
            and [m.u256(d[0]) for d in existing.deposits] == msg.deposits_a
            and [m.u256(d[1]) for d in existing.deposits] == msg.deposits_b
        )
        if (
            not same
            or existing.me != 1
            or existing.phase is not Phase.FUNDING
            or latest is None
            or latest.state.version != 0
        ):
            raise RemoteError(Reason.WRONG_CHANNEL, "a channel with this id exists, on other terms")
        return m.Accept(existing.channel_id, 0, latest.sig_b.to_bytes())

    # ------------------------------------------------------------ chain

    async def _watch(self) -> None:
        cp = self.store.load_checkpoint()
        since = cp.block_number if cp else 0
        failures = 0
        while True:
            try:
                poll = await self.chainio.run(functools.partial(self.chainio.poll, since, self.confirmations))
                events, mark, timestamp, reorged = poll.events, poll.mark, poll.timestamp, poll.reorged
                self.chain_head = mark.number
                for cid in poll.undone & self.channels.keys():
                    await self._after_reorg(cid)
                for event in events:
                    routed = to_inputs(event)
                    if routed is None or routed[0] not in self.channels:
                        continue
                    cid, inputs = routed
                    closes = any(isinstance(i, ChainDisputeRecorded) for i in inputs)
                    if closes and self.channels[cid].now < timestamp:  # a close is judged by the block read
                        self._feed_quietly(cid, ChainTime(timestamp))
                    for inp in inputs:
                        self._feed_quietly(cid, inp)
                    if any(type(i).__name__ == "ChainOpened" for i in inputs) or reorged:
                        await self._refresh_funds(cid)
                self.chain_time = max(self.chain_time, timestamp)  # only once its events are in
                for cid in list(self._timed):
                    self._feed_quietly(cid, ChainTime(timestamp))
                self._expire_unfunded()
                if mark.number != since:
                    await self.store.save_checkpoint(Checkpoint(mark.number, mark.hash))
                    since = mark.number
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the chain is unreachable or misbehaving: keep trying, quietly
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("chain watcher: %s (failure %d, retrying)", exc, failures)
            await asyncio.sleep(self.poll_interval * min(2**failures, 50) if failures else self.poll_interval)

    def _expire_unfunded(self) -> None:
        """Channels a peer opened with me that never got a deposit are abandoned after a while; one that
        got any deposit (or opened) leaves the count at once."""
        now = time.monotonic()
        for cid, since in list(self._unfunded_since.items()):
            ch = self.channels.get(cid)
            if ch is None or ch.phase is not Phase.FUNDING or ch.opened or any(a or b for a, b in ch.funded):
                del self._unfunded_since[cid]  # open on chain it may hold money at any moment: kept
            elif now - since >= self.unfunded_ttl:
                del self._unfunded_since[cid]
                self._feed_quietly(cid, ActionAbandon())
                if self.channels[cid].phase is Phase.CLOSED:
                    self._spawn(self._forget(cid))

    async def _recover(self, channel_id: bytes) -> None:
        """A channel restored from a backup: give the peer a while to prove a newer state (its Sync on
        connect), then close with the highest state proven; never sign on it again (core/recovery.py)."""
        start = self.channel(channel_id).latest
        await asyncio.sleep(self.recovery_wait)
        ch = self.channels.get(channel_id)
        if ch is None or ch.phase is not Phase.RECOVERING or ch.latest is None:
            return
        proven = "the backup's" if ch.latest == start else "a newer one the peer proved"
        log.warning(
            "channel 0x%s recovered from a backup: closing with version %d (%s); anything newer the peer holds "
            "was signed by both and may be recorded instead: the outcome will say what the chain paid",
            channel_id.hex()[:12],
            ch.latest.state.version,
            proven,
        )
        self._publish(
            channel_id, NotifyAlert("recovered", f"closing with version {ch.latest.state.version} ({proven})")
        )
        self._feed_quietly(channel_id, ActionCloseUnilateral())

    def _evict_oldest_unfunded(self) -> None:
        """All unfunded slots are taken (peer addresses cost nothing): the oldest one never opened on
        chain makes room, so a flood cannot lock honest peers out; an honest opener opens within moments."""
        for cid in sorted(self._unfunded_since, key=self._unfunded_since.__getitem__):
            ch = self.channels.get(cid)
            if ch is not None and ch.phase is Phase.FUNDING and not ch.opened and not any(a or b for a, b in ch.funded):
                del self._unfunded_since[cid]
                self._feed_quietly(cid, ActionAbandon())
                self._spawn(self._forget(cid))
                return
        raise RemoteError(Reason.TOO_MANY_UNFUNDED, f"{MAX_UNFUNDED_TOTAL} unfunded channels open on chain: try later")

    async def _forget(self, channel_id: bytes) -> None:
        """Drop an abandoned channel (never opened, nothing in it) from memory and store, once its last
        save is done: otherwise every free request would stay in the node for good."""
        await self.idle(channel_id)
        ch = self.channels.get(channel_id)
        if ch is None or ch.phase is not Phase.CLOSED or ch.opened:
            return
        del self.channels[channel_id]
        self._by_peer[ch.peer_address].discard(channel_id)
        self._timed.discard(channel_id)
        self._fenced.pop(channel_id, None)
        await self.store.forget(channel_id)

    async def _after_reorg(self, channel_id: bytes) -> None:
        """Blocks with events of this channel were replaced: what the node took from them may be gone.
        Its funds are read again (a deposit may be undone), and a close the node is answering that the
        new branch lacks leaves the channel open on chain while the node is in its dispute: it closes
        with its own latest state (the peer wanted out; a retry of that close is the same transaction)."""
        await self._refresh_funds(channel_id)
        ch = self.channels[channel_id]
        if (
            ch.phase is Phase.DISPUTE
            and ch.latest is not None
            and await self.chainio.run(lambda: self.chainio.is_open(channel_id))
        ):
            log.warning("channel 0x%s: the close was undone by a reorg: closing with my latest", channel_id.hex())
            self._spawn(self._submit(channel_id, SubmitTxClose(ch.latest)))

    async def _refresh_funds(self, channel_id: bytes) -> None:
        ch = self.channels[channel_id]
        for inp in await self.chainio.run(lambda: self.chainio.read_funds(ch)):
            self._feed_quietly(channel_id, inp)

    def _feed_quietly(self, channel_id: bytes, inp: Input) -> None:
        """A chain input for one channel: whatever goes wrong with it (a refusal, or a bug) stays with that
        channel, never stops the watcher that serves every other one."""
        try:
            self._feed(channel_id, inp)
        except StatechannelError as exc:
            log.warning("chain input %s for 0x%s refused: %s", type(inp).__name__, channel_id.hex()[:12], exc)
        except Exception:
            log.exception(
                "chain input %s for 0x%s failed; the channel is unchanged", type(inp).__name__, channel_id.hex()
            )

    async def submit(self, channel_id: bytes, tx: SubmitTx) -> None:
        await self.chainio.submit(self.channel(channel_id), tx)

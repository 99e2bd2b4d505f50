"""The node's watchtower client: keeps each channel's newest fully signed state with one or more towers, so a
stale close is answered even while this node is offline.

A tower is a separate service reached over HTTP only. Nothing here is on the path of a payment: the node
offers a state in O(1) and one background worker per tower pushes it, so a slow or dead tower delays only its
own queue. Only the newest state of a channel is ever pushed (older ones are worthless to a tower). What each
tower acknowledged, and the state still to push, live in their own SQLite file so the queue survives a
restart. Every request is signed by this node's key (a fresh timestamp, for that tower only), so a tower keeps
this node's states apart from the peer's. A receipt counts as protection only once it names exactly the state
pushed and the tower's advertised key signed it; one that does not is logged and kept as the tower's error."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from statechannel.aio import wait_set
from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.tower import NO_CHANNEL, Receipt, account_request, authorize, push_request, register_request
from statechannel.core.types import Domain, address_from_hex, to_checksum
from statechannel.node.towerpay import TowerPay, TowerPayError
from statechannel.node.towerstate import Journal, Protection, Push, TowerPolicy, tower_url

log = logging.getLogger(__name__)
BATCH = 16  # pushes in flight per tower: enough to drain a backlog, few enough to be polite
MIN_BACKOFF, MAX_BACKOFF = 0.2, 10.0
UNKNOWN_RETRY_MAX = 5.0  # an open not yet seen by the tower is usually seen within a block or two
FROM_BLOCK_SLACK = 64
"""Blocks a receipt's `from_block` may lie past the head this node has seen (its watcher trails by its
confirmations and a poll): a receipt further ahead promises nothing until then and is refused."""
_JSON = {"content-type": "application/json"}


class TowerError(RemoteError):
    """A tower answered something this client cannot use (wrong chain, bad receipt, malformed body)."""


class TowerUnavailable(TowerError):
    """The tower cannot be used right now (unreachable, overloaded, misconfigured): retried with backoff."""


class _Tower:
    """One tower's queue. `due` holds channels whose newest state the tower does not yet hold."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.address: bytes | None = None
        self.acked: dict[bytes, int] = {}
        self.registered: set[bytes] = set()
        self.receipts: dict[bytes, Protection] = {}
        self.due: set[bytes] = set()
        self.later: dict[bytes, tuple[float, float]] = {}  # unknown to the tower yet: (retry at, delay)
        self.refused: dict[bytes, int] = {}  # a version the tower refused for good: not retried
        self.errors: dict[bytes, str] = {}  # the last receipt of a channel that did not verify, and why
        self.sent: dict[bytes, int] = {}  # the newest version of each channel told to the payer as sent
        self.paid_unbudgeted = False  # a paid tower and no --tower-budget: said once
        self.inflight = 0
        self.resume_at = 0.0
        self.backoff = MIN_BACKOFF
        self.down: str | None = None
        self.wake = asyncio.Event()

    def idle(self) -> bool:
        return not self.due and not self.later and not self.inflight


class TowerClient:
    """Pushes channels' newest fully signed states to towers on a `TowerPolicy`; see the module docstring."""

    def __init__(self, urls: Iterable[str], journal: Path, policy: TowerPolicy | None = None) -> None:
        self.policy = policy or TowerPolicy()
        self.towers: dict[str, _Tower] = {}
        for raw in urls:
            url = tower_url(raw)
            self.towers[url] = _Tower(url)
        if not self.towers:
            raise LocalError(Reason.BAD_PARAMS, "a tower client needs at least one tower")
        self.journal_path = journal
        self.domain: Domain | None = None
        self.key: PrivateKey | None = None
        self._head: Callable[[], int] | None = None
        self._held: dict[bytes, Channel] = {}  # newest offered, not yet released by the policy
        self._counts: dict[bytes, int] = {}
        self._released: dict[bytes, Channel] = {}  # newest released: what the workers push
        self._bodies: dict[bytes, Push] = {}  # serialised (and journalled) newest released
        self._unjournalled: set[bytes] = set()  # released, not yet serialised for the journal
        self._unsaved_pending: dict[bytes, Push] = {}
        self._unsaved_acks: set[tuple[str, bytes]] = set()
        self._save_lock = asyncio.Lock()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="towers")
        self._journal: Journal | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.payer: TowerPay | None = None
        """Pays paid towers (node/towerpay.py), set before start; None: this node pays no tower."""

    # ------------------------------------------------------------ lifecycle (called by the node)

    async def start(
        self,
        domain: Domain,
        channels: Iterable[Channel],
        key: PrivateKey,
        head: Callable[[], int] | None = None,
    ) -> None:
        """Resume the journalled queue, then queue every channel whose newest state some tower lacks (a state
        held back by the policy when the node last died would otherwise never be pushed). `key` is the node's:
        it signs every request, proving to the tower which participant asks. `head` is the newest block the node
        has seen (0 while it knows none): a receipt protecting only from a block far past it is refused."""
        self.domain, self.key, self._head = domain, key, head
        loop = asyncio.get_running_loop()
        self._journal = await loop.run_in_executor(self._io, Journal, self.journal_path)
        pending, acked = await loop.run_in_executor(self._io, self._journal.load)
        for cid, version, register, state in pending:
            self._bodies[cid] = Push(cid, version, register, state)
        for url, cid, version, registered, r_version, address, receipt, r_hash, from_block in acked:
            t = self.towers.get(url)
            if t is None:
                continue  # a tower no longer configured
            t.acked[cid] = version
            if registered:
                t.registered.add(cid)
            if receipt is not None:
                t.receipts[cid] = Protection(url, address, r_version, receipt, r_hash, from_block)
        for cid, push in self._bodies.items():
            self._mark_due(cid, push.version)
        for ch in channels:
            if ch.phase is Phase.CLOSED or ch.latest is None:
                continue
            if ch.latest.state.version > self._newest_version(ch.channel_id):
                self._release(ch)
        timeout = httpx.Timeout(self.policy.request_timeout, connect=min(self.policy.request_timeout, 2.0))
        self._http = httpx.AsyncClient(timeout=timeout)
        if self.payer is not None:
            self.payer.read_account = self._read_account
            await self.payer.start()
        self._tasks = [asyncio.create_task(self._work(t), name=f"tower {t.url}") for t in self.towers.values()]
        if self.policy.every_ms:
            self._tasks.append(asyncio.create_task(self._tick(), name="tower policy timer"))
        log.info("watchtowers %s, pushing %s", ", ".join(self.towers), self.policy.describe())

    def offer(self, ch: Channel) -> None:
        """A channel's latest fully signed state changed and is durable. O(1): never waits for a tower."""
        if ch.latest is None:
            return
        cid = ch.channel_id
        held = self._held.get(cid) or self._released.get(cid)
        if held is not None and held.latest is not None and held.latest.state.version >= ch.latest.state.version:
            return  # saves can complete out of order; the newest already won
        self._held[cid] = ch
        if self.policy.every_ms:
            return  # the timer releases it
        count = self._counts.get(cid, 0) + 1
        if count >= self.policy.every_updates:
            self._counts.pop(cid, None)
            self._release(ch)
        else:
            self._counts[cid] = count

    async def close(self) -> None:
        """Push everything held back, wait (bounded) until every tower has it, then stop. What a tower did not
        take stays in the journal and is pushed on the next start."""
        for cid in list(self._held):
            self._release(self._held[cid])
        self._counts.clear()
        for t in self.towers.values():
            t.resume_at, t.backoff = 0.0, MIN_BACKOFF
            t.later = dict.fromkeys(t.later, (0.0, MIN_BACKOFF))
            t.wake.set()
        deadline = time.monotonic() + self.policy.flush_timeout
        while not all(t.idle() for t in self.towers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in self.towers.values():
            if not t.idle():
                log.warning("tower %s: %d channel(s) not flushed before stopping", t.url, len(t.due | set(t.later)))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        await self._save()
        if self.payer is not None:
            await self.payer.close()
        if self._journal is not None:
            await asyncio.get_running_loop().run_in_executor(self._io, self._journal.close)
        self._io.shutdown(wait=True)

    def protection(self, channel_id: bytes) -> list[Protection]:
        """The newest verified receipt of each tower for this channel."""
        return [t.receipts[channel_id] for t in self.towers.values() if channel_id in t.receipts]

    def billing(self) -> list[dict[str, Any]]:
        """Each paid tower as this node pays it (towerpay.TowerPay.view); empty without --tower-budget."""
        if self.payer is None:
            return []
        return [v for url in self.towers if (v := self.payer.view(url)) is not None]

    def receipt_errors(self, channel_id: bytes) -> list[tuple[str, str]]:
        """(tower, why) for each tower whose last receipt for this channel did not verify: no protection."""
        return [(t.url, t.errors[channel_id]) for t in self.towers.values() if channel_id in t.errors]

    # ------------------------------------------------------------ policy

    def _newest_version(self, cid: bytes) -> int:
        ch = self._released.get(cid)
        body = self._bodies.get(cid)
        return max(
            ch.latest.state.version if ch is not None and ch.latest is not None else -1,
            body.version if body is not None else -1,
        )

    def _release(self, ch: Channel) -> None:
        assert ch.latest is not None
        self._held.pop(ch.channel_id, None)
        self._released[ch.channel_id] = ch
        self._unjournalled.add(ch.channel_id)
        self._mark_due(ch.channel_id, ch.latest.state.version)

    def _mark_due(self, cid: bytes, version: int) -> None:
        for t in self.towers.values():
            if t.acked.get(cid, -1) < version and t.refused.get(cid) != version:
                t.due.add(cid)
                t.wake.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.policy.every_ms / 1000)
            for cid in list(self._held):
                self._release(self._held[cid])

    # ------------------------------------------------------------ workers

    def _push_for(self, cid: bytes) -> Push | None:
        """The newest released state, serialised only now: under load most offers are superseded unsent."""
        ch, body = self._released.get(cid), self._bodies.get(cid)
        if ch is not None and ch.latest is not None and (body is None or body.version < ch.latest.state.version):
            body = self._bodies[cid] = self._unsaved_pending[cid] = Push.of(ch)
        return body

    def _wait_time(self, t: _Tower) -> float | None:
        now = time.monotonic()
        if t.resume_at > now:
            return t.resume_at - now
        if t.due:
            return 0.0
        if t.later:
            return max(0.0, min(at for at, _ in t.later.values()) - now)
        return None

    async def _work(self, t: _Tower) -> None:
        while True:
            delay = self._wait_time(t)
            if delay is None or delay > 0:
                await wait_set(t.wake, delay)
                t.wake.clear()
                continue
            now = time.monotonic()
            for cid, (at, _) in list(t.later.items()):
                if at <= now:
                    t.due.add(cid)
            batch = [t.due.pop() for _ in range(min(BATCH, len(t.due)))]
            t.inflight = len(batch)
            try:
                if t.address is None:
                    await self._hello(t)
                pushes = [(cid, self._push_for(cid)) for cid in batch]
                await self._save()
                results = await asyncio.gather(*(self._push(t, c, p) for c, p in pushes), return_exceptions=True)
                failure = next((r for r in results if isinstance(r, TowerUnavailable)), None)
                for cid, r in zip(batch, results, strict=True):
                    if isinstance(r, TowerUnavailable):
                        t.due.add(cid)
                    elif isinstance(r, BaseException):
                        log.error("tower %s: pushing channel 0x%s failed", t.url, cid.hex()[:12], exc_info=r)
                if failure is not None:
                    raise failure
                if t.down is not None:
                    log.info("tower %s is reachable again", t.url)
                t.down, t.backoff = None, MIN_BACKOFF
            except Exception as exc:  # unavailable, or a bug here: either way back off, never end the worker
                t.due.update(batch)
                detail = exc.detail if isinstance(exc, TowerUnavailable) else repr(exc)
                if t.down is None:
                    log.warning("tower %s unavailable, retrying (every <= %.0f s): %s", t.url, MAX_BACKOFF, detail)
                t.down = detail
                t.resume_at = time.monotonic() + t.backoff
                t.backoff = min(t.backoff * 2, MAX_BACKOFF)
            finally:
                t.inflight = 0

    async def _hello(self, t: _Tower) -> None:
        """Learn the tower's key, and refuse a tower that watches another chain or contract."""
        assert self._http is not None and self.domain is not None
        try:
            r = await self._http.get(t.url + "/info")
            info = r.json()
            address = address_from_hex(str(info["address"]))
            chain_id, adjudicator = int(info["chain_id"]), address_from_hex(str(info["adjudicator"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, LocalError) as exc:
            raise TowerUnavailable(Reason.BAD_MESSAGE, f"GET /info: {exc!r}") from exc
        if (chain_id, adjudicator) != (self.domain.chain_id, self.domain.adjudicator):
            detail = f"it watches chain {chain_id} / {to_checksum(adjudicator)}, not this node's"
            raise TowerUnavailable(Reason.WRONG_CHANNEL, detail)
        terms = info.get("terms") if isinstance(info, dict) else None
        if self.payer is not None:
            try:
                self.payer.hello(t.url, terms)
            except TowerPayError as exc:
                raise TowerUnavailable(Reason.BAD_MESSAGE, f"GET /info: unreadable terms: {exc.detail}") from exc
        elif terms is not None and not t.paid_unbudgeted:
            t.paid_unbudgeted = True
            log.warning("tower %s is paid (%s) and this node has no --tower-budget: it pays nothing", t.url, terms)
        t.address = address
        log.info("tower %s: key %s", t.url, to_checksum(address))

    def _signed_body(self, t: _Tower, body: str, cid: bytes, request: bytes) -> str:
        """The request body with this node's signature for tower `t`, made now."""
        assert self.key is not None and self.domain is not None
        if t.address is None:  # its key is being read again (a bad receipt): wait for it
            raise TowerUnavailable(Reason.BAD_MESSAGE, "the tower's key is not known yet")
        auth = authorize(self.key, self.domain, t.address, cid, request, int(time.time()))
        fields = {
            "client": to_checksum(auth.client),
            "timestamp": auth.timestamp,
            "auth": "0x" + auth.signature.to_bytes().hex(),
        }
        return json.dumps({**json.loads(body), **fields})

    async def _post(self, t: _Tower, path: str, body: str) -> tuple[int, dict[str, Any], str]:
        assert self._http is not None
        try:
            r = await self._http.post(t.url + path, content=body, headers=_JSON)
        except httpx.HTTPError as exc:
            raise TowerUnavailable(Reason.BAD_MESSAGE, f"POST {path}: {exc!r}") from exc
        if r.status_code >= 500 or r.status_code == 429:
            raise TowerUnavailable(Reason.BAD_MESSAGE, f"POST {path}: HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TowerUnavailable(Reason.BAD_MESSAGE, f"POST {path}: HTTP {r.status_code} without a JSON object")
        error = data.get("error")
        reason = str(error.get("reason", "")) if isinstance(error, dict) else ""
        return r.status_code, data, reason

    async def _push(self, t: _Tower, cid: bytes, push: Push | None) -> None:
        if push is None or t.acked.get(cid, -1) >= push.version or t.refused.get(cid) == push.version:
            return
        if cid not in t.registered:
            body = self._signed_body(t, push.register, cid, register_request(push.params()))
            status, data, reason = await self._post(t, "/channels", body)
            if reason == "unknown_channel":
                self._retry_later(t, cid)
                return
            if status not in (200, 201):
                self._refuse(t, push, f"registration: HTTP {status} {data}")
                return
            t.registered.add(cid)
            self._unsaved_acks.add((t.url, cid))
        signed = push.signed_state()
        if self.payer is not None and self.payer.paid_tower(t.url) and t.sent.get(cid, -1) < push.version:
            t.sent[cid] = push.version
            self.payer.sent(t.url)
        status, data, reason = await self._post(
            t, "/states", self._signed_body(t, push.state, cid, push_request(signed))
        )
        if reason == "unknown_channel":  # the tower forgot it (a fresh database): register again
            t.registered.discard(cid)
            self._retry_later(t, cid)
            return
        paid = status == 402 and reason == "payment_required" and self.payer is not None
        if paid and self.payer is not None and await self.payer.payment_required(t.url, data):
            self._retry_later(t, cid)  # paid (or a payment is on its way to the tower): push again soon
            return
        t.later.pop(cid, None)
        if status == 409 and reason == "stale_version":
            t.acked[cid] = push.version  # it holds this version or newer ones of ours: nothing left to push
        elif status == 200:
            try:
                t.receipts[cid] = self._check_receipt(t, cid, push.version, state_hash(signed.state), data)
            except TowerError as exc:
                t.errors[cid] = exc.detail
                log.error(
                    "tower %s: the receipt for version %d of 0x%s does not verify, so it protects nothing: %s",
                    t.url,
                    push.version,
                    cid.hex()[:12],
                    exc.detail,
                )
                t.address = None  # read its key again: it may have been replaced
                self._refuse(t, push, exc.detail)
                return
            t.errors.pop(cid, None)
            t.acked[cid] = push.version
            if self.payer is not None:
                self.payer.accepted(t.url, data.get("billing"))
        else:
            self._refuse(t, push, f"HTTP {status} {data}")
            return
        self._unsaved_acks.add((t.url, cid))

    async def _read_account(self, url: str) -> dict[str, Any] | None:
        """The paid tower's view of this node's account (`POST /accounts/{addr}`, signed by this node only)."""
        t = self.towers[url]
        assert self.key is not None
        me = to_checksum(self.key.address)
        try:
            status, data, _ = await self._post(
                t, f"/accounts/{me}", self._signed_body(t, "{}", NO_CHANNEL, account_request(self.key.address))
            )
        except TowerUnavailable:
            return None
        return data if status == 200 else None

    def _check_receipt(self, t: _Tower, cid: bytes, version: int, pushed: bytes, data: dict[str, Any]) -> Protection:
        """The receipt must name the channel, version and state hash pushed and this tower, and be signed by the
        key its /info gave."""
        assert t.address is not None and self.domain is not None
        try:
            r = Receipt(
                bytes.fromhex(str(data["channel_id"]).removeprefix("0x")),
                int(data["version"]),
                bytes.fromhex(str(data["state_hash"]).removeprefix("0x")),
                address_from_hex(str(data["tower"])),
                int(data["from_block"]),
            )
            sig = bytes.fromhex(str(data["receipt"]).removeprefix("0x"))
            signer = r.signer(self.domain, Signature.from_bytes(sig))
        except (KeyError, ValueError, TypeError, AttributeError, LocalError, RemoteError) as exc:
            raise TowerError(Reason.BAD_SIGNATURE, f"unreadable receipt: {exc!r}") from exc
        if (r.channel_id, r.version, r.state_hash, r.tower) != (cid, version, pushed, t.address):
            raise TowerError(Reason.WRONG_CHANNEL, f"the receipt does not name the state pushed (version {version})")
        if signer != t.address:
            raise TowerError(Reason.WRONG_SIGNER, f"receipt for version {version} is not signed by the tower's key")
        head = self._head() if self._head is not None else 0
        if head > 0 and r.from_block > head + FROM_BLOCK_SLACK:
            raise TowerError(
                Reason.BAD_PARAMS,
                f"the receipt for version {version} protects only from block {r.from_block}, past the head {head}",
            )
        return Protection(t.url, t.address, version, sig, r.state_hash, r.from_block)

    def _retry_later(self, t: _Tower, cid: bytes) -> None:
        _, delay = t.later.get(cid, (0.0, MIN_BACKOFF / 2))
        delay = min(delay * 2, UNKNOWN_RETRY_MAX)
        t.later[cid] = (time.monotonic() + delay, delay)

    def _refuse(self, t: _Tower, push: Push, why: str) -> None:
        """Not retried: the tower will answer this version the same way; a newer state is tried afresh."""
        t.later.pop(push.channel_id, None)
        t.refused[push.channel_id] = push.version
        log.warning("tower %s refused version %d of 0x%s: %s", t.url, push.version, push.channel_id.hex()[:12], why)

    async def _save(self) -> None:
        """Journal the states about to leave and every changed acknowledgement, in one transaction."""
        async with self._save_lock:
            for cid in self._unjournalled:
                self._push_for(cid)
            self._unjournalled.clear()
            if self._journal is None or not (self._unsaved_pending or self._unsaved_acks):
                return
            pending, keys = list(self._unsaved_pending.values()), self._unsaved_acks
            self._unsaved_pending, self._unsaved_acks = {}, set()
            rows = []
            for url, cid in keys:
                t = self.towers[url]
                p = t.receipts.get(cid)
                rows.append(
                    (url, cid, t.acked.get(cid, -1), cid in t.registered)
                    + ((p.version, p.address, p.receipt, p.state_hash, p.from_block) if p else (None,) * 5)
                )
            try:
                await asyncio.get_running_loop().run_in_executor(self._io, self._journal.write, pending, rows)
            except sqlite3.Error as exc:  # the pushes still happen; only the queue's durability suffers
                log.error("tower journal %s: %s", self.journal_path, exc)

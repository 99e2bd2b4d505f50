"""A paid tower: terms, per-client accounts, and the payments that credit them (decision 0010).

A client is the participant address that signs its requests. It pays through an ordinary statechannel channel
with the tower operator's node (`Terms.pay_to`); the tower reads its own node's API (`GET /payments`, bearer
token) and credits each payment *received* on a channel to that channel's peer. No memo names an account: the
channel's counterparty is authenticated by its signatures, so nobody can pay "for" someone else, and a payment
only counts once the node holds the countersigned state (the node's `received` row). Each payment id is credited
at most once (a row of tw_payments, written in the same transaction as the account).

    balance(t) = paid - states * price_per_state - price_per_period * periods started since the first payment

An account opens with its first payment: before that a paid tower takes no push (402). Once the balance is
negative the tower still protects for `grace` seconds from when it went short (told to the client in every 402,
receipt and account view); after that it refuses pushes and answers none of the client's states in a dispute.
Amounts are ints in the asset's smallest unit, stored as decimal text (a uint256 fits no SQL integer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from statechannel.core.types import ETH, UINT256_MAX, address_from_hex, to_checksum
from statechannel.watchtower.errors import TowerError, TowerReason
from statechannel.watchtower.storage import Row, Tx

log = logging.getLogger(__name__)
PAGE = 500
"""Rows asked of the node per page of `GET /payments`."""
MAX_PERIOD = 10 * 365 * 86400
MAX_GRACE = 365 * 86400


class BillingError(Exception):
    """Bad terms, or an answer of the payee node this tower cannot use."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What a paid tower asks. A free tower has no Terms at all."""

    pay_to: bytes
    """The address of the tower operator's node: clients pay through a channel with it."""
    asset: bytes = ETH
    price_per_state: int = 0
    """Charged for each state the tower accepts (a retried or stale push costs nothing)."""
    price_per_period: int = 0
    period: int = 0
    """Seconds; each period is charged when it starts, the first one with the first payment."""
    grace: int = 3600
    """Seconds the tower keeps protecting after the balance went negative."""

    def __post_init__(self) -> None:
        if len(self.pay_to) != 20 or len(self.asset) != 20:
            raise BillingError("pay_to and asset must be 20-byte addresses")
        for name in ("price_per_state", "price_per_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT256_MAX:
                raise BillingError(f"{name} must be an int in 0 .. 2**256 - 1")
        for name in ("period", "grace"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise BillingError(f"{name} must be an int number of seconds, not {value!r}")
        if self.price_per_state == 0 and self.price_per_period == 0:
            raise BillingError("a paid tower needs a price per state or a price per period")
        if self.price_per_period and not 1 <= self.period <= MAX_PERIOD:
            raise BillingError(f"a price per period needs a period of 1 .. {MAX_PERIOD} s")
        if not 0 <= self.grace <= MAX_GRACE:
            raise BillingError(f"grace must be 0 .. {MAX_GRACE} s")

    def as_json(self) -> dict[str, Any]:
        return {
            "pay_to": to_checksum(self.pay_to),
            "asset": to_checksum(self.asset),
            "price_per_state": str(self.price_per_state),
            "price_per_period": str(self.price_per_period),
            "period": self.period,
            "grace": self.grace,
        }


@dataclass(frozen=True, slots=True)
class Account:
    address: bytes
    paid: int = 0
    states: int = 0
    """States accepted (charged)."""
    start: int | None = None
    """Unix seconds of the first payment: periods count from here."""
    short_since: int | None = None
    """When the balance was first seen negative (None: it is not)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """An account judged at one moment."""

    account: Account
    owed: int
    balance: int
    paid_until: int | None
    """Unix seconds the payments cover (None: per state only and not short, so no date applies)."""
    protected_until: int | None
    """Unix seconds after which the tower protects nothing of this client (None: no end in sight)."""
    protected: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "client": to_checksum(self.account.address),
            "paid": str(self.account.paid),
            "owed": str(self.owed),
            "balance": str(self.balance),
            "states": self.account.states,
            "paid_until": self.paid_until,
            "protected_until": self.protected_until,
            "protected": self.protected,
        }


def periods_started(terms: Terms, start: int | None, now: int) -> int:
    if not terms.price_per_period or start is None:
        return 0
    return max(0, now - start) // terms.period + 1


def standing(terms: Terms, acct: Account, now: int) -> Standing:
    """Pure: what the account owes at `now`, and until when it is protected."""
    owed = acct.states * terms.price_per_state + terms.price_per_period * periods_started(terms, acct.start, now)
    balance = acct.paid - owed
    paid_until: int | None = None
    if terms.price_per_period and acct.start is not None:
        left = acct.paid - acct.states * terms.price_per_state
        covered = max(0, left) // terms.price_per_period  # periods the payments cover, the first included
        paid_until = acct.start + covered * terms.period
    if acct.paid <= 0:
        return Standing(acct, owed, balance, paid_until, None, False)
    if balance >= 0:
        return Standing(acct, owed, balance, paid_until, None if paid_until is None else paid_until + terms.grace, True)
    since = short_since(terms, acct, now)
    until = since + terms.grace
    return Standing(acct, owed, balance, paid_until, until, now < until)


def short_since(terms: Terms, acct: Account, now: int) -> int:
    """When a negative balance began: the stored moment, or (per period) the start of the first unpaid period."""
    candidates = [now]
    if acct.short_since is not None:
        candidates.append(acct.short_since)
    if terms.price_per_period and acct.start is not None:
        left = acct.paid - acct.states * terms.price_per_state
        candidates.append(acct.start + max(0, left) // terms.price_per_period * terms.period)
    return min(candidates)


@dataclass(frozen=True, slots=True)
class Received:
    """One payment the payee node holds countersigned: `amount` of `asset` from the channel's peer."""

    payment_id: str
    payer: bytes
    asset: bytes
    amount: int
    channel_id: str = ""
    """0x-hex channel it came through ("" if unknown: then it is never reconciled)."""
    version: int = -1
    """The channel version that carried it."""


@dataclass(frozen=True, slots=True)
class Holding:
    """What the payee node holds in one channel, in the tower's asset: its balance less its own funding, i.e.
    what the peer has moved to it (less what it moved back) as of `version`."""

    channel_id: str
    peer: bytes
    version: int
    net: int


class PaymentSource(Protocol):
    async def received(self, known: Callable[[str], bool]) -> list[Received]:
        """Payments received, newest first, stopping after the first page holding one `known` says was credited."""
        ...


class Reconciling(Protocol):
    """A source that can tell when rows were pruned unread, and what each channel holds instead."""

    lost: bool
    """The last `received` reached the end of the node's history without a row already credited while the
    node had pruned rows since the poll before: some payments may never have been read."""

    async def holdings(self, asset: bytes) -> list[Holding]: ...


class NodePayments:
    """Reads the payee node's API over HTTP: `GET /payments` (rows `in`/`received` only) and each channel's peer."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {token}"})
        self._peers: dict[str, bytes] = {}
        self._pruned_seen = -1  # the node's pruned-row count at the last poll (-1: none yet)
        self.lost = False

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return (await self._get_with_headers(path, params))[0]

    async def _get_with_headers(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, httpx.Headers]:
        try:
            r = await self._http.get(self.url + path, params=params)
        except httpx.HTTPError as exc:
            raise BillingError(f"payee node {self.url}: GET {path}: {exc!r}") from exc
        if r.status_code != 200:
            raise BillingError(f"payee node {self.url}: GET {path}: HTTP {r.status_code}")
        try:
            return r.json(), r.headers
        except ValueError as exc:
            raise BillingError(f"payee node {self.url}: GET {path}: not JSON") from exc

    async def holdings(self, asset: bytes) -> list[Holding]:
        """Each channel's net holding of `asset` (GET /channels): what reconciles payments pruned unread."""
        views = await self._get("/channels")
        if not isinstance(views, list):
            raise BillingError("payee node: /channels is not a list")
        name = "ETH" if asset == ETH else to_checksum(asset)
        out: list[Holding] = []
        for v in views:
            try:
                if v["version"] is None:
                    continue
                [bal] = [b for b in v["balances"] if str(b["asset"]).lower() == name.lower()] or [None]
                if bal is None:
                    continue
                mine, funded = str(bal["my_balance"]), str(bal["my_funded"])
                if not (mine.isdigit() and funded.isdigit() and len(mine) <= 78 and len(funded) <= 78):
                    raise ValueError(f"balances {mine[:80]!r} / {funded[:80]!r}")
                net = int(mine) - int(funded)
                cid, version, peer = str(v["channel_id"]), int(v["version"]), address_from_hex(str(v["peer"]))
            except Exception as exc:  # one unreadable view is skipped, the rest reconciled
                log.warning("payee node: a channel view that cannot be read is skipped: %r", exc)
                continue
            if net > 0:
                out.append(Holding(cid, peer, version, min(net, UINT256_MAX)))
        return out

    async def _peer(self, channel_id: str) -> bytes:
        peer = self._peers.get(channel_id)
        if peer is None:
            view = await self._get(f"/channels/{channel_id}")
            try:
                peer = address_from_hex(str(view["peer"]))
            except Exception as exc:
                raise BillingError(f"payee node: channel {channel_id} has no readable peer") from exc
            self._peers[channel_id] = peer
        return peer

    async def received(self, known: Callable[[str], bool]) -> list[Received]:
        """Pages by cursor (rows arriving meanwhile neither shift nor repeat a page); `lost` says whether the
        node pruned rows this read could not reach."""
        out: list[Received] = []
        cursor: str | None = None
        seen_known = False
        pruned = -1
        while True:
            params: dict[str, Any] = {"limit": PAGE} if cursor is None else {"limit": PAGE, "cursor": cursor}
            rows, headers = await self._get_with_headers("/payments", params)
            if not isinstance(rows, list):
                raise BillingError("payee node: /payments is not a list")
            if pruned < 0:
                text = headers.get("X-History-Pruned", "0")
                pruned = int(text) if text.isdigit() and len(text) < 19 else 0
            for row in rows:
                try:
                    pid, direction, status = str(row["payment_id"]), row["direction"], row["status"]
                    if direction != "in" or status != "received":
                        continue  # only what the node holds countersigned: never a pending or failed one
                    if known(pid):
                        seen_known = True  # the rest of this page is still read: a row out of order is not lost
                        continue
                    asset_text = str(row["asset"])
                    asset = ETH if asset_text.lower() == "eth" else address_from_hex(asset_text)
                    amount_text = str(row["amount"])
                    if not amount_text.isdigit() or len(amount_text) > 78:
                        raise ValueError(f"amount {amount_text[:80]!r}")
                    amount = int(amount_text)
                    cid = str(row["channel_id"])
                    version = int(row["version"])
                except (KeyError, TypeError, ValueError, Exception) as exc:
                    log.warning("payee node: a payment row that cannot be read is skipped: %r", exc)
                    continue
                if 0 < amount <= UINT256_MAX:
                    out.append(Received(pid, await self._peer(cid), asset, amount, cid, version))
            cursor = headers.get("X-Next-Cursor")
            if seen_known or not rows or cursor is None:
                self.lost = not seen_known and pruned > self._pruned_seen and pruned > 0
                self._pruned_seen = pruned
                return out


# ------------------------------------------------------------------ persistence (shared SQL, both backends)

SELECT_ACCOUNT = "SELECT address, paid, states, start, short_since FROM tw_accounts WHERE address = ?"
UPSERT_ACCOUNT = (
    "INSERT INTO tw_accounts (address, paid, states, start, short_since) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (address) DO UPDATE SET paid = excluded.paid, states = excluded.states, start = excluded.start, "
    "short_since = excluded.short_since"
)


def _account(rows: Sequence[Row], address: bytes) -> Account:
    if not rows:
        return Account(address)
    a, paid, states, start, short = rows[0]
    return Account(bytes(a), int(paid), int(states), None if start is None else int(start), _opt(short))


def _opt(v: object) -> int | None:
    return None if v is None else int(str(v))


def _save(tx: Tx, acct: Account) -> None:
    tx.run_count(UPSERT_ACCOUNT, (acct.address, str(acct.paid), acct.states, acct.start, acct.short_since))


class BillingStore(Protocol):
    async def run_op(self, fn: Callable[[Tx], Any]) -> Any: ...

    def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Billing:
    """The tower's side: judges each client, charges accepted states, credits payments read from `source`."""

    def __init__(
        self,
        terms: Terms,
        store: BillingStore,
        source: PaymentSource,
        *,
        clock: Callable[[], float],
        poll_interval: float = 1.0,
    ) -> None:
        self.terms = terms
        self.store = store
        self.source = source
        self.clock = clock
        self.poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._lapsed: set[bytes] = set()
        self.last_error: str | None = None
        self.on_credit: Callable[[], None] | None = None
        """Called after new payments were credited (the tower looks at its disputes again)."""

    def now(self) -> int:
        return int(self.clock())

    def account(self, address: bytes) -> Account:
        return _account(self.store.read_rows(SELECT_ACCOUNT, (address,)), address)

    def standing(self, address: bytes) -> Standing:
        return standing(self.terms, self.account(address), self.now())

    def protects(self, address: bytes) -> bool:
        """Whether the tower still answers disputes with this client's states (logged once when it stops)."""
        s = self.standing(address)
        if not s.protected and address not in self._lapsed:
            self._lapsed.add(address)
            log.warning(
                "client %s is not protected any more (owes %d, protected until %s): its states are not used",
                to_checksum(address),
                -s.balance,
                s.protected_until,
            )
        elif s.protected:
            self._lapsed.discard(address)
        return s.protected

    def require(self, address: bytes) -> Standing:
        """A push is taken only while the client is protected; else a 402 naming what is owed."""
        s = self.standing(address)
        if s.protected:
            return s
        if s.account.paid <= 0:
            detail = f"this tower is paid: pay to {to_checksum(self.terms.pay_to)} before pushing"
        else:
            detail = f"owes {-s.balance}; protection ended at {s.protected_until}"
        raise TowerError(TowerReason.PAYMENT_REQUIRED, detail, {"billing": s.as_json(), "terms": self.terms.as_json()})

    async def charge(self, address: bytes) -> Standing:
        """One accepted state; the balance may go negative (the grace period starts then)."""
        now = self.now()

        def op(tx: Tx) -> Standing:
            acct = _account(tx.run(SELECT_ACCOUNT, (address,)), address)
            acct = _with_shortfall(
                self.terms, Account(address, acct.paid, acct.states + 1, acct.start, acct.short_since), now
            )
            _save(tx, acct)
            return standing(self.terms, acct, now)

        result: Standing = await self.store.run_op(op)
        return result

    async def credit(self, payments: Sequence[Received]) -> int:
        """Credit each payment once, in the tower's asset only; how many were new."""
        now = self.now()
        wanted = [p for p in payments if p.asset == self.terms.asset and 0 < p.amount <= UINT256_MAX]

        def op(tx: Tx) -> int:
            new = 0
            for p in wanted:
                if tx.run("SELECT 1 FROM tw_payments WHERE payment_id = ?", (p.payment_id,)):
                    continue
                if p.channel_id:
                    credited, reconciled = _tally(tx, p.channel_id)
                    if p.version <= reconciled:  # already counted by a reconciliation: known, credits nothing
                        tx.run_count(
                            "INSERT INTO tw_payments (payment_id, address, amount, at) VALUES (?, ?, '0', ?)",
                            (p.payment_id, p.payer, now),
                        )
                        continue
                    _save_tally(tx, p.channel_id, credited + p.amount, reconciled)
                tx.run_count(
                    "INSERT INTO tw_payments (payment_id, address, amount, at) VALUES (?, ?, ?, ?)",
                    (p.payment_id, p.payer, str(p.amount), now),
                )
                acct = _account(tx.run(SELECT_ACCOUNT, (p.payer,)), p.payer)
                start = acct.start if acct.start is not None else now
                acct = Account(p.payer, acct.paid + p.amount, acct.states, start, acct.short_since)
                _save(tx, _with_shortfall(self.terms, acct, now))
                new += 1
            return new

        result: int = await self.store.run_op(op)
        return result

    def _known(self, payment_id: str) -> bool:
        return bool(self.store.read_rows("SELECT 1 FROM tw_payments WHERE payment_id = ?", (payment_id,)))

    async def reconcile(self, holdings: Sequence[Holding]) -> int:
        """Credit each channel's peer what the channel holds beyond what its rows credited: payments whose rows
        the node pruned before they were read. Never more than the peer moved to the operator (the net holding
        is at most that); rows of a version already reconciled are not credited again."""
        now = self.now()

        def op(tx: Tx) -> int:
            new = 0
            legacy = bool(tx.run(SELECT_TALLY, ("*",)))
            for h in holdings:
                untallied = not tx.run(SELECT_TALLY, (h.channel_id,))
                credited, reconciled = _tally(tx, h.channel_id)
                if h.version <= reconciled:
                    continue
                gap = h.net - credited
                _save_tally(tx, h.channel_id, max(credited, h.net), h.version)
                if untallied and legacy:
                    log.warning(
                        "channel %s was credited before tallies were kept: only its later rows count", h.channel_id
                    )
                    continue
                if gap <= 0:
                    continue
                pid = f"reconciled:{h.channel_id}:{h.version}"
                tx.run_count(
                    "INSERT INTO tw_payments (payment_id, address, amount, at) VALUES (?, ?, ?, ?)",
                    (pid, h.peer, str(gap), now),
                )
                acct = _account(tx.run(SELECT_ACCOUNT, (h.peer,)), h.peer)
                start = acct.start if acct.start is not None else now
                acct = Account(h.peer, acct.paid + gap, acct.states, start, acct.short_since)
                _save(tx, _with_shortfall(self.terms, acct, now))
                log.warning(
                    "credited %d to %s from channel %s's balance: its payment rows were pruned unread",
                    gap,
                    to_checksum(h.peer),
                    h.channel_id,
                )
                new += 1
            return new

        result: int = await self.store.run_op(op)
        return result

    async def poll_once(self) -> int:
        """Read new payments from the payee node and credit them; reconcile if rows were pruned unread."""
        got = await self.source.received(self._known)
        n = await self.credit(list(reversed(got))) if got else 0
        if getattr(self.source, "lost", False):
            holdings = getattr(self.source, "holdings", None)
            if holdings is not None:
                n += await self.reconcile(await holdings(self.terms.asset))
        if n and self.on_credit is not None:
            self.on_credit()
        return n

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tower-billing")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        close = getattr(self.source, "close", None)
        if close is not None:
            await close()

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.poll_once()
                if n:
                    log.info("credited %d payment(s)", n)
                self.last_error = None
            except Exception as exc:  # the node is down or answered nonsense: retried; credit waits
                if self.last_error is None:
                    log.warning("reading payments from the payee node failed (retrying): %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(self.poll_interval)


SELECT_TALLY = "SELECT credited, reconciled FROM tw_credit WHERE channel_id = ?"
UPSERT_TALLY = (
    "INSERT INTO tw_credit (channel_id, credited, reconciled) VALUES (?, ?, ?) "
    "ON CONFLICT (channel_id) DO UPDATE SET credited = excluded.credited, reconciled = excluded.reconciled"
)


def _tally(tx: Tx, channel_id: str) -> tuple[int, int]:
    """(credited through this channel, the version last reconciled with its balance: -1 if never)."""
    rows = tx.run(SELECT_TALLY, (channel_id,))
    return (int(str(rows[0][0])), int(rows[0][1])) if rows else (0, -1)


def _save_tally(tx: Tx, channel_id: str, credited: int, reconciled: int) -> None:
    tx.run_count(UPSERT_TALLY, (channel_id, str(credited), reconciled))


def _with_shortfall(terms: Terms, acct: Account, now: int) -> Account:
    """Record when the balance went negative, or clear it once it is not."""
    s = standing(terms, Account(acct.address, acct.paid, acct.states, acct.start, None), now)
    if s.balance >= 0:
        return Account(acct.address, acct.paid, acct.states, acct.start, None)
    if acct.short_since is not None:
        return acct
    return Account(acct.address, acct.paid, acct.states, acct.start, short_since(terms, acct, now))

"""The node pays its paid watchtowers by itself (`node start --tower-budget N`, decision 0010).

A paid tower's `/info` names its terms: a price per state pushed and/or per period, a grace period, the asset,
and `pay_to`, the tower operator's node. This node pays it ahead through an ordinary OPEN channel with `pay_to`
holding that asset (it never opens one by itself: without one it says so in the log, the API and an alert),
with the project's own payments:

* per state: enough for the states pushed so far plus `BUFFER_STATES` more;
* per period: the next period is paid `lead` seconds before the current one ends.

What it will ever pay is bounded three ways. The budget caps the total paid to all towers; what was paid is
journalled (a small JSON file, written atomically, 0600) *before* each payment leaves, so no restart or crash
can pay past it. The terms seen at a tower's first hello are the ones the budget was given for: a tower that
later asks more (a higher price, a shorter period, another payee or asset) is paid nothing more, and an alert
says why. And what a tower claims it is owed (its 402 bodies) is paid only up to what those terms allow for the
states this node actually sent it and the periods elapsed: a tower that lies about its due is not believed.

The tower's own view (`billing` in receipts and 402 bodies, its signed `POST /accounts/{addr}`) is kept per tower
and shown; an alert event `tower_lapsing` is emitted when protection will end within half the grace period (or
the budget cannot pay the next due), and `tower_lapsed` once it ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statechannel.aio import wait_set
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError, Reason, StatechannelError
from statechannel.core.types import ETH, UINT256_MAX, address_from_hex, to_checksum

if TYPE_CHECKING:
    from statechannel.node.node import Node

log = logging.getLogger(__name__)
JOURNAL_VERSION = 1
BUFFER_STATES = 8
"""States paid for ahead of pushing them: a burst of pushes does not wait for the tower to see a payment. The
node tops up to this many once fewer than half are left: each payment is itself a new state of the channel
with the payee (pushed too), so topping up one state at a time would pay for its own pushes forever."""
PAY_TIMEOUT = 30.0
"""Seconds a payment to a tower may take; one not settled by then stays counted as paid (it may still land)."""
MAX_SECONDS = 10 * 365 * 86400


class TowerPayError(LocalError):
    """Terms or a journal this node cannot use."""


def _uint(raw: object, what: str) -> int:
    text = str(raw)
    if isinstance(raw, bool) or not text.isdigit() or len(text) > 78 or int(text) > UINT256_MAX:
        raise TowerPayError(Reason.BAD_PARAMS, f"{what} must be a decimal uint256, got {text[:80]!r}")
    return int(text)


def _seconds(raw: object, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_SECONDS:
        raise TowerPayError(Reason.BAD_PARAMS, f"{what} must be an int number of seconds, got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class TowerTerms:
    """A paid tower's terms as its /info states them (watchtower/billing.py Terms, read by the client)."""

    pay_to: bytes
    asset: bytes
    price_per_state: int
    price_per_period: int
    period: int
    grace: int

    @classmethod
    def parse(cls, raw: object) -> TowerTerms:
        if not isinstance(raw, dict):
            raise TowerPayError(Reason.BAD_PARAMS, "terms must be an object")
        try:
            asset_text = str(raw["asset"])
            terms = cls(
                address_from_hex(str(raw["pay_to"])),
                ETH if asset_text.lower() == "eth" else address_from_hex(asset_text),
                _uint(raw["price_per_state"], "price_per_state"),
                _uint(raw["price_per_period"], "price_per_period"),
                _seconds(raw["period"], "period"),
                _seconds(raw["grace"], "grace"),
            )
        except KeyError as exc:
            raise TowerPayError(Reason.BAD_PARAMS, f"terms lack {exc}") from None
        except StatechannelError as exc:
            raise TowerPayError(Reason.BAD_PARAMS, f"terms: {exc.detail}") from None
        if terms.price_per_period and terms.period == 0:
            raise TowerPayError(Reason.BAD_PARAMS, "a price per period needs a period")
        return terms

    def as_json(self) -> dict[str, Any]:
        return {
            "pay_to": to_checksum(self.pay_to),
            "asset": to_checksum(self.asset),
            "price_per_state": str(self.price_per_state),
            "price_per_period": str(self.price_per_period),
            "period": self.period,
            "grace": self.grace,
        }

    def raised_from(self, agreed: TowerTerms) -> str | None:
        """Why these terms ask more than `agreed` (None: they ask no more)."""
        if (self.pay_to, self.asset) != (agreed.pay_to, agreed.asset):
            return "the payee or the asset changed"
        if self.price_per_state > agreed.price_per_state:
            return f"price per state {agreed.price_per_state} -> {self.price_per_state}"
        if self.price_per_period > agreed.price_per_period:
            return f"price per period {agreed.price_per_period} -> {self.price_per_period}"
        if self.price_per_period and self.period < agreed.period:
            return f"period {agreed.period} s -> {self.period} s"
        return None

    def lead(self) -> int:
        """Seconds before a period ends that the next one is paid."""
        return max(1, min(self.period // 2, max(1, self.grace // 2))) if self.price_per_period else 0

    def periods(self, first_paid: int | None, at: int) -> int:
        if not self.price_per_period:
            return 0
        start = at if first_paid is None else first_paid
        return max(0, at - start) // self.period + 1


@dataclass(frozen=True, slots=True)
class Account:
    """One tower as this node pays it; journalled."""

    terms: TowerTerms | None = None
    """The terms agreed (seen at the first hello; what the budget was given for)."""
    paid: int = 0
    sent: int = 0
    """Distinct states sent to it (an upper bound on what it may honestly charge per state)."""
    accepted: int = 0
    """States it accepted (receipts)."""
    first_paid: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "terms": None if self.terms is None else self.terms.as_json(),
            "paid": str(self.paid),
            "sent": self.sent,
            "accepted": self.accepted,
            "first_paid": self.first_paid,
        }

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Account:
        terms = None if raw.get("terms") is None else TowerTerms.parse(raw["terms"])
        first = raw.get("first_paid")
        return cls(
            terms,
            _uint(raw["paid"], "paid"),
            int(raw["sent"]),
            int(raw["accepted"]),
            None if first is None else int(first),
        )


@dataclass(slots=True)
class TowerStatus:
    """What is known of one tower's billing now (not journalled: the tower tells it again)."""

    current: TowerTerms | None = None
    standing: dict[str, Any] | None = None
    """The tower's last `billing` view of this node's account (its receipts, 402 bodies, /accounts)."""
    problem: str | None = None
    """Why this node is not paying it (no channel, budget spent, terms raised), or None."""
    alerted: set[str] = field(default_factory=set)
    seen: int = 0
    """Views observed: an account read answered after a newer view arrived is dropped (it is older)."""


class Ledger:
    """The journal: budget spent and each tower's account, one JSON file replaced atomically (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spent = 0
        self.accounts: dict[str, Account] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") != JOURNAL_VERSION:
                    raise ValueError(f"version {raw.get('version')!r}")
                self.spent = _uint(raw["spent"], "spent")
                self.accounts = {str(u): Account.parse(a) for u, a in raw["towers"].items()}
            except (ValueError, KeyError, TypeError, AttributeError, StatechannelError) as exc:
                # never start from zero over a journal that says money was spent: that could pay past the budget
                raise TowerPayError(
                    Reason.BAD_PARAMS, f"{path} cannot be read ({exc}); move it away to reset"
                ) from None

    def save(self) -> None:
        doc = {
            "version": JOURNAL_VERSION,
            "spent": str(self.spent),
            "towers": {u: a.as_json() for u, a in self.accounts.items()},
        }
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _standing(raw: object) -> dict[str, Any] | None:
    """A tower's account view, kept only if every field is of its type (it is shown, and judged by)."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for k in ("paid", "owed", "balance"):
        v = raw.get(k)
        if not isinstance(v, str) or not v.removeprefix("-").isdigit() or len(v) > 80:
            return None
        out[k] = v
    for k in ("states", "paid_until", "protected_until"):
        v = raw.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63):
            return None
        out[k] = v
    if not isinstance(raw.get("protected"), bool):
        return None
    out["protected"] = raw["protected"]
    return out


class TowerPay:
    """Pays the paid towers of a TowerClient from `node`'s channels, within `budget`; see the module docstring."""

    def __init__(
        self,
        node: Node,
        budget: int,
        journal: Path,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
        accept_terms: bool = False,
    ) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool) or not 0 <= budget <= UINT256_MAX:
            raise TowerPayError(Reason.BAD_AMOUNT, f"the tower budget must be an int >= 0, not {budget!r}")
        self.node = node
        self.budget = budget
        self.ledger = Ledger(journal)
        if accept_terms:  # the user consents to each tower's terms as its next hello states them
            self.ledger.accounts = {u: replace(a, terms=None) for u, a in self.ledger.accounts.items()}
        self.clock = clock
        self.tick = tick
        self.status: dict[str, TowerStatus] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._kicked = asyncio.Event()
        self.read_account: Callable[[str], Any] | None = None
        """Set by the TowerClient: an awaitable read of the tower's signed `/accounts` view (or None)."""

    def now(self) -> int:
        return int(self.clock())

    @property
    def left(self) -> int:
        return max(0, self.budget - self.ledger.spent)

    # ------------------------------------------------------------ what the TowerClient tells

    def hello(self, url: str, raw_terms: object) -> None:
        """The tower's /info: its terms (None: a free tower). Raises TowerPayError for terms that cannot be read."""
        st = self.status.setdefault(url, TowerStatus())
        if raw_terms is None:
            st.current = None
            return
        terms = TowerTerms.parse(raw_terms)
        st.current = terms
        acct = self.ledger.accounts.get(url)
        if acct is None or acct.terms is None:  # pinned: later terms are paid only if they ask no more
            self.ledger.accounts[url] = replace(acct or Account(), terms=terms)
            self.ledger.save()
            log.info("tower %s is paid: %s; budget left %d", url, terms.as_json(), self.left)
        self.kick()

    def paid_tower(self, url: str) -> bool:
        st = self.status.get(url)
        return st is not None and st.current is not None

    def sent(self, url: str) -> None:
        """A state never sent to this tower before is about to be sent."""
        acct = self.ledger.accounts.get(url)
        if acct is not None:
            self.ledger.accounts[url] = replace(acct, sent=acct.sent + 1)
            self.kick()

    def accepted(self, url: str, billing: object) -> None:
        acct = self.ledger.accounts.get(url)
        if acct is not None:
            self.ledger.accounts[url] = replace(acct, accepted=acct.accepted + 1)
        self.observe(url, billing)
        self.kick()

    def observe(self, url: str, billing: object) -> None:
        """The tower's view of this node's account (from a receipt, a 402 body or /accounts)."""
        view = _standing(billing)
        if view is not None:
            st = self.status.setdefault(url, TowerStatus())
            st.standing, st.seen = view, st.seen + 1
            self._check_alerts(url)

    async def payment_required(self, url: str, body: dict[str, Any]) -> bool:
        """A 402: pay what the tower says is owed, no more than the agreed terms allow. True: retry the push."""
        err = body.get("error")
        billing = err.get("billing") if isinstance(err, dict) else None
        self.observe(url, billing)
        if isinstance(err, dict) and err.get("terms") is not None:
            try:  # the terms it bills by now: a raise is caught here, not only at the next hello
                self.status.setdefault(url, TowerStatus()).current = TowerTerms.parse(err["terms"])
            except TowerPayError as exc:
                log.warning("tower %s: a 402 with unreadable terms: %s", url, exc.detail)
                return False
        try:
            claimed = _uint(billing.get("owed"), "owed") if isinstance(billing, dict) else 0
            credited = _uint(billing.get("paid"), "paid") if isinstance(billing, dict) else 0
        except TowerPayError as exc:
            log.warning("tower %s: a 402 that cannot be read: %s", url, exc.detail)
            return False
        acct = self.ledger.accounts.get(url)
        if acct is None:
            return False
        if credited < acct.paid:
            return True  # what was paid is not credited yet (the tower polls its node): wait, pay nothing more
        return await self._pay(url, claimed, "the tower asked (402)")

    # ------------------------------------------------------------ paying

    def kick(self) -> None:
        self._kicked.set()

    def bound(self, url: str, at: int) -> int:
        """The most the agreed terms allow paying this tower by `at`: states sent (plus the buffer) and periods."""
        acct = self.ledger.accounts.get(url)
        if acct is None or acct.terms is None:
            return 0
        t = acct.terms
        per_state = (acct.sent + BUFFER_STATES) * t.price_per_state
        return per_state + t.price_per_period * t.periods(acct.first_paid, at + t.lead())

    def due(self, url: str, at: int, ahead: int = BUFFER_STATES) -> int:
        """What should have been paid to this tower by `at` to stay `ahead` states ahead (never above the bound)."""
        acct = self.ledger.accounts.get(url)
        st = self.status.get(url)
        if acct is None or acct.terms is None or st is None or st.current is None:
            return 0
        t = st.current  # pay by the current terms when they ask no more (a cheaper tower is paid less)
        per_state = (acct.accepted + ahead) * t.price_per_state
        want = per_state + t.price_per_period * t.periods(acct.first_paid, at + t.lead())
        return min(want, self.bound(url, at))

    async def settle(self, url: str) -> None:
        """Pay this tower ahead once what is paid runs low (within terms and budget)."""
        acct, now = self.ledger.accounts.get(url), self.now()
        if acct is not None and acct.paid < self.due(url, now, BUFFER_STATES // 2):
            await self._pay(url, self.due(url, now), "paying ahead")

    async def _pay(self, url: str, target: int, why: str) -> bool:
        """Bring what was paid to this tower up to `target`, capped by the agreed terms and the budget."""
        async with self._lock:
            acct = self.ledger.accounts.get(url)
            st = self.status.setdefault(url, TowerStatus())
            if acct is None or acct.terms is None or st.current is None:
                return False
            raised = st.current.raised_from(acct.terms)
            if raised is not None:
                self._problem(url, f"the tower raised its terms ({raised}): not paid more without consent")
                return False
            now = self.now()
            capped = min(target, self.bound(url, now))
            if target > capped:
                log.warning(
                    "tower %s asks %d in all but its terms allow %d for %d state(s) sent: paying at most that",
                    url,
                    target,
                    capped,
                    acct.sent,
                )
            amount = capped - acct.paid
            if amount <= 0:
                return False
            if amount > self.left:
                self._problem(url, f"the tower budget ({self.budget}) is spent: {self.left} left")
                amount = self.left
                if amount <= 0:
                    return False
            t = acct.terms
            cid = self._channel(t, amount)
            if cid is None:
                self._problem(
                    url,
                    f"no open channel with the tower's payee {to_checksum(t.pay_to)} holding {amount} of "
                    f"{to_checksum(t.asset)}: open one to pay it",
                )
                return False
            # counted as spent before it leaves: a crash now can only under-pay, never pay past the budget
            paid = replace(acct, paid=acct.paid + amount, first_paid=acct.first_paid or now)
            self.ledger.accounts[url] = paid
            self.ledger.spent += amount
            await asyncio.to_thread(self.ledger.save)
            try:
                await asyncio.wait_for(self.node.pay(cid, t.asset, amount), PAY_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "tower %s: the payment of %d did not settle in %.0f s (still counted)", url, amount, PAY_TIMEOUT
                )
                return True
            except StatechannelError as exc:  # refused or failed: nothing left this node, so nothing is spent
                self.ledger.accounts[url] = replace(
                    self.ledger.accounts[url], paid=self.ledger.accounts[url].paid - amount
                )
                self.ledger.spent -= amount
                await asyncio.to_thread(self.ledger.save)
                self._problem(url, f"paying {amount} failed: {exc.detail}")
                return False
            log.info("tower %s: paid %d (%s); %d paid in all, budget left %d", url, amount, why, paid.paid, self.left)
            if st.problem is not None and not st.problem.startswith("the tower budget"):
                st.problem = None
            return True

    def _channel(self, t: TowerTerms, amount: int) -> bytes | None:
        for cid in self.node.channels_with(t.pay_to):
            ch = self.node.channels.get(cid)
            if ch is None or ch.phase is not Phase.OPEN or t.asset not in ch.assets:
                continue
            if ch.lowest_balance(ch.me, t.asset) >= amount:
                return cid
        return None

    def _problem(self, url: str, why: str) -> None:
        st = self.status.setdefault(url, TowerStatus())
        if st.problem != why:
            log.warning("tower %s: %s", url, why)
            st.problem = why
            self._alert(url, "tower_unpaid", why)

    # ------------------------------------------------------------ alerts and the loop

    def _alert(self, url: str, kind: str, detail: str) -> None:
        acct = self.ledger.accounts.get(url)
        pay_cid = None
        if acct is not None and acct.terms is not None:
            pay_cid = next(iter(self.node.channels_with(acct.terms.pay_to)), None)
        data = {"kind": kind, "detail": detail, "tower": url}
        self.node.notify("alert", pay_cid or bytes(32), data)

    def _check_alerts(self, url: str) -> None:
        st = self.status.get(url)
        acct = self.ledger.accounts.get(url)
        if st is None or st.standing is None or acct is None or acct.terms is None:
            return
        now = self.now()
        until = st.standing.get("protected_until")
        protected = st.standing.get("protected") is True
        credited = st.standing.get("paid") not in (None, "0")  # a 402 before the first credit is no lapse
        lapsed = (not protected and credited) or (isinstance(until, int) and until <= now)
        soon = isinstance(until, int) and until - now < acct.terms.grace // 2
        short = self.left == 0 and self.due(url, now + acct.terms.lead() + 1) > acct.paid
        if lapsed:
            if "lapsed" not in st.alerted:
                st.alerted.add("lapsed")
                self._alert(url, "tower_lapsed", f"the tower protects nothing of this node since {until}")
        elif soon or short:
            st.alerted.discard("lapsed")
            if "lapsing" not in st.alerted:
                st.alerted.add("lapsing")
                why = "the tower budget is spent" if short else "payments are not keeping up"
                self._alert(url, "tower_lapsing", f"protection ends at {until}: {why}")
        else:
            st.alerted.clear()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tower payments")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.ledger.save)

    async def _loop(self) -> None:
        rounds = 0
        while True:
            await wait_set(self._kicked, self.tick)
            self._kicked.clear()
            rounds += 1
            for url in list(self.status):
                if not self.paid_tower(url):
                    continue
                try:
                    await self.settle(url)
                    if self.read_account is not None and rounds % 5 == 1:
                        before = self.status[url].seen
                        view = await self.read_account(url)
                        if self.status[url].seen == before:
                            self.observe(url, view)
                    self._check_alerts(url)
                except Exception:  # a bug or a tower answering junk: logged, the loop goes on
                    log.exception("tower %s: paying it failed", url)

    # ------------------------------------------------------------ shown

    def view(self, url: str) -> dict[str, Any] | None:
        st = self.status.get(url)
        acct = self.ledger.accounts.get(url)
        if acct is None and (st is None or st.current is None):
            return None
        return {
            "tower": url,
            "terms": None if acct is None or acct.terms is None else acct.terms.as_json(),
            "current_terms": None if st is None or st.current is None else st.current.as_json(),
            "paid": str(acct.paid if acct else 0),
            "states_sent": acct.sent if acct else 0,
            "budget": str(self.budget),
            "budget_left": str(self.left),
            "standing": None if st is None else st.standing,
            "problem": None if st is None else st.problem,
        }

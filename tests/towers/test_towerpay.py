"""Issue 10 part 4, the node's side: `node start --tower-budget` pays paid towers by itself (node/towerpay.py).

Real nodes on the chain (the embedded EVM and anvil): the client C pays the tower operator's node O through an
ordinary channel. The honest tower is the real one (paid, reading O's API over HTTP); the towers that lie about
what they are owed or raise their price are the stand-in of tests/towers/fake.py, which can be made to."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from statechannel.api.app import create_app
from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import Chain
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import ETH, Domain, to_checksum
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node, NodeEvent
from statechannel.node.towerpay import BUFFER_STATES, TowerPay, TowerPayError
from statechannel.node.towers import TowerClient
from statechannel.node.towerstate import TowerPolicy
from statechannel.store.sqlite import SqliteStore
from statechannel.watchtower.billing import Billing, NodePayments, Terms
from statechannel.watchtower.http import create_tower_app
from tests.api.harness import TOKEN
from tests.terms import TEST_TERMS
from tests.towers.fake import FakeTower, serve
from tests.watchtower.helpers import deploy, eventually, key, running_tower

ETHER = 10**18
PRICE = 1000
GRACE = 600


class Clock:
    """The billing clock of the tower and of the node's payer, moved by the test."""

    def __init__(self) -> None:
        self.t = 1_900_000_000

    def __call__(self) -> float:
        return float(self.t)


@dataclass
class Pair:
    c: Node
    o: Node
    towers: TowerClient
    payer: TowerPay
    pay_cid: bytes
    events: list[NodeEvent]

    def received(self) -> int:
        """What O holds as received from C: every payment the towers were paid."""
        return sum(r.amount for r in self.o.payments(self.pay_cid, 10_000) if r.direction == "in")

    def alerts(self) -> list[str]:
        return [str(e.data.get("kind")) for e in self.events if e.kind == "alert"]


def _node(k: PrivateKey, chain: Chain, adj: bytes, db: Path, t: MemoryTransport, towers: TowerClient | None) -> Node:
    node = Node(k, ChainIO(chain, adj, k), SqliteStore(db), t, terms=TEST_TERMS, towers=towers, poll_interval=0.02)
    return node


@asynccontextmanager
async def nodes(
    tmp: Path,
    chain: Chain,
    adj: bytes,
    kc: PrivateKey,
    ko: PrivateKey,
    tower_url: str,
    budget: int,
    clock: Clock,
    *,
    open_channel: bool = True,
    accept_terms: bool = False,
) -> AsyncIterator[Pair]:
    """C (with a tower client and a payer of `budget`) and O; C opens a channel to O unless it exists."""
    tc, to = MemoryTransport.pair(kc, ko)
    towers = TowerClient([tower_url], tmp / "c-towers.db", TowerPolicy(flush_timeout=2))
    c = _node(kc, chain, adj, tmp / "c.db", tc, towers)
    payer = towers.payer = TowerPay(c, budget, tmp / "towerpay.json", clock=clock, tick=0.05, accept_terms=accept_terms)
    o = _node(ko, chain, adj, tmp / "o.db", to, None)
    events: list[NodeEvent] = []

    async def listen() -> None:
        async for e in c.subscribe():
            events.append(e)

    await o.start()
    await c.start()
    listener = asyncio.create_task(listen())
    try:
        if open_channel:
            pay_cid = await c.open_channel(o.address, {ETH: (ETHER, 0)}, challenge_period=60)
        else:
            [pay_cid] = c.channels_with(o.address)
        await c.wait_for(pay_cid, Phase.OPEN)
        await o.wait_for(pay_cid, Phase.OPEN)
        yield Pair(c, o, towers, payer, pay_cid, events)
    finally:
        listener.cancel()
        for node in (c, o):
            await node.stop()
        for node in (c, o):
            await node.store.close()
            node.chainio.close()


def terms_json(pay_to: bytes, price: int = PRICE) -> dict[str, Any]:
    return {
        "pay_to": to_checksum(pay_to),
        "asset": to_checksum(ETH),
        "price_per_state": str(price),
        "price_per_period": "0",
        "period": 0,
        "grace": GRACE,
    }


async def states_from_o(p: Pair, n: int, *, pushed: bool = False) -> None:
    """O pays C back 1 wei, n times: each is a new state of C's channel, which C pushes to its tower (only the
    newest is pushed: `pushed` waits until the tower took or refused each, so each is one state pushed)."""
    for _ in range(n):
        await p.o.pay(p.pay_cid, ETH, 1)
        await p.c.idle(p.pay_cid)
        if pushed:
            latest = p.c.channel(p.pay_cid).latest
            assert latest is not None
            [t] = p.towers.towers.values()
            await eventually("pushed", functools.partial(_took, t, p.pay_cid, latest.state.version))


def _took(t: Any, cid: bytes, v: int) -> bool:
    return bool(t.acked.get(cid, -1) >= v or t.refused.get(cid) == v)


@asynccontextmanager
async def real_paid_tower(
    s: Any, chain: Chain, tmp: Path, ko: PrivateKey, terms: Terms, clock: Any, budget: int
) -> AsyncIterator[tuple[Any, str, Pair]]:
    """The real tower, paid through operator O's node (its API), and C (participant B of `s`) paying it from
    `budget`: (tower, its url, the pair, no pay channel open yet); C's events are listened to meanwhile."""
    tc, to = MemoryTransport.pair(s.b, ko)
    o = _node(ko, chain, s.adj.address, tmp / "o.db", to, None)
    await o.start()
    try:
        async with serve(create_app(o, TOKEN)) as o_url:

            def billing(store: Any) -> Billing:
                return Billing(terms, store, NodePayments(o_url, TOKEN), clock=clock, poll_interval=0.02)

            async with (
                running_tower(s, tmp / "tower.db", billing=billing) as tower,
                serve(create_tower_app(tower)) as tower_url,
            ):
                towers = TowerClient([tower_url], tmp / "c-towers.db", TowerPolicy(flush_timeout=2))
                c = _node(s.b, chain, s.adj.address, tmp / "c.db", tc, towers)
                payer = towers.payer = TowerPay(c, budget, tmp / "towerpay.json", clock=clock, tick=0.05)
                events: list[NodeEvent] = []

                async def listen() -> None:
                    async for e in c.subscribe():
                        events.append(e)

                await c.start()
                listener = asyncio.create_task(listen())
                try:
                    yield tower, tower_url, Pair(c, o, towers, payer, b"", events)
                finally:
                    listener.cancel()
                    await c.stop()
                    await c.store.close()
                    c.chainio.close()
    finally:
        await o.stop()
        await o.store.close()
        o.chainio.close()


def run(scenario: Callable[[], Any], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


def test_the_node_pays_the_real_tower_is_protected_and_lapses_when_the_budget_runs_out(
    tmp_path: Path, chain: Chain
) -> None:
    s = deploy(chain, "towerpay real")  # the tower's setup; C is its participant B
    ko = key("towerpay operator")
    chain.fund(ko.address, 100 * ETHER)
    clock = Clock()
    budget = 20 * PRICE
    terms = Terms(ko.address, ETH, price_per_state=PRICE, grace=GRACE)

    async def scenario() -> None:
        async with real_paid_tower(s, chain, tmp_path, ko, terms, clock, budget) as (tower, tower_url, p):
            await paid_and_lapsed(tower, tower_url, p)

    async def paid_and_lapsed(tower: Any, tower_url: str, p: Pair) -> None:
        c, o, towers, payer = p.c, p.o, p.towers, p.payer
        p.pay_cid = pay_cid = await c.open_channel(o.address, {ETH: (ETHER, 0)}, challenge_period=60)
        await c.wait_for(pay_cid, Phase.OPEN)
        await o.wait_for(pay_cid, Phase.OPEN)
        # C pays ahead by itself, the tower credits it and signs a receipt
        await eventually("a receipt", lambda: bool(towers.protection(pay_cid)))
        assert tower.billing is not None
        await eventually("credited", lambda: tower.billing.account(s.b.address).paid == p.received())
        assert p.received() >= BUFFER_STATES * PRICE
        # states keep coming: C tops up until its budget is spent, never past it
        for _ in range(60):
            if payer.left == 0:
                break
            await states_from_o(p, 1, pushed=True)
        await eventually("budget spent", lambda: payer.left == 0 and p.received() == budget)
        await states_from_o(p, BUFFER_STATES + 2, pushed=True)  # more states than the budget paid for
        await eventually("lapsing alert", lambda: "tower_lapsing" in p.alerts())
        assert p.received() == budget == payer.ledger.spent
        await eventually("on credit", lambda: tower.billing.standing(s.b.address).balance < 0)
        assert tower.billing.standing(s.b.address).protected  # on credit, within grace
        # after grace the tower stops protecting C, and C's node says so
        clock.t += GRACE
        assert not tower.billing.protects(s.b.address)
        await states_from_o(p, 1)
        await eventually("lapsed alert", lambda: "tower_lapsed" in p.alerts())
        assert p.alerts().index("tower_lapsing") < p.alerts().index("tower_lapsed")
        assert p.received() == budget

        def told_lapsed() -> bool:
            v = payer.view(tower_url)
            return v is not None and v["standing"] is not None and v["standing"]["protected"] is False

        await eventually("the tower's view kept", told_lapsed)
        # the API shows terms, paid, budget left and the tower's view
        app = create_app(c, TOKEN)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=headers) as api:
            view = (await api.get(f"/channels/0x{pay_cid.hex()}")).json()
            doc = (await api.get("/openapi.json")).json()
        [b] = view["tower_billing"]
        assert b["tower"] == tower_url and b["paid"] == str(budget) and b["budget_left"] == "0"
        assert b["terms"]["price_per_state"] == str(PRICE) and b["standing"]["protected"] is False
        assert "TowerBillingView" in doc["components"]["schemas"]

    run(scenario)


def _setup(chain: Chain, label: str) -> tuple[bytes, Domain, PrivateKey, PrivateKey]:
    kc, ko, deployer = key(f"{label} c"), key(f"{label} o"), key(f"{label} deployer")
    for k in (kc, ko, deployer):
        chain.fund(k.address, 100 * ETHER)
    adj, _ = Adjudicator.deploy(chain, deployer)
    return adj.address, Domain(chain.chain_id, adj.address), kc, ko


def test_a_tower_claiming_more_than_its_terms_is_paid_only_what_the_terms_allow(tmp_path: Path, chain: Chain) -> None:
    adj, domain, kc, ko = _setup(chain, "towerpay liar")
    clock = Clock()
    claim = 10**15

    async def scenario() -> None:
        fake = FakeTower(domain, terms=terms_json(ko.address))
        got: list[Pair] = []

        def demand() -> dict[str, Any]:  # credits all that was paid, and says far more is owed
            paid = got[0].received() if got else 0
            return {"paid": str(paid), "owed": str(claim), "balance": str(paid - claim), "protected": False}

        fake.demand = demand
        async with serve(fake.app()) as url, nodes(tmp_path, chain, adj, kc, ko, url, 10**12, clock) as p:
            got.append(p)
            await eventually("first payment", lambda: p.received() > 0)
            await states_from_o(p, 3)
            acct = p.payer.ledger.accounts[url]
            bound = (acct.sent + BUFFER_STATES) * PRICE

            def at_bound() -> bool:
                return p.received() == (p.payer.ledger.accounts[url].sent + BUFFER_STATES) * PRICE

            await eventually("paid up to the terms", at_bound)
            sent = p.payer.ledger.accounts[url].sent
            assert bound <= p.received() == (sent + BUFFER_STATES) * PRICE < claim
            assert sent <= len(fake.states_posted())

    run(scenario)


def test_a_tower_raising_its_price_is_not_paid_more_and_the_node_says_so(tmp_path: Path, chain: Chain) -> None:
    adj, domain, kc, ko = _setup(chain, "towerpay raiser")
    clock = Clock()

    async def scenario() -> None:
        fake = FakeTower(domain, terms=terms_json(ko.address))
        async with serve(fake.app()) as url:
            await raised(fake, url)
            # restarted with consent to the new terms, the node pays by them (what was spent still counts)
            async with nodes(
                tmp_path, chain, adj, kc, ko, url, 10**12, clock, open_channel=False, accept_terms=True
            ) as p:
                paid = p.received()
                fake.demand = lambda: {
                    "paid": str(paid),
                    "owed": str(paid + 5 * PRICE),
                    "balance": "-1",
                    "protected": True,
                }
                await states_from_o(p, 1)
                await eventually("paid by the new terms", lambda: p.received() > paid)
                assert p.payer.ledger.spent == p.received()
                acct = p.payer.ledger.accounts[url]
                assert acct.terms is not None and acct.terms.price_per_state == 5 * PRICE

    async def raised(fake: FakeTower, url: str) -> None:
        async with nodes(tmp_path, chain, adj, kc, ko, url, 10**12, clock) as p:
            await eventually("paid ahead", lambda: p.received() >= BUFFER_STATES * PRICE)
            # the tower now bills five times the price it announced, and says it is owed by it
            fake.terms = terms_json(ko.address, 5 * PRICE)
            await eventually("settled", lambda: p.payer.ledger.accounts[url].paid == p.received())
            paid = p.received()
            fake.demand = lambda: {"paid": str(paid), "owed": str(paid + 5 * PRICE), "balance": "-1", "protected": True}
            before = len(fake.states_posted())
            await states_from_o(p, 3, pushed=True)  # each pushed and refused (402)
            assert len(fake.states_posted()) >= before + 3
            await eventually("alert", lambda: "tower_unpaid" in p.alerts())
            assert p.received() == paid
            status = p.payer.status[url]
            assert status.problem is not None and "raised its terms" in status.problem
            view = p.payer.view(url)
            assert view is not None and view["terms"]["price_per_state"] == str(PRICE)
            assert view["current_terms"]["price_per_state"] == str(5 * PRICE)

    run(scenario)


def test_the_budget_is_never_exceeded_across_a_restart(tmp_path: Path, chain: Chain) -> None:
    adj, domain, kc, ko = _setup(chain, "towerpay budget")
    clock = Clock()
    budget = 10 * PRICE

    async def scenario() -> None:
        fake = FakeTower(domain, terms=terms_json(ko.address))
        async with serve(fake.app()) as url:
            async with nodes(tmp_path, chain, adj, kc, ko, url, budget, clock) as p:
                await eventually("paid ahead", lambda: p.received() >= BUFFER_STATES * PRICE)
                for _ in range(30):
                    if p.payer.left == 0:
                        break
                    await states_from_o(p, 1, pushed=True)
                await eventually("budget spent", lambda: p.payer.left == 0 and p.received() == budget)
            assert (tmp_path / "towerpay.json").stat().st_mode & 0o777 == 0o600
            async with nodes(tmp_path, chain, adj, kc, ko, url, budget, clock, open_channel=False) as p:
                assert p.payer.ledger.spent == budget and p.payer.left == 0
                await states_from_o(p, 8, pushed=True)
                latest = p.c.channel(p.pay_cid).latest
                assert latest is not None
                await eventually("pushed", lambda: fake.held.get(p.pay_cid) == latest.state.version)
                assert p.received() == budget
        # an unreadable journal never resets what was spent: the payer refuses to start over it
        (tmp_path / "towerpay.json").write_text("{not json")
        with pytest.raises(TowerPayError):
            TowerPay(None, budget, tmp_path / "towerpay.json")  # type: ignore[arg-type]

    run(scenario)


def test_per_period_the_next_period_is_paid_before_the_current_one_ends(tmp_path: Path, chain: Chain) -> None:
    s = deploy(chain, "towerpay period")
    ko = key("towerpay period operator")
    chain.fund(ko.address, 100 * ETHER)
    clock = Clock()
    period, grace = 100, 40
    terms = Terms(ko.address, ETH, price_per_period=PRICE, period=period, grace=grace)

    async def scenario() -> None:
        async with real_paid_tower(s, chain, tmp_path, ko, terms, clock, 3 * PRICE) as (tower, _, p):
            p.pay_cid = await p.c.open_channel(p.o.address, {ETH: (ETHER, 0)}, challenge_period=60)
            await p.c.wait_for(p.pay_cid, Phase.OPEN)
            assert tower.billing is not None
            start = clock.t
            await eventually("first period", lambda: p.received() == PRICE)
            await eventually("a receipt", lambda: bool(p.towers.protection(p.pay_cid)))
            assert tower.billing.standing(s.b.address).paid_until == start + period
            # 20 s before the period ends (half the grace), the next one is paid: no gap
            clock.t = start + period - grace // 2
            await eventually("second period", lambda: p.received() == 2 * PRICE)
            clock.t = start + 2 * period - grace // 2
            await eventually("third period", lambda: p.received() == 3 * PRICE)
            bill = tower.billing
            assert bill is not None
            await eventually("credited", lambda: bill.standing(s.b.address).paid_until == start + 3 * period)
            assert tower.billing.standing(s.b.address).protected
            # the budget pays no fourth: the node warns before the protection ends, and after
            clock.t = start + 3 * period - grace // 2
            await eventually("lapsing alert", lambda: "tower_lapsing" in p.alerts())
            assert p.received() == 3 * PRICE
            clock.t = start + 3 * period + grace
            assert not tower.billing.protects(s.b.address)
            await eventually("lapsed alert", lambda: "tower_lapsed" in p.alerts())
            assert p.received() == 3 * PRICE == p.payer.ledger.spent

    run(scenario)

"""Issue 10 part 4: a paid tower (decision 0010).

Real nodes on the embedded EVM: the tower operator's node O serves its API on 127.0.0.1 (real HTTP, bearer
token); the client C pays O through an ordinary channel. The tower, in process on the same chain, reads O's
`GET /payments` and credits each payment received to the channel's peer. C's channels with X are the ones
the tower watches."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from statechannel.api.app import create_app
from statechannel.core.channel import Phase
from statechannel.core.types import ETH, UINT256_MAX, to_checksum
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore
from statechannel.watchtower.billing import (
    Account,
    Billing,
    BillingError,
    Holding,
    NodePayments,
    Received,
    Terms,
    standing,
)
from statechannel.watchtower.errors import TowerError, TowerReason
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.records import TowerStatus
from statechannel.watchtower.sender import PlainSender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore
from tests.api.harness import TOKEN, LockedChain
from tests.api.harness import key as node_key
from tests.terms import TEST_TERMS
from tests.towers.fake import serve
from tests.watchtower.conftest import StoreFactory
from tests.watchtower.helpers import (
    ETHER,
    Setup,
    account_json,
    close_with,
    deploy,
    eth_state,
    eventually,
    open_channel,
    params_json,
    push,
    register,
    running_tower,
    sign,
    state_json,
)

PRICE = 1000
GRACE = 600


class Clock:
    """The billing clock, moved by the test (the tower's own clock, for request freshness, stays real)."""

    def __init__(self) -> None:
        self.t = 1_900_000_000

    def __call__(self) -> float:
        return float(self.t)


def test_terms_refuse_nonsense_and_amounts_never_go_wrong() -> None:
    payee = b"\x01" * 20
    with pytest.raises(BillingError):
        Terms(payee)  # no price: a free tower has no terms at all
    with pytest.raises(BillingError):
        Terms(payee, price_per_state=-1)
    with pytest.raises(BillingError):
        Terms(payee, price_per_state=UINT256_MAX + 1)
    with pytest.raises(BillingError):
        Terms(payee, price_per_period=5)  # no period
    for bad in ({"grace": 1.5}, {"grace": True}, {"period": 60.5, "price_per_period": 1}, {"price_per_state": 1.0}):
        with pytest.raises(BillingError):
            Terms(payee, **{"price_per_state": 1, **bad})  # type: ignore[arg-type]  # a float would reach the 402s
    t = Terms(payee, price_per_period=100, period=60, grace=30)
    acct = Account(b"\x02" * 20, paid=250, start=1000)
    # 250 pays 2 periods: 1000..1120; short from 1120, protected until 1150
    assert standing(t, acct, 1000).balance == 150 and standing(t, acct, 1000).paid_until == 1120
    late = standing(t, acct, 1125)
    assert late.balance == -50 and late.protected_until == 1150 and late.protected
    assert not standing(t, acct, 1150).protected
    # never paid: never protected; a huge price and payment stay exact ints
    assert not standing(t, Account(b"\x03" * 20), 1000).protected
    big = Terms(payee, price_per_state=UINT256_MAX)
    s = standing(big, Account(b"\x04" * 20, paid=UINT256_MAX, states=1, start=0), 10)
    assert s.balance == 0 and s.protected and s.protected_until is None


@asynccontextmanager
async def payee_and_client(
    tmp_path: Path, chain: LockedChain, s: Setup, max_payments: int = 100_000
) -> AsyncIterator[tuple[Node, Node, bytes]]:
    """O (the tower operator's node) and C (the client: the same key as participant B of the watched channels),
    with a channel C -> O that C funded."""
    ko = node_key("paid tower operator")
    chain.fund(ko.address, 100 * ETHER)
    to, tc = MemoryTransport.pair(ko, s.b)
    nodes = []
    for k, t, name in ((ko, to, "o"), (s.b, tc, "c")):
        store = SqliteStore(tmp_path / f"{name}.db", max_payments=max_payments)
        node = Node(k, ChainIO(chain, s.adj.address, k), store, t, terms=TEST_TERMS)
        node.poll_interval = 0.02
        await node.start()
        nodes.append(node)
    o, c = nodes
    try:
        pay_cid = await c.open_channel(o.address, {ETH: (ETHER, 0)}, challenge_period=60)
        await c.wait_for(pay_cid, Phase.OPEN)
        await o.wait_for(pay_cid, Phase.OPEN)
        yield o, c, pay_cid
    finally:
        for node in nodes:
            await node.stop()
        for node in nodes:
            await node.store.close()
            node.chainio.close()


def paid_tower(
    s: Setup, db: Path, terms: Terms, url: str, clock: Clock, poll_interval: float = 0.02
) -> AbstractAsyncContextManager[Tower]:
    return running_tower(
        s,
        db,
        billing=lambda store: Billing(terms, store, NodePayments(url, TOKEN), clock=clock, poll_interval=poll_interval),
    )


def billed(tower: Tower) -> Billing:
    assert tower.billing is not None
    return tower.billing


async def refused(coro: object) -> TowerError:
    try:
        await coro  # type: ignore[misc]
    except TowerError as exc:
        return exc
    raise AssertionError("the tower accepted it")


def test_paid_tower_protects_who_pays_lapses_after_grace_and_survives_a_restart(tmp_path: Path) -> None:
    chain = LockedChain()
    s = deploy(chain, "paid")  # a = X (the counterparty), b = C (the client)
    ch1, ch2 = open_channel(s, 1), open_channel(s, 2)
    cid1, cid2 = s.adj.channel_id(ch1), s.adj.channel_id(ch2)
    d = s.adj.domain
    v = {(cid, n): sign(d, eth_state(cid, n, n * 1000), s.a, s.b) for cid in (cid1, cid2) for n in (1, 2, 3, 4)}
    clock = Clock()

    async def scenario() -> None:
        async with payee_and_client(tmp_path, chain, s) as (o, c, pay_cid):
            terms = Terms(o.address, ETH, price_per_state=PRICE, grace=GRACE)
            async with serve(create_app(o, TOKEN)) as node_url:
                async with paid_tower(s, tmp_path / "tower.db", terms, node_url, clock) as tower:
                    billing = billed(tower)
                    await register(tower, ch1, s.b)  # registering is free
                    await register(tower, ch2, s.b)
                    # never paid: 402, naming whom to pay
                    err = await refused(push(tower, v[cid1, 2], s.b))
                    assert err.reason is TowerReason.PAYMENT_REQUIRED and err.status == 402
                    assert err.extra["terms"]["pay_to"] and err.extra["billing"]["protected"] is False
                    # C pays for two states, through its channel with O
                    await c.pay(pay_cid, ETH, PRICE)
                    await c.pay(pay_cid, ETH, PRICE)
                    # O paying C back is a payment *out* of O: it credits nobody
                    await o.pay(pay_cid, ETH, PRICE // 2)
                    await eventually("C credited", lambda: billing.account(s.b.address).paid == 2 * PRICE)
                    # C's payment credits C only: X (the other participant) still pays nothing and gets nothing
                    assert billing.account(s.a.address).paid == 0
                    assert (await refused(push(tower, v[cid1, 2], s.a))).reason is TowerReason.PAYMENT_REQUIRED
                    await push(tower, v[cid1, 2], s.b)
                    await push(tower, v[cid2, 2], s.b)
                    assert billing.standing(s.b.address).balance == 0
                    await push(tower, v[cid2, 2], s.b)  # a retried push costs nothing
                    assert billing.standing(s.b.address).balance == 0
                    # C stops paying: the next state is taken on credit and the grace period starts
                    await push(tower, v[cid1, 3], s.b)
                    st = billing.standing(s.b.address)
                    assert st.balance == -PRICE and st.protected_until == clock.t + GRACE and st.protected
                    # the HTTP receipt tells the client until when it is protected
                    app = create_tower_app(tower)
                    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
                        assert (await api.get("/info")).json()["terms"]["price_per_state"] == str(PRICE)
                        r = await api.post("/states", json=state_json(v[cid2, 3], s))
                        assert r.status_code == 200 and r.json()["protected_until"] == clock.t + GRACE
                        # within grace, a stale close of channel 1 is challenged with version 3
                        close_with(s, ch1, v[cid1, 1])
                        await eventually("challenge of ch1", lambda: tower.challenges.get(cid1) is not None)
                        assert tower.challenges[cid1].version == 3
                        # after grace: pushes refused with the 402 and what is owed
                        clock.t += GRACE
                        r = await api.post("/states", json=state_json(v[cid2, 4], s))
                        body = r.json()["error"]
                        assert r.status_code == 402 and body["reason"] == "payment_required"
                        assert body["billing"]["owed"] == str(4 * PRICE) and body["billing"]["protected"] is False
                        mine = await api.post(f"/accounts/0x{s.b.address.hex()}", json=account_json(s, s.b, s.b))
                        assert mine.status_code == 200 and mine.json()["balance"] == str(-2 * PRICE)
                        # the account is the holder's only: not public, not to the counterparty, not replayed
                        assert (await api.get(f"/accounts/0x{s.b.address.hex()}")).status_code == 405
                        peek = await api.post(f"/accounts/0x{s.b.address.hex()}", json=account_json(s, s.b, s.a))
                        assert peek.status_code == 401 and "balance" not in peek.text
                        forged = {**account_json(s, s.b, s.a), "client": to_checksum(s.b.address)}  # X signs as C
                        assert (await api.post(f"/accounts/0x{s.b.address.hex()}", json=forged)).status_code == 401
                    # ... and a stale close of channel 2 is not answered (the tower holds C's version 3)
                    close_with(s, ch2, v[cid2, 1])
                    await eventually(
                        "ch2 dispute recorded",
                        lambda: (row := tower.row(cid2)) is not None and row.status is TowerStatus.CHALLENGED,
                    )
                    assert await tower.prepare([cid2]) == [] and cid2 not in tower.challenges
                    assert tower.candidates(cid2) == []
                # restart: billing survives, payments already credited are not credited again
                async with paid_tower(s, tmp_path / "tower.db", terms, node_url, clock) as tower:
                    billing = billed(tower)
                    await billing.poll_once()
                    acct = billing.account(s.b.address)
                    assert (acct.paid, acct.states) == (2 * PRICE, 4)
                    assert not billing.standing(s.b.address).protected
                    # a replayed payment row (same id) credits nothing
                    [known] = [r for r in o.payments(pay_cid, 10, 0) if r.direction == "in"][:1]
                    again = Received(known.payment_id, s.b.address, ETH, known.amount)
                    assert await billing.credit([again]) == 0
                    # C pays what it owes: protected again, and the open dispute of channel 2 is answered
                    await c.pay(pay_cid, ETH, 2 * PRICE)
                    await eventually("C credited again", lambda: billing.standing(s.b.address).protected)
                    await eventually("challenge of ch2", lambda: tower.challenges.get(cid2) is not None)
                    assert tower.challenges[cid2].version == 3

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_free_tower_keeps_no_accounts(tmp_path: Path) -> None:
    chain = LockedChain()
    s = deploy(chain, "free")
    ch = open_channel(s, 1)
    cid = s.adj.channel_id(ch)
    v2 = sign(s.adj.domain, eth_state(cid, 2, 5), s.a, s.b)

    async def scenario() -> None:
        store = SqliteTowerStore(tmp_path / "t.db", s.chain.chain_id, s.adj.address)
        tower = Tower(s.chain, s.adj.address, s.tower_key, store, PlainSender(s.chain, s.tower_key), poll_interval=0.02)
        await tower.start()
        try:
            app = create_tower_app(tower)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
                assert "terms" not in (await api.get("/info")).json()
                assert (await api.post("/channels", json=params_json(ch, s))).status_code == 201
                r = await api.post("/states", json=state_json(v2, s))
                assert r.status_code == 200 and "protected_until" not in r.json()
                free = await api.post(f"/accounts/0x{s.b.address.hex()}", json=account_json(s, s.b, s.b))
                assert free.status_code == 404
            close_with(s, ch, sign(s.adj.domain, eth_state(cid, 1, 0), s.a, s.b))
            await eventually("challenge", lambda: tower.challenges.get(cid) is not None)
        finally:
            await tower.stop()
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


class NoNode:
    """No payee node: this test hands `credit` the payments the way NodePayments reads them."""

    async def received(self, known: Callable[[str], bool]) -> list[Received]:
        return []


def test_accounts_survive_a_reopen_on_both_backends_with_exact_huge_amounts(open_store: StoreFactory) -> None:
    payee, client, other = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
    terms = Terms(payee, price_per_state=UINT256_MAX // 2)
    clock = Clock()

    async def run() -> None:
        store = open_store(1, b"\x05" * 20)
        billing = Billing(terms, store, NoNode(), clock=clock)
        paid = [Received("in:a:1:0", client, ETH, UINT256_MAX), Received("in:a:2:0", client, ETH, 7)]
        odd = [Received("in:b:1:0", other, b"\x09" * 20, 5), Received("in:b:2:0", other, ETH, 0)]
        assert await billing.credit(paid + paid + odd) == 2  # a repeated id once; another asset or 0: nothing
        await billing.charge(client)
        await billing.charge(client)
        await store.close()
        store = open_store(1, b"\x05" * 20)
        billing = Billing(terms, store, NoNode(), clock=clock)
        acct = billing.account(client)
        assert (acct.paid, acct.states, acct.start) == (UINT256_MAX + 7, 2, clock.t)
        assert billing.standing(client).balance == UINT256_MAX + 7 - 2 * (UINT256_MAX // 2)
        assert billing.account(other).paid == 0 and await billing.credit(paid) == 0
        await store.close()

    asyncio.run(run())


def test_payments_pruned_from_the_payee_node_between_two_polls_are_still_credited(tmp_path: Path) -> None:
    """The operator's node keeps only its newest 3 payment rows: 10 payments between two polls lose 7 rows,
    and the tower still credits all 10, once each (it reconciles with the channel's balance)."""
    chain = LockedChain()
    s = deploy(chain, "pruned")
    clock = Clock()

    async def scenario() -> None:
        async with payee_and_client(tmp_path, chain, s, max_payments=3) as (o, c, pay_cid):
            terms = Terms(o.address, ETH, price_per_state=PRICE, grace=GRACE)
            async with serve(create_app(o, TOKEN)) as node_url:
                # a poll a day: the test polls by hand
                async with paid_tower(s, tmp_path / "tower.db", terms, node_url, clock, poll_interval=86400) as tower:
                    billing = billed(tower)
                    await billing.poll_once()
                    for _ in range(10):
                        await c.pay(pay_cid, ETH, PRICE)
                    assert len(o.payments(pay_cid, 100)) == 3 and o.store.pruned(pay_cid) == 7
                    await billing.poll_once()
                    assert billing.account(s.b.address).paid == 10 * PRICE
                    await billing.poll_once()  # nothing new: nothing credited twice
                    assert billing.account(s.b.address).paid == 10 * PRICE
                    for _ in range(2):
                        await c.pay(pay_cid, ETH, PRICE)
                    await billing.poll_once()
                    assert billing.account(s.b.address).paid == 12 * PRICE
                    for _ in range(5):  # pruned again, rows read and reconciled in one poll
                        await c.pay(pay_cid, ETH, PRICE)
                    await billing.poll_once()
                    assert billing.account(s.b.address).paid == 17 * PRICE
                async with paid_tower(s, tmp_path / "tower.db", terms, node_url, clock, poll_interval=86400) as tower:
                    await billed(tower).poll_once()  # a restarted tower credits nothing again
                    assert billed(tower).account(s.b.address).paid == 17 * PRICE

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_schema_3_tower_is_upgraded_and_reconciling_never_credits_its_old_rows_again(tmp_path: Path) -> None:
    payee, client = b"\x01" * 20, b"\x02" * 20
    terms = Terms(payee, price_per_state=PRICE)
    clock = Clock()
    cid = "0x" + "ab" * 32

    async def run() -> None:
        store = SqliteTowerStore(tmp_path / "t.db", 1, b"\x05" * 20)
        billing = Billing(terms, store, NoNode(), clock=clock)
        assert await billing.credit([Received("old", client, ETH, 5 * PRICE)]) == 1  # a row credited before tallies
        await store.close()
        db = sqlite3.connect(tmp_path / "t.db")
        with db:  # as a schema 3 tower left it
            db.execute("DROP TABLE tw_credit")
            db.execute("UPDATE tw_meta SET schema_version = 3")
        db.close()
        store = SqliteTowerStore(tmp_path / "t.db", 1, b"\x05" * 20)
        billing = Billing(terms, store, NoNode(), clock=clock)
        # the channel holds the 5 paid before the upgrade: nothing is credited twice
        assert await billing.reconcile([Holding(cid, client, 7, 5 * PRICE)]) == 0
        assert billing.account(client).paid == 5 * PRICE
        # later payments through it count, by row or by balance, once
        assert await billing.reconcile([Holding(cid, client, 9, 7 * PRICE)]) == 1
        assert await billing.credit([Received("late", client, ETH, 2 * PRICE, cid, 8)]) == 0  # version reconciled
        assert billing.account(client).paid == 7 * PRICE and billing._known("late")
        await store.close()

    asyncio.run(run())

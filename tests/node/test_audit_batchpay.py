"""Audit of batch payments (decision 0012) through real nodes: what a caller can make the node report
about a batch by its id, and what a hostile peer's counts can make the payee record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statechannel.core.channel import MAX_IN_FLIGHT
from statechannel.core.errors import Reason
from statechannel.core.persist import encode_channel
from statechannel.core.types import ETH
from statechannel.node.node import Node, NodeError
from statechannel.store.sqlite import SqliteStore
from tests.node.test_node import ETHER, World, open_funded, run
from tests.terms import TEST_TERMS


async def _fill_pipeline(a: Node, cid: bytes) -> list[asyncio.Future[object]]:
    """A's link is down: every update it proposes stays in flight until the pipeline is full."""
    await a.transport.disconnect()  # type: ignore[attr-defined]
    futures: list[asyncio.Future[object]] = []
    while a.channel(cid).room() > 0:
        futures.append(a.pay_nowait(cid, ETH, 1))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # flushed: one update each
    assert len(a.channel(cid).pending) == MAX_IN_FLIGHT
    return futures


def test_a_queued_batch_is_found_by_its_id_with_its_total_and_count(tmp_path: Path) -> None:
    """A batch waiting for room in the pipeline is what the API's Idempotency-Key check compares a
    retry against: found by id it must say what it is (asset, total, count), not an empty record."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        singles = await _fill_pipeline(a, cid)
        fut = a.pay_batch_nowait(cid, ETH, each=2, count=5, batch_id="invoice")
        await asyncio.sleep(0)
        assert not fut.done() and a._queued[cid]  # still queued: no room
        found = a.find_payment(cid, "invoice")
        assert found is not None
        assert (found.status, found.asset, found.amount, found.count) == ("pending", ETH, 10, 5)
        assert len(singles) == MAX_IN_FLIGHT

    run(tmp_path, scenario)


def test_a_caller_id_that_names_a_per_payment_batchs_row_is_refused(tmp_path: Path) -> None:
    """A batch "order" with per-payment history writes rows "order:0".."order:2". A payment the caller
    names "order:1" (before, while or after the batch is in flight) would share that row: its outcome
    would overwrite the other's, or its row would never be written. Either id is refused up front."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        await a.transport.disconnect()  # type: ignore[attr-defined]
        batch = a.pay_batch_nowait(cid, ETH, [5, 6, 7], batch_id="order", history="per-payment")
        with pytest.raises(NodeError) as refused:
            a.pay_nowait(cid, ETH, 1000, "order:1")  # while the batch is in flight
        assert refused.value.reason is Reason.BAD_PARAMS
        await a.transport.reconnect()  # type: ignore[attr-defined]
        await batch
        with pytest.raises(NodeError):
            a.pay_nowait(cid, ETH, 1000, "order:2")  # after: its row is in the store
        # a single payment first, then a per-payment batch whose rows would include its id
        await a.pay(cid, ETH, 9, "bill:0")
        with pytest.raises(NodeError):
            a.pay_batch_nowait(cid, ETH, [1, 2], batch_id="bill", history="per-payment")
        await asyncio.gather(a.idle(cid), b.idle(cid))
        rows = {r.payment_id: (r.status, r.amount, r.count) for r in a.payments(cid)}
        assert rows == {
            "order": ("sent", 18, 3),
            "order:0": ("sent", 5, 1),
            "order:1": ("sent", 6, 1),
            "order:2": ("sent", 7, 1),
            "bill:0": ("sent", 9, 1),
        }
        latest = b.channel(cid).latest
        assert latest is not None and latest.state.transfers == (27,)

    run(tmp_path, scenario)


def test_a_batch_id_reused_after_a_restart_is_refused_and_the_old_row_kept(tmp_path: Path) -> None:
    """The ids in use are remembered in memory; after a restart a caller (or a retry of an old
    Idempotency-Key) naming a batch id whose row is stored would have the new batch's outcome written
    over the old row (status and version of one, total and count of the other), and no row of its own."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        old = await a.pay_batch_nowait(cid, ETH, each=1, count=3, batch_id="rent")
        await a.idle(cid)
        await a.stop()
        await a.store.close()
        store = SqliteStore(world.tmp / "a.db")
        revived = Node(a.key, a.chainio, store, a.transport, poll_interval=0.02, terms=TEST_TERMS)
        await revived.start()
        world.nodes[0] = revived
        blob = encode_channel(revived.channel(cid))
        with pytest.raises(NodeError) as refused:
            revived.pay_batch_nowait(cid, ETH, each=1000, count=1000, batch_id="rent")
        assert refused.value.reason is Reason.BAD_PARAMS
        with pytest.raises(NodeError):
            revived.pay_nowait(cid, ETH, 7, "rent")
        assert encode_channel(revived.channel(cid)) == blob and not revived._queued[cid]
        await revived.idle(cid)
        [row] = revived.payments(cid)
        assert (row.payment_id, row.amount, row.count, row.version) == ("rent", 3, 3, old.version)

    run(tmp_path, scenario)


def test_per_payment_history_of_a_batch_is_bounded(tmp_path: Path) -> None:
    """`history="per-payment"` builds one row per payment in memory and in one save: a count of 10**9
    would hold the event loop for minutes and fill memory. Beyond the bound it is refused whole."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        blob = encode_channel(a.channel(cid))
        with pytest.raises(NodeError) as refused:
            a.pay_batch_nowait(cid, ETH, each=1, count=10**9, history="per-payment")
        assert refused.value.reason is Reason.BAD_PARAMS
        assert encode_channel(a.channel(cid)) == blob and not a._queued[cid] and not a._members
        record = await a.pay_batch_nowait(cid, ETH, each=1, count=10**9)  # one row: any count
        assert (record.amount, record.count) == (10**9, 10**9)

    run(tmp_path, scenario)

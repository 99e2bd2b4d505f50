"""Batch payments through real nodes (decision 0012): one future and one update entry per batch, one
history row per side carrying the count and the total; refused whole, changing nothing; and across a
restart the batch's row agrees with the signed state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statechannel.core.errors import Reason
from statechannel.core.persist import encode_channel
from statechannel.core.types import ETH
from statechannel.node.node import Node, NodeError
from statechannel.store.sqlite import SqliteStore
from tests.node.test_node import ETHER, World, open_funded, run
from tests.terms import TEST_TERMS


def _version(node: Node, cid: bytes) -> int:
    latest = node.channel(cid).latest
    assert latest is not None
    return latest.state.version


def test_a_batch_is_one_future_one_update_and_one_row_on_each_side(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, ETHER)
        v0 = _version(a, cid)
        record = await a.pay_batch_nowait(cid, ETH, each=3, count=100_000, batch_id="rent")
        assert (record.payment_id, record.status, record.amount, record.count) == ("rent", "sent", 300_000, 100_000)
        assert _version(a, cid) == v0 + 1  # 100,000 payments, one update
        await b.idle(cid)
        latest = b.channel(cid).latest
        assert latest is not None and latest.state.transfers == (300_000,)  # exactly the total moved
        assert [(r.payment_id, r.status, r.amount, r.count) for r in a.payments(cid)] == [
            ("rent", "sent", 300_000, 100_000)
        ]
        [row] = b.payments(cid)
        assert (row.direction, row.status, row.amount, row.count, row.version) == (
            "in",
            "received",
            300_000,
            100_000,
            v0 + 1,
        )
        # the follower pays a batch of different amounts back: one request, one row at the leader
        back = await b.pay_batch_nowait(cid, ETH, [1, 2, 3, 4])
        assert (back.status, back.amount, back.count) == ("sent", 10, 4)
        await a.idle(cid)
        ins = [r for r in a.payments(cid) if r.direction == "in"]
        assert [(r.amount, r.count) for r in ins] == [(10, 4)]
        latest = a.channel(cid).latest
        assert latest is not None and latest.state.transfers == (300_000 - 10,)

    run(tmp_path, scenario)


def test_batches_and_single_payments_coalesce_into_one_update(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        v0 = _version(a, cid)
        futures = [a.pay_batch_nowait(cid, ETH, each=1, count=1000) for _ in range(5)]
        futures += [a.pay_nowait(cid, ETH, 7) for _ in range(3)]
        records = await asyncio.gather(*futures)
        assert [r.count for r in records] == [1000] * 5 + [1] * 3
        assert _version(a, cid) == v0 + 1
        await b.idle(cid)
        assert sorted((r.amount, r.count) for r in b.payments(cid)) == [(7, 1)] * 3 + [(1000, 1000)] * 5

    run(tmp_path, scenario)


def test_per_payment_history_is_asked_for_and_the_peer_still_sees_one_row(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        record = await a.pay_batch_nowait(cid, ETH, [5, 6, 7], batch_id="order", history="per-payment")
        assert (record.amount, record.count) == (18, 3)
        rows = {r.payment_id: (r.status, r.amount, r.count) for r in a.payments(cid)}
        assert rows == {
            "order": ("sent", 18, 3),
            "order:0": ("sent", 5, 1),
            "order:1": ("sent", 6, 1),
            "order:2": ("sent", 7, 1),
        }
        await b.idle(cid)
        assert [(r.amount, r.count) for r in b.payments(cid)] == [(18, 3)]

    run(tmp_path, scenario)


BAD_BATCHES: list[dict[str, object]] = [
    {"amounts": []},
    {"amounts": [1, 0]},
    {"amounts": [1, -2]},
    {"amounts": [1, True]},
    {"amounts": [1, 1.5]},
    {"each": 1.0, "count": 2},
    {"each": 1, "count": 0},
    {"each": True, "count": 2},
    {"each": 1},
    {"amounts": [1], "each": 1, "count": 1},
    {"each": 1, "count": 2, "history": "sometimes"},
    {"each": 1, "count": 2, "batch_id": "taken"},
    {"each": 2, "count": 10**6},  # 2,000,000: more than the 1,000,010 this side can spend
    {"amounts": [999_000, 1_000, 11]},  # 1,000,011 with the queued 10: one unit too much
]


@pytest.mark.parametrize("bad", BAD_BATCHES, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items())[:60])
def test_a_refused_batch_changes_nothing(tmp_path: Path, bad: dict[str, object]) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 1_000_020, 0)
        await a.pay(cid, ETH, 1, "taken")
        await asyncio.gather(a.idle(cid), b.idle(cid))
        queued = a.pay_nowait(cid, ETH, 10)  # queued, not yet proposed: counted against the batch
        blob, rows, peer = encode_channel(a.channel(cid)), a.payments(cid), encode_channel(b.channel(cid))
        stored = a.store.load_channels()[cid]
        with pytest.raises(NodeError) as refused:
            a.pay_batch_nowait(cid, ETH, **bad)  # type: ignore[arg-type]
        assert refused.value.reason in (Reason.BAD_AMOUNT, Reason.BAD_PARAMS, Reason.INSUFFICIENT_FUNDS)
        assert [p.amount for p, _ in a._queued[cid]] == [10]  # nothing queued
        assert encode_channel(a.channel(cid)) == blob and a.payments(cid) == rows
        assert a.store.load_channels()[cid] == stored
        await queued
        await asyncio.gather(a.idle(cid), b.idle(cid))
        latest = b.channel(cid).latest
        assert latest is not None and latest.state.transfers == (11,)  # only the two single payments moved
        assert encode_channel(b.channel(cid)) != peer and len(a.payments(cid)) == 2

    run(tmp_path, scenario)


def test_a_restart_mid_batch_keeps_its_row_consistent_with_the_signed_state(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        transport = a.transport
        await transport.disconnect()  # type: ignore[attr-defined]
        fut = a.pay_batch_nowait(cid, ETH, each=2, count=50_000, batch_id="payroll")
        await asyncio.sleep(0)  # flushed: proposed and signed by A
        await a.idle(cid)  # saved; B never saw it
        assert not fut.done()
        await a.stop()
        await a.store.close()
        store = SqliteStore(world.tmp / "a.db")
        [pending] = [r for r in store.payments(cid) if r.payment_id == "payroll"]
        assert (pending.status, pending.amount, pending.count) == ("pending", 100_000, 50_000)
        revived = Node(a.key, a.chainio, store, transport, poll_interval=0.02, terms=TEST_TERMS)
        await revived.start()
        world.nodes[0] = revived
        await transport.reconnect()  # type: ignore[attr-defined]
        while (ch := revived.channel(cid)).latest is None or ch.latest.state.transfers != (100_000,) or ch.pending:
            await asyncio.sleep(0.02)
        await asyncio.gather(revived.idle(cid), b.idle(cid))
        [row] = revived.payments(cid)
        latest = revived.channel(cid).latest
        assert latest is not None
        assert (row.payment_id, row.status, row.amount, row.count) == ("payroll", "sent", 100_000, 50_000)
        assert row.version == latest.state.version and row.created_ms == pending.created_ms
        [seen] = b.payments(cid)
        assert (seen.amount, seen.count, seen.version) == (100_000, 50_000, latest.state.version)

    run(tmp_path, scenario)


def test_a_payment_with_a_caller_chosen_id_has_a_pending_row_one_with_the_nodes_id_only_its_outcome(
    tmp_path: Path,
) -> None:
    """A caller retrying by its own id after a crash must find the payment: its pending row is saved with
    the proposal. An id the node chose is nobody's handle before the outcome: one row, written then."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, ETHER, 0)
        await a.transport.disconnect()  # type: ignore[attr-defined]
        anonymous = a.pay_nowait(cid, ETH, 5)
        named = a.pay_nowait(cid, ETH, 6, "order-1")
        await asyncio.sleep(0)
        await a.idle(cid)
        assert [(r.payment_id, r.status) for r in a.payments(cid)] == [("order-1", "pending")]
        assert a.find_payment(cid, "order-1") is not None
        await a.transport.reconnect()  # type: ignore[attr-defined]
        first, second = await asyncio.gather(anonymous, named)
        await a.idle(cid)
        rows = {r.payment_id: (r.status, r.amount, r.version) for r in a.payments(cid)}
        assert rows == {first.payment_id: ("sent", 5, first.version), "order-1": ("sent", 6, second.version)}

    run(tmp_path, scenario)

"""Effects are carried out in the callback that learns their save is durable: per channel in commit order,
never before that save (invariant 4), and never after a save of that channel failed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from statechannel.chain.adjudicator import Status
from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.io import Effect, NotifySent, SendMessage
from statechannel.core.persist import decode_channel
from statechannel.core.types import ETH
from statechannel.node.node import Node, NodeEvent
from tests.node.test_node import ETHER, World, on_chain, open_funded, run


def signed_version(effect: Effect) -> int | None:
    """The version a frame carries this node's signature on, if it carries one."""
    if isinstance(effect, SendMessage):
        if isinstance(effect.message, m.Propose):
            return effect.message.state.version
        if isinstance(effect.message, m.Accept):
            return effect.message.version
    return None


def durable_signed_upto(node: Node, cid: bytes) -> int:
    """What the node's store holds, read from the file (another connection), not from memory."""
    return decode_channel(node.store.load_channels()[cid]).signed_upto


def queue_empty(node: Node) -> bool:
    """Whether the store's writer has taken every save queued (reached into: nothing public says so)."""
    return bool(node.store._queue.empty())  # type: ignore[attr-defined]


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not predicate():
            await asyncio.sleep(0.005)


def test_each_effect_follows_its_durable_save_in_commit_order_across_many_commits_in_flight(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 5 * ETHER, 0)
        seen: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
        early: list[str] = []

        def watch(name: str, node: Node) -> None:
            def hook(channel_id: bytes, effect: Effect) -> None:
                version = signed_version(effect)
                if version is not None and isinstance(effect, SendMessage):
                    if durable_signed_upto(node, channel_id) < version:
                        early.append(f"{name} sent its signature on {version} before saving it")
                    seen[name].append((type(effect.message).__name__, version))
                elif isinstance(effect, NotifySent):
                    seen[name].append(("sent", effect.version))

            node.effect_hooks.append(hook)

        watch("a", a)
        watch("b", b)
        futures = []
        for i in range(400):  # commits of both sides in flight at once, in many group commits
            futures.append(a.pay_nowait(cid, ETH, 1 + i % 3))
            if i % 5 == 0:
                await asyncio.sleep(0)
        results = await asyncio.gather(*futures)
        await a.idle(cid)
        await b.idle(cid)
        assert early == []
        proposed = [v for kind, v in seen["a"] if kind == "Propose"]
        accepted = [v for kind, v in seen["b"] if kind == "Accept"]
        told = [v for kind, v in seen["a"] if kind == "sent"]
        assert len(proposed) > 10  # many updates, so many commits of each side overlapped
        assert proposed == sorted(proposed) and len(set(proposed)) == len(proposed)
        assert accepted == proposed  # B took the frames in the order A sent them, and answered each in order
        assert told == sorted(told)
        assert [r.version for r in results] == sorted(r.version for r in results)
        la, lb = a.channel(cid).latest, b.channel(cid).latest
        assert la is not None and la == lb and la.state.transfers == (sum(1 + i % 3 for i in range(400)),)

    run(tmp_path, scenario)


def test_a_failed_save_stops_its_effects_and_every_later_one_of_the_channel(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 5 * ETHER, 0)
        await a.pay(cid, ETH, 1)
        await b.idle(cid)
        before = b.channel(cid).latest
        assert before is not None
        carried: list[Effect] = []
        a.effect_hooks.append(lambda channel_id, effect: carried.append(effect))
        events: list[NodeEvent] = []

        async def listen() -> None:
            async for event in a.subscribe():
                events.append(event)

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0)
        path = a.store.path  # type: ignore[attr-defined]
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            # a fault the store cannot see coming: the payment "poison" cannot be written. The write lock is
            # held meanwhile, so the writer blocks on the poisoned save alone and the next save of the
            # channel lands in a transaction of its own, which commits.
            other.execute("BEGIN IMMEDIATE")
            other.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON payments WHEN NEW.payment_id = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
            poisoned = a.pay_nowait(cid, ETH, 2, payment_id="poison")
            await until(lambda: len(a.channel(cid).pending) == 1 and queue_empty(a))  # the writer holds it
            later = a.pay_nowait(cid, ETH, 3, payment_id="later")
            await until(lambda: len(a.channel(cid).pending) == 2)  # its save waits behind the poisoned one
            other.execute("COMMIT")
            await a.idle(cid)
        ids = {r.payment_id: r.status for r in a.store.payments(cid)}
        assert "poison" not in ids  # its save rolled back
        assert ids.get("later") == "pending"  # the later save is durable ...
        assert carried == []  # ... yet neither commit's effects, nor any later one's, were carried out
        await asyncio.sleep(0.1)  # nothing is in flight to B to arrive late
        assert b.channel(cid).latest == before and not b.channel(cid).pending
        assert not poisoned.done() and not later.done()
        assert [e.data["kind"] for e in events if e.kind == "alert"] == ["save_failed"]
        listener.cancel()

    run(tmp_path, scenario)


def test_a_channel_fenced_by_a_failed_save_still_answers_a_stale_close_and_settles(tmp_path: Path) -> None:
    """B's disk fails one save (B is fenced: nothing more of the channel goes to A), and A, seeing B stuck,
    closes with the post-fund state, where it paid nothing (by hand: its own node would answer it). The
    fence keeps unsaved signatures from leaving; it must not keep B from defending on chain with the
    both-signed states it holds: a node that stopped answering after one failed write would lose what it
    was paid."""

    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 5 * ETHER, 0)
        stale = a.channel(cid).latest
        assert stale is not None
        for _ in range(5):
            await a.pay(cid, ETH, 1000)
        await b.idle(cid)
        path = b.store.path  # type: ignore[attr-defined]
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        a.pay_nowait(cid, ETH, 7)  # B's save of what it receives fails: B is fenced
        await until(lambda: cid in b._fenced)
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("DROP TRIGGER poison")  # the disk is back; B still runs fenced until a restart
        held = b.channel(cid).latest
        assert held is not None and held.state.version > stale.state.version
        params = a.channel(cid).params
        await a.stop()  # A's node would answer A's own stale close: A closes by hand, its node down
        await a.store.close()
        a.chainio.close()
        world.nodes.remove(a)
        await on_chain(b, lambda: world.adj.close(world.keys[0], params, stale.state, stale.sig_a, stale.sig_b))
        await b.wait_for(cid, Phase.DISPUTE)
        async with asyncio.timeout(30):
            while (r := await on_chain(b, lambda: world.adj.recorded(cid))) is None or r.version == stale.state.version:
                await asyncio.sleep(0.02)
        assert r.version == held.state.version  # B's challenge: the best both-signed state it holds
        await on_chain(b, lambda: world.chain.advance_time(61))
        await b.wait_for(cid, Phase.CLOSED)
        assert (await on_chain(b, lambda: world.adj.channel(cid))).status is Status.CONCLUDED

    run(tmp_path, scenario)

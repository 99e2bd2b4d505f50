"""Chain faults against a real anvil, one anvil per test (each restarts, reorgs or jams its own):
the RPC node restarts mid-run or loses answers, a reorg undoes a deposit or a close, a transaction is
stuck, dropped or replaced. Nodes (in process, over the in-memory transport) and the tower must
recover with no double action (no second deposit, close or challenge that costs money) and no missed
deadline. Each test failed before its fix (see docs/security.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.rpc import RpcChain
from statechannel.core.channel import Phase
from statechannel.core.types import ETH
from statechannel.gasreport import parties
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.sqlite import SqliteStore
from statechannel.watchtower.sender import BumpingSender
from tests.anvil import Anvil
from tests.terms import TEST_TERMS
from tests.watchtower.helpers import (
    close_with,
    closes,
    deploy,
    eth_state,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)

pytestmark = pytest.mark.anvil
T = TypeVar("T")
ETHER = 10**18
TOP_UP = 12345


class World:
    """Two nodes and their chain clients on one dedicated anvil."""

    def __init__(self, anvil: Anvil, tmp: Path, node_url: str | None = None, **rpc: Any) -> None:
        self.anvil = anvil
        self.tmp = tmp
        self.node_url = node_url or anvil.url
        """Where the nodes' chain clients connect (a fault-injecting proxy, or anvil itself)."""
        self.rpc_kw = rpc
        self.rpc = RpcChain(anvil.url)
        p = parties(self.rpc, "chain faults")
        self.keys = (p.a, p.b)
        self.adj, _ = Adjudicator.deploy(self.rpc, p.deployer)
        self.link = MemoryTransport.pair(*self.keys)
        self.nodes: list[Node] = []

    def call(self, method: str, *params: Any) -> Any:
        return self.rpc._rpc(method, list(params))

    async def node(self, i: int, weigh_gas: bool = False, **rpc: Any) -> Node:
        key = self.keys[i]
        chain = RpcChain(self.node_url, **(rpc or self.rpc_kw))
        store = SqliteStore(self.tmp / f"{'ab'[i]}{len(self.nodes)}.db")
        chainio = ChainIO(chain, self.adj.address, key)
        node = Node(key, chainio, store, self.link[i], poll_interval=0.05, terms=TEST_TERMS, weigh_gas=weigh_gas)
        await node.start()
        self.nodes.append(node)
        return node

    async def pair(self, period: int = 3600) -> tuple[Node, Node, bytes]:
        a, b = await self.node(0), await self.node(1)
        cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=period)
        await a.wait_for(cid, Phase.OPEN, 60)
        await b.wait_for(cid, Phase.OPEN, 60)
        return a, b, cid

    async def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop()
            await node.store.close()
            node.chainio.close()


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    """A dedicated anvil that keeps its chain in a file across `restart()`."""
    node = Anvil(state=tmp_path / "anvil-state.json")
    yield node
    node.stop()


def run(anvil: Anvil, tmp: Path, scenario: Callable[[World], Awaitable[T]], timeout: float = 120, **rpc: Any) -> T:
    async def main() -> T:
        world = World(anvil, tmp, **rpc)
        try:
            return await asyncio.wait_for(scenario(world), timeout)
        finally:
            await world.stop()

    return asyncio.run(main())


async def until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def funded(w: World, cid: bytes) -> tuple[int, int]:
    info = w.adj.channel(cid)
    return info.funded_a, info.funded_b


def nonce(w: World, address: bytes) -> int:
    return int(w.call("eth_getTransactionCount", "0x" + address.hex(), "latest"), 16)


def in_pool(w: World) -> int:
    return int(w.call("txpool_status")["pending"], 16)


async def settle(w: World) -> None:
    """Mine a few blocks so whatever is still in the pool lands (or shows it never will)."""
    for _ in range(3):
        await asyncio.to_thread(w.rpc.mine)
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------ stuck, dropped, replaced


def test_chain_fault_a_stuck_deposit_is_never_sent_twice(anvil: Anvil, tmp_path: Path) -> None:
    """Mining off: the deposit gets no receipt in time. The node retried with a new nonce, so once
    mining came back the chain took the deposit twice (or more). Now a retry resumes the one out."""

    async def scenario(w: World) -> None:
        _, b, cid = await w.pair()
        before = funded(w, cid)
        w.call("evm_setAutomine", False)
        deposit = asyncio.ensure_future(b.deposit(cid, ETH, TOP_UP))
        await until("the deposit in the pool", lambda: in_pool(w) > 0)
        await asyncio.sleep(3)  # several receipt timeouts: the node retries
        w.call("evm_setAutomine", True)
        await settle(w)
        with contextlib.suppress(Exception):
            await deposit
        await settle(w)
        assert funded(w, cid) == (before[0], before[1] + TOP_UP)
        await until("B sees it", lambda: b.channel(cid).funded[0] == funded(w, cid))

    run(anvil, tmp_path, scenario, receipt_timeout=0.5)


def test_chain_fault_a_dropped_transaction_is_sent_again_on_its_nonce(anvil: Anvil, tmp_path: Path) -> None:
    """`anvil_dropTransaction` takes the deposit out of the pool. The node's retry went out on the next
    nonce, behind a gap nothing would fill: neither it nor anything the node sent later was ever mined.
    Now the dropped transaction goes out again on its own nonce, once."""

    async def scenario(w: World) -> None:
        _, b, cid = await w.pair()
        before = funded(w, cid)
        w.call("evm_setAutomine", False)
        deposit = asyncio.ensure_future(b.deposit(cid, ETH, TOP_UP))
        await until("the deposit in the pool", lambda: in_pool(w) > 0)
        pool = w.call("txpool_content")["pending"]
        (txs,) = pool.values()
        for tx in txs.values():
            assert w.call("anvil_dropTransaction", tx["hash"])
        assert in_pool(w) == 0
        w.call("evm_setAutomine", True)
        await deposit
        await settle(w)
        assert funded(w, cid) == (before[0], before[1] + TOP_UP)
        await b.deposit(cid, ETH, 1)  # nothing of B's is stuck behind a gap
        assert funded(w, cid) == (before[0], before[1] + TOP_UP + 1)

    run(anvil, tmp_path, scenario, receipt_timeout=1.0)


def test_chain_fault_an_underpriced_transaction_is_replaced_and_mined_once(anvil: Anvil, tmp_path: Path) -> None:
    """The base fee jumps above what B's deposit offers, so it sits in the pool while blocks go by. It
    waited for its receipt unchanged (then retried on a new nonce: twice); now it is replaced on its
    nonce with higher fees, and exactly one version is mined."""

    async def scenario(w: World) -> None:
        _, b, cid = await w.pair()
        before = funded(w, cid)
        w.call("evm_setAutomine", False)
        deposit = asyncio.ensure_future(b.deposit(cid, ETH, TOP_UP))
        await until("the deposit in the pool", lambda: in_pool(w) > 0)
        w.call("anvil_setNextBlockBaseFeePerGas", hex(10**12))
        w.call("anvil_setIntervalMining", 1)
        await deposit
        w.call("anvil_setIntervalMining", 0)
        w.call("evm_setAutomine", True)
        await settle(w)
        assert funded(w, cid) == (before[0], before[1] + TOP_UP)

    run(anvil, tmp_path, scenario, receipt_timeout=3.0, bump_after=0.5)


# ------------------------------------------------------------------ lost answers, restarts


def test_chain_fault_a_restart_that_loses_the_pool_neither_strands_nor_doubles(anvil: Anvil, tmp_path: Path) -> None:
    """The RPC node restarts (`--state`: chain kept, pool lost) while B's deposit waits in its pool.
    B's node took the failures as "not sent" and retried on a nonce past the lost one: stuck for good.
    Now the deposit goes out again on its nonce once the node is back, and is mined once; meanwhile
    the watcher's failures are contained and it resumes from its checkpoint."""

    async def scenario(w: World) -> None:
        a, b, cid = await w.pair()
        before = funded(w, cid)
        w.call("evm_setAutomine", False)
        deposit = asyncio.ensure_future(b.deposit(cid, ETH, TOP_UP))
        await until("the deposit in the pool", lambda: in_pool(w) > 0)
        await asyncio.to_thread(w.anvil.stop)
        await asyncio.sleep(2)  # the watchers and the sender fail for a while
        await asyncio.to_thread(w.anvil._start)  # same port, same chain, empty pool, mining on
        await deposit
        await settle(w)
        assert funded(w, cid) == (before[0], before[1] + TOP_UP)
        await until("B sees it", lambda: b.channel(cid).funded[0] == funded(w, cid))
        await a.pay(cid, ETH, 5)  # the channel works on
        await b.idle(cid)
        await a.close(cid)
        await until("closed", lambda: w.adj.channel(cid).status is Status.CONCLUDED)

    run(anvil, tmp_path, scenario, receipt_timeout=20.0, bump_after=0.5)


# ------------------------------------------------------------------ reorgs


def reorg_from(w: World, block: int) -> None:
    """Replace every block from `block` to the head with empty ones (`anvil_reorg`: same height)."""
    w.call("anvil_reorg", w.rpc.block().number - block + 1, [])


def test_chain_fault_a_reorg_that_removes_a_peers_deposit_is_noticed(anvil: Anvil, tmp_path: Path) -> None:
    """Someone deposits for B; both nodes see it; a reorg replaces its block with an empty one. The
    nodes re-read funds only for channels with events in the re-read blocks (none here), so they kept
    believing B had money that is not on chain: a payment of it would be signed against nothing."""

    async def scenario(w: World) -> None:
        a, b, cid = await w.pair()
        other = parties(w.rpc, "chain faults outsider").a
        receipt = await asyncio.to_thread(w.adj.deposit, other, cid, 1, TOP_UP)
        for node in (a, b):
            await until("the deposit seen", lambda n=node: n.channel(cid).funded[0] == (ETHER, TOP_UP))  # type: ignore[misc]
        await asyncio.sleep(0.3)
        reorg_from(w, receipt.block_number)
        assert funded(w, cid) == (ETHER, 0)
        for node in (a, b):
            await until("the deposit seen undone", lambda n=node: n.channel(cid).funded[0] == (ETHER, 0))  # type: ignore[misc]

    run(anvil, tmp_path, scenario)


@pytest.mark.parametrize("how", ["anvil_reorg", "evm_revert"])
def test_chain_fault_a_reorg_that_removes_my_deposit_puts_it_back_once(anvil: Anvil, tmp_path: Path, how: str) -> None:
    """B's own deposit is undone by a reorg (or `evm_revert`: the chain even gets shorter). B kept
    believing it funded, its nonce cache pointed past the lost nonce so everything it sent later was
    stuck, and after `evm_revert` its watcher went blind until the chain regrew. Now the deposit goes
    out again on its own nonce (so it can never land twice) and B's view follows the chain."""

    async def scenario(w: World) -> None:
        _, b, cid = await w.pair()
        snap = w.call("evm_snapshot")
        receipt = await b.chainio.run(lambda: b.chainio.adj.deposit(b.key, cid, 1, TOP_UP))
        await until("the deposit seen", lambda: b.channel(cid).funded[0] == (ETHER, TOP_UP))
        await asyncio.sleep(0.3)
        if how == "evm_revert":
            assert w.call("evm_revert", snap)
        else:
            reorg_from(w, receipt.block_number)
        await until("the deposit back on chain", lambda: funded(w, cid) == (ETHER, TOP_UP))
        await settle(w)
        assert funded(w, cid) == (ETHER, TOP_UP)
        await until("B's view", lambda: b.channel(cid).funded[0] == (ETHER, TOP_UP))
        await b.deposit(cid, ETH, 1)  # nothing of B's is stuck
        assert funded(w, cid) == (ETHER, TOP_UP + 1)

    run(anvil, tmp_path, scenario)


def test_chain_fault_a_reorg_that_removes_a_close_leaves_no_channel_frozen(anvil: Anvil, tmp_path: Path) -> None:
    """A (its node gone) closes with a stale state; B challenges; a reorg removes both. The chain says
    the channel is open, B's node is in the dispute for good: it refused payments and had nothing to
    settle, so B's money stayed locked. Now B notices and closes with its latest state: one close, one
    settle, paid exactly its latest, and its lost challenge is not sent again to revert."""

    async def scenario(w: World) -> None:
        a, b, cid = await w.pair(period=600)
        stale = a.channel(cid).latest
        assert stale is not None
        await a.pay(cid, ETH, 1000)
        await b.idle(cid)
        latest = b.channel(cid).latest
        assert latest is not None and latest.state.version > stale.state.version
        await a.stop()
        params = b.channel(cid).params
        close = await asyncio.to_thread(w.adj.close, w.keys[0], params, stale.state, stale.sig_a, stale.sig_b)
        recorded = lambda: (r := w.adj.recorded(cid)) is not None and r.version == latest.state.version  # noqa: E731
        await until("B challenges", recorded)
        await asyncio.sleep(0.3)
        nonce_b = nonce(w, b.address) - 1  # the challenge is B's last transaction
        reorg_from(w, close.block_number)
        assert w.adj.channel(cid).status is Status.OPEN
        await until("B closes with its latest", recorded)
        w.call("evm_increaseTime", 601)
        await asyncio.to_thread(w.rpc.mine)
        await until("settled", lambda: w.adj.channel(cid).status is Status.CONCLUDED)
        await until("B's outcome", lambda: b.channel(cid).outcome is not None)
        outcome = b.channel(cid).outcome
        assert outcome is not None and outcome.version == latest.state.version and not outcome.loss
        await settle(w)
        assert nonce(w, b.address) == nonce_b + 2  # a close and a settle, nothing else

    run(anvil, tmp_path, scenario)


# ------------------------------------------------------------------ the tower


def test_chain_fault_the_tower_answers_a_close_across_an_rpc_restart(anvil: Anvil, tmp_path: Path) -> None:
    """The tower's challenge waits in the pool when the RPC node restarts (chain kept, pool lost): the
    tower's failures are contained, and it gets exactly one challenge mined inside the window."""
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "restart")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)

    async def scenario() -> None:
        sender = BumpingSender(rpc, s.tower_key, bump_after=0.5)
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await register(tower, params, s.b)
            await push(tower, sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b), s.b)
        close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
        rpc._rpc("evm_setAutomine", [False])
        async with running_tower(s, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
            await until("the challenge in the pool", lambda: int(rpc._rpc("txpool_status", [])["pending"], 16) > 0)
            await asyncio.to_thread(anvil.restart)
            await until("the challenge mined", lambda: (r := s.adj.recorded(cid)) is not None and r.version == 5, 60)
            await until("the tower sees it mined", lambda: tower.challenges[cid].outcome == "mined")
        assert [e.version for e in closes(s, cid)] == [2, 5]

    asyncio.run(asyncio.wait_for(scenario(), 90))

"""Chain faults through a real fault-injecting JSON-RPC proxy (tests/rpcproxy.py) between the nodes (and
the tower) and anvil: requests dropped, delayed, answered with JSON-RPC errors or HTTP 502, and answers
to `eth_sendRawTransaction` lost after the transaction reached the pool. The nodes fund, deposit, pay,
close (both ways) and settle; the tower challenges; every action is one transaction on chain (counted
by nonces on anvil, read directly, not through the proxy), none is missed, nothing crashes.

Also: a send that hangs does not delay the watcher (node/chainio.py: sends and reads on their own
threads); and a node process SIGKILLed while its transaction waits in the pool resumes that
transaction after a restart instead of sending a second one (chain/outbox.py's journal).

The seed of each faulted run is printed (`STATECHANNEL_SOAK_SEED=...` replays its draws);
`STATECHANNEL_SOAK=full` runs the long form (more episodes, more faults), like the crash soak."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from statechannel.chain.adjudicator import Status
from statechannel.chain.rpc import RpcChain
from statechannel.core.channel import Phase
from statechannel.core.types import ETH
from statechannel.watchtower.sender import BumpingSender
from tests.anvil import Anvil, free_port
from tests.cli.helpers import make_keystore, start_daemon
from tests.integration.test_chain_faults import ETHER, TOP_UP, World, funded, nonce, settle, until
from tests.rpcproxy import SEND, Faults, RpcProxy
from tests.watchtower.helpers import close_with, closes, deploy, eth_state, open_channel, push, register, sign
from tests.watchtower.helpers import running_tower as tower_on

T = TypeVar("T")
pytestmark = pytest.mark.anvil
FULL = os.environ.get("STATECHANNEL_SOAK") == "full"
EPISODES = 8 if FULL else 2


def seed_of(what: str) -> int:
    seed = int(os.environ.get("STATECHANNEL_SOAK_SEED", str(random.randrange(2**32))))  # noqa: S311
    print(f"\n{what} seed {seed} (replay: STATECHANNEL_SOAK_SEED={seed}), {'full' if FULL else 'short'} form")
    return seed


def txs_of(w: World, since_block: int, who: set[bytes]) -> list[str]:
    """What each of `who` sent from `since_block` on: selector and status, for a failure's message."""
    out = []
    for number in range(since_block, w.rpc.block().number + 1):
        block = w.call("eth_getBlockByNumber", hex(number), True)
        for tx in block["transactions"]:
            if bytes.fromhex(tx["from"][2:]) in who:
                status = w.call("eth_getTransactionReceipt", tx["hash"])["status"]
                out.append(f"{tx['from'][:8]} n{int(tx['nonce'], 16)} {tx['input'][:10]} status {status}")
    return out


def faults() -> Faults:
    if FULL:
        return Faults(drop=0.04, delay=0.08, rpc_error=0.04, http_5xx=0.04, lose_send_answer=0.5)
    return Faults(drop=0.02, delay=0.05, rpc_error=0.02, http_5xx=0.02, lose_send_answer=0.5)


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A dedicated anvil (tests here switch its mining off)."""
    node = Anvil()
    yield node
    node.stop()


def run_proxied(
    anvil: Anvil,
    tmp: Path,
    proxy: RpcProxy,
    scenario: Callable[[World], Awaitable[T]],
    timeout: float = 240,
    **rpc: Any,
) -> T:
    async def main() -> T:
        world = World(anvil, tmp, node_url=proxy.url, **rpc)
        try:
            return await asyncio.wait_for(scenario(world), timeout)
        finally:
            proxy.enabled = False  # the teardown's own requests are not faulted
            proxy.holds.clear()
            await world.stop()

    return asyncio.run(main())


def test_rpc_proxy_faults_every_action_once(anvil: Anvil, tmp_path: Path) -> None:
    """Episodes of open, deposit, payment and a close (cooperative, then unilateral with a settle) with
    every request of both nodes at risk; each episode's first sendRawTransaction answer is lost. Each
    step is exactly one transaction on chain, the channel ends concluded and both nodes see it."""
    seed = seed_of("rpc proxy faults")
    with RpcProxy(anvil.url, seed, faults()) as proxy:

        async def scenario(w: World) -> None:
            # weighing gas (the daemon's default): the side owed less leaves the settle to the other
            a, b = await w.node(0, weigh_gas=True), await w.node(1, weigh_gas=True)
            for episode in range(EPISODES):
                sent = {n.address: nonce(w, n.address) for n in (a, b)}
                first_block = w.rpc.block().number + 1
                proxy.lose_next_sends += 1
                cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=60)
                await a.wait_for(cid, Phase.OPEN, 120)
                await b.wait_for(cid, Phase.OPEN, 120)
                await b.deposit(cid, ETH, TOP_UP)
                assert funded(w, cid) == (ETHER, TOP_UP)
                await a.pay(cid, ETH, 5)
                await b.idle(cid)
                cooperative = episode % 2 == 0
                await a.close(cid, cooperative=cooperative)
                if not cooperative:
                    await until("the close on chain", lambda: w.adj.channel(cid).status is not Status.OPEN, 120)  # noqa: B023
                    w.call("evm_increaseTime", 61)
                    await asyncio.to_thread(w.rpc.mine)
                await until("concluded", lambda: w.adj.channel(cid).status is Status.CONCLUDED, 120)  # noqa: B023
                for n in (a, b):
                    await until("seen concluded", lambda n=n: n.channel(cid).phase is Phase.CLOSED, 120)  # type: ignore[misc]  # noqa: B023
                await settle(w)
                actions = (nonce(w, a.address) - sent[a.address]) + (nonce(w, b.address) - sent[b.address])
                want = 3 if cooperative else 4  # open, deposit, close (, settle)
                assert actions == want, (episode, txs_of(w, first_block, {a.address, b.address}), seed)
            print(f"injected {dict(proxy.injected)}, {proxy.sent} sendRawTransaction reached anvil, seed {seed}")
            assert proxy.injected["lose_send_answer"] >= EPISODES

        run_proxied(anvil, tmp_path, proxy, scenario, receipt_timeout=10.0, bump_after=1.0)


async def settle_tower(s) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        await asyncio.to_thread(s.chain.mine)
        await asyncio.sleep(0.3)


def test_rpc_proxy_faults_the_tower_challenges_once(anvil: Anvil, tmp_path: Path) -> None:
    """The tower's reads and its challenge go through the faulting proxy and the challenge's answer is
    lost: one challenge is mined inside the window, the tower's key sends nothing else."""
    seed = seed_of("rpc proxy tower")
    direct = RpcChain(anvil.url)
    s = deploy(direct, "proxy tower")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    with RpcProxy(anvil.url, seed, faults()) as proxy:
        proxied = dataclasses.replace(s, chain=RpcChain(proxy.url))

        async def scenario() -> None:
            sender = BumpingSender(proxied.chain, s.tower_key, bump_after=0.5)  # type: ignore[arg-type]
            proxy.enabled = False
            async with tower_on(proxied, tmp_path / "t.db", sender=sender, poll_interval=0.05) as tower:
                await register(tower, params, s.b)
                await push(tower, sign(s.adj.domain, eth_state(cid, 5, 10), s.a, s.b), s.b)
                proxy.enabled = True
                proxy.lose_next_sends = 1
                close_with(s, params, sign(s.adj.domain, eth_state(cid, 2, 0), s.a, s.b))
                await until(
                    "the challenge mined", lambda: (r := s.adj.recorded(cid)) is not None and r.version == 5, 90
                )
                # not asserted: the tower's own record of it (`outcome == "mined"`) -- after a lost answer
                # the sender reports the nonce "taken by another transaction" (open, see docs/security.md)
                await settle_tower(s)
            print(f"injected {dict(proxy.injected)}, seed {seed}")

        asyncio.run(asyncio.wait_for(scenario(), 120))
    assert [e.version for e in closes(s, cid)] == [2, 5]
    assert int(direct._rpc("eth_getTransactionCount", ["0x" + s.tower_key.address.hex(), "latest"]), 16) == 1


def test_rpc_proxy_a_hanging_send_does_not_delay_the_watcher(anvil: Anvil, tmp_path: Path) -> None:
    """Every sendRawTransaction of the nodes is held by the proxy for many seconds. B's deposit hangs in
    it; meanwhile A's old state is closed on chain directly. B's watcher sees the close while the
    deposit is still held, within two blocks of the close. Before, the watcher's reads queued behind
    the send on the one chain thread: B saw the close only once the send came back."""
    with RpcProxy(anvil.url, 0) as proxy:

        async def scenario(w: World) -> None:
            a, b, cid = await w.pair(period=600)
            latest = a.channel(cid).latest
            assert latest is not None
            proxy.holds[SEND] = 20.0
            deposit = asyncio.ensure_future(b.deposit(cid, ETH, TOP_UP))
            await until("B's deposit held by the proxy", lambda: proxy.holding == 1)
            params = b.channel(cid).params
            close = await asyncio.to_thread(w.adj.close, w.keys[0], params, latest.state, latest.sig_a, latest.sig_b)
            await until("B sees the close", lambda: b.channel(cid).phase is not Phase.OPEN, 60)
            assert proxy.holding == 1 and not deposit.done(), "the close was seen only after the send came back"
            assert w.rpc.block().number <= close.block_number + 2
            proxy.holds.clear()
            with pytest.raises(Exception):  # noqa: B017 - the channel is closing: the deposit is refused somehow
                await deposit

        run_proxied(anvil, tmp_path, proxy, scenario, timeout=90, request_timeout=60.0)


def test_rpc_proxy_a_node_killed_with_its_open_pending_sends_it_once(tmp_path: Path, anvil: Anvil) -> None:
    """Mining off; A (a real process) proposes a channel, B accepts, A's open waits in anvil's pool; A is
    SIGKILLed and restarted. On start A replays its open: the old, in-memory outbox had forgotten the
    one out and sent a second open on the next nonce (mined after the first, reverting: gas for
    nothing). Now the journal in A's data dir (0600) names the pending one and the replay resumes it:
    with mining back on, A's key sends exactly one transaction."""
    rpc = RpcChain(anvil.url)
    from eth_hash.auto import keccak

    from statechannel.chain.adjudicator import Adjudicator
    from statechannel.core.crypto import PrivateKey

    deployer = PrivateKey(keccak(b"journal deployer"))
    rpc.fund(deployer.address, 10**21)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    ka, kb = make_keystore(tmp_path / "a.json", "journal A"), make_keystore(tmp_path / "b.json", "journal B")
    for k in (ka, kb):
        rpc.fund(k.address, 10**21)
    common = ("--adjudicator", "0x" + adj.address.hex(), "--confirmations", "0")
    port_b = free_port()
    a_args = (tmp_path / "a.json", tmp_path / "a", anvil.url, *common)
    b_args = (tmp_path / "b.json", tmp_path / "b", anvil.url, *common, "--listen", f"127.0.0.1:{port_b}")
    a, b = start_daemon(*a_args), start_daemon(*b_args)

    def api(d, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
        token = (d.data_dir / "api-token").read_text().strip()
        with httpx.Client(base_url=d.info["api"], headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            return c.request(method, path, **kw)

    def wait(what: str, check, timeout: float = 60):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not (got := check()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)
        return got

    def pool_of(address: bytes) -> int:
        pending = rpc._rpc("txpool_content", [])["pending"]
        return sum(len(txs) for who, txs in pending.items() if bytes.fromhex(who[2:]) == address)

    try:
        r = api(a, "POST", "/peers", json={"address": "0x" + kb.address.hex(), "host": "127.0.0.1", "port": port_b})
        assert r.status_code == 200, r.text
        rpc._rpc("evm_setAutomine", [False])
        r = api(a, "POST", "/channels", json={"peer": "0x" + kb.address.hex(), "deposits": {"eth": str(ETHER)}})
        assert r.status_code == 201, r.text
        cid = r.json()["channel_id"]
        wait("A's open in the pool", lambda: pool_of(ka.address) == 1)
        journal = tmp_path / "a" / "outbox.json"
        assert journal.stat().st_mode & 0o777 == 0o600
        assert json.loads(journal.read_text())["keys"][ka.address.hex()][0]["receipt"] is None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        (a.data_dir / "node.json").unlink(missing_ok=True)
        a = start_daemon(*a_args)
        wait("A back", lambda: api(a, "GET", f"/channels/{cid}").status_code == 200)
        wait("A's replayed open resumed (the journal says it is handed on)", lambda: pool_of(ka.address) >= 1)
        rpc._rpc("evm_setAutomine", [True])
        rpc.mine()
        for d in (a, b):
            wait("open on both", lambda d=d: api(d, "GET", f"/channels/{cid}").json()["phase"] == "open", 90)
        for _ in range(3):
            rpc.mine()
            time.sleep(0.3)
        assert pool_of(ka.address) == 0
        assert int(rpc._rpc("eth_getTransactionCount", ["0x" + ka.address.hex(), "latest"]), 16) == 1
    finally:
        for d in (a, b):
            if d.proc.poll() is None:
                d.stop()

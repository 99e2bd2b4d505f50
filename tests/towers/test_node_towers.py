"""Real nodes (embedded chain, real stores, in-memory link) with B's tower client pointed at a stand-in tower:
the node offers every durable fully signed state, the API shows the protection, and stopping flushes."""

from __future__ import annotations

from pathlib import Path

import httpx

from statechannel.api.app import create_app
from statechannel.chain.adjudicator import Adjudicator
from statechannel.core.channel import Phase
from statechannel.core.types import ETH, Domain, to_checksum
from statechannel.net.memory import MemoryTransport
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.node.towers import TowerClient
from statechannel.node.towerstate import TowerPolicy
from statechannel.store.sqlite import SqliteStore
from tests.api.harness import TOKEN, LockedChain, key
from tests.terms import TEST_TERMS
from tests.towers.fake import FakeTower, serve
from tests.towers.test_client import eventually, run

ETHER = 10**18


def test_node_offers_durable_states_shows_protection_and_flushes_on_stop(tmp_path: Path) -> None:
    chain = LockedChain()
    ka, kb, deployer = key("tower a"), key("tower b"), key("tower deployer")
    for k in (ka, kb, deployer):
        chain.fund(k.address, 100 * ETHER)
    adj, _ = Adjudicator.deploy(chain, deployer)
    domain = Domain(chain.chain_id, adj.address)

    async def scenario() -> None:
        tower = FakeTower(domain, unknown_for=2)  # B's first pushes come before the open is "seen"
        async with serve(tower.app()) as url:
            ta, tb = MemoryTransport.pair(ka, kb)
            towers = TowerClient([url], tmp_path / "towers.db", TowerPolicy(every_updates=5, flush_timeout=5))
            nodes = []
            for k, t, name, tc in ((ka, ta, "a", None), (kb, tb, "b", towers)):
                chainio = ChainIO(chain, adj.address, k)
                node = Node(
                    k, chainio, SqliteStore(tmp_path / f"{name}.db"), t, poll_interval=0.02, terms=TEST_TERMS, towers=tc
                )
                await node.start()
                nodes.append(node)
            a, b = nodes
            try:
                cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=60)
                await a.wait_for(cid, Phase.OPEN)
                await b.wait_for(cid, Phase.OPEN)
                for _ in range(12):
                    await a.pay(cid, ETH, 1000)
                await b.idle(cid)
                latest = b.channel(cid).latest
                assert latest is not None
                # B's latest changed 14 times (v0 .. v13): released at the 5th and the 10th, v13 held back
                assert latest.state.version == 13
                await eventually(lambda: [p.version for p in towers.protection(cid)] == [9])
                app = create_app(b, TOKEN)
                transport = httpx.ASGITransport(app=app)
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=headers) as api:
                    view = (await api.get(f"/channels/0x{cid.hex()}")).json()
                [shown] = view["protection"]
                assert shown["tower"] == url and shown["version"] == 9
                assert shown["address"] == to_checksum(tower.key.address)
                assert shown["receipt"] == "0x" + towers.protection(cid)[0].receipt.hex()
            finally:
                for node in nodes:
                    await node.stop()
                for node in nodes:
                    await node.store.close()
                    node.chainio.close()
            assert tower.held[cid] == 13, "stopping B flushed its newest state"
            assert towers.protection(cid)[0].version == 13

    run(scenario, timeout=60)

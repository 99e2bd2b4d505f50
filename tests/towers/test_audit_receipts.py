"""Audit of the node's checks on a tower's receipt (issue 10): a receipt that protects nothing is not protection."""

from __future__ import annotations

from pathlib import Path

from statechannel.node.towers import TowerClient
from tests.towers.fake import FakeTower, serve
from tests.towers.test_client import CID, DOMAIN, FAST, KB, channel, eventually, run


def test_audit_tower_a_receipt_protecting_only_from_a_future_block_is_not_protection(tmp_path: Path) -> None:
    """The tower's key signed the right channel, version and state, but it promises to answer a stale close only
    from a block far past the chain's head: until then it promises nothing, so it is an error, not protection."""

    async def scenario() -> None:
        tower = FakeTower(DOMAIN, from_block=10**12)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB, head=lambda: 100)
            client.offer(channel(1))
            await eventually(lambda: client.receipt_errors(CID) != [])
            assert client.protection(CID) == []
            tower.from_block = 99  # from a block the chain has reached: protection
            client.offer(channel(2))
            await eventually(lambda: [p.version for p in client.protection(CID)] == [2])
            assert client.receipt_errors(CID) == []
            await client.close()

    run(scenario)

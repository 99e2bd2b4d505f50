"""Issue 10, attack 2: the counterparty displaces the state that would win a challenge.

The sequence of the issue, on the adjudicator in the embedded EVM, with raw keys standing in for the two
nodes. Decision 0007 makes it unreachable between two honest nodes (only A proposes, and no withdrawal is
signed that would leave a state either side signed overdrawn: `core.withdrawals.payable` checks every
refused proposal too). But a tower serves many clients, runs no channel machine and cannot tell what an
honest node would have signed: any both-signed state that overdraws on chain is one a counterparty can
push, so the tower must not let it displace a client's usable one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.eip712 import withdrawal_digest
from statechannel.core.types import ETH, Withdrawal
from tests.watchtower.helpers import (
    ETHER,
    close_with,
    closes,
    deploy,
    eth_state,
    eventually,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)


def test_attack_10_2_counterparty_cannot_displace_the_usable_state(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "displace")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    d = s.adj.domain
    v1 = sign(d, eth_state(cid, 1, 0), s.a, s.b)
    v2 = sign(d, eth_state(cid, 2, ETHER // 2), s.a, s.b)  # B is owed half an ether
    v3 = sign(d, eth_state(cid, 3, -(ETHER * 9 // 10)), s.a, s.b)  # B proposed paying 0.9; A refused it

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            await register(tower, params, s.b)
            await push(tower, v2, s.b)  # B protects itself
            # B withdraws 0.5 of its 1 ether: v3 (B pays 0.9) now overdraws B on chain
            w = Withdrawal(cid, 1, ETH, ETHER // 2, 1, s.chain.block().timestamp + 3600)
            wd = withdrawal_digest(d, w)
            s.adj.withdraw(s.b, params, w, s.a.sign_digest(wd), s.b.sign_digest(wd))
            # A countersigns B's refused v3 and pushes it as itself; B's v2 stays B's, and B may push it again
            _, receipt, _ = await push(tower, v3, s.a)
            assert receipt.version == 3
            row, receipt, _ = await push(tower, v2, s.b)
            assert receipt.version == 2 and row.of_client(1) == [v2] and row.of_client(0) == [v3]
            close_with(s, params, v1)  # A closes stale
            await eventually("the challenge with v2", lambda: [e.version for e in closes(s, cid)] == [1, 2])
            assert tower.candidates(cid) == [v2]  # v3 failed its dry run and is never tried again
            await eventually("the outcome", lambda: tower.challenges[cid].outcome == "mined")
            assert tower.challenges[cid].version == 2
        finalizes_at = closes(s, cid)[0].finalizes_at
        s.chain.advance_time(finalizes_at - s.chain.block().timestamp + 1)
        before = s.chain.balance(s.b.address)
        s.adj.settle(s.a, params, v2.state, finalizes_at)
        assert s.chain.balance(s.b.address) - before == ETHER // 2 + ETHER // 2  # its remaining 0.5 and the 0.5 owed

    asyncio.run(asyncio.wait_for(scenario(), 60))

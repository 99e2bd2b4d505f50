"""The node's own defence of a dispute attacked as the tower's was (commit 7807be7): its answer to a
stale close must survive failed and reasonless-reverted sends until the window ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from statechannel.chain.base import TransactionReverted
from statechannel.core import closing
from tests.node.test_audit import node_on, paid_then_closed_stale
from tests.node.test_safety import World, chain_of, run, until


class OutOfGas:
    """The same chain, but the first `left` challenges are mined and revert with no reason (out of gas)."""

    def __init__(self, chain: Any, selector: bytes) -> None:
        self._chain = chain
        self._selector = selector
        self.left = 1
        self.reverted = 0

    def send_transaction(self, key: Any, to: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
        if self.left and data[:4] == self._selector:
            self.left -= 1
            self.reverted += 1
            raise TransactionReverted("")
        return self._chain.send_transaction(key, to, data, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)


def test_held_a_reasonless_revert_of_the_challenge_is_answered_again_with_the_best_state(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a = await w.node(0)
        chain = OutOfGas(w.chain, w.adj.abi.functions["challenge"][0])
        b = await node_on(w, 1, chain, "oog")
        cid = await paid_then_closed_stale(w, a, b, 3600)
        await until("the first challenge reverts", lambda: chain.reverted == 1, 20)
        await chain_of(b, lambda: w.chain.advance_time(closing.RETRY))
        latest = b.channel(cid).latest
        assert latest is not None
        await until("recorded", lambda: (r := w.adj.recorded(cid)) is not None and r.version == latest.state.version)

    run(tmp_path, scenario)

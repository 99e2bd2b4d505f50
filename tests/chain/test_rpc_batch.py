"""A JSON-RPC batch's answers are matched to its requests by id: a node's answer that names one id twice (or
leaves one out) is refused whole, never taken as the answer to another request."""

from __future__ import annotations

from typing import Any

import pytest

from statechannel.chain.base import ChainError
from statechannel.chain.rpc import RpcChain
from tests.anvil import Anvil
from tests.rpcproxy import RpcProxy
from tests.watchtower.helpers import key

ETHER = 10**18


def _two_balances(anvil: Anvil) -> tuple[bytes, bytes]:
    rpc = RpcChain(anvil.url)
    rich, poor = key("batch ids rich"), key("batch ids poor")
    rpc.fund(rich.address, 7 * ETHER)
    return rich.address, poor.address


@pytest.mark.anvil
@pytest.mark.parametrize("fault", ["duplicate id", "missing id"])
def test_a_batch_answer_with_a_repeated_or_missing_id_is_refused_not_misattributed(anvil: Anvil, fault: str) -> None:
    """The node answers a batch of two balance reads with the first answer twice (under the first one's id),
    or with the second answer's id dropped. Sorted by id, the first balance was taken for the second
    address too: a read of the chain that says one account holds another's money."""
    rich, poor = _two_balances(anvil)
    reads = [("eth_getBalance", ["0x" + a.hex(), "latest"]) for a in (rich, poor)]
    honest = RpcChain(anvil.url).rpc_batch(reads)
    assert int(honest[0], 16) > int(honest[1], 16)

    def rewrite(request: Any, answer: Any) -> Any:
        if not isinstance(answer, list) or len(answer) != 2:
            return answer
        if fault == "duplicate id":
            return [answer[0], dict(answer[0])]
        return [answer[0], {k: v for k, v in answer[1].items() if k != "id"}]

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = rewrite
        with pytest.raises(ChainError, match="ids"):
            RpcChain(proxy.url).rpc_batch(reads)

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statechannel.chain.base import Chain
from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.rpc import RpcChain
from tests.anvil import Anvil


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    node = Anvil()
    yield node
    node.stop()


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """Each chain test runs on the in-process EVM and on a real anvil over JSON-RPC."""
    if request.param == "embedded":
        yield EmbeddedChain()
        return
    node: Anvil = request.getfixturevalue("anvil")
    rpc = RpcChain(node.url)
    snapshot = rpc._rpc("evm_snapshot", [])
    yield rpc
    rpc._rpc("evm_revert", [snapshot])

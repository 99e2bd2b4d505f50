"""The tower's sender on anvil with a mempool: many transactions in flight, one nonce each, a moot one filled."""

from __future__ import annotations

import time

import pytest

from statechannel.chain.rpc import RpcChain
from statechannel.watchtower.sender import BumpingSender, SentTx, Settled, bump_fee
from tests.anvil import Anvil
from tests.watchtower.helpers import ETHER, key
from tests.watchtower.test_watcher import snapshot


def test_bump_fee_rises_at_least_an_eighth() -> None:
    assert bump_fee(0) == 1 and bump_fee(8) == 9 and bump_fee(9) == 11 and bump_fee(10**9) == 1_125_000_000


@pytest.mark.anvil
def test_many_in_flight_at_consecutive_nonces_and_a_moot_one_filled(anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    k, target = key("sender many"), key("sender target")
    rpc.fund(k.address, 10 * ETHER)
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        sender = BumpingSender(rpc, k, bump_after=0.2)
        versions: list[SentTx] = []
        tickets = [sender.submit(target.address, b"", on_sent=versions.append) for _ in range(5)]
        assert sender.in_flight() == 5
        assert [v.nonce for v in versions] == list(range(versions[0].nonce, versions[0].nonce + 5))
        sender.abandon(tickets[2])
        time.sleep(0.3)
        assert sender.poll() == []  # nothing mined: all bumped instead
        assert len(versions) > 5 and {v.nonce for v in versions[5:]} <= {v.nonce for v in versions[:5]}
        rpc._rpc("evm_mine", [])
        done: list[Settled] = sender.poll()
        assert {s.ticket for s in done} == set(tickets) and sender.in_flight() == 0
        by_ticket = {s.ticket: s for s in done}
        assert by_ticket[tickets[2]].receipt is None and by_ticket[tickets[2]].error is None  # the filler
        assert all(by_ticket[t].receipt is not None for t in tickets if t != tickets[2])
        assert int(rpc._rpc("eth_getTransactionCount", [rpc._w3.to_checksum_address(k.address), "latest"]), 16) == (
            versions[0].nonce + 5
        )

"""A node's own transaction that is not mined is replaced at rising fees, but not for ever: each replacement
offers 12.5% more, so one left out for long would come to offer any price (and pay it as a tip once mined)."""

from __future__ import annotations

import pytest

from statechannel.chain.outbox import MAX_VERSIONS, TransactionPending, bump
from statechannel.chain.rpc import RpcChain
from tests.anvil import Anvil
from tests.watchtower.helpers import key

ETHER = 10**18


@pytest.mark.anvil
def test_a_transaction_left_unmined_stops_raising_its_fees_after_max_versions(anvil: Anvil) -> None:
    """Mining is off: the key's transfer waits in the pool while its retries (each of 1.5 s, a bump every
    20 ms) replace it. Before, every retry bumped again, with no end (29 versions after three retries); now
    the fees stop at MAX_VERSIONS versions, and the transaction is still out, once."""
    rpc = RpcChain(anvil.url, receipt_timeout=1.5, bump_after=0.02)
    k, target = key("outbox fee cap"), key("outbox fee cap target")
    rpc.fund(k.address, ETHER)
    rpc._rpc("evm_setAutomine", [False])
    try:
        for _ in range(3):  # a caller retrying the same call resumes the same transaction
            with pytest.raises(TransactionPending):
                rpc.send_transaction(k, target.address, b"", value=1)
        [sent] = rpc.outbox._sent[k.address]
        first, _ = rpc.outbox._fees()  # what its first version offered: no block was mined since
        assert len(sent.hashes) <= MAX_VERSIONS
        assert sent.max_fee <= _bumped(first, MAX_VERSIONS - 1)
    finally:
        rpc._rpc("evm_setAutomine", [True])
    receipt = rpc.send_transaction(k, target.address, b"", value=1)  # mined now: the same one, once
    assert receipt.block_number > 0 and rpc.balance(target.address) == 1


def _bumped(fee: int, times: int) -> int:
    for _ in range(times):
        fee = bump(fee)
    return fee


@pytest.mark.anvil
def test_a_nudge_raises_the_fees_of_a_transaction_stuck_in_the_way(anvil: Anvil) -> None:
    """A transaction of the key timed out unmined (a deposit in a fee spike) and nothing retries its call:
    before, it sat at its fees, and the node sends no challenge while one of its transactions is pending
    (node/chainio.py), so one stuck deposit held every challenge of the key for the whole window. A nudge
    (what the node does when it must challenge behind it) replaces it at higher fees, without waiting."""
    rpc = RpcChain(anvil.url, receipt_timeout=0.3, bump_after=60)
    k, target = key("outbox nudge"), key("outbox nudge target")
    rpc.fund(k.address, ETHER)
    rpc._rpc("evm_setAutomine", [False])
    try:
        with pytest.raises(TransactionPending):
            rpc.send_transaction(k, target.address, b"", value=1)
        [stuck] = rpc.outbox._sent[k.address]
        before = (len(stuck.hashes), stuck.max_fee, stuck.priority)
        assert rpc.pending(k.address) == 1
        rpc.nudge(k)
        assert len(stuck.hashes) == before[0] + 1
        assert stuck.max_fee > before[1] and stuck.priority > before[2]
        pool = rpc._rpc("eth_getTransactionByHash", ["0x" + stuck.hashes[-1].hex()])
        assert pool is not None and int(pool["maxPriorityFeePerGas"], 16) == stuck.priority  # the pool holds it
    finally:
        rpc._rpc("evm_setAutomine", [True])
    rpc._rpc("evm_mine", [])
    assert rpc.pending(k.address) == 0 and rpc.balance(target.address) == 1  # one of its versions, once

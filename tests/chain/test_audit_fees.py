"""Audit of the fee cap (MAX_VERSIONS): a transaction past its last version stops bidding, but a base fee
that rises past what it offers must not leave it unminable, for a node's outbox nor for the tower's sender
(a challenge that can never be mined loses the dispute when its window ends)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from statechannel.chain.base import ChainError
from statechannel.chain.outbox import MAX_VERSIONS, TransactionPending
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.watchtower.sender import FEE_TTL_S, BumpingSender
from tests.anvil import Anvil
from tests.rpcproxy import RpcProxy
from tests.watchtower.helpers import ETHER, key
from tests.watchtower.test_watcher import snapshot


def _base_fee(rpc: RpcChain) -> int:
    return int(rpc._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)


def _set_base_fee(rpc: RpcChain, to: int) -> None:
    """One empty block whose base fee is `to`; the next block's is 7/8 of it (the block was empty)."""
    rpc._rpc("anvil_setNextBlockBaseFeePerGas", [hex(to)])
    rpc._rpc("evm_mine", [])


def _capped_challenge(rpc: RpcChain, k: PrivateKey, to: bytes) -> tuple[BumpingSender, int, Any]:
    """A transaction of the tower's sender, left unmined (mining off) until it has its MAX_VERSIONS versions."""
    sender = BumpingSender(rpc, k, bump_after=0.0)
    ticket = sender.submit(to, b"")
    for _ in range(3 * MAX_VERSIONS):
        if sender._flight[ticket].versions >= MAX_VERSIONS:
            break
        assert sender.poll() == []
    capped = sender._flight[ticket]
    assert capped.versions == MAX_VERSIONS
    return sender, ticket, capped


@pytest.mark.anvil
def test_found_tower_challenge_past_its_last_version_follows_a_rising_base_fee(anvil: Anvil) -> None:
    """The tower's challenge is left unmined until it has MAX_VERSIONS versions (a congested chain: one bump
    per poll here); then the base fee rises past its max fee. Before, the sender never sent it again (no
    version past the last), so no block could ever include it and the window ended unanswered; now it is
    re-priced to the base fee (no higher bid than the base fee's rise demands) and mined."""
    rpc = RpcChain(anvil.url)
    k, target = key("audit tower fee cap"), key("audit tower fee cap target")
    rpc.fund(k.address, 10 * ETHER)
    before = _base_fee(rpc)
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        sender, ticket, capped = _capped_challenge(rpc, k, target.address)
        assert sender.poll() == [] and sender._flight[ticket].versions == MAX_VERSIONS  # no more bids
        _set_base_fee(rpc, 4 * capped.max_fee)  # the next block's base fee: 3.5 times the offer
        time.sleep(FEE_TTL_S)  # the sender's fee reading is cached this long
        assert sender.poll() == []
        now = sender._flight[ticket]
        assert now.max_fee >= _base_fee(rpc) * 7 // 8 + now.priority  # can pay the next block's base fee
        rpc._rpc("evm_mine", [])
        [done] = sender.poll()
        assert done.ticket == ticket and done.receipt is not None
        _set_base_fee(rpc, before)  # as it was, for the tests after this one


@pytest.mark.anvil
def test_held_node_transaction_past_its_last_version_follows_a_rising_base_fee(anvil: Anvil) -> None:
    """The node's outbox (f62a17b): once MAX_VERSIONS versions are out, a retry does not bid again while the
    chain can mine it, but follows a base fee that rose past its offer, so it is mined once blocks come."""
    rpc = RpcChain(anvil.url, receipt_timeout=1.0, bump_after=0.02)
    k, target = key("audit outbox fee cap"), key("audit outbox fee cap target")
    rpc.fund(k.address, ETHER)
    before = _base_fee(rpc)
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        for _ in range(3):
            with pytest.raises(TransactionPending):
                rpc.send_transaction(k, target.address, b"", value=1)
            [sent] = rpc.outbox._sent[k.address]
            if len(sent.hashes) >= MAX_VERSIONS:
                break
        assert len(sent.hashes) == MAX_VERSIONS
        capped = sent.max_fee
        with pytest.raises(TransactionPending):  # the chain could mine it: left as it is
            rpc.send_transaction(k, target.address, b"", value=1)
        assert len(sent.hashes) == MAX_VERSIONS and sent.max_fee == capped
        _set_base_fee(rpc, 4 * capped)
        with pytest.raises(TransactionPending):
            rpc.send_transaction(k, target.address, b"", value=1)
        assert len(sent.hashes) > MAX_VERSIONS and sent.max_fee >= _base_fee(rpc)
        rpc._rpc("evm_setAutomine", [True])
        receipt = rpc.send_transaction(k, target.address, b"", value=1)  # the same transaction, mined once
        assert receipt.block_number > 0 and rpc.balance(target.address) == 1
        _set_base_fee(rpc, before)


@pytest.mark.anvil
def test_found_tower_challenge_past_its_last_version_dropped_from_the_pool_is_sent_again(anvil: Anvil) -> None:
    """The tower's challenge has its MAX_VERSIONS versions out when the node drops it from its pool (a node
    restart, an eviction). Before, the sender never sent anything at that nonce again (no version past the
    last), so it could never be mined and the window ended unanswered; now its last version goes out again
    as it is (no higher bid) and is mined with the next block."""
    rpc = RpcChain(anvil.url)
    k, target = key("audit tower dropped"), key("audit tower dropped target")
    rpc.fund(k.address, 10 * ETHER)
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        sender, ticket, capped = _capped_challenge(rpc, k, target.address)
        assert rpc._rpc("anvil_dropTransaction", ["0x" + capped.hashes[-1].hex()])
        assert sender.poll() == []
        rpc._rpc("evm_mine", [])
        [done] = sender.poll()
        assert done.ticket == ticket and done.receipt is not None
        assert sender._flight == {} and done.receipt.tx_hash == capped.hashes[-1]  # the same version, no bid


@pytest.mark.anvil
def test_held_a_junk_base_fee_past_the_last_version_loses_no_receipt(anvil: Anvil) -> None:
    """Past its last version the sender reads the base fee at each poll; a node answering that read with junk
    (a block with no base fee) must not make the poll raise: the receipts it already took from its flight
    would be lost, and their channels stay busy for good. The capped challenge waits as it is, and is
    settled once mined."""
    rpc = RpcChain(anvil.url)
    k, target = key("audit tower junk base"), key("audit tower junk base target")
    rpc.fund(k.address, 10 * ETHER)
    with snapshot(rpc), RpcProxy(anvil.url, 0) as proxy:
        via = RpcChain(proxy.url)
        rpc._rpc("evm_setAutomine", [False])
        sender = BumpingSender(via, k, bump_after=0.0)
        ticket = sender.submit(target.address, b"")
        for _ in range(3 * MAX_VERSIONS):
            if sender._flight[ticket].versions >= MAX_VERSIONS:
                break
            assert sender.poll() == []
        assert sender._flight[ticket].versions == MAX_VERSIONS

        def junk(request: Any, answer: Any) -> Any:
            if isinstance(request, dict) and request.get("method") == "eth_getBlockByNumber":
                return {**answer, "result": {"number": "0x1"}}
            return answer

        proxy.rewrite = junk
        time.sleep(FEE_TTL_S)
        assert sender.poll() == []  # no raise: the base fee is read again next poll
        rpc._rpc("evm_mine", [])
        [done] = sender.poll()
        assert done.ticket == ticket and done.receipt is not None


# ---------------------------------------------------------------- the batch id check (0fc805c)


def _reads(anvil: Anvil) -> tuple[list[tuple[str, list[Any]]], list[Any]]:
    """Balance reads of a rich and a poor account, and the node's honest answers to them."""
    rpc = RpcChain(anvil.url)
    rich, poor = key("audit batch rich"), key("audit batch poor")
    rpc.fund(rich.address, 3 * ETHER)
    reads: list[tuple[str, list[Any]]] = [("eth_getBalance", ["0x" + k.address.hex(), "latest"]) for k in (rich, poor)]
    honest = rpc.rpc_batch(reads)
    assert int(honest[0], 16) >= 3 * ETHER and int(honest[1], 16) == 0
    return reads, honest


@pytest.mark.anvil
def test_held_batch_answers_in_another_order_are_matched_by_id(anvil: Anvil) -> None:
    """JSON-RPC lets a node answer a batch in any order: distinct ids, reversed, are each matched to their own
    request (the id check refuses only repeated or missing ids, never a real node's reordering)."""
    reads, honest = _reads(anvil)

    def reverse(request: Any, answer: Any) -> Any:
        return list(reversed(answer)) if isinstance(answer, list) else answer

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = reverse
        assert RpcChain(proxy.url).rpc_batch(reads) == honest


@pytest.mark.anvil
def test_held_one_error_in_a_batch_fails_its_request_alone(anvil: Anvil) -> None:
    """A node's error for one request of a batch (under its own id, as geth and anvil give it) is that
    request's ChainError; the other answers stand (the id check does not refuse the whole batch)."""
    reads, honest = _reads(anvil)

    def limit(request: Any, answer: Any) -> Any:
        if not isinstance(answer, list) or len(answer) != 2:
            return answer
        second = {"jsonrpc": "2.0", "id": answer[1]["id"], "error": {"code": -32005, "message": "rate limited"}}
        return [answer[0], second]

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = limit
        first, second = RpcChain(proxy.url).rpc_batch(reads)
    assert first == honest[0]
    assert isinstance(second, ChainError) and "rate limited" in str(second)


@pytest.mark.anvil
def test_held_a_single_error_for_a_whole_batch_is_a_chain_error(anvil: Anvil) -> None:
    """A node that answers a whole batch with one error object (a batch limit, say) fails the batch with a
    ChainError, which the tower's sender takes as "no answer per transaction" (followed as sent)."""
    reads, _ = _reads(anvil)

    def refuse(request: Any, answer: Any) -> Any:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}}

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = refuse
        with pytest.raises(ChainError):
            RpcChain(proxy.url).rpc_batch(reads)

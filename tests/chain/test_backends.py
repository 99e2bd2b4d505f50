"""One suite, every backend: the embedded EVM and a real anvil node over JSON-RPC."""

from __future__ import annotations

import pytest

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.base import Chain, ChainError, TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.rpc import RpcChain
from statechannel.core import ETH, ChannelParams, State, Withdrawal, state_digest, withdrawal_digest
from statechannel.core.eip712 import dispute_commitment, state_hash
from statechannel.core.observed import (
    ChainObservedClose,
    ChainObservedConcluded,
    ChainObservedDeposit,
    ChainObservedOpened,
)
from statechannel.gasreport import measure, parties
from tests.anvil import free_port


def test_transact_call_and_events(chain: Chain) -> None:
    p = parties(chain, "backend")
    adj, deployed = Adjudicator.deploy(chain, p.deployer)
    assert deployed.gas_used > 0
    params = ChannelParams(p.a.address, p.b.address, 50, 1)
    cid = adj.channel_id(params)
    start = chain.block().number
    adj.open(p.a, params, 600)
    adj.deposit(p.b, cid, 1, 400)
    info = adj.channel(cid)
    assert (info.status, info.funded_a, info.funded_b) == (Status.OPEN, 600, 400)
    state = State(cid, 3, (ETH,), (100,))
    d = state_digest(adj.domain, state)
    assert adj.state_digest(cid, state) == d
    adj.close(p.b, params, state, p.a.sign_digest(d), p.b.sign_digest(d))
    info = adj.channel(cid)
    assert (info.status, info.funded_a, info.funded_b) == (Status.CLOSING, 600, 400)  # kept through the dispute
    events = adj.events(start)
    assert [type(e) for e in events] == [ChainObservedOpened, ChainObservedDeposit, ChainObservedClose]
    opened, deposit, close = events
    assert isinstance(deposit, ChainObservedDeposit) and (deposit.participant, deposit.funded) == (1, 400)
    assert isinstance(close, ChainObservedClose) and (close.version, close.challenge) == (3, False)
    assert opened.origin.block_number < deposit.origin.block_number < close.origin.block_number
    assert len({e.origin.block_hash for e in events}) == 3
    assert close.finalizes_at == chain.block(close.origin.block_number).timestamp + 50
    assert close.state_hash == state_hash(state)
    assert adj.dispute(cid) == dispute_commitment(state_hash(state), 3, close.finalizes_at)


def test_revert_reasons_surface(chain: Chain) -> None:
    p = parties(chain, "backend")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    with pytest.raises(TransactionReverted) as err:
        adj.deposit(p.a, b"\x07" * 32, 0, 1)
    assert err.value.reason == "unknown channel"
    with pytest.raises(TransactionReverted) as explicit_gas:
        chain.send_transaction(p.a, adj.address, adj.abi.encode_call("deposit", b"\x07" * 32, 0), value=1, gas=100_000)
    assert explicit_gas.value.reason == "unknown channel"
    # the nonce is still right after failures
    adj.open(p.a, ChannelParams(p.a.address, p.b.address, 50, 9), 1)


def test_time_and_blocks(chain: Chain) -> None:
    before = chain.block()
    chain.mine(2)
    assert chain.block().number >= before.number + 2
    t0 = chain.block().timestamp
    chain.advance_time(1000)
    assert chain.block().timestamp >= t0 + 1000
    with pytest.raises(ChainError):
        chain.block(chain.block().number + 100)


def test_settle_pays_after_the_window(chain: Chain) -> None:
    p = parties(chain, "backend")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    params = ChannelParams(p.a.address, p.b.address, 30, 2)
    cid = adj.channel_id(params)
    adj.open(p.a, params, 1000)
    state = State(cid, 1, (ETH,), (250,))
    d = state_digest(adj.domain, state)
    close = adj.receipt_events(adj.close(p.a, params, state, p.a.sign_digest(d), p.b.sign_digest(d)))[0]
    assert isinstance(close, ChainObservedClose)
    with pytest.raises(TransactionReverted, match="challenge window still open"):
        adj.settle(p.b, params, state, close.finalizes_at)
    assert adj.recorded(cid) == close  # the event a challenge or a settle quotes, found by the stored hash
    chain.advance_time(31)
    with pytest.raises(TransactionReverted, match="state is not the recorded state"):
        adj.settle(p.b, params, state, close.finalizes_at + 1)
    b0 = chain.balance(p.b.address)
    r = adj.settle(p.deployer, params, state, close.finalizes_at)
    assert chain.balance(p.b.address) - b0 == 250
    assert any(isinstance(e, ChainObservedConcluded) for e in adj.receipt_events(r))
    assert adj.dispute(cid) == bytes(32) and adj.recorded(cid) is None


def test_cooperative_close_during_a_dispute_and_withdrawal_deadline(chain: Chain) -> None:
    p = parties(chain, "backend")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    params = ChannelParams(p.a.address, p.b.address, 3600, 3)
    cid = adj.channel_id(params)
    adj.open(p.a, params, 1000)
    expired = Withdrawal(cid, 0, ETH, 10, nonce=1, deadline=chain.block().timestamp - 1)
    wd = withdrawal_digest(adj.domain, expired)
    with pytest.raises(TransactionReverted, match="withdrawal expired"):
        adj.withdraw(p.deployer, params, expired, p.a.sign_digest(wd), p.b.sign_digest(wd))
    state = State(cid, 1, (ETH,), (100,))
    d = state_digest(adj.domain, state)
    adj.close(p.a, params, state, p.a.sign_digest(d), p.b.sign_digest(d))
    newer = State(cid, 2, (ETH,), (300,))
    d = state_digest(adj.domain, newer)
    closed = adj.recorded(cid)
    assert closed is not None and closed.version == 1
    adj.challenge(p.b, params, newer, p.a.sign_digest(d), p.b.sign_digest(d))
    challenged = adj.recorded(cid)
    assert challenged is not None and (challenged.version, challenged.challenge) == (2, True)
    final = State(cid, 3, (ETH,), (400,), is_final=True)
    d = state_digest(adj.domain, final)
    b0 = chain.balance(p.b.address)
    adj.close_cooperative(p.deployer, params, final, p.a.sign_digest(d), p.b.sign_digest(d))
    assert chain.balance(p.b.address) - b0 == 400
    assert adj.dispute(cid) == bytes(32) and adj.channel(cid).status is Status.CONCLUDED
    with pytest.raises(TransactionReverted, match="channel not open or closing"):
        adj.close_cooperative(p.deployer, params, final, p.a.sign_digest(d), p.b.sign_digest(d))


@pytest.mark.parametrize("erc20", [False, True], ids=["eth", "erc20"])
def test_lifecycle_gas_is_the_same_on_every_backend(chain: Chain, erc20: bool) -> None:
    """Both lifecycles pay out exactly (checked inside) and cost the same gas everywhere,
    up to the signatures' bytes: their domain holds the chain id and the contract's
    address (which on a shared anvil depends on what ran before), and a zero byte of
    calldata costs 12 gas less than another."""
    here = measure(chain, erc20=erc20)
    reference = measure(EmbeddedChain(), erc20=erc20)
    for step, gas in here.items():
        # signatures' zero bytes (12 gas each in calldata) and the contract's work on them
        assert abs(gas - reference[step]) <= 200, (step, gas, reference[step])
    assert here["cooperative_total"] < here["dispute_total"]
    if not erc20:  # DESIGN.md's targets
        assert here["open_with_deposit"] <= 46_000 and here["deposit"] <= 29_000
        assert here["cooperative_close"] <= 60_000
        assert here["close_unilateral"] + here["settle"] <= 120_000


def test_unreachable_node_is_a_clear_error() -> None:
    with pytest.raises(ChainError, match="failed"):
        RpcChain(f"http://127.0.0.1:{free_port()}")


def test_many_reads_in_one_batch_see_one_block(chain: Chain) -> None:
    p = parties(chain, "batch")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    funded = ChannelParams(p.a.address, p.b.address, 50, 1)
    empty = ChannelParams(p.a.address, p.b.address, 50, 2)
    adj.open(p.a, funded, 600)
    adj.open(p.a, empty, 0)
    state = State(adj.channel_id(funded), 3, (ETH,), (100,))
    d = state_digest(adj.domain, state)
    adj.close(p.b, funded, state, p.a.sign_digest(d), p.b.sign_digest(d))
    calls = [(adj.address, adj.abi.encode_call("channels", adj.channel_id(funded))), (adj.address, b"\x00\x01")]
    word, bad = chain.call_many(calls)
    assert isinstance(word, bytes) and int.from_bytes(word, "big") & 0xFF == Status.CLOSING
    assert isinstance(bad, TransactionReverted)
    token = b"\x42" * 20
    one, two, unknown = adj.views(
        [(adj.channel_id(funded), (ETH,)), (adj.channel_id(empty), (ETH, token)), (b"\x07" * 32, ())]
    )
    assert one.holds_anything and one.info.funded_a == 600 and one.commitment == adj.dispute(adj.channel_id(funded))
    assert not two.holds_anything and two.token_funded == (0,) and two.commitment == bytes(32)
    assert unknown.info.status is Status.NONE and not unknown.holds_anything
    assert chain.call_many([]) == []

"""The adjudicator on the embedded EVM: each lifecycle step and every revert path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator, DisputeRecord, Status, Token
from statechannel.chain.base import TransactionReverted
from statechannel.contracts import load
from statechannel.core import ETH, ChannelParams, Domain, State, Withdrawal, state_digest
from statechannel.core.crypto import SECP256K1_N, Signature
from statechannel.core.eip712 import STATE_TYPEHASH, dispute_commitment, state_hash, typed_digest
from statechannel.core.observed import (
    ChainObservedClose,
    ChainObservedConcluded,
    ChainObservedDeposit,
    ChainObservedPayoutDeferred,
)
from tests.contracts.conftest import PERIOD, World


def reverts(reason: str, fn: Callable[..., Any], *args: Any) -> None:
    with pytest.raises(TransactionReverted) as err:
        fn(*args)
    assert err.value.reason == reason


def raw_sig(r: int, s: int, v: int) -> Signature:
    """A signature object that skips our own checks, to reach the contract's."""
    sig = object.__new__(Signature)
    object.__setattr__(sig, "r", r)
    object.__setattr__(sig, "s", s)
    object.__setattr__(sig, "v", v)
    return sig


# ------------------------------------------------------------------ open / deposit


def test_open_and_deposit_record_funds(world: World) -> None:
    _params, cid = world.funded(700, 300)
    info = world.adj.channel(cid)
    assert (info.status, info.funded_a, info.funded_b) == (Status.OPEN, 700, 300)
    r = world.adj.deposit(world.other, cid, 0, 5)  # anyone may pay in for a participant
    assert world.adj.receipt_events(r)[0] == ChainObservedDeposit(
        world.adj.receipt_events(r)[0].origin, cid, ETH, 0, 705
    )
    assert world.adj.channel(cid).funded_a == 705


@pytest.mark.parametrize(
    ("a", "b", "period", "reason"),
    [
        ("zero", "b", 10, "zero participant"),
        ("a", "a", 10, "participants are equal"),
        ("a", "b", 0, "bad challenge period"),
        ("a", "b", 2**32, "bad challenge period"),
    ],
)
def test_open_rejects_bad_params(world: World, a: str, b: str, period: int, reason: str) -> None:
    who = {"zero": bytes(20), "a": world.a.address, "b": world.b.address}
    data = world.adj.abi.encode_call("open", "0x" + who[a].hex(), "0x" + who[b].hex(), period, 1)
    reverts(reason, world.chain.send_transaction, world.a, world.adj.address, data)


def test_open_twice_and_reopen_after_close_refused(world: World) -> None:
    params, cid = world.funded()
    reverts("channel exists", world.adj.open, world.a, params, 1)
    final = State(cid, 1, (ETH,), (0,), is_final=True)
    world.adj.close_cooperative(world.a, params, final, *world.sign(final))
    reverts("channel exists", world.adj.open, world.a, params, 1)


def test_deposit_reverts(world: World) -> None:
    params, cid = world.funded()
    reverts("unknown channel", world.adj.deposit, world.b, b"\x99" * 32, 1, 10)
    reverts("participant must be 0 or 1", world.adj.deposit, world.b, cid, 2, 10)
    reverts("zero deposit", world.adj.deposit, world.b, cid, 1, 0)
    world.close(params, State(cid, 1, (ETH,), (0,)))
    reverts("channel not open", world.adj.deposit, world.b, cid, 1, 10)


def test_token_deposit_and_reverts(world: World) -> None:
    _params, cid = world.funded()
    world.fund_token(cid, 1, 500)
    assert world.adj.token_funds(cid, world.token.address) == (0, 500)
    tok = world.token.address
    reverts("token is not a contract", world.adj.deposit_token, world.b, cid, 1, world.other.address, 5)
    reverts("zero deposit", world.adj.deposit_token, world.b, cid, 1, tok, 0)
    reverts("participant must be 0 or 1", world.adj.deposit_token, world.b, cid, 7, tok, 5)
    reverts("unknown channel", world.adj.deposit_token, world.b, b"\x98" * 32, 1, tok, 5)


# ------------------------------------------------------------------ cooperative close


def test_cooperative_close_pays_every_asset(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    world.fund_token(cid, 0, 400)
    a_tok, b_tok = world.token.balance_of(world.a.address), world.token.balance_of(world.b.address)
    b_eth = world.chain.balance(world.b.address)
    final = State(cid, 9, (ETH, world.token.address), (-300, 150), is_final=True)
    r = world.adj.close_cooperative(world.a, params, final, *world.sign(final))
    assert world.chain.balance(world.b.address) - b_eth == 700
    assert world.token.balance_of(world.a.address) - a_tok == 250
    assert world.token.balance_of(world.b.address) - b_tok == 150
    assert world.adj.channel(cid).status is Status.CONCLUDED
    assert any(isinstance(e, ChainObservedConcluded) and e.version == 9 for e in world.adj.receipt_events(r))


def test_unlisted_token_is_returned_by_reclaim(world: World) -> None:
    params, cid = world.funded()
    world.fund_token(cid, 1, 300)
    final = State(cid, 3, (ETH,), (10,), is_final=True)
    reverts("channel not concluded", world.adj.reclaim, world.a, params, world.token.address)
    world.adj.close_cooperative(world.a, params, final, *world.sign(final))
    before = world.token.balance_of(world.b.address)
    world.adj.reclaim(world.other, params, world.token.address)
    assert world.token.balance_of(world.b.address) - before == 300
    reverts("nothing to reclaim", world.adj.reclaim, world.a, params, world.token.address)


def test_cooperative_close_signature_reverts(world: World) -> None:
    params, cid = world.funded()
    final = State(cid, 2, (ETH,), (5,), is_final=True)
    sa, sb = world.sign(final)
    reverts("bad signature from A", world.adj.close_cooperative, world.a, params, final, sb, sa)  # swapped
    reverts("bad signature from B", world.adj.close_cooperative, world.a, params, final, sa, sa)
    reverts("signature s is not low", world.adj.close_cooperative, world.a, params, final,
            raw_sig(sa.r, SECP256K1_N - sa.s, 55 - sa.v), sb)  # fmt: skip
    reverts("signature v is not 27 or 28", world.adj.close_cooperative, world.a, params, final,
            raw_sig(sa.r, sa.s, 1), sb)  # fmt: skip
    not_final = State(cid, 2, (ETH,), (5,))
    reverts("state is not final", world.adj.close_cooperative, world.a, params, not_final, *world.sign(not_final))


def test_state_for_another_channel_chain_or_contract_is_refused(world: World) -> None:
    params, cid = world.funded()
    _other_params, other_cid = world.funded()
    final = State(other_cid, 2, (ETH,), (5,), is_final=True)
    # signed for the other channel, submitted for this one: the digest differs
    wrong_channel = State(cid, 2, (ETH,), (5,), is_final=True)
    sigs = world.sign(final)
    reverts("bad signature from A", world.adj.close_cooperative, world.a, params, wrong_channel, *sigs)
    for domain in (Domain(world.chain.chain_id + 1, world.adj.address), Domain(world.chain.chain_id, b"\x01" * 20)):
        d = state_digest(domain, wrong_channel)
        foreign = (world.a.sign_digest(d), world.b.sign_digest(d))
        reverts("bad signature from A", world.adj.close_cooperative, world.a, params, wrong_channel, *foreign)


def test_amounts_that_do_not_add_up_are_refused(world: World) -> None:
    params, cid = world.funded(100, 50)
    for transfer, reason in ((101, "transfer exceeds funds of A"), (-51, "transfer exceeds funds of B")):
        s = State(cid, 2, (ETH,), (transfer,), is_final=True)
        reverts(reason, world.adj.close_cooperative, world.a, params, s, *world.sign(s))
        reverts(reason, world.adj.close, world.a, params, s, *world.sign(s))


def test_malformed_states_are_refused_by_the_contract(world: World) -> None:
    """States our own types would refuse, sent as raw calldata to reach the contract's checks."""
    params, cid = world.funded()
    abi = world.adj.abi
    eth, tok = "0x" + "00" * 20, "0x" + world.token.address.hex()
    junk_sig = (b"\x01" * 32, b"\x01" * 32, 27)

    def close(state: tuple[Any, ...]) -> None:
        data = abi.encode_call("close", params.as_abi(), state, junk_sig, junk_sig)
        world.chain.send_transaction(world.a, world.adj.address, data)

    reverts("assets and transfers differ in length", close, (1, False, [eth], [], bytes(32)))
    reverts("version too large", close, (2**48, False, [eth], [0], bytes(32)))
    # a correctly signed state whose assets are out of order: signed exactly as submitted
    struct = keccak(
        STATE_TYPEHASH
        + cid
        + (1).to_bytes(32, "big")
        + (1).to_bytes(32, "big")
        + keccak(bytes(12) + world.token.address + bytes(32))
        + keccak(bytes(64))
        + bytes(32)
    )
    digest = typed_digest(world.adj.domain, struct)
    sa, sb = world.a.sign_digest(digest), world.b.sign_digest(digest)
    swapped = (1, True, [tok, eth], [0, 0], bytes(32))
    data = abi.encode_call("close_cooperative", params.as_abi(), swapped, sa.as_abi(), sb.as_abi())
    reverts("assets not strictly ascending", world.chain.send_transaction, world.a, world.adj.address, data)


# ------------------------------------------------------------------ dispute


def test_close_changes_only_the_status_and_packs_the_record_in_one_word(world: World) -> None:
    params, cid = world.funded(1000, 400)
    open_word = int(world.adj._call("channels", cid)[0])
    state = State(cid, 4, (ETH,), (-100,))
    record = world.close(params, state)
    assert int(world.adj._call("channels", cid)[0]) == open_word + 1  # OPEN (1) -> CLOSING (2), nothing else
    info = world.adj.channel(cid)
    assert (info.status, info.funded_a, info.funded_b) == (Status.CLOSING, 1000, 400)
    assert record == DisputeRecord(4, record.finalizes_at, state_hash(state))
    word = int.from_bytes(world.adj.dispute(cid), "big")
    assert word & (2**48 - 1) == 4 and (word >> 48) & (2**40 - 1) == record.finalizes_at
    assert word >> 88 == int.from_bytes(state_hash(state), "big") >> 88
    assert world.adj.dispute(cid) == dispute_commitment(state_hash(state), 4, record.finalizes_at)
    assert world.adj.dispute(cid) == record.commitment


def test_dispute_highest_version_wins(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    stale, latest = State(cid, 4, (ETH,), (-500,)), State(cid, 6, (ETH,), (-300,))
    record = world.close(params, stale)
    reverts("channel not open", world.adj.close, world.a, params, latest, *world.sign(latest))
    reverts("stale version", world.adj.challenge, world.b, params, stale, *world.sign(stale))
    lower = State(cid, 3, (ETH,), (0,))
    reverts("stale version", world.adj.challenge, world.b, params, lower, *world.sign(lower))
    r = world.adj.challenge(world.b, params, latest, *world.sign(latest))
    [event] = [e for e in world.adj.receipt_events(r) if isinstance(e, ChainObservedClose)]
    # a challenge keeps the window's end: no one can extend the window by challenging
    assert (event.challenge, event.version, event.finalizes_at) == (True, 6, record.finalizes_at)
    challenged = DisputeRecord.of(event)
    assert world.adj.dispute(cid) == challenged.commitment
    # replaying a challenge, or one at the recorded version with other contents, is refused
    reverts("stale version", world.adj.challenge, world.b, params, latest, *world.sign(latest))
    other6 = State(cid, 6, (ETH,), (-900,))
    reverts("stale version", world.adj.challenge, world.b, params, other6, *world.sign(other6))
    higher = State(cid, 7, (ETH,), (0,))
    reverts("challenge window still open", world.adj.settle, world.b, params, latest, challenged.finalizes_at)
    world.chain.advance_time(PERIOD + 1)
    reverts("challenge window is over", world.adj.challenge, world.b, params, higher, *world.sign(higher))
    reverts("state is not the recorded state", world.adj.settle, world.b, params, stale, record.finalizes_at)
    altered = State(cid, 6, (ETH,), (-900,))
    reverts("state is not the recorded state", world.adj.settle, world.b, params, altered, challenged.finalizes_at)
    reverts("state is not the recorded state", world.adj.settle, world.b, params, latest, challenged.finalizes_at - 1)
    a0, b0 = world.chain.balance(world.a.address), world.chain.balance(world.b.address)
    world.adj.settle(world.other, params, latest, challenged.finalizes_at)
    assert world.chain.balance(world.a.address) - a0 == 1300
    assert world.chain.balance(world.b.address) - b0 == 700
    assert world.adj.dispute(cid) == bytes(32)  # cleared (and refunded) on conclusion
    assert world.adj.channel(cid).status is Status.CONCLUDED
    reverts("channel not closing", world.adj.settle, world.other, params, latest, challenged.finalizes_at)


def test_a_challenge_lands_whatever_lower_record_was_put_ahead_of_it(world: World) -> None:
    """The front-run of docs/decisions/0009: B, holding many old both-signed versions, records one a block
    ahead of A's challenge. A's challenge names no record, so it replaces whichever is current while its
    version is higher; a version equal to or below the current one is refused, however it was reached."""
    params, cid = world.funded(1000, 1000)
    record = world.close(params, State(cid, 1, (ETH,), (0,)))
    mine = State(cid, 50, (ETH,), (-400,))
    for v in (2, 3, 7):  # B moves the record under A's challenge, each time after A read it
        theirs = State(cid, v, (ETH,), (v,))
        world.adj.challenge(world.b, params, theirs, *world.sign(theirs))
    r = world.adj.challenge(world.a, params, mine, *world.sign(mine))
    [event] = [e for e in world.adj.receipt_events(r) if isinstance(e, ChainObservedClose)]
    assert (event.version, event.finalizes_at) == (50, record.finalizes_at)
    for v in (49, 50):
        theirs = State(cid, v, (ETH,), (v,))
        reverts("stale version", world.adj.challenge, world.b, params, theirs, *world.sign(theirs))
    assert world.adj.dispute(cid) == DisputeRecord.of(event).commitment


def test_a_challenge_lands_in_the_last_second_of_the_window_and_not_after(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    record = world.close(params, State(cid, 1, (ETH,), (0,)))
    last = record.finalizes_at - 1 - world.chain.block().timestamp
    world.chain.advance_time(last - 1)  # the next block is at finalizes_at - 1
    v2, v3 = State(cid, 2, (ETH,), (5,)), State(cid, 3, (ETH,), (6,))
    r = world.adj.challenge(world.b, params, v2, *world.sign(v2))
    assert world.chain.block().timestamp == record.finalizes_at - 1 and r.block_number == world.chain.block().number
    # the next block is at the window's end: too late to challenge, time to settle by the last challenge
    reverts("challenge window is over", world.adj.challenge, world.b, params, v3, *world.sign(v3))
    world.adj.settle(world.other, params, v2, record.finalizes_at)
    assert world.adj.channel(cid).status is Status.CONCLUDED


def test_settle_is_checked_against_the_window_end_it_was_recorded_with(world: World) -> None:
    """A settle quoting an earlier window end than the recorded one cannot pass the commitment, so it
    cannot settle early; the check of the window comes after it, on the authenticated value."""
    params, cid = world.funded(1000, 1000)
    state = State(cid, 2, (ETH,), (10,))
    record = world.close(params, state)
    now = world.chain.block().timestamp
    reverts("state is not the recorded state", world.adj.settle, world.b, params, state, now - 1)
    reverts("challenge window still open", world.adj.settle, world.b, params, state, record.finalizes_at)


def test_challenge_and_settle_need_a_closing_channel(world: World) -> None:
    params, cid = world.funded()
    s = State(cid, 1, (ETH,), (0,))
    reverts("channel not closing", world.adj.challenge, world.b, params, s, *world.sign(s))
    reverts("channel not closing", world.adj.settle, world.b, params, s, 0)
    unknown = ChannelParams(world.a.address, world.b.address, PERIOD, 10**9)
    reverts("unknown channel", world.adj.settle, world.b, unknown, s, 0)
    reverts("unknown channel", world.adj.challenge, world.b, unknown, s, *world.sign(s))
    assert world.adj.dispute(cid) == bytes(32)  # an open channel has no dispute word


def test_nothing_changes_funds_while_closing(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    world.fund_token(cid, 1, 50)
    world.close(params, State(cid, 1, (ETH,), (0,)))
    reverts("channel not open", world.adj.deposit, world.b, cid, 1, 10)
    reverts("channel not open", world.fund_token, cid, 0, 5)
    w = Withdrawal(cid, 1, ETH, 10, nonce=1, deadline=2**40 - 1)
    reverts("channel not open", world.adj.withdraw, world.other, params, w, *world.sign_withdrawal(w))
    assert world.adj.channel(cid).funded_b == 1000
    assert world.adj.token_funds(cid, world.token.address) == (0, 50)


def test_cooperative_close_during_a_dispute_pays_at_once_and_clears_the_dispute(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    world.fund_token(cid, 0, 300)
    tok = world.token.address
    record = world.close(params, State(cid, 5, (ETH, tok), (-200, 0)))
    assert world.adj.dispute(cid) != bytes(32)
    final = State(cid, 9, (ETH, tok), (400, 120), is_final=True)
    b_eth, a_tok, b_tok = (
        world.chain.balance(world.b.address),
        world.token.balance_of(world.a.address),
        (world.token.balance_of(world.b.address)),
    )
    not_final = State(cid, 9, (ETH, tok), (400, 120))
    reverts("state is not final", world.adj.close_cooperative, world.a, params, not_final, *world.sign(not_final))
    r = world.adj.close_cooperative(world.other, params, final, *world.sign(final))  # no waiting for the window
    assert world.chain.balance(world.b.address) - b_eth == 1400  # from the funded amounts kept in storage
    assert world.token.balance_of(world.a.address) - a_tok == 180
    assert world.token.balance_of(world.b.address) - b_tok == 120
    assert world.adj.dispute(cid) == bytes(32)
    assert world.adj.channel(cid).status is Status.CONCLUDED
    assert any(isinstance(e, ChainObservedConcluded) and e.version == 9 for e in world.adj.receipt_events(r))
    reverts("channel not closing", world.adj.settle, world.b, params, State(cid, 5, (ETH, tok), (-200, 0)),
            record.finalizes_at)  # fmt: skip
    reverts("channel not open or closing", world.adj.close_cooperative, world.a, params, final, *world.sign(final))


def test_cooperative_close_needs_an_open_or_closing_channel(world: World) -> None:
    params, cid = world.funded()
    final = State(cid, 3, (ETH,), (0,), is_final=True)
    world.adj.close_cooperative(world.a, params, final, *world.sign(final))
    reverts("channel not open or closing", world.adj.close_cooperative, world.a, params, final, *world.sign(final))
    unknown = ChannelParams(world.a.address, world.b.address, PERIOD, 10**9 + 1)
    ghost = State(unknown.channel_id(world.chain.chain_id, world.adj.address), 3, (ETH,), (0,), is_final=True)
    reverts("unknown channel", world.adj.close_cooperative, world.a, unknown, ghost, *world.sign(ghost))


# ------------------------------------------------------------------ withdraw

FAR = 2**40 - 1


def test_withdraw_once_only(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    w = Withdrawal(cid, 1, ETH, 400, nonce=5, deadline=FAR)
    before = world.chain.balance(world.b.address)
    world.adj.withdraw(world.other, params, w, *world.sign_withdrawal(w))
    assert world.chain.balance(world.b.address) - before == 400
    assert world.adj.channel(cid).funded_b == 600
    reverts("withdrawal already used", world.adj.withdraw, world.other, params, w, *world.sign_withdrawal(w))
    too_much = Withdrawal(cid, 1, ETH, 601, nonce=6, deadline=FAR)
    reverts("withdrawal exceeds funds", world.adj.withdraw, world.other, params, too_much,
            *world.sign_withdrawal(too_much))  # fmt: skip
    sa, _sb = world.sign_withdrawal(Withdrawal(cid, 1, ETH, 100, nonce=7, deadline=FAR))
    unsigned = Withdrawal(cid, 1, ETH, 100, 7, FAR)
    reverts("bad signature from B", world.adj.withdraw, world.other, params, unsigned, sa, sa)
    token_w = Withdrawal(cid, 0, world.token.address, 50, nonce=8, deadline=FAR)
    world.fund_token(cid, 0, 80)
    world.adj.withdraw(world.other, params, token_w, *world.sign_withdrawal(token_w))
    assert world.adj.token_funds(cid, world.token.address) == (30, 0)


def test_withdrawal_expires_after_its_deadline(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    now = world.chain.block().timestamp
    late = Withdrawal(cid, 0, ETH, 100, nonce=1, deadline=now)  # the next block is stamped later
    reverts("withdrawal expired", world.adj.withdraw, world.other, params, late, *world.sign_withdrawal(late))
    w = Withdrawal(cid, 0, ETH, 100, nonce=2, deadline=now + 50)
    sigs = world.sign_withdrawal(w)
    # the deadline is signed: moving it invalidates the signatures
    reverts("bad signature from A", world.adj.withdraw, world.other, params, replace(w, deadline=now + 5000), *sigs)
    world.chain.advance_time(100)
    reverts("withdrawal expired", world.adj.withdraw, world.other, params, w, *sigs)
    assert world.adj.channel(cid).funded_a == 1000
    fresh = Withdrawal(cid, 0, ETH, 100, nonce=3, deadline=world.chain.block().timestamp + 50)
    world.adj.withdraw(world.other, params, fresh, *world.sign_withdrawal(fresh))
    assert world.adj.channel(cid).funded_a == 900


# ------------------------------------------------------------------ hostile tokens, reentrancy


def _hostile(world: World) -> Token:
    r = world.chain.send_transaction(world.a, None, load("HostileToken").bytecode)
    assert r.contract_address is not None
    return Token(world.chain, r.contract_address, contract="HostileToken")


def test_reentrant_token_deposit_reverts_with_reason(world: World) -> None:
    _params, cid = world.funded()
    tok = _hostile(world)
    tok.send(world.b, "mint", "0x" + world.b.address.hex(), 100)
    reenter = world.adj.abi.encode_call("deposit_token", cid, 1, "0x" + tok.address.hex(), 1)
    tok.send(world.b, "arm", "0x" + world.adj.address.hex(), reenter, 1)
    reverts("reentrant call", world.adj.deposit_token, world.b, cid, 1, tok.address, 10)
    tok.send(world.b, "arm", "0x" + world.adj.address.hex(), b"", 3)
    reverts("token transferFrom returned false", world.adj.deposit_token, world.b, cid, 1, tok.address, 10)


def test_failing_payout_is_deferred_and_claimable(world: World) -> None:
    params, cid = world.funded(1000, 1000)
    tok = _hostile(world)
    tok.send(world.b, "mint", "0x" + world.b.address.hex(), 100)
    world.adj.deposit_token(world.b, cid, 1, tok.address, 100)
    # on payout the token calls back into claim(): the lock refuses, the token reports failure
    reenter = world.adj.abi.encode_call("claim", "0x" + tok.address.hex())
    tok.send(world.b, "arm", "0x" + world.adj.address.hex(), reenter, 2)
    final = State(cid, 2, (ETH, tok.address), (0, -40), is_final=True)
    b0 = world.chain.balance(world.b.address)
    r = world.adj.close_cooperative(world.other, params, final, *world.sign(final))
    assert world.chain.balance(world.b.address) - b0 == 1000  # the ETH still arrived
    deferred = [e for e in world.adj.receipt_events(r) if isinstance(e, ChainObservedPayoutDeferred)]
    assert {(e.account, e.amount) for e in deferred} == {(world.a.address, 40), (world.b.address, 60)}
    assert world.adj.claimable(world.b.address, tok.address) == 60
    last_error = tok.abi.decode_result("last_error", world.chain.call(tok.address, tok.abi.encode_call("last_error")))
    assert b"reentrant call" in last_error[0]
    tok.send(world.b, "arm", "0x" + world.adj.address.hex(), b"", 0)
    world.adj.claim(world.b, tok.address)
    assert tok.balance_of(world.b.address) == 60
    assert world.adj.claimable(world.b.address, tok.address) == 0
    reverts("nothing to claim", world.adj.claim, world.b, tok.address)


def test_adjudicator_holds_exactly_what_channels_hold(world: World) -> None:
    fresh = Adjudicator.deploy(world.chain, world.other)[0]
    params = world.params()
    cid = fresh.channel_id(params)
    fresh.open(world.a, params, 300)
    fresh.deposit(world.b, cid, 1, 200)
    assert world.chain.balance(fresh.address) == 500
    s = State(cid, 1, (ETH,), (100,), is_final=True)
    d = state_digest(fresh.domain, s)
    fresh.close_cooperative(world.a, params, s, world.a.sign_digest(d), world.b.sign_digest(d))
    assert world.chain.balance(fresh.address) == 0

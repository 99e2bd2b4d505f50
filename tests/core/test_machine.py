"""The channel machine, scenario by scenario, over the in-memory link."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statechannel.core import messages as m
from statechannel.core.channel import MAX_IN_FLIGHT, Phase
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    ActionCloseCooperative,
    ActionPay,
    ActionWithdraw,
    ChainConcluded,
    ChainDisputeRecorded,
    ChainFunded,
    ChainTime,
    ChainWithdrawn,
    NotifyFailed,
    Payment,
    ReceiveMessage,
    SendMessage,
    SubmitTxChallenge,
    SubmitTxCloseCooperative,
    SubmitTxOpen,
    SubmitTxSettle,
    SubmitTxWithdraw,
)
from statechannel.core.machine import receive, transition
from statechannel.core.types import ETH, State
from tests.core.harness import Pair


def test_funding_reaches_open_with_a_postfund_state() -> None:
    pair = Pair()
    assert pair.open()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.a.ch.latest is not None and pair.a.ch.latest.state.version == 1
    assert any(isinstance(e, SubmitTxOpen) and e.eth_deposit == 1000 for e in pair.a.effects)


def test_payments_both_ways_conserve_and_confirm() -> None:
    pair = Pair()
    pair.pay(0, 10)
    pair.pay(1, 3)
    pair.deliver_all()
    pair.pay(0, 5, count=4)
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balance(pair.a) == 1000 - 30 + 3
    assert pair.balance(pair.b) == 1000 + 30 - 3
    assert sum(pair.a.sent.values()) == 30 and pair.b.received == 30
    assert pair.a.failed == set() and pair.b.failed == set()


def test_pipelining_many_in_flight() -> None:
    pair = Pair()
    for _ in range(MAX_IN_FLIGHT):
        pair.pay(0, 1)
    assert len(pair.a.ch.pending) == MAX_IN_FLIGHT
    with pytest.raises(LocalError) as full:
        pair.pay(0, 1)
    assert full.value.reason is Reason.PIPELINE_FULL
    pair.deliver_all()
    assert pair.a.ch.pending == () and pair.balance(pair.b) == 1000 + MAX_IN_FLIGHT


def test_simultaneous_proposals_a_wins_b_rebases() -> None:
    pair = Pair()
    pair.pay(0, 7)
    pair.pay(1, 2)
    assert pair.a.ch.head.version == pair.b.ch.head.version  # both proposed the same version
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balance(pair.a) == 1000 - 7 + 2
    assert set(pair.b.sent) and not pair.b.failed  # B's payment went through after the rebase
    assert any(
        isinstance(e, SendMessage) and isinstance(e.message, m.Reject) and e.message.reason == "conflict"
        for e in pair.a.effects
    )


def test_overspend_is_refused_locally() -> None:
    pair = Pair(deposit_a=50)
    with pytest.raises(LocalError) as err:
        pair.pay(0, 51)
    assert err.value.reason is Reason.INSUFFICIENT_FUNDS
    assert pair.a.ch.pending == ()


def test_bad_proposals_are_rejected_and_change_nothing() -> None:
    pair = Pair()
    b_before = pair.b.ch
    latest = pair.a.ch.head
    key = pair.a.key

    def propose(state: State) -> m.Reject:
        msg = m.Propose(m.WireState.of(state), key.sign_digest(pair.a.ch.digest(state)).to_bytes(), 999)
        ch, effects = receive(pair.b.ch, msg, pair.b.key)
        assert ch == b_before
        (effect,) = effects
        assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
        return effect.message

    assert propose(replace(latest, version=latest.version + 1, transfers=(-5,))).reason == "illegal_move"
    assert propose(replace(latest, version=latest.version + 1, transfers=(1001,))).reason == "insufficient_funds"
    assert propose(replace(latest, version=latest.version + 2, transfers=(1,))).reason == "version_gap"
    assert propose(replace(latest, version=latest.version, transfers=(1,))).reason == "stale_version"
    assert propose(replace(latest, version=latest.version + 1, app_data=b"\x01" * 32)).reason == "illegal_move"
    forged = replace(latest, version=latest.version + 1, transfers=(5,))
    msg = m.Propose(m.WireState.of(forged), pair.b.key.sign_digest(pair.a.ch.digest(forged)).to_bytes(), 999)
    _, effects = receive(pair.b.ch, msg, pair.b.key)
    assert isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Reject)
    assert effects[0].message.reason == "wrong_signer"
    other = replace(latest, channel_id=b"\x05" * 32, version=latest.version + 1)
    wrong_channel = m.Propose(m.WireState.of(other), key.sign_digest(pair.a.ch.digest(other)).to_bytes(), 999)
    with pytest.raises(RemoteError) as err:
        transition(pair.b.ch, ReceiveMessage(wrong_channel), pair.b.key)
    assert err.value.reason is Reason.WRONG_CHANNEL


def test_lost_accept_is_recovered_by_sync() -> None:
    pair = Pair()
    pair.pay(0, 9)
    pair.deliver(1)  # B accepts; its Accept is in flight
    pair.disconnect_and_reconnect()  # ... and lost
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.a.sent and pair.balance(pair.b) == 1009


def test_cooperative_close_submits_the_final_state() -> None:
    pair = Pair()
    pair.pay(1, 100)
    pair.deliver_all()
    pair.feed(pair.a, ActionCloseCooperative())
    pair.deliver_all()
    submitted = [e for e in pair.a.effects if isinstance(e, SubmitTxCloseCooperative)]
    assert len(submitted) == 1 and submitted[0].signed.state.is_final
    assert submitted[0].signed.state.transfers == (-100,)
    assert pair.b.ch.phase is Phase.CLOSING
    with pytest.raises(LocalError):
        pair.pay(1, 1)
    pair.feed(pair.a, ChainConcluded(3))
    assert pair.a.ch.phase is Phase.CLOSED


def test_stale_close_is_challenged_then_settled() -> None:
    pair = Pair()
    pair.pay(0, 40)
    pair.deliver_all()
    latest = pair.b.ch.latest
    assert latest is not None
    pair.feed(pair.b, ChainTime(1_000))
    pair.feed(pair.b, ChainDisputeRecorded(1, 1_100, 1000, 1000, b"\x01" * 32))
    (challenge,) = [e for e in pair.b.effects if isinstance(e, SubmitTxChallenge)]
    assert challenge.signed == latest and challenge.recorded_hash == b"\x01" * 32
    from statechannel.core.eip712 import state_hash

    pair.feed(pair.b, ChainDisputeRecorded(latest.state.version, 1_100, 1000, 1000, state_hash(latest.state)))
    assert len([e for e in pair.b.effects if isinstance(e, SubmitTxChallenge)]) == 1  # no challenge of the latest
    pair.feed(pair.b, ChainTime(1_099))
    assert not [e for e in pair.b.effects if isinstance(e, SubmitTxSettle)]
    pair.feed(pair.b, ChainTime(1_100))
    pair.feed(pair.b, ChainTime(1_101))
    assert len([e for e in pair.b.effects if isinstance(e, SubmitTxSettle)]) == 1


def test_withdrawal_needs_both_and_holds_funds_back() -> None:
    pair = Pair()
    pair.feed(pair.b, ActionWithdraw(ETH, 600))
    with pytest.raises(LocalError):
        pair.pay(1, 401)  # 600 are already promised to the chain
    pair.deliver_all()
    (submit,) = [e for e in pair.b.effects if isinstance(e, SubmitTxWithdraw)]
    assert submit.withdrawal.amount == 600 and submit.withdrawal.participant == 1
    for party in (pair.a, pair.b):  # a funded total alone (say a replayed event) clears nothing
        pair.feed(party, ChainFunded(ETH, 1, 400))
    assert len(pair.b.ch.withdrawals) == 1 and len(pair.a.ch.withdrawals) == 1
    for party in (pair.a, pair.b):  # the Withdrawn event names exactly this one
        pair.feed(party, ChainWithdrawn(ETH, 1, 400, submit.withdrawal.nonce))
        pair.feed(party, ChainWithdrawn(ETH, 1, 400, submit.withdrawal.nonce))  # replayed: idempotent
    assert not pair.b.ch.withdrawals and not pair.a.ch.withdrawals
    assert pair.balance(pair.b) == 400


def test_payment_of_unknown_asset_or_bad_amount() -> None:
    pair = Pair()
    for payment in (Payment("x", b"\x01" * 20, 5), Payment("y", ETH, 0), Payment("z", ETH, -3)):
        with pytest.raises(LocalError):
            pair.feed(pair.a, ActionPay((payment,)))


def test_withdrawal_request_resent_after_a_drop_is_answered_once() -> None:
    pair = Pair()
    pair.feed(pair.b, ActionWithdraw(ETH, 100))
    pair.disconnect_and_reconnect()  # the request is lost; the resync resends it
    pair.deliver_all()
    assert len([e for e in pair.b.effects if isinstance(e, SubmitTxWithdraw)]) == 1
    pair.disconnect_and_reconnect()  # nothing is pending any more: nothing is resent
    pair.deliver_all()
    assert len([e for e in pair.b.effects if isinstance(e, SubmitTxWithdraw)]) == 1
    assert len(pair.a.ch.withdrawals) == 1


def test_declined_open_ends_the_opening_channel() -> None:
    from statechannel.core.channel import Channel
    from statechannel.core.machine import open_channel
    from statechannel.core.types import ChannelParams
    from tests.core.harness import DOMAIN

    pair = Pair()
    params = ChannelParams(pair.a.key.address, pair.b.key.address, 100, 99)
    ch, _ = open_channel(params, DOMAIN, (ETH,), ((10, 5),), pair.a.key)
    assert isinstance(ch, Channel) and ch.phase is Phase.OPENING
    declined = m.Reject(ch.channel_id, 0, 0, "bad_params", "no deposits on request")
    ch, effects = receive(ch, declined, pair.a.key)
    assert ch.phase is Phase.CLOSED and ch.opening_sig is None
    assert effects and all(not isinstance(e, SendMessage) for e in effects)


def test_peer_cannot_withdraw_what_it_was_only_offered() -> None:
    """A's payment to B is in flight (not countersigned): B may not withdraw against it."""
    pair = Pair(deposit_a=100, deposit_b=10)
    pair.pay(1, 5)  # B pays A 5: B's latest balance is 5
    pair.deliver_all()
    pair.pay(0, 5)  # A pays B 5, still in flight: under it B would have 10
    from statechannel.core.eip712 import withdrawal_digest
    from statechannel.core.types import Withdrawal

    w = Withdrawal(pair.a.ch.channel_id, 1, ETH, 10, nonce=77)  # a B that asks for more than it holds
    sig = pair.b.key.sign_digest(withdrawal_digest(pair.a.ch.domain, w)).to_bytes()
    request = m.WithdrawRequest(w.channel_id, 1, ETH, m.u256(10), m.u256(77), sig)
    a_before = pair.a.ch
    with pytest.raises(RemoteError) as err:
        receive(pair.a.ch, request, pair.a.key)
    assert err.value.reason is Reason.INSUFFICIENT_FUNDS and pair.a.ch == a_before


def test_only_b_retries_after_a_conflict_a_is_told_of_it_fails_its_payments() -> None:
    """A wins every tie, so a CONFLICT reaching A is a refusal: retrying would let B keep A busy forever.
    A signed what B refused, so the failure is reported once a later version is signed by both."""
    pair = Pair()
    pair.pay(0, 5)
    propose = pair.links[1].popleft()
    assert isinstance(propose, m.Propose)
    conflict = m.Reject(pair.a.ch.channel_id, propose.state.version, propose.pid, str(Reason.CONFLICT), "mine")
    pair.a.channel, effects = receive(pair.a.ch, conflict, pair.a.key)
    pair._run(pair.a, effects)
    assert pair.a.failed == set() and pair.a.ch.held_failed, "held: B may still countersign what it refused"
    bumps = [e.message for e in effects if isinstance(e, SendMessage) and isinstance(e.message, m.Propose)]
    assert [b.state.version for b in bumps] == [propose.state.version, propose.state.version + 1]
    assert pair.b.ch.latest is not None
    assert all(b.state.to_state().transfers == pair.b.ch.latest.state.transfers for b in bumps), "bumps move nothing"
    pair.deliver_all()
    assert pair.a.failed == set(pair.a.requested) and not pair.a.ch.held_failed
    assert pair.a.ch.latest == pair.b.ch.latest and pair.a.ch.latest.state.version == propose.state.version + 1
    assert pair.balance(pair.a) == pair.deposits[0], "nothing moved"


def test_a_receipt_in_a_tie_is_told_only_once_no_dropped_proposal_can_undo_it() -> None:
    """A provokes a tie: its payment to B beats B's own proposal of the same version, which A keeps and
    could countersign and close with, undoing its payment. So B is told of the receipt only once a state
    above its dropped proposal is signed by both."""
    pair = Pair()
    pair.pay(1, 5)  # B proposes version v
    b_propose = pair.links[0].popleft()
    pair.pay(0, 10)  # A proposes version v too, and its proposal reaches B first
    pair.deliver(1)
    assert isinstance(b_propose, m.Propose) and pair.b.ch.latest is not None
    v = b_propose.state.version
    assert pair.b.ch.latest.state.version == v and pair.b.ch.orphan_upto == v
    assert pair.b.received == 0 and pair.b.ch.held_received, "told nothing yet: A could still close with B's v"
    # what A could do: countersign B's dropped proposal and close with it (it is version v, and B holds
    # nothing higher signed by both until its re-proposal at v + 1 is accepted)
    dropped = b_propose.state.to_state()
    assert dropped.version == v and dropped != pair.b.ch.latest.state
    # an honest A accepts B's re-proposal: now B holds v + 1 signed by both, and is told
    pair.links[0].clear()
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert pair.b.ch.latest.state.version > v
    assert pair.b.received == 10 and not pair.b.ch.held_received
    assert pair.a.ch.latest == pair.b.ch.latest


def refuse(pair: Pair, propose: m.Message, reason: Reason = Reason.INSUFFICIENT_FUNDS) -> None:
    """The peer's refusal of A's (or B's) proposal, delivered to its proposer."""
    assert isinstance(propose, m.Propose)
    party = pair.a if propose.state.to_state() in [p.state for p in pair.a.ch.pending] else pair.b
    reject = m.Reject(party.ch.channel_id, propose.state.version, propose.pid, str(reason), "no")
    party.channel, effects = receive(party.ch, reject, party.key)
    pair._run(party, effects)


def test_refusals_of_a_full_pipeline_never_overflow_it_and_all_is_told_in_the_end() -> None:
    pair = Pair(deposit_a=10**6)
    for _ in range(MAX_IN_FLIGHT):
        pair.pay(0, 1)
    first = list(pair.links[1])
    pair.links[1].clear()
    refuse(pair, first[0])  # everything rolls back and is proposed again, with bumps as room allows
    head = pair.a.ch.pending[0]
    refuse(pair, m.Propose(m.WireState.of(head.state), head.sig.to_bytes(), head.pid))  # and again
    assert len(pair.a.ch.pending) <= MAX_IN_FLIGHT
    assert len(pair.a.failed) == 0, "failures wait: B still holds what A signed"
    pair.links[1].clear()
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest and pair.a.ch.pending == ()
    assert not (pair.a.ch.held_failed or pair.b.ch.held_received)
    # the first refusal failed one payment; the other 63 went again in one update, which was refused too
    assert pair.a.failed == set(pair.a.requested) and pair.a.sent == {} and pair.b.received == 0


def test_a_refused_payment_is_not_told_failed_while_a_close_may_still_pay_it() -> None:
    """A refuses B's payment but keeps B's signature, ignores B's bumps and closes with it."""
    pair = Pair()
    pair.pay(1, 5)
    propose = pair.links[0].popleft()
    assert isinstance(propose, m.Propose)
    refuse(pair, propose)
    pair.links[0].clear()
    refused = propose.state.to_state()
    fa, fb = pair.deposits
    pair.feed(pair.b, ChainDisputeRecorded(refused.version, 10_000, fa, fb, state_hash(refused)))
    assert pair.b.failed == set() and pair.b.ch.held_failed, "the chain may pay it: not failed yet"
    pair.feed(pair.b, ChainConcluded(refused.version))
    (told,) = [e for e in pair.b.effects if isinstance(e, NotifyFailed)]
    assert told.reason == Reason.UNCONFIRMED and not pair.b.ch.held_failed


def test_a_cooperative_close_racing_a_tie_tells_the_held_receipt_once_closed_with_my_final_state() -> None:
    pair = Pair()
    pair.pay(1, 5)  # B proposes at v
    b_propose = pair.links[0].popleft()
    pair.pay(0, 10)  # A at v too, and first to arrive: B's receipt is held
    pair.deliver(1)
    pair.links[0].appendleft(b_propose)
    pair.feed(pair.a, ActionCloseCooperative())
    pair.deliver_all()
    assert pair.b.ch.latest is not None and pair.b.ch.latest.state.is_final and pair.b.ch.held_received
    for party in (pair.a, pair.b):
        pair.feed(party, ChainConcluded(pair.b.ch.latest.state.version))
    assert pair.b.received == 10 and not pair.b.ch.held_received


def test_a_close_rolled_back_behind_a_refused_update_reopens_the_channel() -> None:
    pair = Pair()
    pair.pay(1, 5)  # B: a payment, then a close behind it
    pair.feed(pair.b, ActionCloseCooperative())
    pair.pay(0, 7)  # A wins the tie: B's payment is refused, the close behind it rolled back
    pair.deliver_all()
    assert pair.b.ch.phase is Phase.OPEN and pair.b.ch.pending == ()
    assert pair.a.ch.latest == pair.b.ch.latest
    pair.pay(0, 1)
    pair.deliver_all()
    assert pair.a.failed == set()

"""The channel machine, scenario by scenario, over the in-memory link (A leads, B follows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from statechannel.core import messages as m
from statechannel.core.channel import MAX_IN_FLIGHT, Phase
from statechannel.core.eip712 import state_hash, withdrawal_digest
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    ActionCloseCooperative,
    ActionCloseUnilateral,
    ActionPay,
    ActionWithdraw,
    ChainConcluded,
    ChainDisputeRecorded,
    ChainFunded,
    ChainTime,
    ChainTxFailed,
    ChainWithdrawn,
    NotifyAlert,
    NotifyConcluded,
    Payment,
    ReceiveMessage,
    SendMessage,
    SubmitTxChallenge,
    SubmitTxClose,
    SubmitTxCloseCooperative,
    SubmitTxOpen,
    SubmitTxSettle,
    SubmitTxWithdraw,
)
from statechannel.core.machine import receive, transition
from statechannel.core.types import ETH, State, Withdrawal
from statechannel.core.withdrawals import WITHDRAW_TTL
from tests.core.harness import CHAIN_START, Pair, versions_unique


def _sent(party_effects: Sequence[object], kind: type) -> list[object]:
    return [e for e in party_effects if isinstance(e, SendMessage) and isinstance(e.message, kind)]


def test_funding_reaches_open_with_a_postfund_state() -> None:
    pair = Pair()
    assert pair.open()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.a.ch.latest is not None and pair.a.ch.latest.state.version == 1
    assert any(isinstance(e, SubmitTxOpen) and e.eth_deposit == 1000 for e in pair.a.effects)


def test_payments_both_ways_conserve_and_confirm() -> None:
    pair = Pair()
    pair.pay(0, 10)
    pair.pay(1, 3)  # B asks; A carries it in a state it proposes
    pair.deliver_all()
    pair.pay(0, 5, count=4)
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balance(pair.a) == 1000 - 30 + 3
    assert pair.balance(pair.b) == 1000 + 30 - 3
    assert sum(pair.a.sent.values()) == 30 and pair.b.received == 30
    assert sum(pair.b.sent.values()) == 3 and pair.a.received == 3
    assert pair.a.failed == set() and pair.b.failed == set()
    assert not _sent(pair.b.effects, m.Propose), "the follower never proposes a state"


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


def test_both_pay_at_once_no_version_is_signed_twice() -> None:
    pair = Pair()
    pair.pay(0, 7)
    pair.pay(1, 2)
    pair.pay(1, 2)
    pair.pay(0, 7)
    pair.deliver_all()
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balance(pair.a) == 1000 - 14 + 4
    assert len(pair.b.sent) == 2 and len(pair.a.sent) == 2
    assert versions_unique(pair.a) and versions_unique(pair.b)


def test_follower_requests_are_bounded_and_checked_against_its_lowest_balance() -> None:
    pair = Pair(deposit_b=10)
    pair.pay(1, 6)
    with pytest.raises(LocalError) as short:
        pair.pay(1, 6)  # 6 is outstanding: only 4 left whatever the leader does
    assert short.value.reason is Reason.INSUFFICIENT_FUNDS
    pair.deliver_all()
    assert pair.balance(pair.b) == 4 and sum(pair.b.sent.values()) == 6


def test_overspend_is_refused_locally() -> None:
    pair = Pair()
    before = pair.a.ch
    with pytest.raises(LocalError) as exc:
        pair.pay(0, 1001)
    assert exc.value.reason is Reason.INSUFFICIENT_FUNDS
    assert pair.a.ch is before


def test_bad_proposals_are_rejected_and_change_nothing() -> None:
    pair = Pair()
    pair.pay(0, 10)
    propose = pair.links[1].popleft()
    assert isinstance(propose, m.Propose)
    b_before = pair.b.ch
    state = propose.state.to_state()

    def wire(s: State, base: int | None = None, requests: list[int] | None = None) -> m.Propose:
        sig = pair.a.key.sign_digest(pair.a.ch.digest(s))
        return m.Propose(m.WireState.of(s), sig.to_bytes(), 99, propose.base if base is None else base, requests or [])

    cases = {
        Reason.ILLEGAL_MOVE: wire(replace(state, transfers=(-10,))),  # takes from B
        Reason.INSUFFICIENT_FUNDS: wire(replace(state, transfers=(1001,))),
        Reason.BAD_BASE: wire(state, base=0),
        Reason.UNKNOWN_REQUEST: wire(state, requests=[7]),
        Reason.WRONG_SIGNER: m.Propose(propose.state, pair.b.key.sign_digest(b"\x01" * 32).to_bytes(), 99, 1, []),
    }
    for reason, msg in cases.items():
        new, effects = receive(pair.b.ch, msg, pair.b.key, 1)
        assert new is b_before
        (reject,) = effects
        assert isinstance(reject, SendMessage) and isinstance(reject.message, m.Reject)
        assert reject.message.reason == reason, (reason, reject.message)
    # the follower never takes a proposal role: a Propose to A is refused, a Reject to B too
    with pytest.raises(RemoteError) as role:
        transition(pair.a.ch, ReceiveMessage(wire(state), 1), pair.a.key)
    assert role.value.reason is Reason.WRONG_ROLE


def test_a_second_state_at_a_version_already_signed_is_refused() -> None:
    """Invariant 3 on the follower: once it countersigned version v, nothing else at v (or below)."""
    pair = Pair()
    pair.pay(0, 10)
    first = pair.links[1][0]
    assert isinstance(first, m.Propose)
    pair.deliver_all()
    other = replace(first.state.to_state(), transfers=(500,))
    sig = pair.a.key.sign_digest(pair.a.ch.digest(other))
    twin = m.Propose(m.WireState.of(other), sig.to_bytes(), 77, first.base, [])
    new, (reject,) = receive(pair.b.ch, twin, pair.b.key, 1)
    assert isinstance(reject, SendMessage) and isinstance(reject.message, m.Reject)
    assert reject.message.reason == Reason.STALE_VERSION and new is pair.b.ch


def test_lost_accept_is_recovered_by_sync() -> None:
    pair = Pair()
    pair.pay(0, 10)
    pair.deliver(1)  # B countersigns
    pair.links[0].clear()  # its Accept is lost
    assert len(pair.a.ch.pending) == 1
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert not pair.a.ch.pending and pair.a.ch.latest == pair.b.ch.latest
    assert pair.a.sent == {"A1": 10}


def test_a_request_resent_after_a_reconnect_is_carried_once() -> None:
    pair = Pair()
    pair.pay(1, 5)
    pair.deliver(0)  # A carries it in a proposal
    pair.links[1].clear()  # which is lost
    pair.disconnect_and_reconnect()  # B sends its request again, A its proposal again
    pair.deliver_all()
    assert pair.balance(pair.b) == 995 and pair.b.sent == {"B1": 5} and pair.a.received == 5


def test_a_refused_request_fails_at_once_and_for_good() -> None:
    pair = Pair()
    pair.pay(1, 5)
    req = pair.links[0].popleft()
    assert isinstance(req, m.PayRequest)
    pair.feed(pair.a, ActionCloseCooperative())  # A closes: it refuses new requests
    pair.links[0].append(req)
    pair.deliver_all()
    assert pair.b.failed == {"B1"} and pair.b.ch.requests == ()


def test_cooperative_close_submits_the_final_state() -> None:
    pair = Pair()
    pair.pay(0, 10)
    pair.pay(1, 4)
    pair.deliver(0)  # B's request reaches A before A closes
    pair.feed(pair.a, ActionCloseCooperative())  # waits for the pipeline to drain
    pair.deliver_all()
    final = pair.a.ch.latest
    assert final is not None and final.state.is_final and final.state.transfers == (6,)
    assert any(isinstance(e, SubmitTxCloseCooperative) for e in pair.a.effects)
    assert pair.a.ch.final_signed and pair.b.ch.final_signed
    with pytest.raises(LocalError):
        pair.pay(0, 1)


def test_follower_asks_for_the_close() -> None:
    pair = Pair()
    pair.pay(0, 3)
    pair.deliver_all()
    pair.feed(pair.b, ActionCloseCooperative())
    pair.deliver_all()
    assert pair.a.ch.latest is not None and pair.a.ch.latest.state.is_final
    assert any(isinstance(e, SubmitTxCloseCooperative) for e in pair.a.effects)


def _dispute(
    pair: Pair, party_index: int, state: State, finalizes_at: int, challenge: bool = False, calldata: bool = False
) -> None:
    party = pair.party(party_index)
    told = state if calldata else None
    pair.feed(party, ChainDisputeRecorded(state.version, finalizes_at, state_hash(state), challenge, told))


def test_stale_close_is_challenged_then_settled_and_reported_as_the_chain_says() -> None:
    pair = Pair()
    old = pair.b.ch.latest
    assert old is not None
    pair.pay(0, 100)
    pair.deliver_all()
    latest = pair.b.ch.latest
    assert latest is not None
    _dispute(pair, 1, old.state, CHAIN_START + 100)
    (challenge,) = [e for e in pair.b.effects if isinstance(e, SubmitTxChallenge)]
    assert challenge.signed == latest and challenge.recorded_version == old.state.version
    _dispute(pair, 1, latest.state, CHAIN_START + 100, challenge=True)
    pair.feed(pair.b, ChainTime(CHAIN_START + 100))
    (settle,) = [e for e in pair.b.effects if isinstance(e, SubmitTxSettle)]
    assert settle.state == latest.state and settle.finalizes_at == CHAIN_START + 100
    pair.feed(pair.b, ChainConcluded(latest.state.version))
    (done,) = [e for e in pair.b.effects if isinstance(e, NotifyConcluded)]
    assert done.outcome.challenged and not done.outcome.loss and done.outcome.paid == ((900, 1100),)
    assert pair.b.ch.outcome == done.outcome


def test_a_settled_old_state_is_an_alert_never_shown_as_paid() -> None:
    """Attack 6's aftermath: the tower was killed and the old state settled."""
    pair = Pair()
    old = pair.b.ch.latest
    assert old is not None
    pair.pay(0, 600)
    pair.deliver_all()
    _dispute(pair, 1, old.state, CHAIN_START - 1, calldata=True)  # seen only after its window
    assert not [e for e in pair.b.effects if isinstance(e, SubmitTxChallenge)]
    pair.feed(pair.b, ChainConcluded(old.state.version))
    (done,) = [e for e in pair.b.effects if isinstance(e, NotifyConcluded)]
    assert done.outcome.loss and not done.outcome.challenged and done.outcome.paid == ((1000, 1000),)
    assert any(isinstance(e, NotifyAlert) and e.kind == "loss" for e in pair.b.effects)


def test_both_can_agree_a_final_state_after_a_unilateral_close() -> None:
    pair = Pair()
    pair.pay(0, 50)
    pair.deliver_all()
    latest = pair.a.ch.latest
    assert latest is not None
    for i in (0, 1):
        _dispute(pair, i, latest.state, CHAIN_START + 10_000)
    pair.feed(pair.b, ActionCloseCooperative())  # no need to wait out the window
    pair.deliver_all()
    final = pair.a.ch.latest
    assert final is not None and final.state.is_final and final.state.transfers == latest.state.transfers
    assert any(isinstance(e, SubmitTxCloseCooperative) and e.signed == final for e in pair.a.effects)


def test_withdrawal_needs_both_holds_funds_back_and_expires() -> None:
    pair = Pair()
    pair.feed(pair.b, ActionWithdraw(ETH, 400))
    pair.deliver_all()
    (sub,) = [e for e in pair.b.effects if isinstance(e, SubmitTxWithdraw)]
    assert sub.withdrawal.deadline == CHAIN_START + WITHDRAW_TTL
    with pytest.raises(LocalError):
        pair.feed(pair.b, ActionWithdraw(ETH, 601))  # 400 already on its way
    pair.feed(pair.b, ChainTime(CHAIN_START + WITHDRAW_TTL))
    assert len(pair.b.ch.withdrawals) == 1  # still valid at its deadline
    for party in (pair.a, pair.b):
        pair.feed(party, ChainTime(CHAIN_START + WITHDRAW_TTL + 1))
        assert not party.ch.withdrawals  # it can never execute now: nothing held back
    pair.feed(pair.b, ActionWithdraw(ETH, 1000))


def test_withdrawal_done_on_chain_lowers_funds() -> None:
    pair = Pair()
    pair.feed(pair.a, ActionWithdraw(ETH, 300))
    pair.deliver_all()
    nonce = pair.a.ch.withdrawals[0].withdrawal.nonce
    for party in (pair.a, pair.b):
        pair.feed(party, ChainWithdrawn(ETH, 0, 700, nonce))
        assert party.ch.withdrawals == () and party.ch.funded[0] == (700, 1000)


def test_received_funds_cannot_be_withdrawn() -> None:
    """Attack 5: the contract pays only from one's own funded amount."""
    pair = Pair(deposit_b=0)
    pair.pay(0, 500)
    pair.deliver_all()
    assert pair.balance(pair.b) == 500
    with pytest.raises(LocalError) as exc:
        pair.feed(pair.b, ActionWithdraw(ETH, 100))
    assert exc.value.reason is Reason.INSUFFICIENT_FUNDS
    # and a request for it, from a peer that ignores the rule, is refused
    b = pair.b.ch
    w = Withdrawal(b.channel_id, 1, ETH, 100, 1, CHAIN_START + 60)
    sig = pair.b.key.sign_digest(withdrawal_digest(b.domain, w))
    req = m.WithdrawRequest(b.channel_id, 1, ETH, m.u256(100), m.u256(1), w.deadline, sig.to_bytes())
    with pytest.raises(RemoteError) as refused:
        receive(pair.a.ch, req, pair.a.key, 1)
    assert refused.value.reason is Reason.INSUFFICIENT_FUNDS


def test_a_withdrawal_that_reverts_because_the_channel_closed_is_cleared() -> None:
    pair = Pair()
    pair.feed(pair.b, ActionWithdraw(ETH, 100))
    pair.deliver_all()
    (sub,) = [e for e in pair.b.effects if isinstance(e, SubmitTxWithdraw)]
    pair.feed(pair.b, ChainTxFailed(sub, "withdrawal exceeds funds"))
    assert len(pair.b.ch.withdrawals) == 1  # anyone may still submit it until its deadline
    pair.feed(pair.b, ChainTxFailed(sub, "channel not open"))
    assert not pair.b.ch.withdrawals


def test_payment_of_unknown_asset_or_bad_amount() -> None:
    pair = Pair()
    for i in (0, 1):
        for bad in (Payment("x", b"\x01" * 20, 1), Payment("y", ETH, 0), Payment("z", ETH, -5)):
            with pytest.raises(LocalError):
                pair.feed(pair.party(i), ActionPay((bad,)))


def test_declined_open_ends_the_opening_channel() -> None:
    pair = Pair()
    ch = replace(pair.a.ch, phase=Phase.OPENING, latest=None, opening_sig=pair.a.ch.latest.sig_a)  # type: ignore[union-attr]
    new, _ = receive(ch, m.Reject(ch.channel_id, 0, 0, "challenge_period", "no"), pair.a.key, 1)
    assert new.phase is Phase.CLOSED


def test_unilateral_close_from_funding_reclaims_with_the_prefund_state() -> None:
    pair = Pair()
    ch = replace(pair.a.ch, phase=Phase.FUNDING)
    _, effects = transition(ch, ActionCloseUnilateral(), pair.a.key)
    (close,) = effects
    assert isinstance(close, SubmitTxClose) and close.signed == pair.a.ch.latest


def test_postfund_waits_until_the_follower_sees_the_deposits() -> None:
    fresh = Pair(seed="late")
    assert fresh.open()
    # the deferred path: a follower that saw no deposit keeps A's post-fund proposal, answers nothing
    b = replace(fresh.b.ch, phase=Phase.FUNDING, funded=((0, 0),), latest=fresh.b.ch.latest, signed_upto=0)
    prefund = State(b.channel_id, 0, b.assets, (0,))
    signed0 = b.signed(prefund, fresh.b.key.sign_digest(b.digest(prefund)), fresh.a.key.sign_digest(b.digest(prefund)))
    b = replace(b, latest=signed0)
    post = State(b.channel_id, 1, b.assets, (0,))
    msg = m.Propose(m.WireState.of(post), fresh.a.key.sign_digest(b.digest(post)).to_bytes(), 1, 0, [])
    b2, effects = receive(b, msg, fresh.b.key, 1)
    assert effects == () and b2.deferred is not None and b2.phase is Phase.FUNDING
    b3, effects = transition(b2, ChainFunded(ETH, 0, 1000), fresh.b.key)
    assert effects == ()
    b4, effects = transition(b3, ChainFunded(ETH, 1, 1000), fresh.b.key)
    assert b4.phase is Phase.OPEN and any(
        isinstance(e, SendMessage) and isinstance(e.message, m.Accept) for e in effects
    )

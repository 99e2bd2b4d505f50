"""One honest party and one hostile one (either side), over the pure machine.

The hostile side runs the real machine but also forces ties, refuses at will, drops, replays and
reorders messages, and signs a second state at a version it already signed. At the end it closes with
whatever state it can get onto the chain: any state the honest side ever signed (it countersigns it
itself) or its best both-signed one; the honest side answers with its latest, and the chain keeps the
highest version. Then every outcome the honest side reported must be exactly what the chain pays it,
and the honest side must be able to settle (DESIGN.md invariant 3; issue 9, attack 1)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from statechannel.core import messages as m
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import ChainConcluded, ChainDisputeRecorded, ChainTime, SubmitTxSettle
from statechannel.core.types import State
from tests.core.harness import CHAIN_START, Pair, Party, versions_unique

WINDOW = 100


class HonestAgainstHostile(RuleBasedStateMachine):
    @initialize(hostile=st.integers(0, 1), deposit_a=st.integers(0, 400), deposit_b=st.integers(20, 400))
    def setup(self, hostile: int, deposit_a: int, deposit_b: int) -> None:
        self.pair = Pair(deposit_a, deposit_b, seed=f"hostile{hostile}")
        self.pair.tolerant = True
        self.h = hostile
        self.o = 1 - hostile

    @property
    def honest(self) -> Party:
        return self.pair.party(self.o)

    @property
    def hostile(self) -> Party:
        return self.pair.party(self.h)

    @rule(who=st.integers(0, 1), amount=st.integers(1, 80), count=st.integers(1, 3))
    def pay(self, who: int, amount: int, count: int) -> None:
        try:
            self.pair.pay(who, amount, count)
        except LocalError as exc:
            assert exc.reason in (Reason.INSUFFICIENT_FUNDS, Reason.PIPELINE_FULL, Reason.CLOSING)

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1), n=st.integers(1, 4))
    def deliver(self, to: int, n: int) -> None:
        for _ in range(n):
            if self.pair.links[to]:
                self.pair.deliver(to)

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule()
    def deliver_all(self) -> None:
        self.pair.deliver_all()

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1), index=st.integers(0, 20))
    def drop(self, to: int, index: int) -> None:
        """The hostile side loses a message on purpose (either direction: it controls its link)."""
        link = self.pair.links[to]
        if link:
            del link[index % len(link)]

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1), index=st.integers(0, 20))
    def replay(self, to: int, index: int) -> None:
        link = self.pair.links[to]
        if link:
            link.append(link[index % len(link)])

    @precondition(lambda self: len(self.pair.links[0]) > 1 or len(self.pair.links[1]) > 1)
    @rule(to=st.integers(0, 1), index=st.integers(0, 20))
    def reorder(self, to: int, index: int) -> None:
        """Only the hostile side's own messages can be reordered (one TCP stream keeps the honest
        side's in order): it may send them in any order it likes."""
        link = self.pair.links[to]
        if to == self.o and len(link) > 1:
            i = index % (len(link) - 1)
            link[i], link[i + 1] = link[i + 1], link[i]

    @precondition(lambda self: self.pair.links[self.h])
    @rule(reason=st.sampled_from(["insufficient_funds", "illegal_move", "conflict", "bad_base"]))
    def refuse_next(self, reason: str) -> None:
        """A hostile follower refuses the honest leader's next proposal (yet keeps its signature)."""
        if self.h != 1 or not isinstance(self.pair.links[1][0], m.Propose | m.ProposeSwap | m.ProposeFill):
            return
        msg = self.pair.links[1].popleft()
        assert isinstance(msg, m.Propose | m.ProposeSwap | m.ProposeFill)
        self.pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, reason, "no"))

    @rule(shift=st.integers(1, 50))
    def equivocate(self, shift: int) -> None:
        """A hostile leader signs another state at a version it already used, built on the honest
        follower's latest, and sends it: it must be refused."""
        if self.h != 0:
            return
        ch = self.hostile.ch
        latest = self.honest.ch.latest
        if latest is None or ch.signed_upto < 1:
            return
        state = State(ch.channel_id, ch.signed_upto, ch.assets, (latest.state.transfers[0] + shift,))
        sig = self.hostile.key.sign_digest(ch.digest(state))
        self.pair.links[1].append(m.Propose(m.WireState.of(state), sig.to_bytes(), 10**6, latest.state.version, []))

    @rule()
    def reconnect(self) -> None:
        self.pair.disconnect_and_reconnect()

    @invariant()
    def honest_signs_one_state_per_version(self) -> None:
        assert versions_unique(self.honest)

    @invariant()
    def honest_ledger_is_its_latest(self) -> None:
        ch = self.honest.ch
        assert ch.latest is not None
        assert self.pair.balance(self.honest) == self.pair.deposits[ch.me] + self.honest.net()

    def teardown(self) -> None:
        """The hostile side closes with the best state it can get recorded; the honest side challenges
        with its latest; the hostile side may challenge back with anything the honest side signed above
        that. The chain pays the highest version. The honest side's report must match it."""
        honest, hostile = self.honest, self.hostile
        ch = honest.ch
        assert ch.latest is not None
        latest = ch.latest.state
        usable = [latest, *(s for s, _ in honest.signed if s.version > latest.version)]

        def hostile_payout(s: State) -> int:
            return ch.balances(s)[0][self.h]

        final = max(usable, key=lambda s: (hostile_payout(s), s.version))
        self.pair.feed(honest, ChainTime(CHAIN_START))
        self.pair.feed(honest, ChainDisputeRecorded(final.version, CHAIN_START + WINDOW, state_hash(final)))
        self.pair.feed(honest, ChainTime(CHAIN_START + WINDOW))
        settles = [e for e in honest.effects if isinstance(e, SubmitTxSettle)]
        assert settles and settles[-1].state == final, "the honest side can always settle what is recorded"
        self.pair.feed(honest, ChainConcluded(final.version))
        paid = ch.balances(final)[0][ch.me]
        assert honest.ch.outcome is not None and honest.ch.outcome.paid is not None
        assert honest.ch.outcome.paid[0][ch.me] == paid
        # every payment the honest side asked for is resolved once, and what it reported is paid exactly
        assert set(honest.sent) | honest.failed == set(honest.requested)
        assert paid == self.pair.deposits[ch.me] + honest.net(), (paid, honest.net(), final, latest)
        assert not honest.ch.outcome.loss
        del hostile


HonestAgainstHostile.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_honest_against_hostile = HonestAgainstHostile.TestCase


def test_attack_1_a_lost_tie_never_leaves_two_states_of_one_version() -> None:
    """Issue 9, attack 1, as it was found: B has payments in flight while A pays B 100; A then tries to
    close with any state it holds B's signature on. B's reports must be what the chain pays."""
    pair = Pair(seed="attack1")
    for _ in range(3):
        pair.pay(1, 10)  # B's three payments
    pair.pay(0, 100)  # A's payment, racing them
    pair.deliver_all()
    b = pair.b
    assert versions_unique(b)
    latest = b.ch.latest
    assert latest is not None
    usable = [latest.state, *(s for s, _ in b.signed if s.version > latest.state.version)]
    assert usable == [latest.state], "B signed nothing above its latest: A holds no other state to close with"
    assert len(b.sent) == 3 and b.received == 100
    assert pair.balance(b) == 1000 + 100 - 30


def test_a_refused_payment_is_not_told_failed_while_a_close_may_still_pay_it() -> None:
    """A hostile follower refuses A's payment but keeps A's signature: the failure waits until a newer
    state supersedes it, and if the chain pays the refused state, A is told the payment was sent."""
    pair = Pair(seed="refuse")
    pair.pay(0, 40)
    msg = pair.links[1].popleft()
    assert isinstance(msg, m.Propose)
    pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, "illegal_move", "no"))
    pair.deliver(0)  # A rolls back, holds the failure, and bumps
    assert pair.a.failed == set() and len(pair.a.ch.rolled) == 1 and len(pair.a.ch.pending) == 1
    pair.links[1].clear()  # B ignores the bump and closes with the refused state, countersigned by itself
    refused = msg.state.to_state()
    pair.feed(pair.a, ChainDisputeRecorded(refused.version, CHAIN_START + WINDOW, state_hash(refused)))
    pair.feed(pair.a, ChainConcluded(refused.version))
    assert pair.a.sent == {"A1": 40} and pair.a.failed == set()


def test_a_refused_payment_is_told_failed_once_superseded() -> None:
    pair = Pair(seed="refuse2")
    pair.pay(0, 40)
    msg = pair.links[1].popleft()
    assert isinstance(msg, m.Propose)
    pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, "illegal_move", "no"))
    pair.deliver_all()  # the bump is countersigned
    assert pair.a.failed == {"A1"} and pair.a.ch.rolled == ()
    assert pair.a.ch.latest is not None and pair.a.ch.latest.state.version > msg.state.version


def test_a_refused_bump_is_not_bumped_again() -> None:
    pair = Pair(seed="refuse3")
    pair.pay(0, 40)
    for _ in range(2):
        msg = pair.links[1].popleft()
        assert isinstance(msg, m.Propose)
        pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, "illegal_move", "no"))
        pair.deliver(0)
    assert not pair.links[1], "a hostile follower cannot make the leader sign forever"
    assert replace(pair.a.ch).pending == ()

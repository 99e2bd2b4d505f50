"""Two honest parties, random traffic: payments both ways (the leader's proposals and the follower's
requests interleaved), dropped links, duplicated messages, restarts. Invariants after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from statechannel.core.errors import LocalError, Reason
from tests.core.harness import Pair, versions_unique


class TwoParties(RuleBasedStateMachine):
    @initialize(deposit_a=st.integers(0, 500), deposit_b=st.integers(1, 500))
    def setup(self, deposit_a: int, deposit_b: int) -> None:
        self.pair = Pair(deposit_a, deposit_b)
        self.total = deposit_a + deposit_b
        self.max_version = {0: 0, 1: 0}

    @rule(who=st.integers(0, 1), amount=st.integers(1, 60), count=st.integers(1, 3))
    def pay(self, who: int, amount: int, count: int) -> None:
        try:
            self.pair.pay(who, amount, count)
        except LocalError as exc:
            assert exc.reason in (Reason.INSUFFICIENT_FUNDS, Reason.PIPELINE_FULL)

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1), n=st.integers(1, 5))
    def deliver(self, to: int, n: int) -> None:
        for _ in range(n):
            if self.pair.links[to]:
                self.pair.deliver(to)

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1))
    def duplicate(self, to: int) -> None:
        link = self.pair.links[to]
        if link:
            link.appendleft(link[0])

    @rule()
    def drop_link(self) -> None:
        """The connection breaks (queued messages are lost) and comes back."""
        self.pair.disconnect_and_reconnect()

    @rule(who=st.integers(0, 1))
    def restart(self, who: int) -> None:
        """A process restarts from what it persisted: the channel value as of its last
        transition (it saves before it sends). Its connection drops with it."""
        party = self.pair.party(who)
        party.channel = type(party.ch)(**{f: getattr(party.ch, f) for f in party.ch.__dataclass_fields__})
        self.pair.disconnect_and_reconnect()

    @invariant()
    def versions_only_grow(self) -> None:
        for i in (0, 1):
            latest = self.pair.party(i).ch.latest
            assert latest is not None
            assert latest.state.version >= self.max_version[i]
            self.max_version[i] = latest.state.version

    @invariant()
    def totals_conserved_and_nobody_overdrawn(self) -> None:
        for party in (self.pair.a, self.pair.b):
            ch = party.ch
            assert ch.latest is not None
            ((a, b),) = ch.balances(ch.latest.state)
            assert a >= 0 and b >= 0 and a + b == self.total

    @invariant()
    def each_can_close_with_what_it_agreed(self) -> None:
        """Each side's latest state is signed by both and pays it exactly what its own ledger
        (confirmed payments out, payments in) says: nothing reported waits for anything."""
        for party in (self.pair.a, self.pair.b):
            ch = party.ch
            assert ch.latest is not None
            ch.check_signed(ch.latest)
            assert self.pair.balance(party) == self.pair.deposits[ch.me] + party.net()

    @invariant()
    def one_state_per_version(self) -> None:
        assert versions_unique(self.pair.a) and versions_unique(self.pair.b)

    def teardown(self) -> None:
        """Once the link is quiet, both agree and every payment was resolved once."""
        pair = self.pair
        pair.disconnect_and_reconnect()
        pair.deliver_all()
        assert pair.a.ch.latest == pair.b.ch.latest
        assert pair.a.ch.pending == () and pair.b.ch.requests == ()
        for party in (pair.a, pair.b):
            assert not party.ch.held_failed, "all told once the link is quiet"
            assert set(party.sent) | party.failed == set(party.requested)
        assert sum(pair.a.sent.values()) == pair.b.received
        assert sum(pair.b.sent.values()) == pair.a.received


TwoParties.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_two_parties = TwoParties.TestCase

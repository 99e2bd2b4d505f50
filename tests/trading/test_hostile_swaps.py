"""The hostile state machine of tests/core/test_hostile.py with two assets and takes both ways: one side
honest, the other hostile (either one). The hostile side drops, replays and reorders messages, refuses
the honest leader's proposals (takes included) at will and signs second states at used versions; at the
end it may get any state the honest side ever signed above its latest recorded on chain (or the latest).
For every such state, the honest side must settle it and report exactly what the chain pays it, per
asset: payments sent and received, and fills as taker and as maker (issue 9, attack 1, with takes)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from statechannel.core import messages as m
from statechannel.core.channel import Channel
from statechannel.core.eip712 import state_hash
from statechannel.core.io import (
    ChainConcluded,
    ChainDisputeRecorded,
    ChainTime,
    Effect,
    NotifyFilled,
    NotifyReceived,
    NotifySent,
    SubmitTxSettle,
)
from statechannel.core.machine import transition
from statechannel.core.types import State
from tests.core.harness import CHAIN_START, versions_unique
from tests.trading.harness import AssetPair
from tests.trading.test_swap_fuzz import TwoAssets


def _told(effects: tuple[Effect, ...]) -> dict[bytes, int]:
    """What the conclusion's effects tell a side, per asset, as the AssetPair ledger counts it."""
    net: dict[bytes, int] = defaultdict(int)
    for e in effects:
        if isinstance(e, NotifySent):
            for p in e.payments:
                net[p.asset] -= p.amount
        elif isinstance(e, NotifyReceived):
            for asset, amount in e.amounts:
                net[asset] += amount
        elif isinstance(e, NotifyFilled):
            q, swap = e.swap.quote, e.swap
            bought = q.maker_sells != e.maker
            net[q.base] += swap.base_amount if bought else -swap.base_amount
            net[q.quote] += -swap.quote_amount if bought else swap.quote_amount
    return net


class HostileTwoAssets(TwoAssets):
    hostile = 0

    @rule(side=st.integers(0, 1))
    def choose_hostile(self, side: int) -> None:
        """Which side misbehaves; fixed once chosen."""
        if not getattr(self, "_chosen", False):
            self.hostile, self._chosen = side, True
            self.pair.tolerant = True

    @precondition(lambda self: self.pair.links[0] or self.pair.links[1])
    @rule(to=st.integers(0, 1), index=st.integers(0, 20))
    def drop_one(self, to: int, index: int) -> None:
        link = self.pair.links[to]
        if link:
            del link[index % len(link)]

    @precondition(lambda self: len(self.pair.links[1 - self.hostile]) > 1)
    @rule(index=st.integers(0, 20))
    def reorder(self, index: int) -> None:
        link = self.pair.links[1 - self.hostile]  # the hostile side's own messages, in any order
        i = index % (len(link) - 1)
        link[i], link[i + 1] = link[i + 1], link[i]

    @precondition(lambda self: self.hostile == 1 and bool(self.pair.links[1]))
    @rule(reason=st.sampled_from(["oversize", "expired", "insufficient_funds", "bad_base"]), take=st.integers(-1, 3))
    def refuse_next(self, reason: str, take: int) -> None:
        msg = self.pair.links[1][0]
        if not isinstance(msg, m.Propose | m.ProposeSwap | m.ProposeFill):
            return
        self.pair.links[1].popleft()
        self.pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, reason, "no", take))

    @rule(shift=st.integers(1, 50))
    def equivocate(self, shift: int) -> None:
        if self.hostile != 0:
            return
        ch, latest = self.pair.a.ch, self.pair.b.ch.latest
        if latest is None or ch.signed_upto < 1:
            return
        t = latest.state.transfers
        state = State(ch.channel_id, ch.signed_upto, ch.assets, (t[0] + shift, *t[1:]))
        sig = self.pair.a.key.sign_digest(ch.digest(state))
        self.pair.links[1].append(m.Propose(m.WireState.of(state), sig.to_bytes(), 10**6, latest.state.version, []))

    # the honest side's invariants only: the hostile side's own view is its business
    @invariant()
    def versions_only_grow(self) -> None:
        return None

    @invariant()
    def each_side_holds_what_its_ledger_says(self) -> None:
        honest = 1 - self.hostile
        assert self.pair.balances(honest) == self.pair.expected(honest)

    @invariant()
    def one_state_per_version(self) -> None:
        assert versions_unique(self.pair.party(1 - self.hostile))

    @invariant()
    def no_quote_is_overfilled(self) -> None:
        return None

    def teardown(self) -> None:
        pair: AssetPair = self.pair
        honest = 1 - self.hostile
        party = pair.party(honest)
        ch = party.ch
        assert ch.latest is not None
        latest = ch.latest.state
        usable = {latest, *(s for s, _ in party.signed if s.version > latest.version)}
        for final in sorted(usable, key=lambda s: s.version):
            self._conclude_on(ch, final, honest)

    def _conclude_on(self, ch: Channel, final: State, honest: int) -> None:
        key = self.pair.party(honest).key
        window = CHAIN_START + 10**6
        effects: list[Effect] = []
        for inp in (
            ChainTime(window - 100),
            ChainDisputeRecorded(final.version, window, state_hash(final)),
            ChainTime(window),
        ):
            ch, out = transition(ch, inp, key)
            effects += out
        settles = [e for e in effects if isinstance(e, SubmitTxSettle)]
        assert settles and settles[-1].state == final, "the honest side can settle whatever is recorded"
        ch, out = transition(ch, ChainConcluded(final.version), key)
        effects += out
        told = _told(tuple(effects))
        assert ch.outcome is not None and ch.outcome.paid is not None
        for i, asset in enumerate(ch.assets):
            paid = ch.outcome.paid[i][honest]
            assert paid == self.pair.expected(honest)[asset] + told[asset], (asset, final.version, paid)


HostileTwoAssets.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_hostile_two_assets = HostileTwoAssets.TestCase

"""Two parties, two assets, random traffic: quotes and takes both ways (the leader's swap proposals and
the follower's take requests) beside payments of either asset, a moving clock (so quotes expire
mid-flight), dropped links, duplicated messages, restarts. After every step: one state per version,
both assets conserved, and each side's latest state pays it exactly what its own ledger says."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.crypto import Signature
from statechannel.core.errors import LocalError, Reason
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.quotes import Quote
from statechannel.core.types import ETH
from tests.core.harness import versions_unique
from tests.trading.harness import TOKEN, AssetPair

LOCAL_REFUSALS = {Reason.INSUFFICIENT_FUNDS, Reason.PIPELINE_FULL, Reason.BAD_AMOUNT, Reason.EXPIRED, Reason.OVERSIZE}


class TwoAssets(RuleBasedStateMachine):
    @initialize(
        eth=st.tuples(st.integers(0, 300), st.integers(1, 300)),
        token=st.tuples(st.integers(0, 300), st.integers(0, 300)),
    )
    def setup(self, eth: tuple[int, int], token: tuple[int, int]) -> None:
        self.pair = AssetPair(eth, token)
        self.totals = {ETH: sum(eth), TOKEN: sum(token)}
        self.quotes: dict[int, list[tuple[Quote, Signature]]] = {0: [], 1: []}  # by maker
        self.max_version = {0: 0, 1: 0}

    @rule(who=st.integers(0, 1), token=st.booleans(), amount=st.integers(1, 40))
    def pay(self, who: int, token: bool, amount: int) -> None:
        try:
            self.pair.pay_asset(who, TOKEN if token else ETH, amount)
        except LocalError as exc:
            assert exc.reason in (Reason.INSUFFICIENT_FUNDS, Reason.PIPELINE_FULL)

    @rule(
        maker=st.integers(0, 1),
        maker_sells=st.booleans(),
        token_base=st.booleans(),
        units=st.tuples(st.integers(1, 4), st.integers(1, 4)),
        size=st.integers(1, 60),
        ttl_ms=st.integers(1, 2_000),
    )
    def quote(
        self, maker: int, maker_sells: bool, token_base: bool, units: tuple[int, int], size: int, ttl_ms: int
    ) -> None:
        base, quote = (TOKEN, ETH) if token_base else (ETH, TOKEN)
        q = self.pair.quote(
            maker,
            maker_sells=maker_sells,
            base=base,
            quote=quote,
            base_unit=units[0],
            quote_unit=units[1],
            size=size,
            ttl_ms=ttl_ms,
        )
        self.quotes[maker].append(q)

    @precondition(lambda self: self.quotes[0] or self.quotes[1])
    @rule(taker=st.integers(0, 1), pick=st.integers(0, 1000), lots=st.integers(1, 12), odd=st.integers(0, 9))
    def take(self, taker: int, pick: int, lots: int, odd: int) -> None:
        offers = self.quotes[1 - taker]
        if not offers:
            return
        q, sig = offers[-1 - pick % len(offers)]
        amount = lots * q.base_unit + (1 if odd == 0 else 0)  # mostly whole at the price, sometimes not
        try:
            self.pair.take(taker, q, sig, amount)
        except LocalError as exc:
            assert exc.reason in LOCAL_REFUSALS, exc

    @precondition(lambda self: self.quotes[0] or self.quotes[1])
    @rule(
        taker=st.integers(0, 1),
        picks=st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 12), st.integers(0, 9)), min_size=2, max_size=6),
    )
    def take_many(self, taker: int, picks: list[tuple[int, int, int]]) -> None:
        """Several takes in one update, of one quote or several: each fills whole or is refused alone."""
        offers = self.quotes[1 - taker]
        if not offers:
            return
        batch = []
        for pick, lots, odd in picks:
            q, sig = offers[-1 - pick % len(offers)]
            batch.append((q, sig, lots * q.base_unit + (1 if odd == 0 else 0)))
        try:
            self.pair.take_many(taker, batch)
        except LocalError as exc:
            assert exc.reason is Reason.PIPELINE_FULL, exc

    @rule(ms=st.integers(1, 200))
    def tick(self, ms: int) -> None:
        self.pair.clock += ms

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
        self.pair.disconnect_and_reconnect()

    @rule(who=st.integers(0, 1))
    def restart(self, who: int) -> None:
        """A process restarts from its stored form (it saves before it sends); its link drops with it."""
        party = self.pair.party(who)
        stored = decode_channel(encode_channel(party.ch))
        assert stored == party.ch
        party.channel = stored
        self.pair.disconnect_and_reconnect()

    @invariant()
    def versions_only_grow(self) -> None:
        for i in (0, 1):
            latest = self.pair.party(i).ch.latest
            assert latest is not None and latest.state.version >= self.max_version[i]
            self.max_version[i] = latest.state.version

    @invariant()
    def both_assets_conserved_nobody_overdrawn(self) -> None:
        for party in (self.pair.a, self.pair.b):
            ch = party.ch
            assert ch.latest is not None
            ch.check_signed(ch.latest)
            for asset, (a, b) in zip(ch.assets, ch.balances(ch.latest.state), strict=True):
                assert a >= 0 and b >= 0 and a + b == self.totals[asset]

    @invariant()
    def each_side_holds_what_its_ledger_says(self) -> None:
        """Nothing reported waits for anything: what each side was told (sent, received, filled) is
        exactly what its latest both-signed state pays it."""
        for i in (0, 1):
            assert self.pair.balances(i) == self.pair.expected(i)

    @invariant()
    def one_state_per_version(self) -> None:
        assert versions_unique(self.pair.a) and versions_unique(self.pair.b)

    @invariant()
    def the_follower_proposes_nothing(self) -> None:
        assert not [msg for msg in self.pair.sent(1) if isinstance(msg, m.Proposal)]

    @invariant()
    def no_quote_is_overfilled(self) -> None:
        for maker in (0, 1):
            ch = self.pair.party(maker).ch
            made: dict[int, int] = {}
            for swap in self.pair.ledgers[maker].made:
                made[swap.quote.quote_id] = made.get(swap.quote.quote_id, 0) + swap.base_amount
            for q, _ in self.quotes[maker]:
                assert made.get(q.quote_id, 0) <= q.size
                assert swaps.filled(ch, q.quote_id) <= q.size

    def teardown(self) -> None:
        pair = self.pair
        pair.disconnect_and_reconnect()
        pair.deliver_all()
        assert pair.a.ch.latest == pair.b.ch.latest
        a = pair.a.ch
        assert a.pending == () and a.rolled == () and a.requests == () and pair.b.ch.requests == ()
        assert not (a.held_failed or a.held_take_failed), "all told once the link is quiet"
        for i in (0, 1):
            assert pair.balances(i) == pair.expected(i)
        for i in (0, 1):
            ledger, maker = pair.ledgers[i], pair.ledgers[1 - i]
            assert set(ledger.filled) | set(ledger.refused) == set(ledger.taken), "every take resolved once"
            assert sorted(s.base_amount for s in ledger.filled.values()) == sorted(s.base_amount for s in maker.made)
            party = pair.party(i)
            assert set(party.sent) | party.failed == set(party.requested)


TwoAssets.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_two_assets = TwoAssets.TestCase

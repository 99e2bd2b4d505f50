"""Swaps through the pure channel machine: prices, every refusal reason of either maker, pipelining, takes
racing both ways, a hostile maker, lost and duplicated messages, and the bounded record of fills.

Two flows (decision 0007). The leader A takes B's quotes with a `ProposeSwap`; B, the maker, countersigns
or answers a `Reject` naming the take. The follower B takes A's quotes with a `TakeRequest`; A, the
maker, carries the takes it accepts in a `ProposeFill` (listing the others as refused) or answers a
`Refuse` when none can go."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import MAX_IN_FLIGHT, Kind
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    ActionCloseCooperative,
    ChainConcluded,
    ChainDisputeRecorded,
    NotifyFilled,
    ReceiveMessage,
    SendMessage,
)
from statechannel.core.machine import receive, transition
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.quotes import Quote, Swap, sign_quote, swap_transfers
from statechannel.core.types import ETH
from tests.core.harness import CHAIN_START, DOMAIN, versions_unique
from tests.trading.harness import ASSETS, TOKEN, AssetPair


def settled(pair: AssetPair) -> None:
    """Both agree, nothing is in flight or held, every take and payment was resolved once, and each
    side's latest state pays it exactly what its own ledger says."""
    a, b = pair.a.ch, pair.b.ch
    assert a.latest == b.latest
    assert a.pending == () and a.rolled == () and b.requests == () and a.requests == ()
    assert a.held_failed == () and a.held_take_failed == ()
    for i in (0, 1):
        ledger = pair.ledgers[i]
        assert set(ledger.filled) | set(ledger.refused) == set(ledger.taken)
        assert not set(ledger.filled) & set(ledger.refused)
        assert pair.balances(i) == pair.expected(i)
        party = pair.party(i)
        assert set(party.sent) | party.failed == set(party.requested)
    assert versions_unique(pair.a) and versions_unique(pair.b)


def test_a_take_swaps_both_assets_at_exactly_the_quoted_price() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, maker_sells=True, base_unit=3, quote_unit=7, size=90)  # A sells TOKEN, 7 ETH per 3
    pair.take(1, q, sig, 30)
    request = pair.sent(1)[-1]
    assert isinstance(request, m.TakeRequest), "the follower asks; it signs no state"
    pair.deliver_all()
    (fill,) = [msg for msg in pair.sent(0) if isinstance(msg, m.ProposeFill)]
    assert fill.request == request.rid and fill.taken == [0] and fill.refused == []
    assert pair.a.ch.latest == pair.b.ch.latest
    assert pair.balances(0) == {ETH: 1000 + 70, TOKEN: 1000 - 30}
    assert pair.balances(1) == {ETH: 1000 - 70, TOKEN: 1000 + 30}
    (filled,) = pair.ledgers[1].filled.values()
    assert filled.base_amount == 30 and filled.quote_amount == 70
    assert [s.base_amount for s in pair.ledgers[0].made] == [30]
    assert swaps.filled(pair.a.ch, q.quote_id) == 30
    assert not any(isinstance(e, NotifyFilled) and e.maker for e in pair.b.effects)
    settled(pair)


@pytest.mark.parametrize("maker", [0, 1])
@pytest.mark.parametrize("maker_sells", [True, False])
def test_every_direction(maker: int, maker_sells: bool) -> None:
    pair = AssetPair()
    taker = 1 - maker
    q, sig = pair.quote(maker, maker_sells=maker_sells, base=ETH, quote=TOKEN, base_unit=1, quote_unit=5)
    pair.take(taker, q, sig, 20)
    pair.deliver_all()
    sign = 1 if maker_sells else -1  # the maker gives the base when it sells
    assert pair.balances(maker) == {ETH: 1000 - sign * 20, TOKEN: 1000 + sign * 100}
    assert pair.balances(taker) == {ETH: 1000 + sign * 20, TOKEN: 1000 - sign * 100}
    assert swaps.filled(pair.party(maker).ch, q.quote_id) == 20
    kind = m.ProposeSwap if taker == 0 else m.ProposeFill
    assert [type(msg) for msg in pair.sent(0) if isinstance(msg, m.Proposal)][-1] is kind
    settled(pair)


class Forger:
    """The leader as taker, misbehaving: signs swap proposals by hand, bypassing its own checks, and
    hands them to the maker B, built on B's latest unless told otherwise."""

    def __init__(self, pair: AssetPair) -> None:
        self.pair = pair

    def propose(
        self,
        q: Quote,
        sig: Signature,
        base_amount: int,
        transfers: tuple[int, ...] | None = None,
        base: int | None = None,
        **state: object,
    ) -> m.Reject | None:
        pair, a, b = self.pair, self.pair.a, self.pair.b
        latest = b.ch.latest
        assert latest is not None
        swap = Swap(q, sig, base_amount)
        if transfers is None:
            transfers = swap_transfers(latest.state, swap, maker=1)
        fields: dict[str, object] = {"version": b.ch.signed_upto + 1, "transfers": transfers, **state}
        new = replace(latest.state, **fields)  # type: ignore[arg-type]
        on = latest.state.version if base is None else base
        msg = m.ProposeSwap.of(new, a.key.sign_digest(b.ch.digest(new)), 77, on, (swap,))
        before = b.ch
        ch, effects = receive(b.ch, m.decode(m.encode(msg)), b.key, pair.clock)
        if isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Reject):
            assert ch == before, "a refusal changes nothing"
            return effects[0].message
        assert isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Accept)
        b.channel = ch
        return None

    def reason(self, *args: object, **kwargs: object) -> str:
        reject = self.propose(*args, **kwargs)  # type: ignore[arg-type]
        assert reject is not None
        assert reject.take in (-1, 0)
        return reject.reason


class ForgedRequest:
    """The follower as taker, misbehaving: sends take requests by hand, bypassing its own checks, to the
    maker A, which carries the takes it accepts in a fill and refuses the others."""

    def __init__(self, pair: AssetPair) -> None:
        self.pair = pair
        self.rid = 1_000

    def send(self, *takes: Swap, msg: m.TakeRequest | None = None) -> m.Refuse | m.ProposeFill:
        pair, a = self.pair, self.pair.a
        self.rid += 1
        request = msg or m.TakeRequest.of(a.ch.channel_id, self.rid, takes)
        before = a.ch
        ch, effects = receive(a.ch, m.decode(m.encode(request)), a.key, pair.clock)
        (effect,) = effects
        assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Refuse | m.ProposeFill)
        if isinstance(effect.message, m.Refuse):
            assert ch.pending == before.pending and ch.fills == before.fills, "a refusal reserves nothing"
        a.channel = ch
        return effect.message

    def reason(self, q: Quote, sig: Signature, base_amount: int) -> str:
        refuse = self.send(Swap(q, sig, base_amount))
        assert isinstance(refuse, m.Refuse)
        if refuse.takes:  # refused as maker, take by take
            (take,) = refuse.takes
            assert take.index == 0 and take.reason == refuse.reason
        # else refused whole at intake (a quote that is not mine is never queued): its reason is every take's
        return refuse.reason


def test_every_refusal_of_the_follower_as_maker_names_its_reason() -> None:
    pair = AssetPair()
    forger = Forger(pair)
    q, sig = pair.quote(1, maker_sells=True, base_unit=2, quote_unit=3, size=40, ttl_ms=5_000)  # B sells TOKEN
    latest = pair.b.ch.latest
    assert latest is not None
    exact = swap_transfers(latest.state, Swap(q, sig, 10), maker=1)

    # the state gives the maker less than the quote: 10 TOKEN for 14 ETH instead of 15
    assert forger.reason(q, sig, 10, transfers=(exact[0] - 1, exact[1])) == "altered"
    assert forger.reason(q, sig, 10, transfers=(exact[0], exact[1] - 1)) == "altered"  # more base than agreed
    assert forger.reason(q, sig, 10, is_final=True) == "altered"
    assert forger.reason(q, sig, 10, app_data=b"\x01" * 32) == "illegal_move"  # no proposal changes app data
    # the quote itself altered (a better price): no longer the maker's signature
    assert forger.reason(replace(q, quote_unit=2), sig, 10) == "bad_signature"
    # a quote the taker signed itself
    assert forger.reason(q, sign_quote(DOMAIN, q, pair.a.key), 10) == "bad_signature"
    assert forger.reason(replace(q, channel_id=b"\x09" * 32), sig, 10) == "wrong_channel"
    assert forger.reason(q, sig, 42) == "oversize"
    assert forger.reason(q, sig, 3, transfers=exact) == "bad_amount"  # 3 * 3 / 2 is not whole
    # one state per version: nothing at or below what the maker signed, nothing not on its latest
    assert forger.reason(q, sig, 10, version=pair.b.ch.signed_upto) == "stale_version"
    assert forger.reason(q, sig, 10, base=latest.state.version - 1) == "bad_base"
    pair.clock = q.expires_at_ms
    assert forger.reason(q, sig, 10) == "expired"
    pair.clock -= 1
    assert forger.propose(q, sig, 30) is None  # the last millisecond still counts
    assert forger.reason(q, sig, 12) == "oversize"  # 10 left
    assert forger.propose(q, sig, 10, version=pair.b.ch.signed_upto + 5) is None  # versions may skip
    assert forger.reason(q, sig, 2) == "oversize"
    assert swaps.filled(pair.b.ch, q.quote_id) == 40

    poor = AssetPair(token=(1000, 5))
    q, sig = poor.quote(1, maker_sells=True, size=100)
    assert Forger(poor).reason(q, sig, 6) == "insufficient_funds"  # B holds only 5 TOKEN


def test_every_refusal_of_the_leader_as_maker_names_its_reason() -> None:
    pair = AssetPair()
    forged = ForgedRequest(pair)
    q, sig = pair.quote(0, maker_sells=True, base_unit=2, quote_unit=3, size=40, ttl_ms=5_000)  # A sells TOKEN
    assert forged.reason(replace(q, quote_unit=2), sig, 10) == "bad_signature"
    assert forged.reason(q, sign_quote(DOMAIN, q, pair.b.key), 10) == "bad_signature"  # the taker's own
    assert forged.reason(replace(q, channel_id=b"\x09" * 32), sig, 10) == "wrong_channel"
    assert forged.reason(q, sig, 42) == "oversize"
    assert forged.reason(q, sig, 3) == "bad_amount"  # 3 * 3 / 2 is not whole
    pair.clock = q.expires_at_ms
    assert forged.reason(q, sig, 10) == "expired"
    pair.clock -= 1
    fill = forged.send(Swap(q, sig, 30))  # the last millisecond still counts
    assert isinstance(fill, m.ProposeFill) and fill.taken == [0] and fill.refused == []
    assert forged.reason(q, sig, 12) == "oversize"  # 10 left: the fill in flight holds the rest
    assert isinstance(forged.send(Swap(q, sig, 10)), m.ProposeFill)
    assert forged.reason(q, sig, 2) == "oversize"
    assert swaps.filled(pair.a.ch, q.quote_id) == 40

    # one request, several takes: those that pass are carried in one fill, the others refused in it
    q2, sig2 = pair.quote(0, size=10)
    fill = forged.send(Swap(q2, sig2, 4), Swap(q2, sig2, 3), Swap(q2, sig2, 7), Swap(q2, sig2, 1))
    assert isinstance(fill, m.ProposeFill) and fill.taken == [0, 1, 3]
    assert [(r.index, r.reason) for r in fill.refused] == [(2, "oversize")]
    # a request none of whose takes pass is refused whole, each take with its reason
    refuse = forged.send(Swap(q2, sig2, 4), Swap(q2, sig2, 5))  # 2 left
    assert isinstance(refuse, m.Refuse) and refuse.reason == "oversize"  # the first take's reason
    assert [(r.index, r.reason) for r in refuse.takes] == [(0, "oversize"), (1, "oversize")]
    # a take of a quote that is not mine is refused with its whole request, never queued
    refuse = forged.send(Swap(q2, sig2, 1), Swap(replace(q2, size=11), sig2, 1))
    assert isinstance(refuse, m.Refuse) and refuse.reason == "bad_signature" and refuse.takes == []
    # a malformed request is refused whole
    empty = msgspec.structs.replace(m.TakeRequest.of(pair.a.ch.channel_id, 5_000, (Swap(q2, sig2, 1),)), takes=[])
    refuse = forged.send(msg=empty)
    assert isinstance(refuse, m.Refuse) and (refuse.rid, refuse.reason) == (5_000, "bad_message")

    poor = AssetPair(token=(5, 1000))
    q, sig = poor.quote(0, maker_sells=True, size=100)
    assert ForgedRequest(poor).reason(q, sig, 6) == "insufficient_funds"  # A holds only 5 TOKEN


def test_the_follower_countersigns_a_fill_only_of_its_takes_at_their_quotes() -> None:
    """The taker's check of what the leader carries for it: exactly the takes it names, at the quotes."""
    pair = AssetPair()
    q, sig = pair.quote(0, size=50)
    pair.take_many(1, [(q, sig, 5), (q, sig, 6)])
    pair.deliver(0)
    real = pair.links[1].popleft()
    assert isinstance(real, m.ProposeFill) and real.taken == [0, 1]
    state = real.state.to_state()

    def forged(**changes: object) -> m.ProposeFill:
        s = state
        if "transfers" in changes:
            s = replace(state, transfers=changes.pop("transfers"))  # type: ignore[arg-type]
        sig_a = pair.a.key.sign_digest(pair.a.ch.digest(s))
        msg = msgspec.structs.replace(real, state=m.WireState.of(s), sig=sig_a.to_bytes())
        return msgspec.structs.replace(msg, **changes)

    cases = {
        "altered": forged(transfers=(state.transfers[0] - 1, state.transfers[1])),  # 1 ETH short
        "bad_message": forged(taken=[0]),  # take 1 neither carried nor refused
        "unknown_request": forged(request=99),
    }
    also_bad = [forged(taken=[0, 1], refused=[m.TakeRefusal(1, "oversize", "")]), forged(taken=[1, 0])]
    before = pair.b.ch
    for reason, msg in [*cases.items(), *(("bad_message", x) for x in also_bad)]:
        ch, effects = receive(pair.b.ch, m.decode(m.encode(msg)), pair.b.key, pair.clock)
        effect, *failed = effects
        assert isinstance(effect, SendMessage) and isinstance(effect.message, m.Reject)
        assert effect.message.reason == reason, (reason, effect.message)
        assert ch.latest == before.latest and ch.signed_upto == before.signed_upto, "nothing signed"
        if effect.message.request in {r.rid for r in before.requests}:  # blamed: dead on both sides, fails now
            assert ch.requests == () and [type(e).__name__ for e in failed] == ["NotifyTakeFailed"] * 2
        else:
            assert ch == before and failed == []
    pair.links[1].appendleft(real)
    pair.deliver_all()  # refused forgeries never reached A: the real fill goes through
    assert len(pair.ledgers[1].filled) == 2
    settled(pair)


def test_a_take_request_whose_fill_the_follower_refuses_fails_at_once() -> None:
    """A fill that is not B's takes at their quotes is refused blaming the request: the leader drops it
    (it never carries it again), so the follower drops it too and its take fails now, with the reason,
    rather than waiting for a reconnect that tells it only "unknown_request"."""
    pair = AssetPair()
    q, sig = pair.quote(0, size=50)
    swap = pair.take(1, q, sig, 5)
    pair.deliver(0)
    real = pair.links[1].popleft()
    assert isinstance(real, m.ProposeFill)
    state = real.state.to_state()
    short = replace(state, transfers=(state.transfers[0] - 1, state.transfers[1]))  # 1 ETH short for A
    sig_a = pair.a.key.sign_digest(pair.a.ch.digest(short))
    pair.links[1].append(msgspec.structs.replace(real, state=m.WireState.of(short), sig=sig_a.to_bytes()))
    pair.deliver_all()
    ((reason, request),) = [(r.reason, r.request) for r in pair.rejects(1)]
    assert (reason, request) == ("altered", real.request)
    assert pair.a.ch.requests == () and pair.a.ch.pending == (), "the leader drops the blamed request"
    assert pair.b.ch.requests == (), "so the follower drops it too"
    assert pair.ledgers[1].refused == {swap.take_id: "altered"}


def test_neither_a_plain_propose_nor_the_follower_can_smuggle_a_swap() -> None:
    pair = AssetPair()
    q, sig = pair.quote(1)  # B sells TOKEN: a plain update taking it moves TOKEN away from B
    latest = pair.b.ch.latest
    assert latest is not None
    new = replace(
        latest.state, version=latest.state.version + 1, transfers=swap_transfers(latest.state, Swap(q, sig, 5), 1)
    )
    on = latest.state.version
    msg = m.Propose(m.WireState.of(new), pair.a.key.sign_digest(pair.b.ch.digest(new)).to_bytes(), 5, on)
    _, effects = receive(pair.b.ch, msg, pair.b.key, pair.clock)
    assert isinstance(effects[0], SendMessage) and isinstance(effects[0].message, m.Reject)
    assert effects[0].message.reason == "illegal_move"
    # the follower proposes nothing: a swap signed by B is no message the leader takes
    q, sig = pair.quote(0)
    theirs = m.ProposeSwap.of(new, pair.b.key.sign_digest(pair.a.ch.digest(new)), 5, on, (Swap(q, sig, 5),))
    with pytest.raises(RemoteError) as err:
        receive(pair.a.ch, theirs, pair.a.key, pair.clock)
    assert err.value.reason is Reason.WRONG_ROLE


@pytest.mark.parametrize("taker", [0, 1])
def test_a_take_needs_the_makers_clock(taker: int) -> None:
    pair = AssetPair()
    maker = pair.party(1 - taker)
    q, sig = pair.quote(1 - taker)
    pair.take(taker, q, sig, 5)
    msg = pair.links[1 - taker].popleft()
    assert isinstance(msg, m.ProposeSwap if taker == 0 else m.TakeRequest)
    with pytest.raises(LocalError) as err:
        transition(maker.ch, ReceiveMessage(msg), maker.key)
    assert err.value.reason is Reason.BAD_PARAMS


@pytest.mark.parametrize("taker", [0, 1])
def test_receiving_a_take_without_a_clock_raises_and_tells_the_peer_nothing(taker: int) -> None:
    """A missing clock is the caller's mistake (LocalError), not the peer's: `receive` must raise, not
    answer with a Reject (or Refuse) that fails the peer's valid take for good."""
    pair = AssetPair()
    maker = pair.party(1 - taker)
    q, sig = pair.quote(1 - taker)
    pair.take(taker, q, sig, 5)
    msg = pair.links[1 - taker].popleft()
    with pytest.raises(LocalError) as err:
        receive(maker.ch, msg, maker.key)
    assert err.value.reason is Reason.BAD_PARAMS


@pytest.mark.parametrize("taker", [0, 1])
def test_the_taker_refuses_locally_what_it_can_tell(taker: int) -> None:
    maker = 1 - taker
    pair = AssetPair(eth=(10, 1000) if taker == 0 else (1000, 10))
    q, sig = pair.quote(maker, base_unit=1, quote_unit=2, size=100, ttl_ms=1_000)
    cases: list[tuple[Quote, Signature, int, Reason]] = [
        (q, sig, 6, Reason.INSUFFICIENT_FUNDS),  # 12 ETH, the taker has 10
        (q, sig, 101, Reason.OVERSIZE),
        (q, sig, 0, Reason.BAD_AMOUNT),
        (replace(q, quote_unit=1), sig, 2, Reason.BAD_SIGNATURE),
        (replace(q, channel_id=b"\x09" * 32), sig, 2, Reason.WRONG_CHANNEL),
        (q, sign_quote(DOMAIN, q, pair.party(taker).key), 2, Reason.BAD_SIGNATURE),  # its own: not the peer's
    ]
    for quote, signature, amount, reason in cases:
        with pytest.raises(LocalError) as err:
            pair.take(taker, quote, signature, amount)
        assert err.value.reason is reason
    big, big_sig = pair.quote(maker, base_unit=1, quote_unit=1, size=10**6)
    with pytest.raises(LocalError) as err:
        pair.take(taker, big, big_sig, 1001)  # the maker has only 1000 TOKEN to deliver
    assert err.value.reason is Reason.INSUFFICIENT_FUNDS
    pair.clock += 1_000
    with pytest.raises(LocalError) as err:
        pair.take(taker, q, sig, 2)
    assert err.value.reason is Reason.EXPIRED
    ch = pair.party(taker).ch
    assert ch.pending == () and ch.requests == () and not pair.links[maker]


def test_the_leaders_pipelined_takes_and_an_oversize_one_rolls_back_only_itself() -> None:
    pair = AssetPair()
    q, sig = pair.quote(1, size=10)
    for _ in range(4):
        pair.take(0, q, sig, 3)  # 3 + 3 + 3 fit, the fourth does not
    assert [p.kind for p in pair.a.ch.pending] == [Kind.SWAP] * 4
    assert [p.base for p in pair.a.ch.pending[1:]] == [p.state.version for p in pair.a.ch.pending[:-1]]
    pair.deliver_all()
    ((take, reason),) = [(r.take, r.reason) for r in pair.rejects(1)]
    assert (take, reason) == (0, "oversize")
    ledger = pair.ledgers[0]
    assert len(ledger.filled) == 3 and list(ledger.refused.values()) == ["oversize"]
    assert pair.balances(0) == {ETH: 1000 - 18, TOKEN: 1000 + 9}
    assert swaps.filled(pair.b.ch, q.quote_id) == 9
    for _ in range(MAX_IN_FLIGHT):
        pair.take(0, *pair.quote(1, size=1), 1)
    with pytest.raises(LocalError) as err:
        pair.take(0, q, sig, 1)
    assert err.value.reason is Reason.PIPELINE_FULL
    pair.deliver_all()
    assert len(ledger.filled) == 3 + MAX_IN_FLIGHT
    settled(pair)


def test_the_followers_pipelined_take_requests_and_an_oversize_one_refused_alone() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0, size=10)
    for _ in range(4):
        pair.take(1, q, sig, 3)  # 3 + 3 + 3 fit, the fourth does not
    assert [len(r.takes) for r in pair.b.ch.requests] == [1] * 4 and pair.b.ch.pending == ()
    for _ in range(4):
        pair.deliver(0)
    assert [p.kind for p in pair.a.ch.pending] == [Kind.FILL] * 3, "three fills in flight, built on each other"
    ((reason, takes),) = [(r.reason, [t.reason for t in r.takes]) for r in pair.refuses()]
    assert (reason, takes) == ("oversize", ["oversize"])
    pair.deliver_all()
    ledger = pair.ledgers[1]
    assert len(ledger.filled) == 3 and list(ledger.refused.values()) == ["oversize"]
    assert pair.balances(1) == {ETH: 1000 - 18, TOKEN: 1000 + 9}
    assert swaps.filled(pair.a.ch, q.quote_id) == 9
    for _ in range(MAX_IN_FLIGHT):
        pair.take(1, *pair.quote(0, size=1), 1)
    with pytest.raises(LocalError) as err:
        pair.take(1, q, sig, 1)
    assert err.value.reason is Reason.PIPELINE_FULL
    pair.deliver_all()
    assert len(ledger.filled) == 3 + MAX_IN_FLIGHT
    settled(pair)


def test_a_refusal_mid_pipeline_retries_the_later_takes_and_payments() -> None:
    """B refuses A's second take: A's later proposals were built on it, so they are refused too (not on
    B's latest); A proposes again what they carried (its payment, B's payment request, its other take)."""
    pair = AssetPair()
    q, sig = pair.quote(1, size=5)
    pair.take(0, q, sig, 5)
    refused = pair.take(0, q, sig, 1)  # oversize once the first filled the quote
    pair.pay_asset(0, TOKEN, 7)
    pair.take(0, *pair.quote(1, size=5), 2)
    pair.pay_asset(1, ETH, 3)  # B's request: A carries it in a proposal built on the refused one
    pair.deliver(0)
    assert [p.kind for p in pair.a.ch.pending] == [Kind.SWAP, Kind.SWAP, Kind.PAY, Kind.SWAP, Kind.PAY]
    pair.deliver_all()
    first, *later = [(r.take, r.reason) for r in pair.rejects(1)]
    assert first == (0, "oversize")
    assert {reason for _, reason in later} == {"bad_base"}, "the later ones are not on B's latest"
    ledger = pair.ledgers[0]
    assert ledger.refused == {refused.take_id: "oversize"}
    assert len(ledger.filled) == 2 and set(pair.a.sent) == set(pair.a.requested)
    assert set(pair.b.sent) == set(pair.b.requested) and pair.a.ch.rolled == ()
    assert pair.balances(0) == {ETH: 1000 - 14 + 3, TOKEN: 1000 + 5 + 2 - 7}
    settled(pair)


def test_a_refused_take_request_costs_the_later_requests_nothing() -> None:
    """B's requests are independent: A refuses the one that no longer fits and carries the others; nothing
    is rolled back, because nothing B asked for was signed on top of the refused one."""
    pair = AssetPair()
    q, sig = pair.quote(0, size=5)
    pair.take(1, q, sig, 5)
    refused = pair.take(1, q, sig, 1)  # oversize once the first filled the quote
    pair.pay_asset(1, TOKEN, 7)
    pair.take(1, *pair.quote(0, size=5), 2)
    pair.deliver_all()
    assert [r.reason for r in pair.refuses()] == ["oversize"] and pair.rejects(1) == []
    ledger = pair.ledgers[1]
    assert ledger.refused == {refused.take_id: "oversize"} and len(ledger.filled) == 2
    assert set(pair.b.sent) == set(pair.b.requested)
    assert pair.balances(1) == {ETH: 1000 - 14, TOKEN: 1000 + 5 + 2 - 7}
    settled(pair)


def _deliver_alternating(pair: AssetPair) -> None:
    """Both sides' messages cross: one to B, then one to A, and so on."""
    while pair.links[0] or pair.links[1]:
        for to in (1, 0):
            if pair.links[to]:
                pair.deliver(to)


@pytest.mark.parametrize("crossing", [False, True])
def test_both_take_at_once_no_version_is_signed_twice(crossing: bool) -> None:
    """Takes both ways, with payments both ways, all at once: the leader orders them, one state per
    version, and everything fills (there are no ties to lose)."""
    pair = AssetPair()
    sells = pair.quote(0)  # A sells TOKEN at 2 ETH
    buys = pair.quote(1, maker_sells=False)  # B buys TOKEN at 2 ETH
    pair.pay_asset(0, ETH, 11)
    pair.take(1, *sells, 4)  # B buys 4 TOKEN for 8 ETH
    pair.take(0, *buys, 3)  # A sells 3 TOKEN for 6 ETH
    pair.pay_asset(1, TOKEN, 5)
    pair.take(1, *sells, 2)
    if crossing:
        _deliver_alternating(pair)
    pair.deliver_all()
    assert pair.rejects(1) == [] and pair.refuses() == []
    assert len(pair.ledgers[0].filled) == 1 and len(pair.ledgers[1].filled) == 2
    assert pair.balances(1) == {ETH: 1000 + 11 - 8 - 6 - 4, TOKEN: 1000 + 4 + 3 - 5 + 2}
    settled(pair)


def test_the_makers_payment_request_and_the_leaders_take_of_its_quote_both_go() -> None:
    pair = AssetPair()
    q, sig = pair.quote(1, maker_sells=False)  # B buys TOKEN at 2 ETH
    pair.pay_asset(1, ETH, 9)
    pair.take(0, q, sig, 4)  # A sells 4 TOKEN to B for 8 ETH
    _deliver_alternating(pair)
    assert len(pair.ledgers[0].filled) == 1 and pair.b.sent and not pair.b.failed
    assert pair.balances(0) == {ETH: 1000 + 8 + 9, TOKEN: 1000 - 4}
    settled(pair)


def _hostile_reject(pair: AssetPair, reason: str = "insufficient_funds", take: int = 0) -> m.ProposeSwap:
    """B takes A's next proposal off the link (keeping A's signature) and answers it with a Reject."""
    msg = pair.links[1].popleft()
    assert isinstance(msg, m.ProposeSwap)
    pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, reason, "no", take))
    pair.deliver(0)  # A rolls back, holds the take's failure, and bumps
    return msg


def test_a_hostile_makers_refusal_of_a_take_is_held_until_superseded() -> None:
    pair = AssetPair(seed="hostile take")
    q, sig = pair.quote(1, size=10)
    swap = pair.take(0, q, sig, 4)
    _hostile_reject(pair)
    a = pair.a.ch
    assert len(a.rolled) == 1 and len(a.pending) == 1 and a.pending[0].kind is Kind.PAY, "rolled back, bumped"
    assert [h.swap for h in a.held_take_failed] == [swap]
    assert pair.ledgers[0].refused == {} and pair.ledgers[0].filled == {}, "B may still use the refused state"
    pair.deliver_all()  # B countersigns the bump: the refused take can never be used now
    assert pair.ledgers[0].refused == {swap.take_id: "insufficient_funds"}
    settled(pair)


def test_a_take_a_hostile_maker_refused_is_told_filled_if_the_chain_concludes_on_it() -> None:
    pair = AssetPair(seed="hostile close")
    q, sig = pair.quote(1, size=10)  # B sells TOKEN at 2 ETH
    swap = pair.take(0, q, sig, 4)
    msg = _hostile_reject(pair)
    pair.links[1].clear()  # B ignores the bump and closes with the refused state, countersigned by itself
    refused = msg.state.to_state()
    pair.feed(pair.a, ChainDisputeRecorded(refused.version, CHAIN_START + 100, state_hash(refused)))
    assert pair.ledgers[0].filled == {} and pair.ledgers[0].refused == {}, "decided only at the conclusion"
    pair.feed(pair.a, ChainConcluded(refused.version))
    assert pair.ledgers[0].filled == {swap.take_id: swap} and pair.ledgers[0].refused == {}
    outcome = pair.a.ch.outcome
    assert outcome is not None and outcome.paid is not None and not outcome.loss
    assert {asset: paid[0] for asset, paid in zip(ASSETS, outcome.paid, strict=True)} == pair.expected(0)
    (tally,) = pair.a.ch.positions
    assert (tally.base_net, tally.quote_net, tally.trades) == (4, -8, 1)


@pytest.mark.parametrize("blamed", [False, True])
def test_a_fill_the_hostile_taker_refused_counts_once_and_only_if_the_chain_concludes_on_it(blamed: bool) -> None:
    """B refuses A's fill of B's own take request (keeping A's signature). Unblamed, the request waits
    again and A carries it in a new fill on its latest: the two fills are alternatives, so the quote is
    reserved once. Blamed (B dropped the request), the quote is free again. Either way, if B closes with
    the refused fill after all, A is told it made that fill, once."""
    pair = AssetPair(seed="hostile fill")
    q, sig = pair.quote(0, size=10)
    pair.take(1, q, sig, 10)
    pair.deliver(0)
    msg = pair.links[1].popleft()
    assert isinstance(msg, m.ProposeFill) and swaps.filled(pair.a.ch, q.quote_id) == 10
    blame = msg.request if blamed else 0
    pair.links[0].append(m.Reject(msg.state.channel_id, msg.state.version, msg.pid, "altered", "no", -1, blame))
    pair.deliver(0)
    a = pair.a.ch
    assert [p.state.version for p in a.rolled] == [msg.state.version]
    (again,) = a.pending
    assert again.base == msg.base and again.state.version > msg.state.version
    if blamed:
        assert again.kind is Kind.PAY and swaps.filled(a, q.quote_id) == 0, "bumped; the quote is free again"
    else:
        assert again.kind is Kind.FILL and swaps.filled(a, q.quote_id) == 10, "the same take, reserved once"
    pair.links[1].clear()
    refused = msg.state.to_state()
    pair.feed(pair.a, ChainDisputeRecorded(refused.version, CHAIN_START + 100, state_hash(refused)))
    pair.feed(pair.a, ChainConcluded(refused.version))
    assert [s.base_amount for s in pair.ledgers[0].made] == [10]
    outcome = pair.a.ch.outcome
    assert outcome is not None and outcome.paid is not None
    assert {asset: paid[0] for asset, paid in zip(ASSETS, outcome.paid, strict=True)} == pair.expected(0)


@pytest.mark.parametrize("taker", [0, 1])
def test_lost_accept_then_resend_fills_once(taker: int) -> None:
    pair = AssetPair()
    maker = 1 - taker
    q, sig = pair.quote(maker, size=10)
    pair.take(taker, q, sig, 10)
    if taker == 1:
        pair.deliver(0)  # A carries the request in a fill
    pair.deliver(1)  # B countersigns; its Accept is lost
    assert isinstance(pair.links[0][0], m.Accept)
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert len(pair.ledgers[taker].filled) == 1 and len(pair.ledgers[maker].made) == 1
    assert swaps.filled(pair.party(maker).ch, q.quote_id) == 10
    settled(pair)


def test_a_take_request_refused_after_a_rollback_is_answered_again_after_a_lost_link() -> None:
    """B's take request rides in A's fill built on A's own take; B refuses that take (its quote expired),
    so A rolls back both, and the request, waiting again, is refused (A's quote expired too). That Refuse
    is lost in a drop. B sends its request again on reconnect: A must answer it (it will never carry it),
    not ignore it as still on its way because a rolled-back proposal once carried it."""
    pair = AssetPair()
    mine, theirs = pair.quote(0, size=10, ttl_ms=100), pair.quote(1, size=10, ttl_ms=100)
    pair.take(0, *theirs, 2)  # A's swap proposal
    swap = pair.take(1, *mine, 3)  # B's take request
    pair.deliver(0)  # A carries it in a fill built on its swap
    pair.clock += 100  # both quotes expire
    pair.deliver(1)  # B refuses A's swap
    pair.deliver(0)  # A rolls back both, refuses the request, bumps
    assert [type(msg) for msg in pair.links[1]][-2:] == [m.Refuse, m.Propose]
    pair.disconnect_and_reconnect()  # the Refuse and the bump are lost; B resends its request
    pair.deliver_all()
    assert pair.a.ch.rolled == () and pair.a.ch.pending == ()
    assert pair.b.ch.requests == (), "the resent request is answered"
    assert swap.take_id in pair.ledgers[1].refused
    settled(pair)


def _deliver_all_twice(pair: AssetPair) -> None:
    """Every message arrives twice in a row."""
    while pair.links[0] or pair.links[1]:
        to = 0 if pair.links[0] else 1
        pair.links[to].appendleft(pair.links[to][0])
        pair.deliver(to)
        pair.deliver(to)


@pytest.mark.parametrize("taker", [0, 1])
def test_every_message_twice_is_not_counted_twice(taker: int) -> None:
    pair = AssetPair()
    maker = 1 - taker
    q, sig = pair.quote(maker, size=10)
    pair.take(taker, q, sig, 10)
    pair.take(taker, *pair.quote(maker, size=10), 4)
    _deliver_all_twice(pair)
    assert swaps.filled(pair.party(maker).ch, q.quote_id) == 10
    assert len(pair.ledgers[maker].made) == 2 and not pair.ledgers[taker].refused
    settled(pair)


@pytest.mark.parametrize("taker", [0, 1])
def test_a_take_lost_in_a_drop_is_sent_again(taker: int) -> None:
    pair = AssetPair()
    q, sig = pair.quote(1 - taker, size=10)
    pair.take(taker, q, sig, 4)
    pair.disconnect_and_reconnect()  # the proposal (or request) is lost; the resync sends it again
    pair.deliver_all()
    assert len(pair.ledgers[taker].filled) == 1 and swaps.filled(pair.party(1 - taker).ch, q.quote_id) == 4
    settled(pair)


@pytest.mark.parametrize("maker", [0, 1])
def test_fill_records_expire_with_their_quotes_and_are_bounded(maker: int, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = AssetPair()
    taker, party = 1 - maker, pair.party(maker)
    first = pair.quote(maker, size=10, ttl_ms=1_000)
    pair.take(taker, *first, 1)
    pair.deliver_all()
    assert [f.quote_id for f in party.ch.fills] == [first[0].quote_id]
    pair.clock += 1_000
    second = pair.quote(maker, size=10, ttl_ms=1_000)
    pair.take(taker, *second, 1)
    pair.deliver_all()
    assert [f.quote_id for f in party.ch.fills] == [second[0].quote_id]  # the expired record is gone
    monkeypatch.setattr(swaps, "MAX_LIVE_QUOTES", 2)
    pair.take(taker, *pair.quote(maker), 1)
    pair.take(taker, *pair.quote(maker), 1)
    pair.deliver_all()
    assert list(pair.ledgers[taker].refused.values()) == ["quote_limit"]
    assert len(party.ch.fills) == 2
    settled(pair)


def test_a_channel_with_swaps_in_flight_survives_its_stored_form() -> None:
    pair = AssetPair()
    mine, theirs = pair.quote(0, size=10), pair.quote(1, size=10)
    pair.take(1, *mine, 2)
    pair.take(0, *theirs, 2)
    pair.deliver_all()
    pair.take(0, *theirs, 1)
    _hostile_reject(pair)  # A: a refused take held, and its bump in flight
    pair.take_many(1, [(*mine, 2), (*mine, 7)])  # A carries the 2 and refuses the 7 (only 6 left)
    pair.deliver(0)
    pair.take(1, *mine, 1)  # a request A has not seen yet
    pair.take(0, *theirs, 3)
    a, b = pair.a.ch, pair.b.ch
    assert [p.kind for p in a.pending] == [Kind.PAY, Kind.FILL, Kind.SWAP]
    assert a.pending[1].refused and a.pending[1].swaps and a.pending[2].swaps
    assert a.rolled and a.held_take_failed and len(b.requests) == 2
    for party in (pair.a, pair.b):
        party.channel = decode_channel(encode_channel(party.ch))
    assert (pair.a.ch, pair.b.ch) == (a, b)
    pair.disconnect_and_reconnect()  # both restarted from their stored form
    pair.deliver_all()
    assert len(pair.ledgers[0].refused) == 1 and len(pair.ledgers[1].refused) == 1
    settled(pair)


def test_a_stranger_cannot_take_with_a_quote_of_another_maker() -> None:
    pair = AssetPair()
    stranger = PrivateKey(b"\x05" * 32)
    q = Quote(pair.a.ch.channel_id, 1, TOKEN, ETH, True, 1, 1, 10, pair.clock + 1000)
    forged = sign_quote(DOMAIN, q, stranger)
    assert Forger(pair).reason(q, forged, 1) == "bad_signature"
    assert ForgedRequest(pair).reason(q, forged, 1) == "bad_signature"
    for taker in (0, 1):
        with pytest.raises(LocalError) as err:
            pair.take(taker, q, forged, 1)
        assert err.value.reason is Reason.BAD_SIGNATURE


def test_a_take_request_the_closing_leader_will_not_carry_fails_for_good() -> None:
    pair = AssetPair()
    q, sig = pair.quote(0)
    swap = pair.take(1, q, sig, 5)
    request = pair.links[0].popleft()
    pair.feed(pair.a, ActionCloseCooperative())
    pair.links[0].append(request)
    pair.deliver_all()
    assert pair.ledgers[1].refused == {swap.take_id: "closing"} and pair.b.ch.requests == ()
    assert swaps.filled(pair.a.ch, q.quote_id) == 0
    with pytest.raises(LocalError) as err:
        pair.take(1, q, sig, 5)
    assert err.value.reason is Reason.WRONG_PHASE

"""Attacks an audit of the money paths found against the pure machine (each failed before its fix)."""

from __future__ import annotations

from statechannel.core import messages as m
from statechannel.core.channel import MAX_IN_FLIGHT
from statechannel.core.crypto import Signature
from statechannel.core.io import PeerConnected, SendMessage
from statechannel.core.machine import receive, transition
from statechannel.core.persist import encode_channel
from statechannel.core.types import ETH
from tests.core.harness import Pair


def test_an_overflowing_request_while_the_pipeline_is_full_cannot_stall_the_leader() -> None:
    """A PayRequest of 2**256-1 queued while A's pipeline was full made every later Accept, Sync and
    payment of A raise: A never learnt its 64 payments were countersigned. Now it is refused at once."""
    pair = Pair(seed="poison")
    for _ in range(MAX_IN_FLIGHT):
        pair.pay(0, 1)
    assert pair.a.ch.room() == 0
    poison = m.PayRequest(pair.a.ch.channel_id, 1, [ETH], [m.u256(2**256 - 1)])
    pair.a.channel, effects = receive(pair.a.ch, poison, pair.a.key, pair.now_ms)
    assert [type(e.message).__name__ for e in effects if isinstance(e, SendMessage)] == ["Refuse"]
    assert pair.a.ch.requests == ()
    pair.links[0].clear()
    pair.deliver_all()  # B countersigns all 64
    assert len(pair.a.sent) == MAX_IN_FLIGHT and pair.a.ch.pending == ()
    pair.pay(0, 1)
    pair.links[0].clear()
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    assert len(pair.a.sent) == MAX_IN_FLIGHT + 1


def test_a_follower_refusing_its_own_requests_cannot_make_the_leader_propose_forever() -> None:
    """Each refusal sent B's request back to A's queue and A proposed it again, until A's refused
    proposals filled up: then nothing at all could be proposed. Now a request refused twice is refused."""
    pair = Pair(seed="bloat")
    cid = pair.a.ch.channel_id
    pair.links[0].append(m.PayRequest(cid, 1, [ETH], [m.u256(1)]))
    pair.deliver(0)
    proposals = 0
    while pair.links[1] and isinstance(pair.links[1][0], m.Propose):
        msg = pair.links[1].popleft()
        assert isinstance(msg, m.Propose)
        proposals += 1
        pair.links[0].append(m.Reject(cid, msg.state.version, msg.pid, "illegal_move", "no"))
        pair.deliver(0)
    assert proposals <= 3, proposals
    assert any(isinstance(x, m.Refuse) for x in pair.links[1]), "the request is refused for good"
    pair.deliver_all()  # the Refuse, and A's bump, which B countersigns
    pair.pay(0, 5)  # A still proposes
    pair.deliver_all()
    assert pair.a.sent and pair.balance(pair.b) == 1005


def test_take_requests_of_quotes_not_mine_are_never_queued() -> None:
    """255 TakeRequests of one junk quote taken 256 times each, queued while A's pipeline was full,
    inflated A's stored channel to 25 MB, rewritten on every save."""
    pair = Pair(seed="bloat2")
    a = pair.a
    cid = a.ch.channel_id
    before = len(encode_channel(a.ch))
    for _ in range(MAX_IN_FLIGHT):
        pair.pay(0, 1)
    junk = m.WireQuote(cid, 7, ETH, b"\x01" * 20, True, m.u256(1), m.u256(1), m.u256(2**200), 2**63)
    sig = Signature(1, 1, 27).to_bytes()
    takes = [m.WireTake(0, m.u256(1)) for _ in range(256)]
    for rid in range(1, 256):
        a.channel, effects = receive(a.ch, m.TakeRequest(cid, rid, [junk], [sig], takes), a.key, pair.now_ms)
        assert [type(e.message).__name__ for e in effects if isinstance(e, SendMessage)] == ["Refuse"]
    assert a.ch.requests == ()
    assert len(encode_channel(a.ch)) < before + 64 * 2_000  # the pipeline of 64 only


def test_refusal_reasons_are_bounded_in_what_the_leader_keeps() -> None:
    """A free-text reason in a Reject was kept verbatim in the held failures: 30 refusals with 500 kB
    reasons gave a 15 MB channel. The wire bounds it, and the machine keeps at most 64 characters."""
    pair = Pair(seed="bloat3")
    a = pair.a
    cid = a.ch.channel_id
    huge = m.Reject(cid, 2, 1, "x" * 500_000, "")
    try:
        m.decode(m.encode(huge))
        raise AssertionError("a 500 kB reason must not decode")
    except Exception as exc:
        assert "bad_message" in str(exc)
    for _ in range(30):
        pair.pay(0, 1)
        msg = pair.links[1].popleft()
        assert isinstance(msg, m.Propose)
        pair.links[1].clear()
        pair.links[0].append(m.Reject(cid, msg.state.version, msg.pid, "x" * 500_000, ""))  # past the codec
        pair.deliver(0)
        pair.links[1].clear()
    assert len(encode_channel(a.ch)) < 200_000
    a.channel, _ = transition(a.ch, PeerConnected(), a.key)


# ------------------------------------------------------------------ a second audit, of the fixes


def test_one_honest_refusal_with_a_full_pipeline_does_not_stop_the_leader() -> None:
    """With 64 in flight one refusal moved them all to the refused ones, which then blocked every
    proposal (even the bump that would clear them) for the rest of the channel's life."""
    from statechannel.core.io import ChainFunded

    pair = Pair(seed="wedge")
    pair.feed(pair.a, ChainFunded(ETH, 0, 2000))  # A saw its top-up, B not yet
    pair.pay(0, 1500)  # fits for A, overdraws A in B's view: honest B refuses it
    for _ in range(MAX_IN_FLIGHT - 1):
        pair.pay(0, 1)
    pair.deliver_all()
    pair.feed(pair.b, ChainFunded(ETH, 0, 2000))  # views agree again
    pair.disconnect_and_reconnect()
    pair.deliver_all()
    pair.pay(0, 1)
    pair.deliver_all()
    assert pair.a.ch.pending == () and pair.a.ch.rolled == ()
    assert "A1" in pair.a.failed and len(pair.a.sent) == MAX_IN_FLIGHT  # the 63 retried, and the new one


def test_a_deposit_lag_does_not_get_an_honest_followers_request_refused() -> None:
    """`tries` counted refusals of proposals that failed for the leader's own payments."""
    from statechannel.core.io import ChainFunded, NotifyFailed

    pair = Pair(seed="tries")
    pair.feed(pair.a, ChainFunded(ETH, 0, 3000))  # A topped up; B has not read it yet
    pair.pay(0, 1500)
    pair.pay(0, 1200)
    pair.pay(1, 10)
    pair.deliver_all()
    assert not [e for e in pair.b.effects if isinstance(e, NotifyFailed)]
    assert pair.b.sent == {"B3": 10}


def test_one_real_take_cannot_carry_junk_takes_into_the_leaders_store() -> None:
    from statechannel.core.quotes import Quote, Swap
    from tests.trading.harness import TOKEN, AssetPair

    big = 2**255 - 1
    pair = AssetPair(seed="bloat4")
    a = pair.a
    cid = a.ch.channel_id
    q, sig = pair.quote(0, maker_sells=True, base_unit=1, quote_unit=1, size=10**6, ttl_ms=3_600_000)
    junk = [
        Swap(Quote(cid, 10**9 + k, TOKEN, ETH, True, big, big, big, 2**63), Signature(1, 1, 27), big)
        for k in range(255)
    ]
    msg = m.decode(m.encode(m.TakeRequest.of(cid, 1, (Swap(q, sig, 1), *junk))))
    a.channel, effects = receive(a.ch, msg, a.key, pair.clock)
    assert [type(e.message).__name__ for e in effects if isinstance(e, SendMessage)] == ["Refuse"]
    assert a.ch.requests == () and a.ch.pending == ()


def test_one_close_one_challenge() -> None:
    """The challenge was stamped with the channel's stale clock, so the same poll's clock sent another."""
    from statechannel.core.eip712 import state_hash
    from statechannel.core.io import ChainDisputeRecorded, ChainTime, SubmitTxChallenge
    from tests.core.harness import CHAIN_START

    pair = Pair(seed="double", period=3600)
    stale = pair.b.ch.latest
    assert stale is not None
    pair.pay(0, 5)
    pair.deliver_all()
    b = pair.b
    now = CHAIN_START + 600
    b.channel, _ = transition(b.ch, ChainTime(now), b.key)  # the node sets a closing channel's clock first
    record = ChainDisputeRecorded(stale.state.version, now + 3600, state_hash(stale.state), False, stale.state)
    b.channel, first = transition(b.ch, record, b.key)
    b.channel, second = transition(b.ch, ChainTime(now), b.key)
    assert len([e for e in (*first, *second) if isinstance(e, SubmitTxChallenge)]) == 1


def test_a_close_seen_while_opening_ends_the_channel() -> None:
    from eth_hash.auto import keccak

    from statechannel.core.channel import Phase
    from statechannel.core.crypto import PrivateKey
    from statechannel.core.eip712 import state_hash
    from statechannel.core.io import ChainDisputeRecorded, ChainOpened
    from statechannel.core.machine import open_channel
    from statechannel.core.types import ChannelParams, State
    from tests.core.harness import DOMAIN

    a, b = PrivateKey(keccak(b"open A")), PrivateKey(keccak(b"open B"))
    ch, _ = open_channel(ChannelParams(a.address, b.address, 100, 1), DOMAIN, (ETH,), ((10, 0),), a)
    ch, _ = transition(ch, ChainOpened(), a)
    prefund = State(ch.channel_id, 0, (ETH,), (0,))
    ch, effects = transition(ch, ChainDisputeRecorded(0, 2000, state_hash(prefund), False, prefund), a)
    assert ch.phase is Phase.CLOSED and any(type(e).__name__ == "NotifyAlert" for e in effects)

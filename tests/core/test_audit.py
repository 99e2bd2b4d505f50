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

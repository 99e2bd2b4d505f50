"""The stored form of a channel with proposals in flight: the cached encoder writes exactly the bytes a
plain encode of the whole channel writes, reads back to an equal channel, encodes only the proposals it
has not seen, and never serves one proposal's JSON for another."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from statechannel.core import persist
from statechannel.core.channel import MAX_IN_FLIGHT, Channel, Kind, Phase, Proposal
from statechannel.core.crypto import HALF_N, PrivateKey, Signature
from statechannel.core.io import Payment, SignedState
from statechannel.core.persist import clear_cache, decode_channel, encode_channel
from statechannel.core.types import ETH, INT256_MAX, ChannelParams, State
from tests.core.harness import DOMAIN, Pair

KEY_A = PrivateKey(keccak(b"persist cache A"))
KEY_B = PrivateKey(keccak(b"persist cache B"))
TOKEN = b"\x70" * 20
PLAIN = msgspec.json.Encoder()  # what encode_channel was before it cached: the reference bytes
BASE = Channel(
    ChannelParams(KEY_A.address, KEY_B.address, 100, 1),
    DOMAIN,
    0,
    (ETH, TOKEN),
    ((10**21, 10**21), (5, 2**200)),
    Phase.OPEN,
    None,
    opened=True,
)
SIG = KEY_A.sign_digest(keccak(b"any digest"))


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def state(version: int, transfer: int = 0) -> State:
    return State(BASE.channel_id, version, BASE.assets, (transfer, -transfer))


def proposal(version: int, payments: int = 3) -> Proposal:
    pays = tuple(Payment(f"p{version}-{i}-\u00e9\u2603", ETH, 10**18 + version * 7 + i) for i in range(payments))
    return Proposal(
        state=state(version, version * 10**20), sig=SIG, kind=Kind.PAY, pid=version, base=version - 1, payments=pays
    )


def channel(latest: int, pending: tuple[Proposal, ...] | list[Proposal], **changes: Any) -> Channel:
    signed = SignedState(state(latest, -latest), SIG, SIG)
    return dataclasses.replace(BASE, latest=signed, pending=tuple(pending), next_pid=latest + 100, **changes)


def check(ch: Channel) -> bytes:
    """Encode `ch` twice (cold or warm, then warm): the plain bytes both times, and they read back to `ch`."""
    raw = encode_channel(ch)
    assert raw == PLAIN.encode(ch)
    assert encode_channel(ch) == raw
    back = decode_channel(raw)
    assert back == ch
    assert back.channel_id == ch.channel_id
    return raw


@pytest.mark.parametrize("depth", [0, 1, 2, 3, MAX_IN_FLIGHT])
def test_round_trip_and_plain_bytes_at_every_depth(depth: int) -> None:
    ch = channel(5, [proposal(6 + i) for i in range(depth)])
    raw = check(ch)
    assert len(decode_channel(raw).pending) == depth


def test_a_full_pipeline_with_everything_else_set() -> None:
    ch = channel(
        9,
        [proposal(10 + i, payments=i % 5) for i in range(MAX_IN_FLIGHT)],
        opening_sig=SIG,
        funded=((10**21, 10**21), (5, 2**200)),
        withdraw_nonce=3,
        now=1_700_000_000,
    )
    check(ch)


def test_the_node_steady_state_encodes_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Propose (one more in flight), accept (oldest leaves, new latest), over and over, the same Proposal
    objects carried along as the machine does: each encode writes the plain bytes, and once warm encodes
    one new proposal at most, whatever the depth."""
    calls: list[object] = []

    class Counting:
        def encode(self, obj: object) -> bytes:
            calls.append(obj)
            return PLAIN.encode(obj)

    monkeypatch.setattr(persist, "_encoder", Counting())
    proposals = [proposal(v) for v in range(2 + 3 * MAX_IN_FLIGHT)]
    pipeline = proposals[2 : 2 + MAX_IN_FLIGHT - 1]
    ch = channel(1, pipeline)
    assert encode_channel(ch) == PLAIN.encode(ch)
    assert len(calls) == len(pipeline) + 1  # cold: every proposal, then the document
    for v in range(1, 2 * MAX_IN_FLIGHT):
        new = proposals[v + MAX_IN_FLIGHT]
        proposed = channel(v, [*ch.pending, new])
        accepted = channel(v + 1, (*ch.pending[1:], new))
        for ch, encoded in ((proposed, [new]), (accepted, [])):
            calls.clear()
            raw = encode_channel(ch)
            assert raw == PLAIN.encode(ch)
            assert len(calls) == len(encoded) + 1  # (the new proposal, then) the document, nothing else
            assert all(c is e for c, e in zip(calls, encoded, strict=False))
            assert decode_channel(raw) == ch


def test_every_value_the_machine_makes_on_a_full_pipeline() -> None:
    """Through the real machine: A pipelines MAX_IN_FLIGHT payments, then B's accepts drain them; every
    channel value on the way (as the node would persist it) encodes to the plain bytes and reads back."""
    pair = Pair(deposit_a=10**6)
    values = []
    for _ in range(MAX_IN_FLIGHT):
        pair.pay(0, 3, count=2)
        values.append(pair.a.ch)
    while pair.links[0] or pair.links[1]:
        pair.deliver(0 if pair.links[0] else 1)
        values += [pair.a.ch, pair.b.ch]
    assert len(values[MAX_IN_FLIGHT - 1].pending) == MAX_IN_FLIGHT and not pair.a.ch.pending
    for ch in values:
        check(ch)


def test_a_lookalike_entry_is_never_served() -> None:
    """An entry under a proposal's id that holds another object (as if the id had been reused after the
    first was collected) is ignored: the proposal is encoded afresh."""
    ours = [proposal(v) for v in range(2, 6)]
    wrong = msgspec.Raw(PLAIN.encode(proposal(99)))
    ch = channel(1, ours)
    persist._pipelines[(ch.channel_id, ch.me)] = {id(p): (proposal(99), wrong) for p in ours}
    assert encode_channel(ch) == PLAIN.encode(ch)
    assert decode_channel(encode_channel(ch)).pending == tuple(ours)


def kept(ch: Channel) -> list[object]:
    return [entry[0] for entry in persist._pipelines.get((ch.channel_id, ch.me), {}).values()]


def test_ids_reused_after_the_pipeline_moved_on_get_fresh_bytes() -> None:
    """Proposals made and dropped in a loop so CPython hands their ids (addresses) to new, different
    proposals: every encode is still the plain one, and only the pipeline in flight is kept."""
    seen: set[int] = set()
    reused = 0
    pending: list[Proposal] = []
    for round_ in range(100):
        # the parts first, then the old proposals freed (no cycles: at once), then the new ones made:
        # these take the memory, so the ids, of proposals gone before them
        parts = [(state(2 + round_ + i, i), proposal(2, payments=i % 4).payments) for i in range(5)]
        pending.clear()
        persist.clear_cache()  # else the cache itself would keep the old ones alive
        pending += [
            Proposal(state=s, sig=SIG, kind=Kind.PAY, pid=s.version, base=s.version - 1, payments=pays)
            for s, pays in parts
        ]
        reused += sum(id(p) in seen for p in pending)
        seen.update(id(p) for p in pending)
        for ch in (channel(1 + round_, pending), channel(1 + round_, pending[1:])):
            assert encode_channel(ch) == PLAIN.encode(ch)
            assert decode_channel(encode_channel(ch)) == ch
            assert kept(ch) == list(ch.pending)
    assert reused > 100, "ids were hardly reused: the test proves nothing"


def test_only_the_pipeline_in_flight_is_kept_per_channel_and_side() -> None:
    held = [proposal(2 + i) for i in range(200)]
    for start in range(0, 200 - MAX_IN_FLIGHT, 7):
        ch = channel(1 + start, held[start : start + MAX_IN_FLIGHT])
        assert encode_channel(ch) == PLAIN.encode(ch)
        assert kept(ch) == list(ch.pending)
    other_side = dataclasses.replace(ch, me=1)
    assert encode_channel(other_side) == PLAIN.encode(other_side)
    assert kept(ch) == list(ch.pending), "the peer's copy in the same process has its own entry"
    drained = channel(300, held[:1])
    assert encode_channel(drained) == PLAIN.encode(drained)
    assert kept(drained) == [] and len(persist._pipelines) == 1  # under two in flight: nothing kept


def test_the_same_proposal_twice_in_a_pipeline_keeps_its_place() -> None:
    p, q = proposal(2), proposal(3)
    check(channel(1, [p, q, p]))


def test_a_blob_from_the_plain_encoder_still_reads() -> None:
    """The stored format is unchanged: what the node wrote before the cache reads back as it was."""
    ch = channel(3, [proposal(4 + i) for i in range(MAX_IN_FLIGHT)])
    assert decode_channel(PLAIN.encode(ch)) == ch


signatures = st.builds(Signature, st.integers(1, HALF_N), st.integers(1, HALF_N), st.sampled_from([27, 28]))
payments = st.lists(
    st.builds(Payment, st.text(max_size=12), st.sampled_from([ETH, TOKEN]), st.integers(0, INT256_MAX)),
    max_size=4,
).map(tuple)
proposals = st.builds(
    Proposal,
    state=st.builds(state, st.integers(0, 2**48 - 1), st.integers(-INT256_MAX, INT256_MAX)),
    sig=signatures,
    kind=st.sampled_from(Kind),
    pid=st.integers(0, 2**64),
    payments=payments,
)


@settings(max_examples=60, deadline=None)
@given(pool=st.lists(proposals, min_size=1, max_size=12), picks=st.lists(st.lists(st.integers(0, 11), max_size=20)))
def test_any_sequence_of_pipelines_over_shared_proposals(pool: list[Proposal], picks: list[list[int]]) -> None:
    """Channels drawing (with repeats, in any order) on one pool of Proposal objects, encoded one after
    another with the cache warm from the earlier ones: each one the plain bytes, each one read back."""
    for version, pick in enumerate(picks, start=1):
        check(channel(version, [pool[i % len(pool)] for i in pick]))

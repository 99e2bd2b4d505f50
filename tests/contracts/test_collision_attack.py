"""Attack: "a truncated record guards the pooled ether".

The adjudicator used to take the ether funded amounts of a settle from calldata and check them only
against a 160-bit hash kept while CLOSING. An attacker owning both sides of its own channel could
search a birthday collision (2^80 work) and settle with any funded amount, paying itself the ether of
every channel in the contract. Now the funded amounts never leave storage, and the word kept while
CLOSING holds the version and the window's end in clear and the top 168 bits of the state hash
(docs/decisions/0009): a collision of those bits is two states of one channel, same version.

2^84 is out of reach of a test, so this compiles a variant of the adjudicator that keeps only BITS bits
of the state hash, finds real collisions, and shows what they buy: a state that was never recorded
does settle, but it is paid from the channel's own funds, so the attacker gets no more than it put
in and the victim channel's ether stays where it is. A challenge never reads the hash bits, so a
collision cannot help one either."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from statechannel.chain.adjudicator import Adjudicator, DisputeRecord, Status
from statechannel.chain.base import TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.contracts import HERE
from statechannel.core import ETH, ChannelParams, PrivateKey, Signature, State, state_digest
from statechannel.core.eip712 import dispute_commitment, state_hash
from statechannel.core.hashing import keccak
from statechannel.core.observed import ChainObservedClose

BITS = 32
FULL = "HASH_MASK: constant(uint256) = ~(2**88 - 1)"
SHORT = f"HASH_MASK: constant(uint256) = ~(2**{256 - BITS} - 1)"
PERIOD = 100
ETHER = 10**18
VICTIM_A, VICTIM_B = 10 * ETHER, 5 * ETHER
OWN = 1000  # what the attacker puts in on each side


def weak_source() -> str:
    source = (HERE / "Adjudicator.vy").read_text()
    assert source.count(FULL) == 1, "the commitment line moved: update this test's patch"
    return source.replace(FULL, SHORT)


def short(state: State, finalizes_at: int) -> int:
    """The variant's dispute word: the real one with the state hash cut to its top BITS bits."""
    word = int.from_bytes(dispute_commitment(state_hash(state), state.version, finalizes_at), "big")
    cut: int = (2 ** (256 - BITS) - 1) ^ (2**88 - 1)
    return word & ~cut


def collide(recorded: Callable[[int], State], forged: Callable[[int], State], finalizes_at: int) -> tuple[State, State]:
    """A birthday search: a state the attacker can record and a forged one with the same short commitment."""
    half = 2 ** (BITS // 2)
    table = {short(recorded(i), finalizes_at): i for i in range(half)}
    for j in range(40 * half):  # misses with probability about e^-40
        candidate = forged(j)
        i = table.get(short(candidate, finalizes_at))
        if i is not None:
            return recorded(i), candidate
    raise AssertionError("no collision found")


@dataclass
class Scene:
    chain: EmbeddedChain
    adj: Adjudicator
    x: PrivateKey
    y: PrivateKey
    """Both sides of the attacker's channels."""
    relayer: PrivateKey
    """Sends the attacker's transactions, so x and y change balance only by payouts."""
    victim: ChannelParams


def key(label: str) -> PrivateKey:
    return PrivateKey(keccak(f"statechannel collision {label}".encode()))


@pytest.fixture
def scene() -> Scene:
    import vyper

    chain = EmbeddedChain()
    keys = [key(who) for who in ("victim A", "victim B", "X", "Y", "relayer", "deployer")]
    for k in keys:
        chain.fund(k.address, 100 * ETHER)
    va, vb, x, y, relayer, deployer = keys
    code = vyper.compile_code(weak_source(), contract_path="WeakAdjudicator.vy", output_formats=["bytecode"])
    deployed = chain.send_transaction(deployer, None, bytes.fromhex(code["bytecode"].removeprefix("0x")))
    assert deployed.contract_address is not None
    adj = Adjudicator(chain, deployed.contract_address)  # same interface, shorter commitment
    victim = ChannelParams(va.address, vb.address, PERIOD, 1)
    adj.open(va, victim, VICTIM_A)
    adj.deposit(vb, adj.channel_id(victim), 1, VICTIM_B)
    return Scene(chain, adj, x, y, relayer, victim)


def attacker_channel(s: Scene, nonce: int) -> tuple[ChannelParams, bytes, DisputeRecord]:
    """Funded OWN on each side and closed with a harmless state: the window's end is now known."""
    params = ChannelParams(s.x.address, s.y.address, PERIOD, nonce)
    cid = s.adj.channel_id(params)
    s.adj.open(s.x, params, OWN)
    s.adj.deposit(s.y, cid, 1, OWN)
    opening = State(cid, 1, (ETH,), (0,))
    r = s.adj.close(s.relayer, params, opening, *sign(s, opening))
    [event] = [e for e in s.adj.receipt_events(r) if isinstance(e, ChainObservedClose)]
    return params, cid, DisputeRecord.of(event)


def sign(s: Scene, state: State) -> tuple[Signature, Signature]:
    d = state_digest(s.adj.domain, state)
    return s.x.sign_digest(d), s.y.sign_digest(d)


def record_collision(
    s: Scene, params: ChannelParams, closed: DisputeRecord, forged: Callable[[int], State]
) -> tuple[State, State]:
    """Find a collision and put its innocent half on chain with a challenge: (innocent, forged)."""
    cid = params.channel_id(s.chain.chain_id, s.adj.address)

    def recorded(i: int) -> State:
        return State(cid, 2, (ETH,), (0,), app_data=i.to_bytes(32, "big"))

    innocent, evil = collide(recorded, forged, closed.finalizes_at)
    assert innocent != evil and short(innocent, closed.finalizes_at) == short(evil, closed.finalizes_at)
    # the real contract tells them apart: it keeps 168 bits of the state hash
    assert dispute_commitment(state_hash(innocent), 2, closed.finalizes_at) != dispute_commitment(
        state_hash(evil), evil.version, closed.finalizes_at
    )
    s.adj.challenge(s.relayer, params, innocent, *sign(s, innocent))
    assert int.from_bytes(s.adj.dispute(cid), "big") == short(evil, closed.finalizes_at)
    return innocent, evil


def test_a_collision_buys_no_more_than_the_channel_holds(scene: Scene) -> None:
    s = scene
    pool = VICTIM_A + VICTIM_B + 2 * OWN
    # 1. the forged state tries to pay X all the ether in the contract
    params1, cid1, closed1 = attacker_channel(s, 1)
    assert s.chain.balance(s.adj.address) == pool

    def drain(j: int) -> State:
        return State(cid1, 2, (ETH,), (-(pool - OWN),), app_data=(2**128 + j).to_bytes(32, "big"))

    innocent1, evil1 = record_collision(s, params1, closed1, drain)
    # 2. the forged state moves the channel's whole balance to X (within its funds)
    params2, cid2, closed2 = attacker_channel(s, 2)

    def take_all(j: int) -> State:
        return State(cid2, 2, (ETH,), (-OWN,), app_data=(2**129 + j).to_bytes(32, "big"))

    _, evil2 = record_collision(s, params2, closed2, take_all)

    s.chain.advance_time(PERIOD + 1)
    x0, y0 = s.chain.balance(s.x.address), s.chain.balance(s.y.address)
    with pytest.raises(TransactionReverted) as err:
        s.adj.settle(s.relayer, params1, evil1, closed1.finalizes_at)
    # past the (short) commitment, stopped by the funded amounts in storage
    assert err.value.reason == "transfer exceeds funds of B"
    s.adj.settle(s.relayer, params2, evil2, closed2.finalizes_at)  # a never-recorded state settles...
    assert (s.chain.balance(s.x.address) - x0, s.chain.balance(s.y.address) - y0) == (2 * OWN, 0)
    # ...paying out exactly channel 2's own ether; channel 1 settles by its recorded state
    s.adj.settle(s.relayer, params1, innocent1, closed1.finalizes_at)
    assert (s.chain.balance(s.x.address) - x0, s.chain.balance(s.y.address) - y0) == (3 * OWN, OWN)
    assert s.adj.channel(cid1).status is s.adj.channel(cid2).status is Status.CONCLUDED

    # the victim's ether is all still there, and its channel pays it out whole
    assert s.chain.balance(s.adj.address) == VICTIM_A + VICTIM_B
    vcid = s.adj.channel_id(s.victim)
    final = State(vcid, 9, (ETH,), (3 * ETHER,), is_final=True)
    va, vb = key("victim A"), key("victim B")
    d = state_digest(s.adj.domain, final)
    a0, b0 = s.chain.balance(va.address), s.chain.balance(vb.address)
    s.adj.close_cooperative(s.relayer, s.victim, final, va.sign_digest(d), vb.sign_digest(d))
    assert (s.chain.balance(va.address) - a0, s.chain.balance(vb.address) - b0) == (7 * ETHER, 8 * ETHER)
    assert s.chain.balance(s.adj.address) == 0

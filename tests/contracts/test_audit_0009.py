"""Audit of decision 0009 (the packed dispute word) on the embedded EVM, as an attacker holding both keys of its
own channel, in a contract that also holds other channels' ether and tokens (a drain would show there)."""

from __future__ import annotations

from dataclasses import replace

from statechannel.chain.adjudicator import Status
from statechannel.core import State
from statechannel.core.eip712 import state_hash
from statechannel.core.types import ETH
from tests.contracts.conftest import PERIOD, World
from tests.contracts.test_adjudicator import reverts


def _dup(s: State, token: bytes) -> State:
    """`s` with `token` listed twice (past our own check, to reach the contract's), each moving the same."""
    i = s.assets.index(token)
    twice = replace(s)
    object.__setattr__(twice, "assets", (token, token))
    object.__setattr__(twice, "transfers", (s.transfers[i], s.transfers[i]))
    return twice


def test_audit_0009_no_close_challenge_or_settle_pays_beyond_the_channels_own_funds(world: World) -> None:
    adj, tok = world.adj, world.token.address
    victims = [world.funded(5000, 5000) for _ in range(2)]
    for _, vid in victims:
        world.fund_token(vid, 0, 700)
    params, cid = world.funded(100, 30)
    world.fund_token(cid, 1, 20)
    eth0, tok0 = world.chain.balance(adj.address), world.token.balance_of(adj.address)
    assets = tuple(sorted((ETH, tok)))
    i_tok = assets.index(tok)

    def st(v: int, eth: int, t: int, **kw: object) -> State:
        tr = [0, 0]
        tr[assets.index(ETH)], tr[i_tok] = eth, t
        return State(cid, v, assets, tuple(tr), **kw)  # type: ignore[arg-type]

    for bad, why in [
        (st(1, 101, 0), "transfer exceeds funds of A"),
        (st(1, -31, 0), "transfer exceeds funds of B"),
        (st(1, 0, -21), "transfer exceeds funds of B"),
        (st(1, 0, 1), "transfer exceeds funds of A"),  # A funded no token
        (_dup(st(1, 0, -10), tok), "assets not strictly ascending"),  # the same token twice: B's 20 paid 2x
    ]:
        reverts(why, adj.close, world.a, params, bad, *world.sign(bad))
    record = world.close(params, st(1, 100, -20))
    for bad, why in [(st(2, 101, 0), "transfer exceeds funds of A"), (st(2, 0, -21), "transfer exceeds funds of B")]:
        reverts(why, adj.challenge, world.b, params, bad, *world.sign(bad))
    # a challenge at the recorded version, with other transfers, assets or app_data: refused
    for same in (st(1, 0, 0), State(cid, 1, (ETH,), (100,)), st(1, 100, -20, app_data=b"\x01" * 32)):
        reverts("stale version", adj.challenge, world.b, params, same, *world.sign(same))
    world.chain.advance_time(PERIOD + 1)
    # settling anything but the recorded state: same version with other transfers, assets or app_data
    for other in (st(1, 99, -20), State(cid, 1, (ETH,), (100,)), st(1, 100, -20, app_data=b"\x01" * 32)):
        reverts("state is not the recorded state", adj.settle, world.other, params, other, record.finalizes_at)
    adj.settle(world.other, params, st(1, 100, -20), record.finalizes_at)
    assert world.chain.balance(adj.address) == eth0 - 130
    assert world.token.balance_of(adj.address) == tok0 - 20
    for _, vid in victims:  # the other channels hold exactly what they held
        info = adj.channel(vid)
        assert (info.status, info.funded_a, info.funded_b) == (Status.OPEN, 5000, 5000)
        assert adj.token_funds(vid, tok) == (700, 0)
    # a concluded channel: no close, no challenge, no second settle, no reclaim of the token it paid
    again = st(2, 0, 0)
    reverts("channel not open", adj.close, world.a, params, again, *world.sign(again))
    reverts("channel not closing", adj.challenge, world.a, params, again, *world.sign(again))
    reverts("channel not closing", adj.settle, world.a, params, st(1, 100, -20), record.finalizes_at)
    reverts("nothing to reclaim", adj.reclaim, world.a, params, tok)


def test_audit_0009_a_settle_quoting_a_window_end_above_40_bits_cannot_settle_early(world: World) -> None:
    """The settle's finalizes_at is shifted into the word unchecked, so bits from 40 up alias the hash bits
    (an OR) or fall off the word: such a value can match the commitment, but it is above the real end
    (its low 40 bits are the recorded end), so the window check still holds."""
    params, cid = world.funded(1000, 1000)
    state = State(cid, 3, (ETH,), (1,))
    record = world.close(params, state)
    top = int.from_bytes(state_hash(state), "big") >> 88
    bit = (top & -top).bit_length() - 1  # a set bit of the hash's top 168 bits
    for alias in (record.finalizes_at | (1 << (40 + bit)), record.finalizes_at + 2**208):
        reverts("challenge window still open", world.adj.settle, world.other, params, state, alias)
    world.chain.advance_time(PERIOD + 1)
    world.adj.settle(world.other, params, state, record.finalizes_at)
    assert world.adj.channel(cid).status is Status.CONCLUDED


def test_audit_0009_a_version_from_2_pow_48_is_refused(world: World) -> None:
    """The word keeps 48 bits of version: a 2**48 would OR into the window end. (A window end from 2**40 cannot
    be reached here: eth-tester refuses block times from 33040162800; `close` asserts it.)"""
    params, cid = world.funded(1000, 1000)
    ok = State(cid, 2**48 - 1, (ETH,), (0,))
    sigs = world.sign(ok)
    huge = replace(ok)
    object.__setattr__(huge, "version", 2**48)  # past our own check, to reach the contract's
    reverts("version too large", world.adj.close, world.a, params, huge, *sigs)
    record = world.close(params, ok)
    assert record.version == 2**48 - 1
    reverts("version too large", world.adj.challenge, world.b, params, huge, *sigs)
    world.chain.advance_time(PERIOD + 1)
    world.adj.settle(world.other, params, ok, record.finalizes_at)
    assert world.adj.channel(cid).status is Status.CONCLUDED

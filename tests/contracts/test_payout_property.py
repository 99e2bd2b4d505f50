"""Invariant 8 as a property: whatever close, challenge, settle and close_cooperative calls succeed, with
whatever states and calldata, a channel pays out in total exactly what it was funded, per asset, split
by the state that concluded it, and no other channel's money moves."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from statechannel.chain.adjudicator import DisputeRecord, Status
from statechannel.chain.base import TransactionReverted
from statechannel.core import ETH, ChannelParams, State
from statechannel.core.observed import ChainObservedClose, ChainObservedConcluded
from statechannel.core.types import payout
from tests.contracts.conftest import PERIOD, World

# every reason these calls may give; anything else (or no reason) fails the property
REASONS = {
    "channel not open",
    "channel not closing",
    "channel not open or closing",
    "state is not final",
    "transfer exceeds funds of A",
    "transfer exceeds funds of B",
    "stale version",
    "challenge window is over",
    "challenge window still open",
    "state is not the recorded state",
}
AMOUNT = st.integers(0, 10**6)


@dataclass
class Run:
    world: World
    params: ChannelParams
    cid: bytes
    funded: dict[bytes, tuple[int, int]]
    """Per asset (ether and the token, funded or not), what A and B put in."""
    record: DisputeRecord | None = None
    """What the last Closed/Challenged event said."""
    recorded: State | None = None
    concluded_by: State | None = None


@st.composite
def states(draw: st.DrawFn, run: Run) -> State:
    """Mostly plausible states (a subset of the assets, transfers near the funds), some wildly not."""
    assets = tuple(a for a in sorted(run.funded) if draw(st.booleans()))
    transfers = []
    for a in assets:
        fa, fb = run.funded[a]
        shape = draw(st.integers(0, 9))
        if shape == 9:
            transfers.append(draw(st.integers(-(2**200), 2**200)))
        elif shape == 8:  # just beyond what one side holds
            transfers.append(draw(st.sampled_from([fa + 1, -fb - 1, fa + 3, -fb - 3])))
        else:
            transfers.append(draw(st.integers(-fb, fa)))
    return State(
        run.cid,
        draw(st.integers(0, 8)),
        assets,
        tuple(transfers),
        is_final=draw(st.booleans()),
        app_data=draw(st.sampled_from([bytes(32), b"\x01" * 32])),
    )


def mostly(data: st.DataObject) -> bool:
    """True three times in four (and in the simplest example)."""
    return data.draw(st.integers(0, 3)) < 3


KINDS = ["close", "challenge", "challenge", "settle", "settle", "cooperative", "wait", "wait"]


def attempt(run: Run, data: st.DataObject, kind: str) -> None:
    """One call with drawn arguments; a revert must name one of the known reasons and changes nothing."""
    w, adj, sender = run.world, run.world.adj, run.world.other
    if kind == "wait":
        w.chain.advance_time(data.draw(st.sampled_from([PERIOD + 1, 1, PERIOD // 2])))
        return
    state = data.draw(states(run))
    if kind == "challenge" and run.record is not None:  # mostly above the recorded version, sometimes not
        state = replace(state, version=max(0, run.record.version + data.draw(st.integers(-1, 3))))
    if kind == "settle" and run.recorded is not None and mostly(data):
        state = run.recorded
    try:
        if kind == "close":
            r = adj.close(sender, run.params, state, *w.sign(state))
        elif kind == "challenge":
            r = adj.challenge(sender, run.params, state, *w.sign(state))
        elif kind == "settle":
            true_end = run.record.finalizes_at if run.record else 0
            if mostly(data):  # after the window
                w.chain.advance_time(PERIOD + 1)
            end = true_end if mostly(data) else data.draw(st.sampled_from([max(0, true_end - 1), 0, 2**40]))
            r = adj.settle(sender, run.params, state, end)
        else:
            r = adj.close_cooperative(sender, run.params, state, *w.sign(state))
    except TransactionReverted as exc:
        event(f"{kind}: {exc.reason}")
        assert exc.reason in REASONS, exc.reason
        return
    event(f"{kind} succeeded" + (" while closing" if kind == "cooperative" and run.record else ""))
    for e in adj.receipt_events(r):
        if isinstance(e, ChainObservedClose):
            run.record, run.recorded = DisputeRecord.of(e), state
        elif isinstance(e, ChainObservedConcluded):
            assert run.concluded_by is None, "concluded twice"
            run.concluded_by = state


def finish(run: Run) -> None:
    """Conclude a channel the drawn calls left open or closing, the ordinary way."""
    w, adj = run.world, run.world.adj
    status = adj.channel(run.cid).status
    if status is Status.OPEN:
        final = State(run.cid, 99, tuple(sorted(run.funded)), (0,) * len(run.funded), is_final=True)
        adj.close_cooperative(w.other, run.params, final, *w.sign(final))
        run.concluded_by = final
    elif status is Status.CLOSING:
        assert run.record is not None and run.recorded is not None
        w.chain.advance_time(PERIOD + 1)
        adj.settle(w.other, run.params, run.recorded, run.record.finalizes_at)
        run.concluded_by = run.recorded
    assert adj.channel(run.cid).status is Status.CONCLUDED and adj.dispute(run.cid) == bytes(32)


def holdings(w: World, asset: bytes, account: bytes) -> int:
    return w.chain.balance(account) if asset == ETH else w.token.balance_of(account)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(fa=AMOUNT, fb=AMOUNT, ta=AMOUNT, tb=AMOUNT, data=st.data())
def test_each_channel_pays_out_exactly_its_funds(
    world: World, fa: int, fb: int, ta: int, tb: int, data: st.DataObject
) -> None:
    w, adj, tok = world, world.adj, world.token.address
    pooled = {a: holdings(w, a, adj.address) for a in (ETH, tok)}  # every other channel's money
    params = w.params()
    cid = adj.channel_id(params)
    adj.open(w.a, params, fa)
    if fb:
        adj.deposit(w.b, cid, 1, fb)
    for who, amount in ((0, ta), (1, tb)):
        if amount:
            w.fund_token(cid, who, amount)
    run = Run(w, params, cid, {ETH: (fa, fb), tok: (ta, tb)})
    before = {(a, who): holdings(w, a, who) for a in (ETH, tok) for who in (w.a.address, w.b.address)}
    # the usual shape (close, challenges, an ending), with any call anywhere, and more calls after it
    if mostly(data):
        attempt(run, data, "close")
    for _ in range(data.draw(st.integers(0, 3))):
        attempt(run, data, data.draw(st.sampled_from(["challenge", "challenge", "close", "cooperative", "settle"])))
    attempt(run, data, data.draw(st.sampled_from(["settle", "cooperative", "wait"])))
    for _ in range(data.draw(st.integers(0, 3))):
        attempt(run, data, data.draw(st.sampled_from(KINDS)))
    finish(run)
    final = run.concluded_by
    assert final is not None
    if tok not in final.assets and (ta or tb):
        adj.reclaim(w.other, params, tok)  # an unlisted token goes back to its funders
    for asset, (funded_a, funded_b) in run.funded.items():
        t = final.transfers[final.assets.index(asset)] if asset in final.assets else 0
        got = tuple(holdings(w, asset, who) - before[asset, who] for who in (w.a.address, w.b.address))
        assert got == payout(funded_a, funded_b, t)
        assert sum(got) == funded_a + funded_b  # never more (nor less) than the channel held
        assert holdings(w, asset, adj.address) == pooled[asset]  # nobody else's money moved
        assert adj.claimable(w.a.address, asset) == adj.claimable(w.b.address, asset) == 0

"""Opening and funding a channel (DESIGN.md invariants 7 and 9).

A signs the pre-fund state (version 0) and asks B to countersign; B checks the terms it accepts (the
challenge period above all: a window too short to answer, or one that locks money for years, is
refused). Nobody deposits before holding the other's signature on the pre-fund state, which returns
every deposit: A only once B's Accept is in, B because it countersigned. A `Opened` seen in any other
phase moves nothing. Whoever opened the channel on chain, A funds it: with `open` if it is first, else
(or when its `open` reverts because someone was quicker) with `deposit`. The leader proposes the
post-fund state once it sees every deposit; the follower countersigns once it sees them too."""

from __future__ import annotations

from dataclasses import dataclass, replace

from statechannel.core import messages as m
from statechannel.core.channel import FOLLOWER, LEADER, Channel, Kind, Phase
from statechannel.core.common import Result
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.follower import postfund
from statechannel.core.io import (
    ChainFunded,
    ChainTxFailed,
    ChainWithdrawn,
    Effect,
    NotifyPhase,
    SendMessage,
    SignedState,
    SubmitTxDeposit,
    SubmitTxOpen,
)
from statechannel.core.leader import propose
from statechannel.core.types import ETH, ChannelParams, Domain, State

DEFAULT_MIN_CHALLENGE_PERIOD = 3_600
"""One hour: long enough for a node (or its tower) to notice a close and get a challenge mined on a
public chain, even through congestion."""
DEFAULT_MAX_CHALLENGE_PERIOD = 14 * 24 * 3_600
"""Two weeks, like Lightning's longest common to_self_delay: beyond it a counterparty could lock money
for longer than anyone expects."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What a node accepts in a channel someone opens with it (and what it opens with itself)."""

    min_challenge_period: int = DEFAULT_MIN_CHALLENGE_PERIOD
    max_challenge_period: int = DEFAULT_MAX_CHALLENGE_PERIOD

    def __post_init__(self) -> None:
        if not 0 < self.min_challenge_period <= self.max_challenge_period:
            raise LocalError(Reason.BAD_PARAMS, "challenge period bounds must satisfy 0 < min <= max")

    def check(self, challenge_period: int) -> None:
        if not self.min_challenge_period <= challenge_period <= self.max_challenge_period:
            raise LocalError(
                Reason.CHALLENGE_PERIOD,
                f"challenge period {challenge_period} s is outside the accepted "
                f"[{self.min_challenge_period}, {self.max_challenge_period}] s",
            )


def _prefund(ch: Channel) -> State:
    return State(ch.channel_id, 0, ch.assets, tuple(0 for _ in ch.assets))


def open_channel(
    params: ChannelParams,
    domain: Domain,
    assets: tuple[bytes, ...],
    deposits: tuple[tuple[int, int], ...],
    key: PrivateKey,
) -> Result:
    """A proposes a channel: signs the pre-fund state, asks B to countersign."""
    if key.address != params.a:
        raise LocalError(Reason.BAD_PARAMS, "the opener must be participant A")
    if any(a < 0 or b < 0 for a, b in deposits):
        raise LocalError(Reason.BAD_AMOUNT, "deposits must not be negative")
    ch = Channel(params, domain, LEADER, assets, deposits, Phase.OPENING, None)
    ch = replace(ch, opening_sig=key.sign_digest(ch.digest(_prefund(ch))))
    return ch, (SendMessage(open_request(ch)), NotifyPhase(Phase.OPENING))


def open_request(ch: Channel) -> m.OpenRequest:
    assert ch.opening_sig is not None
    return m.OpenRequest(
        chain_id=ch.domain.chain_id,
        adjudicator=ch.domain.adjudicator,
        a=ch.params.a,
        b=ch.params.b,
        challenge_period=ch.params.challenge_period,
        nonce=m.u256(ch.params.nonce),
        assets=list(ch.assets),
        deposits_a=[m.u256(d[0]) for d in ch.deposits],
        deposits_b=[m.u256(d[1]) for d in ch.deposits],
        sig=ch.opening_sig.to_bytes(),
    )


def accept_open(request: m.OpenRequest, domain: Domain, key: PrivateKey, terms: Terms | None = None) -> Result:
    """B countersigns the pre-fund state. `domain` is the adjudicator B trusts; `terms` what it accepts."""
    if (request.chain_id, request.adjudicator) != (domain.chain_id, domain.adjudicator):
        raise RemoteError(Reason.WRONG_CHANNEL, "open request is for another chain or adjudicator")
    if request.b != key.address:
        raise RemoteError(Reason.BAD_PARAMS, "open request names someone else as B")
    if not len(request.assets) == len(request.deposits_a) == len(request.deposits_b):
        raise RemoteError(Reason.BAD_ASSETS, "one deposit pair per asset")
    try:
        (terms or Terms()).check(request.challenge_period)
        params = ChannelParams(request.a, request.b, request.challenge_period, m.from_u256(request.nonce))
        deposits = tuple(
            (m.from_u256(a), m.from_u256(b)) for a, b in zip(request.deposits_a, request.deposits_b, strict=True)
        )
        ch = Channel(params, domain, FOLLOWER, tuple(request.assets), deposits, Phase.FUNDING, None)
        prefund = _prefund(ch)
    except LocalError as exc:
        raise RemoteError(exc.reason, f"bad open request: {exc.detail}") from exc
    sig_a = m.signature(request.sig)
    ch.check_peer_sig(prefund, sig_a)
    mine = key.sign_digest(ch.digest(prefund))
    ch = replace(ch, latest=SignedState(prefund, sig_a, mine))
    return ch, (SendMessage(m.Accept(ch.channel_id, 0, mine.to_bytes())), NotifyPhase(Phase.FUNDING))


def _deposits(ch: Channel, with_eth: bool) -> tuple[Channel, tuple[Effect, ...]]:
    """My agreed deposits not yet submitted (each once: `deposits_sent` is saved before it goes out)."""
    out: list[Effect] = []
    sent = list(ch.deposits_sent)
    for asset, pair in zip(ch.assets, ch.deposits, strict=True):
        if pair[ch.me] and (with_eth or asset != ETH) and asset not in sent:
            out.append(SubmitTxDeposit(asset, pair[ch.me]))
            sent.append(asset)
    return replace(ch, deposits_sent=tuple(sent)), tuple(out)


def on_open_accepted(ch: Channel, msg: m.Accept) -> Result:
    """B countersigned: now, and only now, A may put money in."""
    prefund = _prefund(ch)
    theirs = m.signature(msg.sig)
    ch.check_peer_sig(prefund, theirs)
    assert ch.opening_sig is not None
    new = replace(ch, latest=SignedState(prefund, ch.opening_sig, theirs), phase=Phase.FUNDING, opening_sig=None)
    if ch.opened:  # someone opened it first (without my deposit): I fund it with deposits
        new, deposits = _deposits(new, True)
        return new, (*deposits, NotifyPhase(Phase.FUNDING))
    eth = ch.deposits[ch.assets.index(ETH)][0] if ETH in ch.assets else 0
    sent = (ETH,) if eth else ()
    return replace(new, open_submitted=True, deposits_sent=sent), (SubmitTxOpen(eth), NotifyPhase(Phase.FUNDING))


def on_opened(ch: Channel) -> Result:
    if ch.opened:
        return ch, ()
    new = replace(ch, opened=True)
    if ch.phase is not Phase.FUNDING:  # no countersigned pre-fund state: nothing goes in (invariant 9)
        return new, ()
    # A's ether went with its open (or goes in by deposit if that open reverts); the tokens follow it
    return _deposits(new, with_eth=ch.me == FOLLOWER)


def on_funded(ch: Channel, inp: ChainFunded | ChainWithdrawn, key: PrivateKey) -> Result:
    if inp.asset not in ch.assets:
        return ch, ()
    i = ch.assets.index(inp.asset)
    pair = list(ch.funded[i])
    pair[inp.participant] = inp.funded
    funded = (*ch.funded[:i], (pair[0], pair[1]), *ch.funded[i + 1 :])
    new = replace(ch, funded=funded)
    if isinstance(inp, ChainWithdrawn):  # exactly this withdrawal is done: stop holding it back
        ws = tuple(
            p for p in ch.withdrawals if (p.withdrawal.participant, p.withdrawal.nonce) != (inp.participant, inp.nonce)
        )
        new = replace(new, withdrawals=ws)
    return _maybe_postfund(new, key)


def _maybe_postfund(ch: Channel, key: PrivateKey) -> Result:
    if ch.phase is not Phase.FUNDING or not ch.fully_funded():
        return ch, ()
    if ch.me == FOLLOWER:
        return postfund(ch, ch.deferred, key) if ch.deferred is not None else (ch, ())
    if ch.pending:
        return ch, ()
    assert ch.latest is not None
    return propose(ch, ch.latest.state.transfers, Kind.POSTFUND, key)


def on_connected(ch: Channel, key: PrivateKey) -> Result:
    """A post-fund proposal the follower refused (it could not see the deposits yet) is made again."""
    if ch.me == LEADER:
        return _maybe_postfund(ch, key)
    return ch, ()


def on_tx_failed(ch: Channel, inp: ChainTxFailed) -> Result:
    """My `open` reverted because the channel exists (someone opened it first): my ether goes in by
    deposit. The other failures change nothing here (withdrawals: see withdrawals.py)."""
    tx = inp.tx
    if isinstance(tx, SubmitTxOpen) and "channel exists" in inp.reason and ch.phase is Phase.FUNDING and tx.eth_deposit:
        # the node read the funds from the chain first: if my own earlier open went in (a restart sent it
        # again), nothing is missing; if someone else opened it, all of it is
        missing = tx.eth_deposit - ch.funded[ch.assets.index(ETH)][ch.me]
        if missing > 0:
            return ch, (SubmitTxDeposit(ETH, missing),)
    return ch, ()


def abandon(ch: Channel) -> Result:
    """Only a channel not open on chain: one that is could take a deposit any moment (mine included)."""
    if ch.opened or any(a or b for a, b in ch.funded):
        raise LocalError(Reason.WRONG_PHASE, "the channel is open on chain: close it (with the pre-fund state) instead")
    return replace(ch, phase=Phase.CLOSED, opening_sig=None, deferred=None), (NotifyPhase(Phase.CLOSED),)

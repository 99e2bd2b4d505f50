"""Funding and channel terms (issue 9, attacks 2, 3, 7): nobody deposits before holding the other's
signature on the pre-fund state, whoever opened the channel on chain; a node accepts only the
challenge periods it can answer in."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    ActionAbandon,
    ChainFunded,
    ChainOpened,
    ChainTxFailed,
    Effect,
    SendMessage,
    SubmitTxDeposit,
    SubmitTxOpen,
)
from statechannel.core.machine import Terms, accept_open, open_channel, receive, transition
from statechannel.core.types import ETH, MAX_CHALLENGE_PERIOD, ChannelParams
from tests.core.harness import DOMAIN, TERMS

TOKEN = b"\x70" * 20
A = PrivateKey(keccak(b"funding A"))
B = PrivateKey(keccak(b"funding B"))


def _opening(period: int = 3600) -> tuple[Channel, m.OpenRequest]:
    params = ChannelParams(A.address, B.address, period, 7)
    ch, effects = open_channel(params, DOMAIN, (ETH, TOKEN), ((100, 0), (500, 0)), A)
    request = next(e.message for e in effects if isinstance(e, SendMessage))
    assert isinstance(request, m.OpenRequest)
    return ch, request


def _deposits(effects: tuple[Effect, ...]) -> list[Effect]:
    return [e for e in effects if isinstance(e, SubmitTxDeposit | SubmitTxOpen)]


def test_attack_2_an_opened_event_before_the_countersignature_moves_nothing() -> None:
    """B never answers and opens the channel itself with no ether: A sees `Opened` while opening and
    deposits nothing (before the fix A deposited its ERC-20s, with no state anyone could close with)."""
    ch, _ = _opening()
    assert ch.phase is Phase.OPENING
    ch, effects = transition(ch, ChainOpened(), A)
    assert _deposits(effects) == []
    ch, effects = transition(ch, ChainFunded(TOKEN, 1, 1), A)
    assert _deposits(effects) == []


def test_attack_2_a_refused_open_then_opened_by_the_peer_moves_nothing() -> None:
    ch, _ = _opening()
    ch, _ = receive(ch, m.Reject(ch.channel_id, 0, 0, "challenge_period", "no"), A, 1)
    assert ch.phase is Phase.CLOSED
    ch, effects = transition(ch, ChainOpened(), A)
    assert _deposits(effects) == []


def test_opened_by_the_peer_first_a_funds_it_by_deposit_once_countersigned() -> None:
    """A front-run `open` leaves A nothing to do no more: once B's signature is in, A deposits."""
    ch, request = _opening()
    ch, _ = transition(ch, ChainOpened(), A)
    _, (accept, _) = accept_open(request, DOMAIN, B)
    assert isinstance(accept, SendMessage) and isinstance(accept.message, m.Accept)
    ch, effects = receive(ch, accept.message, A, 1)
    assert ch.phase is Phase.FUNDING
    assert _deposits(effects) == [SubmitTxDeposit(ETH, 100), SubmitTxDeposit(TOKEN, 500)]


def test_an_open_that_reverts_because_someone_opened_first_deposits_instead() -> None:
    ch, request = _opening()
    _, (accept, _) = accept_open(request, DOMAIN, B)
    assert isinstance(accept, SendMessage) and isinstance(accept.message, m.Accept)
    ch, effects = receive(ch, accept.message, A, 1)
    assert _deposits(effects) == [SubmitTxOpen(100)]
    ch, effects = transition(ch, ChainOpened(), A)  # someone else's open: the tokens still follow
    assert _deposits(effects) == [SubmitTxDeposit(TOKEN, 500)]
    ch, effects = transition(ch, ChainTxFailed(SubmitTxOpen(100), "channel exists"), A)
    assert _deposits(effects) == [SubmitTxDeposit(ETH, 100)]


def test_attack_3_the_challenge_period_must_be_inside_the_nodes_terms() -> None:
    """A 1-second window lets the closer settle before anyone can answer; 2**32-1 seconds locks the
    money for 136 years. Both are refused by default, with the reason."""
    for period in (1, 3599, 14 * 24 * 3600 + 1, MAX_CHALLENGE_PERIOD):
        _, request = _opening(period)
        with pytest.raises(RemoteError) as exc:
            accept_open(request, DOMAIN, B)
        assert exc.value.reason is Reason.CHALLENGE_PERIOD and str(period) in exc.value.detail
    for period in (3600, 14 * 24 * 3600):
        _, request = _opening(period)
        assert accept_open(request, DOMAIN, B)[0].phase is Phase.FUNDING
    _, request = _opening(60)
    assert accept_open(request, DOMAIN, B, Terms(60, 120))[0].phase is Phase.FUNDING
    assert accept_open(request, DOMAIN, B, TERMS)[0].phase is Phase.FUNDING
    with pytest.raises(LocalError):
        Terms(10, 5)


def test_abandon_only_what_holds_nothing() -> None:
    _, request = _opening()
    b, _ = accept_open(request, DOMAIN, B)
    gone, _ = transition(b, ActionAbandon(), B)
    assert gone.phase is Phase.CLOSED
    funded, _ = transition(b, ChainFunded(ETH, 0, 100), B)
    with pytest.raises(LocalError):
        transition(funded, ActionAbandon(), B)


def test_a_restart_replaying_the_open_never_deposits_twice() -> None:
    """Found by the crash soak: A's open went in, A was killed before it saw `Opened`; restarted, it sent
    `open` again, which reverted with `channel exists`, and A then deposited its ether a second time."""
    from statechannel.core.machine import pending_work

    ch, request = _opening()
    _, (accept, _) = accept_open(request, DOMAIN, B)
    assert isinstance(accept, SendMessage) and isinstance(accept.message, m.Accept)
    ch, effects = receive(ch, accept.message, A, 1)
    assert _deposits(effects) == [SubmitTxOpen(100)] and ch.deposits_sent == (ETH,)
    assert pending_work(ch) == (SubmitTxOpen(100),)  # the restart sends it again
    ch, _ = transition(ch, ChainFunded(ETH, 0, 100), A)  # the node reads the funds before the failure
    ch, effects = transition(ch, ChainTxFailed(SubmitTxOpen(100), "channel exists"), A)
    assert _deposits(effects) == []
    ch, effects = transition(ch, ChainOpened(), A)
    assert _deposits(effects) == [SubmitTxDeposit(TOKEN, 500)]

"""A channel restored from a stale backup learns the highest state it can prove and signs nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.errors import LocalError
from statechannel.core.io import ActionCloseUnilateral, PeerConnected, SendMessage, SubmitTxClose
from statechannel.core.machine import receive, transition
from statechannel.core.recovery import restore
from statechannel.core.types import ETH
from tests.core.harness import Pair


@pytest.mark.parametrize("lost", [0, 1])
def test_a_stale_backup_adopts_the_peers_newer_state_signs_nothing_and_closes_with_it(lost: int) -> None:
    pair = Pair(seed=f"recover{lost}")
    pair.pay(0, 10)
    pair.pay(1, 3)
    pair.deliver_all()
    backup = pair.party(lost).ch  # the backup was taken here
    pair.pay(0, 20)
    pair.pay(1, 4)
    pair.deliver_all()
    pair.pay(0, 5)  # and one in flight when the disk died
    pair.links[0].clear()
    pair.links[1].clear()
    peer = pair.party(1 - lost).ch
    restored = restore(backup)
    assert restored.phase is Phase.RECOVERING
    restored, effects = transition(restored, PeerConnected(), pair.party(lost).key)
    assert all(isinstance(e.message, m.Sync) for e in effects if isinstance(e, SendMessage))
    _, theirs = transition(peer, PeerConnected(), pair.party(1 - lost).key)
    sync = next(e.message for e in theirs if isinstance(e, SendMessage) and isinstance(e.message, m.Sync))
    restored, _ = receive(restored, sync, pair.party(lost).key, 1)
    assert restored.latest == peer.latest  # the highest the peer can prove
    # it signs nothing now: a proposal (to the follower) or a request (to the leader) is refused, unchanged
    cid = restored.channel_id
    if lost == 1:
        s = replace(peer.latest.state, version=peer.signed_upto + 1, transfers=(peer.latest.state.transfers[0] + 1,))  # type: ignore[union-attr]
        sig = pair.a.key.sign_digest(peer.digest(s))
        offer: m.Message = m.Propose(m.WireState.of(s), sig.to_bytes(), 999, s.version - 1, [])
    else:
        offer = m.PayRequest(cid, 999, [ETH], [m.u256(1)])
    same, (answer,) = receive(restored, offer, pair.party(lost).key, 1)
    assert same is restored and isinstance(answer, SendMessage)
    assert isinstance(answer.message, m.Reject | m.Refuse) and answer.message.reason == "wrong_phase"
    with pytest.raises(LocalError):
        pair.party(lost).channel = restored
        pair.pay(lost, 1)
    _, (close,) = transition(restored, ActionCloseUnilateral(), pair.party(lost).key)
    assert isinstance(close, SubmitTxClose) and close.signed == peer.latest

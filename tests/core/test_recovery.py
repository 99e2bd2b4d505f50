"""A channel restored from a stale backup learns the highest state it can prove and signs nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.eip712 import state_hash
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.io import (
    ActionCloseCooperative,
    ActionCloseUnilateral,
    ChainDisputeRecorded,
    PeerConnected,
    SendMessage,
    SubmitTxClose,
)
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


@pytest.mark.parametrize("lost", [0, 1])
@pytest.mark.parametrize("how", ["backup of an open channel, then its own close", "backup taken while closing"])
def test_a_restored_channel_in_dispute_signs_nothing_not_even_a_cooperative_close(lost: int, how: str) -> None:
    """The restored key may have signed versions above what it knows (the backup is older than the disk it
    replaces). Once the channel is in dispute, a cooperative close would have it sign a final state at
    `signed_upto + 1` (leader) or countersign one above it (follower): possibly a second state of a version
    it used (invariant 3). So a restored channel never signs, whatever phase the chain moves it to."""
    pair = Pair(seed=f"restored dispute {lost} {how}")
    pair.pay(0, 10)
    pair.deliver_all()
    me, peer_party = pair.party(lost), pair.party(1 - lost)
    backup = me.ch
    if how == "backup taken while closing":
        record = ChainDisputeRecorded(backup.latest.state.version, 10**6, state_hash(backup.latest.state))  # type: ignore[union-attr]
        backup, _ = transition(backup, record, me.key)
        assert backup.phase is Phase.DISPUTE
    pair.pay(0, 20)
    pair.deliver_all()  # the lost disk signed these; the backup does not know them
    restored = restore(backup)
    if restored.phase is Phase.RECOVERING:
        restored, _ = transition(restored, ActionCloseUnilateral(), me.key)
        recorded = restored.latest.state  # type: ignore[union-attr]
        restored, _ = transition(restored, ChainDisputeRecorded(recorded.version, 10**6, state_hash(recorded)), me.key)
    assert restored.phase is Phase.DISPUTE
    with pytest.raises(LocalError):
        transition(restored, ActionCloseCooperative(), me.key)
    if lost == 1:  # the leader (the peer) proposes a final state to the restored follower
        head = peer_party.ch.latest.state  # type: ignore[union-attr]
        final = replace(head, version=peer_party.ch.signed_upto + 1, is_final=True)
        sig = pair.a.key.sign_digest(peer_party.ch.digest(final))
        offer: m.Message = m.Propose(m.WireState.of(final), sig.to_bytes(), 999, head.version, [])
    else:  # the follower (the peer) asks the restored leader to close
        offer = m.CloseRequest(restored.channel_id)
    try:
        after, effects = receive(restored, offer, me.key, 1)
    except RemoteError as exc:  # refused as the peer's fault: nothing changes, nothing is sent
        assert exc.reason is Reason.WRONG_PHASE
        after, effects = restored, ()
    assert after == restored
    assert not any(isinstance(e, SendMessage) and isinstance(e.message, m.Accept | m.Propose) for e in effects)
    assert after.signed_upto == restored.signed_upto

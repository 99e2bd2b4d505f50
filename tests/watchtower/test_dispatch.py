"""The dispatcher's queue: earliest window end first, each channel once."""

from __future__ import annotations

from statechannel.watchtower.dispatch import DeadlineQueue


def test_earliest_deadline_first_ties_in_arrival_order() -> None:
    q = DeadlineQueue()
    q.push(b"late", 300)
    q.push(b"early", 100)
    q.push(b"tie-1", 200)
    q.push(b"tie-2", 200)
    assert len(q) == 4 and b"early" in q
    assert q.pop(2) == [(b"early", 100), (b"tie-1", 200)]
    assert q.pop(10) == [(b"tie-2", 200), (b"late", 300)]
    assert q.pop(1) == [] and len(q) == 0


def test_a_channel_pushed_again_is_queued_once_at_its_new_deadline() -> None:
    q = DeadlineQueue()
    q.push(b"a", 500)
    q.push(b"b", 400)
    q.push(b"a", 100)  # the record moved: a new window end
    q.push(b"a", 100)
    assert len(q) == 2
    assert q.pop(5) == [(b"a", 100), (b"b", 400)]

"""Audit of the tower's persistence (7807be7): a failed send is retried until the window ends, and a mined
challenge failing with no reason sends the same state again, UNEXPLAINED_TRIES times at most.

Attacks tried: a counterparty (or a flaky node) making every challenge fail with no reason, to burn the
tower's gas without end; a channel whose sends always fail, keeping the dispatcher from other disputes;
retries that outlive the window or a dispute answered by someone else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from statechannel.chain.base import ChainError, TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.watchtower.records import TowerStatus
from statechannel.watchtower.sender import OneByOne, OnSent, PlainSender, Settled
from statechannel.watchtower.service import UNEXPLAINED_TRIES, Tower
from tests.watchtower.helpers import (
    Setup,
    close_with,
    closes,
    deploy,
    eth_state,
    eventually,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)

RETRY = (0.01, 0.05)
"""The dispatcher's retry delays in these tests (first, most)."""
QUIET_S = 0.5
"""Ten times the longest retry delay: a retry still scheduled would have come by then."""


def _never(data: bytes) -> bool:
    return False


def _always(data: bytes) -> bool:
    return True


class Faulty(OneByOne):
    """The tower's sender on the embedded EVM, with `refuse(data)` broadcasts refused (the node is down for
    them) and `reasonless(data)` challenges mined failing with no reason (what the RPC sender reports for an
    out-of-gas challenge: its replay passes)."""

    def __init__(
        self, s: Setup, refuse: Callable[[bytes], bool] = _never, reasonless: Callable[[bytes], bool] = _never
    ) -> None:
        self._plain = PlainSender(s.chain, s.tower_key)
        self._s = s
        self.refuse = refuse
        self.reasonless = reasonless
        self.refused = 0
        self.failed: list[bytes] = []

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        if self.refuse(data):
            self.refused += 1
            raise ChainError("connection refused (the node is down)")
        if self.reasonless(data):
            self.failed.append(data)
            self._s.chain.mine(1)  # the gas it burnt, in a block of its own
            ticket = 10**9 + len(self.failed)
            self._plain._done.append(Settled(ticket, None, TransactionReverted("")))
            return ticket
        return self._plain.submit(to, data, on_sent=on_sent)

    def poll(self) -> list[Settled]:
        return self._plain.poll()

    def abandon(self, ticket: int) -> None:
        self._plain.abandon(ticket)

    def in_flight(self) -> int:
        return self._plain.in_flight()

    def reset(self) -> None:
        self._plain.reset()


async def _quiet(count: Callable[[], int]) -> int:
    """`count()` once nothing has changed it for QUIET_S (a send under way when this starts may still land)."""
    seen = count()
    while True:
        await asyncio.sleep(QUIET_S)
        if count() == seen:
            return seen
        seen = count()


def test_held_reasonless_reverts_cost_at_most_unexplained_tries_per_state(tmp_path: Path) -> None:
    """Every challenge the tower sends fails with no reason. It spends UNEXPLAINED_TRIES mined challenges on
    each state it holds (v5, then v3) and then stops: the griefing is bounded, not a gas drain for the whole
    window (a resend that never gave up, or a count reset each round, would keep going)."""
    s = deploy(EmbeddedChain(), "audit reasonless")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    v1, v3, v5 = (sign(s.adj.domain, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 3, 5))

    async def scenario() -> None:
        sender = Faulty(s, refuse=_never, reasonless=_always)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = RETRY
            await register(tower, params, s.a)
            await push(tower, v3, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("both states given up", lambda: len(sender.failed) >= 2 * UNEXPLAINED_TRIES, 20)
            assert await _quiet(lambda: len(sender.failed)) == 2 * UNEXPLAINED_TRIES
            v5_sig, v3_sig = (v.sig_a.r.to_bytes(32, "big") for v in (v5, v3))
            order = ["v5" if v5_sig in d else "v3" if v3_sig in d else "?" for d in sender.failed]
            assert order == ["v5"] * UNEXPLAINED_TRIES + ["v3"] * UNEXPLAINED_TRIES  # the best state first
            assert tower.candidates(cid) == [] and not tower.dispatch.busy
            assert [e.version for e in closes(s, cid)] == [1]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_held_a_channel_whose_sends_always_fail_does_not_starve_another_dispute(tmp_path: Path) -> None:
    """Channel X's challenge can never be broadcast (refused every time) and its window ends first; channel
    Y's dispute, closed after, is still answered while X keeps being retried: a failed send frees its
    channel at once and waits on a timer, not in the queue or in flight."""
    s = deploy(EmbeddedChain(), "audit starve")
    px, py = open_channel(s, 1, period=600), open_channel(s, 2, period=600)
    cx, cy = s.adj.channel_id(px), s.adj.channel_id(py)
    x1, x5 = (sign(s.adj.domain, eth_state(cx, v, v * 1000), s.a, s.b) for v in (1, 5))
    y1, y5 = (sign(s.adj.domain, eth_state(cy, v, v * 1000), s.a, s.b) for v in (1, 5))

    async def scenario() -> None:
        sender = Faulty(s, refuse=lambda data: x5.sig_a.r.to_bytes(32, "big") in data)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = RETRY
            for p, v in ((px, x5), (py, y5)):
                await register(tower, p, s.a)
                await push(tower, v, s.a)
            close_with(s, px, x1)
            await eventually("X retried", lambda: sender.refused >= 3, 20)
            close_with(s, py, y1)
            await eventually("Y answered", lambda: [e.version for e in closes(s, cy)] == [1, 5], 20)
            refused = sender.refused
            await eventually("X still retried", lambda: sender.refused >= refused + 3, 20)
            assert [e.version for e in closes(s, cx)] == [1]

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("ends", ["window", "answered"])
def test_held_retries_of_failed_sends_stop_when_the_dispute_ends(tmp_path: Path, ends: str) -> None:
    """Every broadcast is refused. Once the tower's chain time passes the window's end ("window"), or once
    it reads A's own challenge with v5 ("answered": its best state no longer beats the record), it sends
    nothing more for the channel (no retry outlives the dispute), and nothing is left queued or in flight."""
    s = deploy(EmbeddedChain(), f"audit {ends}")
    params = open_channel(s, 1, period=600)
    cid = s.adj.channel_id(params)
    v1, v5 = (sign(s.adj.domain, eth_state(cid, v, v * 1000), s.a, s.b) for v in (1, 5))

    async def scenario() -> None:
        sender = Faulty(s, refuse=_always)
        async with running_tower(s, tmp_path / "t.db", sender=sender) as tower:
            tower.dispatch.retry_delay = RETRY
            await register(tower, params, s.a)
            await push(tower, v5, s.a)
            close_with(s, params, v1)
            await eventually("retried", lambda: sender.refused >= 3, 20)
            if ends == "window":
                [close] = closes(s, cid)
                s.chain.advance_time(600)
                s.chain.mine(1)
                await eventually("the window's end seen", lambda: tower.now >= close.finalizes_at, 20)
            else:
                s.adj.challenge(s.a, params, v5.state, v5.sig_a, v5.sig_b)
                await eventually("her challenge read", lambda: _recorded(tower, cid) == 5, 20)
            before = sender.refused
            assert await _quiet(lambda: sender.refused) <= before + 1  # one send may have been under way
            assert not tower.dispatch.busy
            if ends == "window":
                assert _row_status(tower, cid) is TowerStatus.CHALLENGED  # nothing else ended the dispute

    asyncio.run(asyncio.wait_for(scenario(), 60))


def _row_status(tower: Tower, cid: bytes) -> TowerStatus | None:
    row = tower.row(cid)
    return None if row is None else row.status


def _recorded(tower: Tower, cid: bytes) -> int | None:
    row = tower.row(cid)
    return None if row is None or row.dispute is None else row.dispute.version

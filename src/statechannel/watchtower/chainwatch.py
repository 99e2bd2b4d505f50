"""Reading the adjudicator's events for the tower: from a checkpoint, in bounded ranges, noticing reorgs.

Blocking calls, meant for a worker thread. A reorg is noticed by remembering the hashes of the last
blocks read: when one of them is no longer on chain, reading restarts after the last block both
branches share, and the caller re-checks what it recorded from the abandoned blocks.

A dispute can also be rebuilt from the chain alone (`find_dispute`): the contract keeps only a hash of
the recorded (state hash, version, window end), so the values a challenge must quote are found again in
the logs, as the event whose values hash to the stored word. A close whose window is still open was
logged after head time - challenge_period, so a binary search over block timestamps bounds the scan."""

from __future__ import annotations

from dataclasses import dataclass

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.base import Block, Chain, ChainError
from statechannel.core.observed import ChainObserved
from statechannel.store.base import Checkpoint
from statechannel.watchtower.records import Dispute, TowerStatus

REMEMBERED_BLOCKS = 64
"""Deepest reorg handled by rewinding exactly; a deeper one rewinds this far behind the checkpoint."""
BLOCKS_PER_QUERY = 2000
"""eth_getLogs range per call while catching up: nodes cap the size of an answer."""


@dataclass(frozen=True, slots=True)
class Poll:
    events: list[ChainObserved]
    checkpoint: Checkpoint
    """The last block these events cover; save it once they are handled."""
    head: Block
    fork: int | None
    """Set when blocks read before were replaced: the last block both branches share."""
    caught_up: bool
    """Whether the checkpoint reached head - confirmations (else more ranges are waiting)."""


class ChainWatch:
    def __init__(self, chain: Chain, adjudicator: Adjudicator, confirmations: int = 0) -> None:
        self.chain = chain
        self.adj = adjudicator
        self.confirmations = confirmations
        self._recent: list[Checkpoint] = []

    def _hash_at(self, number: int) -> bytes | None:
        try:
            return self.chain.block(number).hash
        except ChainError:  # beyond the head: the chain got shorter
            return None

    def _mark(self, number: int) -> Checkpoint:
        return Checkpoint(number, self.chain.block(number).hash)

    def resume(self, stored: Checkpoint | None) -> tuple[Checkpoint, int | None]:
        """Where to start reading, and the fork point if the stored checkpoint was reorged away while
        the tower was down. A new tower starts at the head: channels registered later are checked on
        chain when they are registered, so no history is needed."""
        if stored is None:
            head = self.chain.block()
            cp = self._mark(max(0, head.number - self.confirmations))
            self._recent = [cp]
            return cp, None
        if self._hash_at(stored.block_number) == stored.block_hash:
            self._recent = [stored]
            return stored, None
        height = self.chain.block().number
        fork = max(0, min(stored.block_number, height) - REMEMBERED_BLOCKS)
        cp = self._mark(fork)
        self._recent = [cp]
        return cp, fork

    def poll(self, since: Checkpoint) -> Poll:
        """Events in (since, head - confirmations], at most BLOCKS_PER_QUERY blocks of them."""
        head = self.chain.block()
        fork = None
        if self._recent and self._hash_at(self._recent[-1].block_number) != self._recent[-1].block_hash:
            while self._recent and self._hash_at(self._recent[-1].block_number) != self._recent[-1].block_hash:
                self._recent.pop()
            if self._recent:
                since = self._recent[-1]
            else:
                since = self._mark(max(0, min(since.block_number, head.number) - REMEMBERED_BLOCKS))
                self._recent = [since]
            fork = since.block_number
        to = min(head.number - self.confirmations, since.block_number + BLOCKS_PER_QUERY)
        if to <= since.block_number:
            return Poll([], since, head, fork, caught_up=True)
        events = self.adj.events(since.block_number + 1, to)
        cp = self._mark(to)
        self._recent = [*self._recent[-(REMEMBERED_BLOCKS - 1) :], cp]
        return Poll(events, cp, head, fork, caught_up=to >= head.number - self.confirmations)

    def find_dispute(self, channel_id: bytes, challenge_period: int) -> tuple[TowerStatus, Dispute | None]:
        """What the chain records for a channel now, with the event that recorded it when it is closing.

        The dispute is None when the window ended before the head's time and the close is older than
        the scanned range: no challenge could win any more, so there is nothing to quote."""
        info = self.adj.channel(channel_id)
        if info.status is Status.CONCLUDED:
            return TowerStatus.CLOSED, None
        if info.status is not Status.CLOSING:
            return TowerStatus.WATCHING, None
        head = self.chain.block()
        start = self._first_block_at(max(0, head.timestamp - challenge_period), head.number)
        found: Dispute | None = None
        for lo in range(start, head.number + 1, BLOCKS_PER_QUERY):
            ev = self.adj.recorded(channel_id, lo, min(head.number, lo + BLOCKS_PER_QUERY - 1))
            if ev is not None:
                found = Dispute.of(ev)
        return TowerStatus.CHALLENGED, found

    def _first_block_at(self, timestamp: int, head: int) -> int:
        """The lowest block stamped at or after `timestamp` (timestamps never decrease along a chain)."""
        lo, hi = 0, head
        while lo < hi:
            mid = (lo + hi) // 2
            if self.chain.block(mid).timestamp < timestamp:
                lo = mid + 1
            else:
                hi = mid
        return lo

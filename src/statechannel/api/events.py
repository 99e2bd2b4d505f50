"""Fans the node's events out to any number of event-stream clients, with a numbered replay buffer.

One subscription to the node feeds a bounded log; each client reads the log from its own cursor. So a
client that reconnects with `Last-Event-ID` (as browsers' EventSource do by themselves) gets what it
missed instead of a silent hole, and a slow client never slows the node: it falls behind the buffer
and is told so with a `gap` event."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from statechannel.api.models import ETH_NAME
from statechannel.core.types import ETH, to_checksum
from statechannel.node.node import Node, NodeEvent

log = logging.getLogger(__name__)
DEFAULT_CAPACITY = 1_000  # a 'sent' event can name hundreds of coalesced payments: bound the memory
_ETH_CHECKSUM = to_checksum(ETH)


@dataclass(frozen=True, slots=True)
class Numbered:
    seq: int
    kind: str
    channel_id: str
    data: dict[str, Any]


def _public(event: NodeEvent) -> dict[str, Any]:
    """The node names ether by its zero address; the API everywhere calls it 'eth'."""
    if event.kind == "received" and isinstance(event.data.get("amounts"), dict):
        amounts = {ETH_NAME if k == _ETH_CHECKSUM else k: v for k, v in event.data["amounts"].items()}
        return {**event.data, "amounts": amounts}
    return dict(event.data)


class EventHub:
    def __init__(self, node: Node, capacity: int = DEFAULT_CAPACITY) -> None:
        self._node = node
        self._log: deque[Numbered] = deque(maxlen=capacity)
        self._seq = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def last_seq(self) -> int:
        return self._seq

    def start(self) -> None:
        """Idempotent; events the node publishes before this are not seen."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="api-event-hub")

    async def close(self) -> None:
        """Ends every open stream, so a server shutting down is not held up by event clients."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._changed:
            self._changed.notify_all()

    async def _pump(self) -> None:
        async for event in self._node.subscribe():
            self._seq += 1
            self._log.append(Numbered(self._seq, event.kind, event.channel_id, _public(event)))
            async with self._changed:
                self._changed.notify_all()

    async def stream(
        self,
        after: int | None = None,
        channel_id: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Numbered]:
        """Events numbered above `after` (default: from now on), until `limit` events or `timeout` seconds.

        The deadline is checked only while waiting, never across a yield: a cancellation must not land
        in whatever the consumer is doing with the event."""
        cursor = self._seq if after is None else min(max(after, 0), self._seq)
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        while not self._closed:
            for event in self._since(cursor):
                cursor = event.seq
                if channel_id is not None and event.kind != "gap" and event.channel_id != channel_id:
                    continue
                yield event
                sent += 1
                if limit is not None and sent >= limit:
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if not await self._wait_past(cursor, remaining):
                return

    async def _wait_past(self, cursor: int, timeout: float | None) -> bool:
        """False if `timeout` ran out before an event numbered above `cursor` arrived."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._seq > cursor or self._closed)
        except TimeoutError:
            return False
        return True

    def _since(self, cursor: int) -> list[Numbered]:
        if cursor >= self._seq or not self._log:
            return []
        first = self._log[0].seq
        events = list(itertools.islice(self._log, max(0, cursor + 1 - first), None))
        if first > cursor + 1:  # the client fell behind the buffer
            gap = Numbered(first - 1, "gap", "", {"missed": first - 1 - cursor})
            return [gap, *events]
        return events

"""Crash-test child: save blob i of channel i, and only after the save returns print i.

Run as `python -m tests.store.crash_child PATH COUNT WRITERS [DURABILITY]`; the parent SIGKILLs it
mid-way and checks that every index printed is in the store (save before send)."""

from __future__ import annotations

import asyncio
import sys

from statechannel.store import SqliteStore
from tests.store.helpers import blob, cid, record


async def main(path: str, count: int, writers: int, durability: str) -> None:
    store = SqliteStore(path, durability=durability)
    indexes = iter(range(count))  # shared by the writers, so concurrent saves interleave

    async def writer() -> None:
        for i in indexes:
            await store.save(cid(i), blob(i), [record(f"p{i}", cid(i), status="sent", version=i, created_ms=i)])
            sys.stdout.write(f"{i}\n")
            sys.stdout.flush()

    await asyncio.gather(*(writer() for _ in range(writers)))
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), (sys.argv[4:] or ["fsync"])[0]))

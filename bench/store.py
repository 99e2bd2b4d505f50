"""Durable saves per second: one writer awaiting each save (a commit and an fsync each)
against many concurrent writers sharing commits (group commit).

python bench/store.py [--saves N] [--writers 64] [--channels 1000] [--blob-bytes 400] [--dir DIR]

Run it on the disk the node will use (--dir): on tmpfs an fsync costs nothing and the
sequential figure means little."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from statechannel.store import PaymentRecord, SqliteStore


async def measure(
    path: Path, saves: int, writers: int, channels: int, blob_bytes: int, payments: bool
) -> dict[str, Any]:
    store = SqliteStore(path)
    data = os.urandom(blob_bytes)
    asset = bytes(20)
    indexes = iter(range(saves))  # shared, so the writers interleave across channels

    async def writer() -> None:
        for i in indexes:
            channel_id = (i % channels).to_bytes(32, "big")
            records = [PaymentRecord(f"p{i}", channel_id, "out", asset, i, "sent", i, "", i)] if payments else []
            await store.save(channel_id, data, records)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    seconds = time.perf_counter() - start
    stats = store.stats()
    await store.close()
    return {
        "writers": writers,
        "saves": stats["saves"],
        "commits": stats["commits"],
        "seconds": round(seconds, 3),
        "saves_per_second": round(stats["saves"] / seconds),
        "saves_per_commit": round(stats["saves"] / max(stats["commits"], 1), 1),
        "largest_batch": stats["largest_batch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=20_000, help="saves per concurrent run (sequential: a tenth)")
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--blob-bytes", type=int, default=400, help="about one encoded two-party state")
    parser.add_argument("--payments", action="store_true", help="carry one payment record per save")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        shape = (args.channels, args.blob_bytes, args.payments)
        sequential = asyncio.run(measure(Path(tmp) / "seq.db", max(args.saves // 10, 1), 1, *shape))
        concurrent = asyncio.run(measure(Path(tmp) / "conc.db", args.saves, args.writers, *shape))
        report = {
            "store": "sqlite (WAL, synchronous=FULL, group commit)",
            "dir": str(Path(tmp).parent.resolve()),
            "blob_bytes": args.blob_bytes,
            "payments_per_save": int(args.payments),
            "sequential": sequential,
            "concurrent": concurrent,
            "speedup": round(concurrent["saves_per_second"] / sequential["saves_per_second"], 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""What only the durable store promises: group commit, atomic batches, visibility to other processes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from statechannel.store import (
    Checkpoint,
    CommitFailed,
    SchemaMismatch,
    SqliteStore,
    StoreError,
)
from statechannel.store.sqlite import _connect
from tests.store.helpers import blob, cid, record

ROOT = Path(__file__).resolve().parents[2]


def test_wal_and_full_sync(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "s.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_durability_modes_set_the_sync_level_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    async def mode(durability: str) -> int:
        store = SqliteStore(tmp_path / f"{durability}.db", durability=durability)
        try:
            await store.save(cid(1), blob(1))
            assert store.durability == durability
            return int(store._writer.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            await store.close()

    assert asyncio.run(mode("fsync")) == 2  # FULL: the WAL is fsynced on every commit
    assert asyncio.run(mode("process-crash-safe")) == 1  # NORMAL: fsynced at checkpoints only
    with pytest.raises(ValueError, match="unknown durability mode 'fast'"):
        SqliteStore(tmp_path / "x.db", durability="fast")
    assert not (tmp_path / "x.db").exists()  # refused before anything was created


def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    expected = {cid(c): blob(1800 + c) for c in range(200)}  # the last of the ten saves of each channel

    async def main() -> dict[str, int]:
        store = SqliteStore(path)
        saves = [store.save(cid(i % 200), blob(i), [record(f"p{i}", cid(i % 200), created_ms=i)]) for i in range(2000)]
        await asyncio.wait_for(asyncio.gather(*saves), 60)
        assert store.load_channels() == expected
        stats = store.stats()
        await store.close()
        return stats

    stats = asyncio.run(main())
    assert stats["saves"] == 2000
    assert stats["payment_upserts"] == 2000
    assert stats["failed_commits"] == 0
    assert 1 <= stats["commits"] < stats["saves"] / 5, stats

    async def reopen() -> None:
        store = SqliteStore(path)
        assert store.load_channels() == expected
        assert [p.payment_id for p in store.payments(limit=3)] == ["p1999", "p1998", "p1997"]
        assert store.stats()["payments_stored"] == 2000
        await store.close()

    asyncio.run(reopen())


def test_a_store_written_before_batches_is_migrated_with_one_payment_a_row(tmp_path: Path) -> None:
    path = tmp_path / "old.db"

    async def write() -> None:
        store = SqliteStore(path)
        await store.save(cid(1), blob(1), [record("p1", cid(1), amount=7, status="sent", version=2)])
        await store.close()

    asyncio.run(write())
    with closing(sqlite3.connect(path)) as conn:  # the payments table as schema 1 first shipped
        conn.execute("ALTER TABLE payments DROP COLUMN count")
        conn.commit()

    async def reopen() -> None:
        store = SqliteStore(path)
        assert store.payments() == [record("p1", cid(1), amount=7, status="sent", version=2)]
        await store.save(cid(1), blob(2), [record("b", cid(1), amount=9, count=3, created_ms=1)])
        assert [(p.payment_id, p.count) for p in store.payments()] == [("b", 3), ("p1", 1)]
        await store.close()

    asyncio.run(reopen())


def test_reopen_after_close_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "r.db"

    async def first() -> None:
        store = SqliteStore(path)
        await store.save(cid(1), blob(1), [record("p1", cid(1), amount=2**200)])
        await store.save_checkpoint(Checkpoint(42, b"\x42" * 32))
        await store.close()

    async def second() -> None:
        store = SqliteStore(path)
        assert store.load_channels() == {cid(1): blob(1)}
        assert store.load_checkpoint() == Checkpoint(42, b"\x42" * 32)
        assert store.payments() == [record("p1", cid(1), amount=2**200)]
        await store.close()

    asyncio.run(first())
    asyncio.run(second())


_READER = """
import asyncio, json, sys
from statechannel.store import SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    cp = store.load_checkpoint()
    print(json.dumps({
        "channels": {k.hex(): v.hex() for k, v in store.load_channels().items()},
        "checkpoint": [cp.block_number, cp.block_hash.hex()] if cp else None,
        "payments": [[p.payment_id, str(p.amount), p.status] for p in store.payments()],
    }))
    await store.close()

asyncio.run(main())
"""


def test_another_process_sees_committed_data_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"

    async def main() -> None:
        store = SqliteStore(path)
        await store.save(cid(7), blob(7), [record("p7", cid(7), status="sent", amount=2**70)])
        await store.save_checkpoint(Checkpoint(9, b"\x09" * 32))
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _READER, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen == {
            "channels": {cid(7).hex(): blob(7).hex()},
            "checkpoint": [9, (b"\x09" * 32).hex()],
            "payments": [["p7", str(2**70), "sent"]],
        }
        await store.save(cid(8), blob(8))  # the other process's writer and reader left ours working
        assert set(store.load_channels()) == {cid(7), cid(8)}
        await store.close()

    asyncio.run(main())


def test_failed_commit_fails_its_whole_batch_and_the_store_recovers(tmp_path: Path) -> None:
    path = tmp_path / "f.db"

    async def main() -> None:
        store = SqliteStore(path)
        await store.save(cid(1), b"before")
        with closing(sqlite3.connect(path)) as other:  # a fault the store cannot see coming: a failing insert
            other.execute(
                "CREATE TRIGGER boom AFTER INSERT ON payments WHEN NEW.payment_id LIKE 'boom%' "
                "BEGIN SELECT RAISE(ABORT, 'rejected by the test trigger'); END"
            )
            other.commit()

        # the channel row is written before the payment fails: both must vanish together
        with pytest.raises(CommitFailed, match="rolled back: rejected by the test trigger") as info:
            await store.save(cid(1), b"after", [record("boom", cid(1))])
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert store.load_channels() == {cid(1): b"before"}
        assert store.payments() == []

        # concurrent saves: whichever batch holds the poisoned one fails entirely, the others land
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    store.save(cid(i), blob(i), [record("boom-50" if i == 150 else f"p{i}", cid(i))])
                    for i in range(100, 200)
                ),
                return_exceptions=True,
            ),
            60,
        )
        assert isinstance(results[50], CommitFailed)
        channels = store.load_channels()
        stored = {p.payment_id for p in store.payments(limit=1000)}
        for i, result in zip(range(100, 200), results, strict=True):
            if result is None:
                assert channels[cid(i)] == blob(i) and f"p{i}" in stored
            else:
                assert isinstance(result, CommitFailed)
                assert cid(i) not in channels and f"p{i}" not in stored
        failed = sum(isinstance(r, CommitFailed) for r in results)
        assert store.stats()["failed_commits"] >= 2
        assert store.stats()["saves"] == 1 + 100 - failed
        assert store.stats()["payments_stored"] == len(stored)

        with closing(sqlite3.connect(path)) as other:
            other.execute("DROP TRIGGER boom")
            other.commit()
        await store.save(cid(1), b"after", [record("boom", cid(1))])
        assert store.load_channels()[cid(1)] == b"after"
        await store.close()

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_withdraw_its_save(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def main() -> None:
        store = SqliteStore(path)
        task = asyncio.create_task(store.save(cid(1), blob(1)))
        await asyncio.sleep(0)  # the save is queued once the task has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()  # flushes what was queued
        reopened = SqliteStore(path)
        assert reopened.load_channels() == {cid(1): blob(1)}
        await reopened.close()

    asyncio.run(main())


def test_saves_from_several_event_loops(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loops.db")
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        async def saves() -> None:
            await asyncio.gather(*(store.save(cid(base + i), blob(base + i)) for i in range(100)))

        try:
            asyncio.run(asyncio.wait_for(saves(), 60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(base,)) for base in (0, 1000, 2000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert errors == []
    assert store.load_channels() == {cid(b + i): blob(b + i) for b in (0, 1000, 2000) for i in range(100)}
    asyncio.run(store.close())


def test_history_bound_is_enforced_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.db"

    async def main() -> None:
        store = SqliteStore(path)
        await store.save(cid(1), b"x", [record(f"p{i}", cid(1), created_ms=i) for i in range(10)])
        await store.close()
        smaller = SqliteStore(path, max_payments=3)
        assert [p.payment_id for p in smaller.payments()] == ["p9", "p8", "p7"]
        assert smaller.stats()["payments_stored"] == 3
        await smaller.save(cid(1), b"y", [record("p10", cid(1), created_ms=10)])
        assert [p.payment_id for p in smaller.payments()] == ["p10", "p9", "p8"]
        await smaller.close()

    asyncio.run(main())


def test_files_it_cannot_use_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"garbage\.db"):
        SqliteStore(garbage)

    future = tmp_path / "future.db"
    with closing(sqlite3.connect(future)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaMismatch, match="schema version 99"):
        SqliteStore(future)

    with pytest.raises(StoreError, match="cannot open store"):
        SqliteStore(tmp_path / "missing-dir" / "s.db")


def test_the_pruned_count_survives_a_reopen_and_a_smaller_bound_adds_to_it(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "s.db", max_payments=3)
        await store.save(cid(1), b"x", [record(f"p{j}", cid(1), created_ms=j) for j in range(5)])
        await store.close()
        store = SqliteStore(tmp_path / "s.db", max_payments=1)  # reopened with less retention: prunes 2 more
        assert (store.pruned(cid(1)), len(store.payments(limit=10))) == (4, 1)
        await store.close()

    asyncio.run(main())

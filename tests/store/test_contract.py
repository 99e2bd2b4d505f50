"""The behaviour both stores promise; protocol tests run on MemoryStore and must not be misled by it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from statechannel.store import (
    Checkpoint,
    InvalidRecord,
    MemoryStore,
    PaymentRecord,
    SqliteStore,
    Store,
    StoreClosed,
    StoredQuote,
)
from tests.store.helpers import ASSET, blob, cid, record

MakeStore = Callable[..., Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    counter = iter(range(1_000_000))

    def make(max_payments: int = 100_000) -> Store:
        if request.param == "memory":
            return MemoryStore(max_payments=max_payments)
        return SqliteStore(tmp_path / f"store-{next(counter)}.db", max_payments=max_payments)

    return make


def run(make_store: MakeStore, body: Callable[[Store], Awaitable[None]], max_payments: int = 100_000) -> None:
    async def main() -> None:
        store = make_store(max_payments)
        try:
            await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    asyncio.run(main())


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    stores: list[Store] = [MemoryStore(), SqliteStore(tmp_path / "s.db")]
    for store in stores:
        asyncio.run(store.close())


def test_empty_store(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        assert store.load_channels() == {}
        assert store.load_checkpoint() is None
        assert store.payments() == []
        assert store.stats()["saves"] == 0

    run(make_store, body)


def test_save_and_load_channels(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        for i in range(10):
            await store.save(cid(i), blob(i))
        await store.save(cid(3), b"")  # an empty blob is a value, not an absence
        expected = {cid(i): blob(i) for i in range(10)} | {cid(3): b""}
        assert store.load_channels() == expected
        assert store.stats()["saves"] == 11

    run(make_store, body)


def test_a_forgotten_channel_is_gone_and_a_later_save_brings_it_back(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        for i in range(3):
            await store.save(cid(i), blob(i))
        await asyncio.gather(store.save(cid(1), blob(9)), store.forget(cid(1)))  # in call order: forgotten
        assert store.load_channels() == {cid(0): blob(0), cid(2): blob(2)}
        await store.forget(cid(7))  # an unknown one: nothing happens
        await store.save(cid(1), blob(1))
        assert store.load_channels() == {cid(i): blob(i) for i in range(3)}

    run(make_store, body)


def test_last_write_wins_in_call_order_under_concurrency(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        await asyncio.gather(*(store.save(cid(i % 7), blob(i)) for i in range(300)))
        assert store.load_channels() == {cid(c): blob(c + 7 * ((299 - c) // 7)) for c in range(7)}

    run(make_store, body)


def test_checkpoint_is_replaced(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        await store.save_checkpoint(Checkpoint(10, b"\x0a" * 32))
        await asyncio.gather(*(store.save_checkpoint(Checkpoint(n, n.to_bytes(32, "big"))) for n in range(11, 20)))
        assert store.load_checkpoint() == Checkpoint(19, (19).to_bytes(32, "big"))
        assert store.load_channels() == {}  # a checkpoint is not a channel

    run(make_store, body)


def test_payments_newest_first_filtered_and_limited(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        a, b = cid(1), cid(2)
        await store.save(a, b"a1", [record("p1", a, created_ms=100), record("p2", a, created_ms=300)])
        await store.save(b, b"b1", [record("p3", b, created_ms=200, direction="in", status="received")])
        await store.save(a, b"a2", [record("p4", a, created_ms=300)])  # same ms as p2: later insertion is newer
        assert [p.payment_id for p in store.payments()] == ["p4", "p2", "p3", "p1"]
        assert [p.payment_id for p in store.payments(a)] == ["p4", "p2", "p1"]
        assert [p.payment_id for p in store.payments(b)] == ["p3"]
        assert [p.payment_id for p in store.payments(limit=2)] == ["p4", "p2"]
        assert store.payments(cid(9)) == []
        assert store.payments(limit=0) == []
        assert store.payments(b)[0] == PaymentRecord("p3", b, "in", ASSET, 1, "received", 0, "", 200)

    run(make_store, body)


def test_payment_upsert_replaces_the_record_and_keeps_its_place(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        a = cid(1)
        await store.save(a, b"v0", [record("p1", a, created_ms=5), record("p2", a, created_ms=5)])
        sent = record("p1", a, status="sent", version=1, created_ms=5)
        failed = record("p2", a, status="failed", reason="insufficient_funds", created_ms=5)
        await store.save(a, b"v1", [sent, failed])
        assert store.payments() == [failed, sent]  # p2 was inserted after p1, so it stays newer
        assert store.load_channels() == {a: b"v1"}
        # within one save the last record of an id wins too
        await store.save(a, b"v2", [record("p1", a, status="pending", created_ms=5), sent])
        assert store.payments(limit=1_000) == [failed, sent]

    run(make_store, body)


def test_a_batch_row_keeps_its_count_and_an_outcome_keeps_it(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        await store.save(cid(1), b"x", [record("b", cid(1), amount=300_000, count=100_000, created_ms=1)])
        await store.save(cid(1), b"y", [record("b", cid(1), status="sent", amount=300_000, count=100_000, version=3)])
        assert store.payments() == [
            record("b", cid(1), status="sent", amount=300_000, count=100_000, version=3, created_ms=1)
        ]
        page, _ = store.payments_before(cid(1), 10, None)
        assert [p.count for p in page] == [100_000]

    run(make_store, body)


def test_amounts_beyond_64_bits_round_trip(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        amounts = [0, 1, 2**63, 2**64 + 1, 2**256 - 1, 10**30 + 7]
        recs = [record(f"p{i}", cid(1), amount=amount, created_ms=i) for i, amount in enumerate(amounts)]
        await store.save(cid(1), b"x", recs)
        got = store.payments(limit=100)
        assert [p.amount for p in reversed(got)] == amounts
        assert all(type(p.amount) is int for p in got)

    run(make_store, body)


def test_history_is_pruned_to_the_newest(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        for batch in range(4):
            recs = [record(f"p{batch}-{j}", cid(1), created_ms=batch * 10 + j) for j in range(3)]
            await store.save(cid(1), b"x", recs)
        assert [p.created_ms for p in store.payments(limit=100)] == [32, 31, 30, 22, 21]
        assert store.stats()["payments_stored"] == 5
        # an update of a kept record adds nothing, so nothing more is pruned
        await store.save(cid(1), b"y", [record("p3-2", cid(1), status="sent", created_ms=32)])
        assert len(store.payments(limit=100)) == 5
        assert store.load_channels() == {cid(1): b"y"}  # pruning history never touches channel state

    run(make_store, body, max_payments=5)


def test_zero_history_keeps_no_payments(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        await store.save(cid(1), b"x", [record("p1", cid(1))])
        assert store.payments() == []
        assert store.load_channels() == {cid(1): b"x"}

    run(make_store, body, max_payments=0)


BAD_SAVES: list[tuple[str, bytes, object, object]] = [
    ("channel_id must be 32 bytes", cid(1)[:31], b"x", ()),
    ("channel blob must be bytes", cid(1), "text", ()),
    ("channel blob must be bytes", cid(1), bytearray(b"x"), ()),
    ("payments must be PaymentRecord", cid(1), b"x", [("p1",)]),
    ("payment_id must be a non-empty str", cid(1), b"x", [record("", cid(1))]),
    ("channel_id must be 32 bytes", cid(1), b"x", [record("p1", b"short")]),
    ("direction must be one of", cid(1), b"x", [record("p1", cid(1), direction="sideways")]),
    ("status must be one of", cid(1), b"x", [record("p1", cid(1), status="lost")]),
    ("amount must be non-negative", cid(1), b"x", [record("p1", cid(1), amount=-1)]),
    ("amount must be an int", cid(1), b"x", [record("p1", cid(1), amount=1.5)]),  # type: ignore[arg-type]
    ("amount must be an int", cid(1), b"x", [record("p1", cid(1), amount=True)]),
    ("amount .* does not fit in a uint256", cid(1), b"x", [record("p1", cid(1), amount=2**256)]),
    ("version 9223372036854775808 does not fit", cid(1), b"x", [record("p1", cid(1), version=2**63)]),
    ("created_ms must be non-negative", cid(1), b"x", [record("p1", cid(1), created_ms=-5)]),
    ("count must be at least 1", cid(1), b"x", [record("p1", cid(1), count=0)]),
    ("count must be an int", cid(1), b"x", [record("p1", cid(1), count=True)]),
    ("count must be an int", cid(1), b"x", [record("p1", cid(1), count=2.0)]),  # type: ignore[arg-type]
    ("count 9223372036854775808 does not fit", cid(1), b"x", [record("p1", cid(1), count=2**63)]),
    ("asset must be 20 bytes", cid(1), b"x", [PaymentRecord("p1", cid(1), "out", b"", 1, "sent", 0, "", 0)]),
]


@pytest.mark.parametrize(("message", "channel_id", "data", "payments"), BAD_SAVES)
def test_invalid_saves_are_rejected_and_change_nothing(
    make_store: MakeStore, message: str, channel_id: bytes, data: object, payments: object
) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(InvalidRecord, match=message):
            await store.save(channel_id, data, payments)  # type: ignore[arg-type]
        assert store.load_channels() == {}
        assert store.payments() == []
        assert store.stats()["saves"] == 0

    run(make_store, body)


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (Checkpoint(-1, bytes(32)), "block_number must be non-negative"),
        (Checkpoint(1, bytes(31)), "block_hash must be 32 bytes"),
        ((1, bytes(32)), "expected a Checkpoint"),
    ],
)
def test_invalid_checkpoints_are_rejected(make_store: MakeStore, checkpoint: object, message: str) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(InvalidRecord, match=message):
            await store.save_checkpoint(checkpoint)  # type: ignore[arg-type]
        assert store.load_checkpoint() is None

    run(make_store, body)


def test_bad_limits_and_bounds_are_rejected(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(InvalidRecord, match="limit must be a non-negative int"):
            store.payments(limit=-1)

    run(make_store, body)
    with pytest.raises(InvalidRecord, match="max_payments must be a non-negative int"):
        make_store(-1)


def test_closed_store_refuses_everything(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        await store.save(cid(1), b"x")
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreClosed):
            await store.save(cid(1), b"y")
        with pytest.raises(StoreClosed):
            await store.save_checkpoint(Checkpoint(1, bytes(32)))
        with pytest.raises(StoreClosed):
            store.load_channels()
        with pytest.raises(StoreClosed):
            store.payments()

    asyncio.run(main())


def test_an_outcome_changes_only_status_version_and_reason_and_a_new_record_never_overwrites(
    make_store: MakeStore,
) -> None:
    async def body(store: Store) -> None:
        await store.save(cid(1), blob(1), [record("p", cid(1), amount=7, created_ms=100)])
        # the outcome as a node rebuilt it after a restart: another creation time, the same payment
        await store.save(cid(1), blob(2), [record("p", cid(1), amount=7, status="sent", version=3, created_ms=999)])
        (row,) = store.payments()
        assert (row.status, row.version, row.created_ms, row.amount) == ("sent", 3, 100, 7)
        # a new record under a used id (a retry after a restart reusing the id) leaves the row as it is
        await store.save(cid(1), blob(3), [record("p", cid(1), amount=9, created_ms=5)])
        assert store.payments() == [row]
        # pending and its outcome in one save: the outcome is stored, whole
        await store.save(
            cid(1),
            blob(4),
            [record("q", cid(1), created_ms=200), record("q", cid(1), status="failed", reason="x", created_ms=200)],
        )
        newest = store.payments(limit=1)[0]
        assert (newest.payment_id, newest.status, newest.reason) == ("q", "failed", "x")

    run(make_store, body)


def test_quotes_are_kept_until_they_expire_one_per_channel_and_id(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        first = StoredQuote(cid(1), 7, 1_000, b"seven")
        await store.save_quote(first, now_ms=0)
        await store.save_quote(StoredQuote(cid(2), 7, 5_000, b"other channel"), now_ms=0)
        await store.save_quote(StoredQuote(cid(1), 3, 900, b"three"), now_ms=0)
        assert [(q.channel_id, q.quote_id) for q in store.load_quotes(0)] == [(cid(1), 3), (cid(1), 7), (cid(2), 7)]
        assert store.load_quotes(now_ms=950) == [first, StoredQuote(cid(2), 7, 5_000, b"other channel")]
        await store.save_quote(StoredQuote(cid(1), 7, 2_000, b"seven again"), now_ms=950)  # replaces; prunes id 3
        assert store.load_quotes(0) == [
            StoredQuote(cid(1), 7, 2_000, b"seven again"),
            StoredQuote(cid(2), 7, 5_000, b"other channel"),
        ]
        with pytest.raises(InvalidRecord):
            await store.save_quote(StoredQuote(cid(1), 2**63, 1, b""), now_ms=0)
        with pytest.raises(InvalidRecord):
            await store.save_quote(StoredQuote(b"short", 1, 1, b""), now_ms=0)
        assert len(store.load_quotes(0)) == 2, "a refused quote changes nothing"

    run(make_store, body)


def test_pruning_is_counted_per_channel(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        assert store.max_payments == 3 and store.pruned() == 0
        await store.save(cid(1), b"x", [record(f"a{j}", cid(1), created_ms=j) for j in range(3)])
        await store.save(cid(2), b"x", [record(f"b{j}", cid(2), created_ms=10 + j) for j in range(2)])
        assert (store.pruned(cid(1)), store.pruned(cid(2)), store.pruned()) == (2, 0, 2)

    run(make_store, body, max_payments=3)


def test_a_page_is_limit_rows_after_offset(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        await store.save(cid(1), b"x", [record(f"p{j}", cid(1), created_ms=j) for j in range(7)])
        pages = [[p.created_ms for p in store.payments(cid(1), limit=3, offset=o)] for o in (0, 3, 6, 9)]
        assert pages == [[6, 5, 4], [3, 2, 1], [0], []]
        with pytest.raises(InvalidRecord):
            store.payments(limit=1, offset=-1)

    run(make_store, body)


def test_paging_by_key_neither_skips_nor_repeats_while_rows_arrive(make_store: MakeStore) -> None:
    async def body(store: Store) -> None:
        a, b = cid(1), cid(2)
        for i in range(10):  # two channels, some rows sharing a millisecond
            await store.save(a if i % 3 else b, b"x", [record(f"p{i}", a if i % 3 else b, created_ms=100 + i // 2)])
        everything = [p.payment_id for p in store.payments(limit=100)]
        seen: list[str] = []
        key = None
        for n in range(100):
            page, last = store.payments_before(None, 3, key)
            seen += [p.payment_id for p in page]
            await store.save(a, b"x", [record(f"new{n}", a, created_ms=200 + n)])  # arrives while paging
            if len(page) < 3:
                assert last is None or len(page) > 0
                break
            key = last
        assert seen == everything  # every row there when paging began, once, in order
        mine, key = [], None
        while True:
            page, key = store.payments_before(a, 4, key)
            mine += [p.payment_id for p in page]
            if len(page) < 4:
                break
        assert mine == [p.payment_id for p in store.payments(a, limit=1000)]
        assert store.payments_before(cid(9), 5, None) == ([], None)
        for bad in ((1,), (1, -1), (1, 2**63), ("1", 2), [1, 2], (True, 2)):
            with pytest.raises(InvalidRecord, match="page key"):
                store.payments_before(None, 5, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRecord, match="limit"):
            store.payments_before(None, -1, None)

    run(make_store, body)

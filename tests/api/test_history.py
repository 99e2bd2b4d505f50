"""Payment batches are all-or-nothing; the payment history is the same on both sides, bounded by a
stated retention that says when it pruned, and paged."""

from __future__ import annotations

from pathlib import Path

from tests.api.harness import World, error, eventually, run
from tests.api.test_api import open_channel


async def _balance(w: World, side: str, cid: str) -> str:
    api = w.api_a if side == "a" else w.api_b
    return str((await api.get(f"/channels/{cid}")).json()["balances"][0]["my_balance"])


def test_a_batch_that_does_not_fit_is_refused_whole_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1000)
        pay = f"/channels/{cid}/payments"
        assert (await w.api_a.post(pay, json={"amount": "300"})).status_code == 200
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 300)
        before_a = (await w.api_a.get("/payments", params={"channel_id": cid})).json()
        before_b = (await w.api_b.get("/payments", params={"channel_id": cid})).json()

        r = await w.api_a.post(pay, json={"amount": "200", "count": 5})  # 1000 > the 700 A holds
        assert error(r) == (400, "insufficient_funds"), r.text
        assert "1000" in r.json()["error"]["detail"] and "700" in r.json()["error"]["detail"]
        r = await w.api_b.post(pay, json={"amount": "100", "count": 4})  # the follower: 400 > 300
        assert error(r) == (400, "insufficient_funds"), r.text

        assert (await _balance(w, "a", cid), await _balance(w, "b", cid)) == ("700", "300")
        assert (await w.api_a.get("/payments", params={"channel_id": cid})).json() == before_a
        assert (await w.api_b.get("/payments", params={"channel_id": cid})).json() == before_b

        r = await w.api_a.post(pay, json={"amount": "100", "count": 7})  # exactly what A holds: all of it
        assert r.status_code == 200 and (r.json()["sent"], r.json()["failed"]) == (7, 0), r.text
        assert await _balance(w, "a", cid) == "0"

    run(tmp_path, scenario)


def test_history_is_paged_and_says_what_retention_pruned(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1000)
        for amount in range(1, 6):  # five payments, each its own update
            assert (await w.api_a.post(f"/channels/{cid}/payments", json={"amount": str(amount)})).status_code == 200
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 15)

        pages, offset, heads = [], 0, []
        while True:
            r = await w.api_a.get("/payments", params={"channel_id": cid, "limit": 3, "offset": offset})
            assert r.status_code == 200, r.text
            pages.append([int(p["amount"]) for p in r.json()])
            heads.append((r.headers["X-History-Pruned"], r.headers["X-History-Retention"]))
            if "X-Next-Offset" not in r.headers:
                break
            offset = int(r.headers["X-Next-Offset"])
        assert pages == [[5, 4, 3], [2]]  # the newest 4 of 5 kept
        assert set(heads) == {("1", "4")}
        r = await w.api_b.get("/payments", params={"channel_id": cid})
        assert [int(p["amount"]) for p in r.json()] == [5, 4, 3, 2] and r.headers["X-History-Pruned"] == "1"
        assert "X-Next-Offset" not in r.headers

        assert error(await w.api_a.get("/payments", params={"limit": 10_001})) == (422, "validation")
        assert error(await w.api_a.get("/payments", params={"offset": -1})) == (422, "validation")

    run(tmp_path, scenario, history=4)


async def _all_rows(api: object, cid: str) -> list[dict[str, str]]:
    import httpx

    assert isinstance(api, httpx.AsyncClient)
    r = await api.get("/payments", params={"channel_id": cid, "limit": 10_000})
    assert r.status_code == 200 and "X-Next-Offset" not in r.headers, r.text
    rows: list[dict[str, str]] = r.json()
    return rows


def test_both_sides_record_the_same_payments_one_row_each(tmp_path: Path) -> None:
    """Singles, batches and concurrent payments coalesced in the pipeline, both ways: the payee lists
    a row per payment (the update lists them), so both sides show the same rows and totals."""

    async def scenario(w: World) -> None:
        import asyncio

        cid = await open_channel(w, deposit=100_000)
        pay = f"/channels/{cid}/payments"
        for amount in (1, 2, 3):
            assert (await w.api_a.post(pay, json={"amount": str(amount)})).status_code == 200
        assert (await w.api_a.post(pay, json={"amount": "7", "count": 5, "history": "per-payment"})).json()["sent"] == 5
        rs = await asyncio.gather(*(w.api_a.post(pay, json={"amount": str(100 + i)}) for i in range(30)))
        assert all(r.status_code == 200 for r in rs)
        a_paid = 6 + 35 + sum(100 + i for i in range(30))
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == a_paid)
        assert (await w.api_b.post(pay, json={"amount": "11", "count": 4, "history": "per-payment"})).json()[
            "sent"
        ] == 4
        rs = await asyncio.gather(*(w.api_b.post(pay, json={"amount": str(50 + i)}) for i in range(20)))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
        b_paid = 44 + sum(50 + i for i in range(20))
        await eventually(lambda: w.a.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 100_000 - a_paid + b_paid)

        total = 3 + 5 + 30 + 4 + 20
        async with asyncio.timeout(30):  # the rows are written with the state, possibly a moment after
            while True:
                rows = {side: await _all_rows(api, cid) for side, api in (("a", w.api_a), ("b", w.api_b))}
                if len(rows["a"]) >= total and len(rows["b"]) >= total:
                    break
                await asyncio.sleep(0.05)

        def amounts(side: str, direction: str) -> list[int]:
            return sorted(int(p["amount"]) for p in rows[side] if p["direction"] == direction)

        assert len(rows["a"]) == len(rows["b"]) == total
        assert amounts("a", "out") == amounts("b", "in") and sum(amounts("b", "in")) == a_paid
        assert amounts("b", "out") == amounts("a", "in") and sum(amounts("a", "in")) == b_paid
        assert {p["status"] for p in rows["a"] + rows["b"]} == {"sent", "received"}
        in_versions = [p["version"] for p in rows["b"] if p["direction"] == "in"]
        assert len(set(in_versions)) < len(in_versions)  # some updates coalesced several payments

    run(tmp_path, scenario)


def test_paging_by_cursor_while_paying_neither_skips_nor_repeats(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        import asyncio

        cid = await open_channel(w, deposit=100_000)
        pay = f"/channels/{cid}/payments"
        for amount in range(1, 11):
            assert (await w.api_a.post(pay, json={"amount": str(amount)})).status_code == 200
        before = [p["payment_id"] for p in await _all_rows(w.api_a, cid)]
        assert len(before) == 10

        async def keep_paying() -> None:
            while True:
                await w.api_a.post(pay, json={"amount": "1"})

        payer = asyncio.create_task(keep_paying())
        try:
            seen: list[str] = []
            params: dict[str, str | int] = {"channel_id": cid, "limit": 3}
            while True:
                count = len(await _all_rows(w.api_a, cid))

                def arrived(n: int = count) -> bool:
                    return len(w.a.payments(bytes.fromhex(cid[2:]), 10_000)) > n

                await eventually(arrived)  # one arrived since the last page
                r = await w.api_a.get("/payments", params=params)
                assert r.status_code == 200, r.text
                seen += [p["payment_id"] for p in r.json()]
                if "X-Next-Cursor" not in r.headers:
                    break
                params = {"channel_id": cid, "limit": 3, "cursor": r.headers["X-Next-Cursor"]}
        finally:
            payer.cancel()
        assert len(seen) == len(set(seen)), "a row was repeated"
        assert seen[-len(before) :] == before, "a row there before paging began was skipped"
        assert error(await w.api_a.get("/payments", params={"cursor": "abc"})) == (422, "validation")
        assert error(await w.api_a.get("/payments", params={"cursor": "1.2"})) == (422, "validation")
        assert error(await w.api_a.get("/payments", params={"cursor": "0" * 32, "offset": 3})) == (422, "validation")
        assert error(await w.api_a.get("/payments", params={"cursor": f"{2**63:016x}{1:016x}"})) == (422, "validation")

    run(tmp_path, scenario)

"""Batch payments over HTTP (decision 0012): `count` or `amounts` is one payment of the total, one
future, one row on each side with the count; validated before the node is asked; an Idempotency-Key
names the whole batch."""

from __future__ import annotations

from pathlib import Path

from tests.api.harness import World, error, eventually, run, sse
from tests.api.test_api import open_channel


def test_a_batch_is_one_row_on_each_side_with_its_count_and_total(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1_000_000)
        pay = f"/channels/{cid}/payments"
        r = await w.api_a.post(pay, json={"amount": "3", "count": 100_000})
        assert r.status_code == 200, r.text
        view = r.json()
        assert (view["requested"], view["sent"], view["failed"], view["pending"]) == (100_000, 100_000, 0, 0)
        assert view["total"] == "300000" and view["batch_id"] and view["version"] > 0
        r = await w.api_a.post(pay, json={"amounts": ["1", "2", "30"]})
        assert r.status_code == 200 and (r.json()["sent"], r.json()["total"]) == (3, "33"), r.text
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 300_033)
        rows = (await w.api_a.get("/payments", params={"channel_id": cid})).json()
        assert [(p["amount"], p["count"], p["status"]) for p in rows] == [
            ("33", 3, "sent"),
            ("300000", 100_000, "sent"),
        ]
        assert rows[1]["payment_id"] == view["batch_id"]
        sent = [e for e in await sse(w.api_a, since=0, timeout=0.5) if e["kind"] == "sent"]
        assert [(e["data"]["payments"], e["data"]["count"]) for e in sent] == [
            ([view["batch_id"]], 100_000),
            ([rows[0]["payment_id"]], 3),
        ]
        metrics = (await w.api_a.get("/metrics")).text
        assert 'statechannel_payments_total{outcome="sent"} 100003.0' in metrics  # a batch counts its payments

        async def peer_rows() -> list[tuple[str, int]]:
            got = (await w.api_b.get("/payments", params={"channel_id": cid})).json()
            return [(p["amount"], p["count"]) for p in got]

        for _ in range(100):  # the payee's rows are written with its state, possibly a moment after
            if len(await peer_rows()) == 2:
                break
        assert await peer_rows() == [("33", 3), ("300000", 100_000)]

    run(tmp_path, scenario)


def test_a_batch_request_is_validated_before_the_node_is_asked(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1000)
        pay = f"/channels/{cid}/payments"
        bodies: list[dict[str, object]] = [
            {"amount": "1", "amounts": ["1"]},  # both forms
            {},  # neither
            {"amounts": ["1"], "count": 2},
            {"amounts": []},
            {"amounts": ["0"]},
            {"amounts": [1]},  # a JSON number
            {"amounts": ["1.5"]},
            {"amounts": ["1"] * 10_001},
            {"amounts": ["1", "2"], "history": "per-payment"},
            {"amount": "1", "count": 2, "history": "sometimes"},
            {"amount": "1", "count": 10**12 + 1},
            {"amount": "1", "count": 1_000_001, "history": "per-payment"},
            {"amount": "1", "count": True},
        ]
        for bad in bodies:
            r = await w.api_a.post(pay, json=bad)
            assert error(r)[0] in (413, 422), (bad, r.text)
        r = await w.api_a.post(pay, json={"amounts": ["600", "401"]})  # 1001 > the 1000 A holds
        assert error(r) == (400, "insufficient_funds"), r.text
        assert (await w.api_a.get("/payments", params={"channel_id": cid})).json() == []
        assert w.a.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 1000

    run(tmp_path, scenario)


def test_a_retried_batch_with_its_idempotency_key_pays_once(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1000)
        pay = f"/channels/{cid}/payments"
        key = {"Idempotency-Key": "invoice-7"}
        first = await w.api_a.post(pay, json={"amount": "2", "count": 50}, headers=key)
        assert first.status_code == 200 and first.json()["sent"] == 50, first.text
        again = await w.api_a.post(pay, json={"amount": "2", "count": 50}, headers=key)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["batch_id"] == first.json()["batch_id"] and again.json()["sent"] == 50
        other = await w.api_a.post(pay, json={"amount": "2", "count": 51}, headers=key)
        assert error(other) == (409, "validation")
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 100)
        assert len((await w.api_a.get("/payments", params={"channel_id": cid})).json()) == 1

    run(tmp_path, scenario)

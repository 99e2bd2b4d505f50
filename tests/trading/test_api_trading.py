"""The trading routes over ASGI, on apps built by create_app with the trading router included."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx

from statechannel.core.types import to_checksum
from tests.trading.world import API_TOKEN, World, app_of, eventually, open_two_assets, run


@asynccontextmanager
async def clients(w: World) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        out = []
        for node in (w.a, w.b):
            app = app_of(node)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://node.test",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=60,
            )
            out.append(await stack.enter_async_context(client))
        yield out[0], out[1]


def reason(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"}, body
    return r.status_code, body["error"]["reason"]


def test_quote_take_and_positions_over_http(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_two_assets(w)
        path = f"/channels/0x{cid.hex()}"
        token = to_checksum(w.token.address)
        async with clients(w) as (api_a, api_b):
            # B makes: buys the token, paying 5 wei per 2 token units, up to 1,000 units
            body = {"side": "buy", "base": token, "quote": "eth", "base_unit": "2", "quote_unit": "5", "size": "1000"}
            r = await api_b.post(f"{path}/quotes", json=body)
            assert r.status_code == 201, r.text
            made = r.json()
            assert (made["side"], made["base"], made["quote"], made["filled"]) == ("buy", token, "eth", "0")
            qid = made["quote_id"]
            await eventually(lambda: w.a.quotes(cid))
            book = (await api_a.get(f"{path}/quotes")).json()
            assert [q["quote_id"] for q in book["received"]] == [qid] and book["sent"] == []
            assert book["received"][0]["maker"] == to_checksum(w.b.address)

            r = await api_a.post(f"{path}/takes", json={"quote_id": qid, "base_amount": "10"})
            assert r.status_code == 200, r.text
            fill = r.json()
            assert (fill["side"], fill["base_amount"], fill["quote_amount"], fill["maker"]) == (
                "sell",
                "10",
                "25",
                False,
            )
            assert fill["version"] > 0

            r = await api_a.post(f"{path}/takes", json={"quote_id": qid, "base_amount": "2", "count": 100})
            batch = r.json()
            assert (batch["filled"], batch["failed"], batch["pending"]) == (100, 0, 0), batch
            assert (batch["base_amount"], batch["quote_amount"]) == ("200", "500")

            # refusals, each with its reason
            assert reason(await api_a.post(f"{path}/takes", json={"quote_id": qid, "base_amount": "3"})) == (
                400,
                "bad_amount",
            )
            assert reason(await api_a.post(f"{path}/takes", json={"quote_id": "12", "base_amount": "2"})) == (
                400,
                "unknown_quote",
            )
            assert reason(await api_a.post(f"{path}/takes", json={"quote_id": qid, "base_amount": "792"})) == (
                400,
                "oversize",
            )  # 790 left: the maker refuses
            assert reason(await api_a.post(f"{path}/takes", json={"quote_id": qid, "base_amount": 2})) == (
                422,
                "validation",
            )
            other = "0x" + "11" * 32
            assert reason(await api_a.post(f"/channels/{other}/takes", json={"quote_id": qid, "base_amount": "2"})) == (
                404,
                "wrong_channel",
            )
            bad_quote = {**body, "quote": token}
            assert reason(await api_b.post(f"{path}/quotes", json=bad_quote)) == (400, "bad_assets")

            book_b = (await api_b.get(f"{path}/quotes")).json()
            assert [(q["quote_id"], q["filled"]) for q in book_b["sent"]] == [(qid, "210")]

            (pos_a,) = (await api_a.get(f"{path}/positions")).json()
            assert (pos_a["base_net"], pos_a["quote_net"], pos_a["trades"]) == ("-210", "525", 101)
            assert pos_a["average_price"] == "5/2" and pos_a["realised_pnl"] == "0"
            (pos_b,) = (await api_b.get("/positions")).json()
            assert (pos_b["base_net"], pos_b["quote_net"]) == ("210", "-525")
            fills_b = (await api_b.get("/fills", params={"channel_id": f"0x{cid.hex()}", "limit": 5})).json()
            assert len(fills_b) == 5 and all(f["maker"] and f["side"] == "buy" for f in fills_b)
            assert all(x["version"] >= y["version"] for x, y in itertools.pairwise(fills_b))

            doc = (await api_a.get("/openapi.json")).json()
            assert {"/channels/{channel_id}/quotes", "/channels/{channel_id}/takes", "/positions", "/fills"} <= set(
                doc["paths"]
            )

    run(tmp_path, scenario)

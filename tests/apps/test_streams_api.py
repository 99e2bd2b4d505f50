"""The streams routes through HTTP, on a real node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from statechannel.api.app import create_app
from statechannel.api.streams import StreamService
from statechannel.node.node import Node
from tests.node.test_node import World, open_funded, run

TOKEN = "t" * 64


def test_streams_recurring_and_watch_over_http(tmp_path: Path) -> None:
    async def scenario(world: World, a: Node, b: Node) -> None:
        cid = await open_funded(world, a, b, 10**6, 0)
        apps = []
        for node, name in ((a, "a"), (b, "b")):
            app = create_app(node, TOKEN)
            app.state.streams = StreamService(node, tmp_path / name)
            (tmp_path / name).mkdir()
            apps.append(app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        transport_a, transport_b = (httpx.ASGITransport(app=x) for x in apps)
        async with (
            httpx.AsyncClient(transport=transport_a, base_url="http://a", headers=headers) as ca,
            httpx.AsyncClient(transport=transport_b, base_url="http://b", headers=headers) as cb,
        ):
            cid_hex = "0x" + cid.hex()
            r = await cb.post("/watches", json={"channel_id": cid_hex, "rate_per_s": "1000", "grace": "0"})
            assert r.status_code == 201, r.text
            watch_id = r.json()["watch_id"]
            r = await ca.post("/streams", json={"channel_id": cid_hex, "rate_per_s": "1000", "cap": "50", "tick_ms": 5})
            assert r.status_code == 201, r.text
            sid = r.json()["stream_id"]
            for _ in range(500):
                view = (await ca.get(f"/streams/{sid}")).json()
                if view["status"] == "completed":
                    break
                await asyncio.sleep(0.01)
            assert view["status"] == "completed" and view["paid"] == "50"
            assert (await cb.get(f"/watches/{watch_id}")).json()["received"] == "50"
            r = await ca.post(f"/streams/{sid}/meter", json={"units": 1, "price_per_unit": "5"})
            assert r.status_code == 200 and r.json()["paid"] == "50"  # the cap holds
            r = await ca.post("/recurring", json={"channel_id": cid_hex, "amount": "7", "period_ms": 1000, "count": 2})
            assert r.status_code == 201 and r.json()["remaining"] == 2
            assert len((await ca.get("/recurring")).json()) == 1
            assert (await ca.delete(f"/recurring/{r.json()['schedule_id']}")).status_code == 204
            # bad input: floats, negatives, unknown channel, no token
            bad = await ca.post("/streams", json={"channel_id": cid_hex, "rate_per_s": 1.5, "cap": "5"})
            assert bad.status_code == 422 and bad.json()["error"]["reason"] == "validation"
            unknown = await ca.post("/streams", json={"channel_id": "0x" + "11" * 32, "rate_per_s": "1", "cap": "5"})
            assert unknown.status_code == 404
            assert (await ca.get("/streams/ffff")).json()["error"]["reason"] == "bad_params"
            anonymous = await ca.get("/streams", headers={"Authorization": "Bearer nope"})
            assert anonymous.status_code == 401
        for app in apps:
            await app.state.streams.close()

    run(tmp_path, scenario)

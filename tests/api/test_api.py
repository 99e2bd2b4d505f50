"""The node's HTTP API, driven over ASGI against two real nodes on one embedded chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.routing import APIRoute

from statechannel.api.events import EventHub
from statechannel.api.metrics import router as metrics_router
from statechannel.api.routes import router
from statechannel.api.streams import router as streams_router
from statechannel.api.trading import router as trading_router
from statechannel.core.channel import Phase
from statechannel.core.types import to_checksum
from statechannel.net.memory import MemoryTransport
from tests.api.harness import ETHER, TOKEN, World, client, error, eventually, key, run, sse
from tests.terms import TEST_TERMS

DEPOSIT = 5 * ETHER


async def open_channel(w: World, deposit: int = DEPOSIT) -> str:
    r = await w.api_a.post("/channels", json={"peer": to_checksum(w.b.address), "deposits": {"eth": str(deposit)}})
    assert r.status_code == 201, r.text
    cid: str = r.json()["channel_id"]
    await w.a.wait_for(bytes.fromhex(cid[2:]), Phase.OPEN)
    await w.b.wait_for(bytes.fromhex(cid[2:]), Phase.OPEN)
    return cid


def test_every_request_needs_the_token(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        for token in (None, "cd" * 32, TOKEN[:-1], ""):
            async with client(w.app_a, token) as anon:
                for method, path in (("GET", "/node"), ("GET", "/openapi.json"), ("GET", "/no/such/path")):
                    r = await anon.request(method, path)
                    assert error(r) == (401, "unauthorized"), (token, path)
                    assert r.headers["www-authenticate"] == "Bearer"
                # refused before the body is even parsed: no hint whether the JSON was well formed
                r = await anon.post("/channels", content=b"{not json", headers={"content-type": "application/json"})
                assert error(r) == (401, "unauthorized")
        async with client(w.app_a, None) as anon:
            r = await anon.get("/node", headers={"Authorization": f"Basic {TOKEN}"})
            assert error(r) == (401, "unauthorized")
        r = await w.api_a.get("/node")
        assert r.status_code == 200
        info = r.json()
        assert info["address"] == to_checksum(w.a.address)
        assert info["adjudicator"] == to_checksum(w.adjudicator.address)
        assert info["chain_id"] == w.chain.chain_id
        assert int(info["eth_balance"]) == w.chain.balance(w.a.address)
        assert info["terms"] == {  # the challenge periods it accepts (issue 9, attack 3)
            "min_challenge_period": TEST_TERMS.min_challenge_period,
            "max_challenge_period": TEST_TERMS.max_challenge_period,
            "max_unfunded_per_peer": 8,
        }

    run(tmp_path, scenario)


def test_openapi_lists_every_endpoint(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        doc = (await w.api_a.get("/openapi.json")).json()
        documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
        routes = [*router.routes, *streams_router.routes, *trading_router.routes, *metrics_router.routes]
        served = {(route.path, m) for route in routes if isinstance(route, APIRoute) for m in route.methods or ()}
        assert documented == served
        assert served >= {
            ("/node", "GET"),
            ("/peers", "POST"),
            ("/channels", "GET"),
            ("/channels", "POST"),
            ("/channels/{channel_id}", "GET"),
            ("/channels/{channel_id}/deposit", "POST"),
            ("/channels/{channel_id}/withdraw", "POST"),
            ("/channels/{channel_id}/close", "POST"),
            ("/channels/{channel_id}/payments", "POST"),
            ("/payments", "GET"),
            ("/events", "GET"),
            ("/streams", "GET"),
            ("/streams", "POST"),
            ("/streams/{stream_id}", "GET"),
            ("/streams/{stream_id}/pause", "POST"),
            ("/streams/{stream_id}/resume", "POST"),
            ("/streams/{stream_id}/stop", "POST"),
            ("/streams/{stream_id}/meter", "POST"),
            ("/watches", "POST"),
            ("/watches/{watch_id}", "GET"),
            ("/recurring", "GET"),
            ("/recurring", "POST"),
            ("/recurring/{schedule_id}", "DELETE"),
        }
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert doc["security"] == [{"bearer": []}]
        pay = doc["components"]["schemas"]["PayRequest"]["properties"]
        # amounts are decimal strings, never JSON numbers: one (or none, with `amounts`), or a batch of them
        assert [t["type"] for t in pay["amount"]["anyOf"]] == ["string", "null"]
        assert pay["amounts"]["anyOf"][0]["items"]["type"] == "string"
        assert pay["history"]["enum"] == ["batch", "per-payment"]
        view = doc["components"]["schemas"]["PaymentView"]["properties"]
        assert view["count"]["type"] == "integer"
        assert "text/event-stream" in doc["paths"]["/events"]["get"]["responses"]["200"]["content"]
        assert "ErrorResponse" in str(doc["paths"]["/channels/{channel_id}"]["get"]["responses"]["404"])

    run(tmp_path, scenario)


def test_open_pay_list_stream_and_close(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        b_before = w.chain.balance(w.b.address)
        cid = await open_channel(w)
        r = await w.api_a.get(f"/channels/{cid}")
        ch = r.json()
        assert ch["phase"] == "open" and ch["role"] == "a" and ch["peer"] == to_checksum(w.b.address)
        assert ch["balances"] == [
            {
                "asset": "eth",
                "my_balance": str(DEPOSIT),
                "peer_balance": "0",
                "my_funded": str(DEPOSIT),
                "peer_funded": "0",
                "my_deposit": str(DEPOSIT),
                "peer_deposit": "0",
            }
        ]

        r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "1234"})
        assert r.status_code == 200, r.text
        paid = r.json()
        first = paid["payment_id"]
        assert paid["status"] == "sent" and paid["channel_id"] == cid
        assert paid["amount"] == "1234" and paid["asset"] == "eth" and paid["version"] >= 2

        r = await w.api_a.post(
            f"/channels/{cid}/payments", json={"amount": "10", "count": 200, "history": "per-payment"}
        )
        batch = r.json()
        assert (batch["requested"], batch["sent"], batch["failed"], batch["pending"]) == (200, 200, 0, 0)
        total = 1234 + 200 * 10
        await eventually(lambda: w.b.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == total)

        listed = (await w.api_a.get("/payments", params={"channel_id": cid, "limit": 1000})).json()
        assert len(listed) == 201 and {p["status"] for p in listed} == {"sent"}
        assert any(p["payment_id"] == first and p["amount"] == "1234" for p in listed)
        received = (await w.api_b.get("/payments", params={"channel_id": cid, "limit": 1000})).json()
        assert {p["direction"] for p in received} == {"in"} and len(received) == 201  # one row per payment
        assert sum(int(p["amount"]) for p in received) == total

        events_a = await sse(w.api_a, since=0, timeout=0.5)
        assert [e["data"]["phase"] for e in events_a if e["kind"] == "phase"] == ["opening", "funding", "open"]
        sent = [e for e in events_a if e["kind"] == "sent"]
        assert sent[0]["data"]["payments"] == [first] and sent[0]["channel_id"] == cid
        assert sum(len(e["data"]["payments"]) for e in sent) == 201
        assert [e["id"] for e in events_a] == sorted(e["id"] for e in events_a)
        events_b = await sse(w.api_b, since=0, channel_id=cid, timeout=0.5)
        assert sum(int(e["data"]["amounts"]["eth"]) for e in events_b if e["kind"] == "received") == total

        # live: a stream opened after the last event gets exactly the next one, then ends (limit)
        last = events_a[-1]["id"]
        reader = asyncio.ensure_future(sse(w.api_a, since=last, limit=1, timeout=30))
        one = (await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "1"})).json()
        (live,) = await reader
        assert live["kind"] == "sent" and live["data"]["payments"] == [one["payment_id"]] and live["id"] == last + 1

        # not countersigned within the timeout: 202, still pending, and it completes on its own
        r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "5", "timeout": 1e-6})
        assert r.status_code == 202 and r.json()["status"] == "pending", r.text
        late = r.json()["payment_id"]

        def late_sent() -> bool:
            return any(p.payment_id == late and p.status == "sent" for p in w.a.payments(limit=5))

        await eventually(late_sent)

        r = await w.api_a.post(f"/channels/{cid}/close", json={"wait": 30})
        assert r.status_code == 202 and r.json()["phase"] == "closed", r.text
        await w.b.wait_for(bytes.fromhex(cid[2:]), Phase.CLOSED)
        # A submitted the close, so B received exactly what it was paid
        assert w.chain.balance(w.b.address) == b_before + total + 1 + 5
        phases = [e["data"]["phase"] for e in await sse(w.api_a, since=last, timeout=0.5) if e["kind"] == "phase"]
        assert phases[-2:] == ["closing", "closed"]

    run(tmp_path, scenario)


def test_error_shapes(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_channel(w, deposit=1000)
        unknown = "0x" + "11" * 32
        assert error(await w.api_a.get(f"/channels/{unknown}")) == (404, "wrong_channel")
        assert error(await w.api_a.post(f"/channels/{unknown}/payments", json={"amount": "1"})) == (
            404,
            "wrong_channel",
        )
        assert error(await w.api_a.get("/payments", params={"channel_id": unknown})) == (404, "wrong_channel")
        assert error(await w.api_a.get("/channels/0x1234")) == (422, "validation")

        pay = f"/channels/{cid}/payments"
        r = await w.api_a.post(pay, json={"amount": "1001"})
        assert error(r) == (400, "insufficient_funds")
        for bad in (1.5, 5, -3, "-3", "1.5", "0", "1e3", " 7", "0x10", str(2**256), None, True):
            r = await w.api_a.post(pay, json={"amount": bad})
            assert error(r) == (422, "validation"), bad
            assert "amount" in r.json()["error"]["detail"]
        assert error(await w.api_a.post(pay, json={"amount": "1", "asset": "btc"})) == (422, "validation")
        assert error(await w.api_a.post(pay, json={"amount": "1", "ammount": "1"})) == (422, "validation")
        assert error(await w.api_a.post(pay, json={"amount": "1", "payment_id": "x"})) == (422, "validation")
        assert error(await w.api_a.post(pay, json={"amount": "1", "count": 0})) == (422, "validation")
        token = "0x" + "22" * 20
        r = await w.api_a.post(pay, json={"amount": "1", "asset": token})
        assert error(r) == (400, "bad_assets")
        r = await w.api_a.post(f"/channels/{cid}/withdraw", json={"asset": "eth", "amount": "1001"})
        assert error(r) == (400, "insufficient_funds")
        r = await w.api_a.post("/channels", json={"peer": _mangle(w.b.address), "deposits": {"eth": "1"}})
        assert error(r) == (422, "validation") and "checksum" in r.json()["error"]["detail"]
        r = await w.api_a.post("/peers", json={"address": to_checksum(w.b.address), "host": "127.0.0.1", "port": 1})
        assert error(r) == (400, "unsupported")  # the in-memory link cannot dial

        assert isinstance(w.transports[0], MemoryTransport)
        await w.transports[0].disconnect()
        assert error(await w.api_a.post(pay, json={"amount": "1"})) == (503, "peer_unreachable")
        r = await w.api_a.post("/channels", json={"peer": to_checksum(w.b.address), "deposits": {"eth": "1"}})
        assert error(r) == (503, "peer_unreachable")
        await w.transports[0].reconnect()

        # nothing above moved any value
        assert w.a.channel(bytes.fromhex(cid[2:])).my_balance(bytes(20)) == 1000
        r = await w.api_a.post(f"/channels/{cid}/close", json={"wait": 30})
        assert r.json()["phase"] == "closed"
        assert error(await w.api_a.post(pay, json={"amount": "1"})) == (409, "wrong_phase")
        assert error(await w.api_a.post(f"/channels/{cid}/close", json={})) == (409, "wrong_phase")
        r = await w.api_a.post(f"/channels/{cid}/deposit", json={"asset": "eth", "amount": "5"})
        assert error(r) == (409, "wrong_phase")

    run(tmp_path, scenario)


def _mangle(address: bytes) -> str:
    """The checksummed address with one letter's case flipped: the typo EIP-55 exists to catch."""
    text = to_checksum(address)
    i = next(i for i, c in enumerate(text[2:], 2) if c.isalpha())
    return text[:i] + text[i].swapcase() + text[i + 1 :]


def test_connect_a_peer_over_tcp_and_pay(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        peer = to_checksum(w.b.address)
        r = await w.api_a.post("/peers", json={"address": peer, "host": "127.0.0.1", "port": w.b_listen})
        want = {"address": peer, "connected": True, "host": "127.0.0.1", "port": w.b_listen, "channels": 0}
        assert r.status_code == 200 and r.json() == want, r.text
        cid = await open_channel(w, deposit=ETHER)
        r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "7"})
        assert r.json()["status"] == "sent"
        assert (await w.api_b.get(f"/channels/{cid}")).json()["balances"][0]["my_balance"] == "7"

        stranger = to_checksum(key("stranger").address)  # B answers at that port, not the stranger
        r = await w.api_a.post("/peers", json={"address": stranger, "host": "127.0.0.1", "port": w.b_listen})
        assert error(r) == (503, "handshake_failed")
        r = await w.api_a.post("/peers", json={"address": stranger, "host": "127.0.0.1", "port": 1, "timeout": 0.5})
        assert error(r) == (503, "peer_unreachable")

    run(tmp_path, scenario, tcp=True)


def test_a_client_behind_the_event_buffer_is_told_what_it_missed(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        hub = EventHub(w.a, capacity=2)
        hub.start()
        await asyncio.sleep(0)  # let the hub subscribe before anything happens
        cid = await open_channel(w, deposit=1000)  # phases opening, funding, the open mined (tx), open
        for _ in range(2):
            await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "1"})  # two 'sent'
        await eventually(lambda: hub.last_seq == 6)
        got = [ev async for ev in hub.stream(after=0, timeout=0.2)]
        assert [(e.seq, e.kind) for e in got] == [(4, "gap"), (5, "sent"), (6, "sent")]
        assert got[0].data == {"missed": 4}
        filtered = [ev async for ev in hub.stream(after=4, channel_id="0x" + "00" * 32, timeout=0.2)]
        assert filtered == []
        await hub.close()
        assert [ev async for ev in hub.stream(after=0)] == []  # a closed hub ends streams at once

    run(tmp_path, scenario)

"""The tower's HTTP API in process (httpx over ASGI) against a real tower on the embedded EVM.

Every refused push must name its reason and leave the held state exactly as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.crypto import SECP256K1_N, Signature
from statechannel.core.tower import receipt_signer
from statechannel.core.types import ETH, ChannelParams, State, to_checksum
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.service import Tower
from tests.watchtower.helpers import (
    Setup,
    deploy,
    eth_state,
    key,
    open_channel,
    params_json,
    running_tower,
    sign,
    state_json,
)

TOKEN = bytes.fromhex("00000000000000000000000000000000000000ab")


def run_api(tmp_path: Path, body: Any) -> None:
    s = deploy(EmbeddedChain(), "api")

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            transport = httpx.ASGITransport(app=create_tower_app(tower))
            async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
                await body(s, tower, client)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def reason(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["reason"]


def test_info_and_registration(tmp_path: Path) -> None:
    async def body(s: Setup, tower: Tower, client: httpx.AsyncClient) -> None:
        info = (await client.get("/info")).json()
        assert info == {
            "address": to_checksum(s.tower_key.address),
            "chain_id": s.chain.chain_id,
            "adjudicator": to_checksum(s.adj.address),
            "channels": 0,
            "head": info["head"],
        }
        assert info["head"] >= 1
        params = open_channel(s, 1)
        never_opened = ChannelParams(s.a.address, s.b.address, 1000, 99)
        assert reason(await client.post("/channels", json=params_json(never_opened))) == (404, "unknown_channel")
        first = await client.post("/channels", json=params_json(params))
        assert first.status_code == 201 and first.json()["channel_id"] == "0x" + s.adj.channel_id(params).hex()
        again = await client.post("/channels", json=params_json(params))
        assert again.status_code == 200 and again.json()["channel_id"] == first.json()["channel_id"]
        assert (await client.get("/info")).json()["channels"] == 1
        bad = {**params_json(params), "a": "0x1234"}
        assert reason(await client.post("/channels", json=bad)) == (422, "bad_params")
        same = {**params_json(params), "b": params_json(params)["a"]}
        assert reason(await client.post("/channels", json=same)) == (422, "bad_params")
        assert reason(await client.post("/channels", json={**params_json(params), "nonce": 1})) == (422, "validation")
        assert reason(await client.post("/channels", json={**params_json(params), "challenge_period": 1.5})) == (
            422,
            "validation",
        )
        view = (await client.get(f"/channels/{first.json()['channel_id']}")).json()
        assert (view["version"], view["status"], view["nonce"], view["challenge"]) == (None, "watching", "1", None)
        unknown = "0x" + "11" * 32
        assert reason(await client.get(f"/channels/{unknown}")) == (404, "unknown_channel")
        schema = (await client.get("/openapi.json")).json()
        assert {"/info", "/channels", "/states", "/channels/{channel_id}"} <= set(schema["paths"])

    run_api(tmp_path, body)


def test_bad_pushes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async def body(s: Setup, tower: Tower, client: httpx.AsyncClient) -> None:
        px, py = open_channel(s, 1), open_channel(s, 2)
        x, y = s.adj.channel_id(px), s.adj.channel_id(py)
        for p in (px, py):
            assert (await client.post("/channels", json=params_json(p))).status_code == 201
        good = sign(s.adj.domain, eth_state(y, 3, 50), s.a, s.b)
        ok = await client.post("/states", json=state_json(good))
        assert ok.status_code == 200, ok.text
        got = ok.json()
        assert (got["channel_id"], got["version"], got["tower"]) == ("0x" + y.hex(), 3, to_checksum(tower.address))
        receipt = Signature.from_bytes(bytes.fromhex(got["receipt"][2:]))
        assert receipt_signer(s.adj.domain, y, 3, receipt) == s.tower_key.address
        held = tower.store.get(y)

        async def refused(payload: dict[str, Any], expected: tuple[int, str]) -> None:
            r = await client.post("/states", json=payload)
            assert reason(r) == expected, r.text
            assert r.json()["error"]["detail"]
            assert tower.store.get(y) == held  # nothing changed

        mallory = key("api mallory")
        newer = eth_state(y, 4, 60)
        forged = sign(s.adj.domain, newer, mallory, mallory)
        await refused(state_json(forged), (422, "wrong_signer"))
        both_by_a = sign(s.adj.domain, newer, s.a, s.a)
        await refused(state_json(both_by_a), (422, "wrong_signer"))
        one_signed = {**state_json(sign(s.adj.domain, newer, s.a, s.b)), "sig_b": "0x" + "00" * 65}
        await refused(one_signed, (422, "bad_signature"))
        high = sign(s.adj.domain, newer, s.a, s.b)
        sig = high.sig_b
        malleated = sig.r.to_bytes(32, "big") + (SECP256K1_N - sig.s).to_bytes(32, "big") + bytes([55 - sig.v])
        await refused({**state_json(high), "sig_b": "0x" + malleated.hex()}, (422, "bad_signature"))  # high s
        await refused({**state_json(high), "sig_a": "0x1234"}, (422, "bad_signature"))
        for_x = sign(s.adj.domain, eth_state(x, 9, 1), s.a, s.b)  # valid for X, pushed as Y
        await refused(state_json(for_x, channel_id=y), (422, "wrong_signer"))
        await refused(state_json(sign(s.adj.domain, eth_state(y, 2, 40), s.a, s.b)), (409, "stale_version"))
        await refused(state_json(sign(s.adj.domain, eth_state(y, 3, 51), s.a, s.b)), (409, "stale_version"))
        unordered = {**state_json(high), "assets": [to_checksum(TOKEN), to_checksum(ETH)], "transfers": ["1", "2"]}
        await refused(unordered, (422, "bad_assets"))
        await refused({**state_json(high), "transfers": []}, (422, "bad_assets"))
        await refused({**state_json(high), "assets": ["0xzz"]}, (422, "bad_assets"))
        await refused({**state_json(high), "transfers": ["1.5"]}, (422, "bad_state"))
        await refused({**state_json(high), "transfers": [str(2**255)]}, (422, "bad_state"))
        await refused({**state_json(high), "transfers": [60]}, (422, "validation"))
        await refused({**state_json(high), "transfers": ["1"] * 100}, (422, "validation"))  # bounded before parsing
        await refused({**state_json(high), "version": 4.0}, (422, "validation"))
        await refused({**state_json(high), "version": 2**48}, (422, "bad_state"))
        await refused({**state_json(high), "app_data": "0x00"}, (422, "bad_state"))
        unregistered = sign(s.adj.domain, State(b"\x42" * 32, 1, (ETH,), (0,)), s.a, s.b)
        await refused(state_json(unregistered), (404, "unknown_channel"))

        again = await client.post("/states", json=state_json(good))  # the same state: a fresh receipt
        assert again.status_code == 200 and again.json()["version"] == 3
        assert receipt_signer(s.adj.domain, y, 3, Signature.from_bytes(bytes.fromhex(again.json()["receipt"][2:]))) == (
            s.tower_key.address
        )
        assert (await client.post("/states", json=state_json(high))).status_code == 200
        view = (await client.get(f"/channels/0x{y.hex()}")).json()
        assert (view["version"], view["status"]) == (4, "watching")
        assert (await client.get(f"/channels/0x{x.hex()}")).json()["version"] is None

    run_api(tmp_path, body)

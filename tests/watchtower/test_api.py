"""The tower's HTTP API in process (httpx over ASGI) against a real tower on the embedded EVM.

Every refused push must name its reason and leave the held state exactly as it was."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.crypto import SECP256K1_N, Signature
from statechannel.core.eip712 import state_hash
from statechannel.core.io import SignedState
from statechannel.core.tower import Receipt
from statechannel.core.types import ETH, ChannelParams, State, to_checksum
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.service import Tower
from statechannel.watchtower.storage import Quotas
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


def receipt_signer(s: Setup, got: dict[str, Any], signed: SignedState) -> bytes:
    """Who signed the receipt, rebuilt from what was pushed (and the block the tower named)."""
    r = Receipt(
        signed.state.channel_id, signed.state.version, state_hash(signed.state), s.tower_key.address, got["from_block"]
    )
    assert got["state_hash"] == "0x" + r.state_hash.hex()
    return r.signer(s.adj.domain, Signature.from_bytes(bytes.fromhex(got["receipt"][2:])))


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
            "min_challenge_period": 60,
            "quotas": {"channels": 10_000, "states": 3, "bytes": 32 * 1024 * 1024},
        }
        assert info["head"] >= 1
        params = open_channel(s, 1)
        never_opened = ChannelParams(s.a.address, s.b.address, 1000, 99)
        assert reason(await client.post("/channels", json=params_json(never_opened, s))) == (404, "unknown_channel")
        first = await client.post("/channels", json=params_json(params, s))
        assert first.status_code == 201 and first.json()["channel_id"] == "0x" + s.adj.channel_id(params).hex()
        again = await client.post("/channels", json=params_json(params, s))
        assert again.status_code == 200 and again.json()["channel_id"] == first.json()["channel_id"]
        assert (await client.get("/info")).json()["channels"] == 1
        bad = {**params_json(params, s), "a": "0x1234"}
        assert reason(await client.post("/channels", json=bad)) == (422, "bad_params")
        same = {**params_json(params, s), "b": params_json(params, s)["a"]}
        assert reason(await client.post("/channels", json=same)) == (422, "bad_params")
        assert reason(await client.post("/channels", json={**params_json(params, s), "nonce": 1})) == (
            422,
            "validation",
        )
        assert reason(await client.post("/channels", json={**params_json(params, s), "challenge_period": 1.5})) == (
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
            assert (await client.post("/channels", json=params_json(p, s))).status_code == 201
        good = sign(s.adj.domain, eth_state(y, 3, 50), s.a, s.b)
        ok = await client.post("/states", json=state_json(good, s))
        assert ok.status_code == 200, ok.text
        got = ok.json()
        assert (got["channel_id"], got["version"], got["tower"]) == ("0x" + y.hex(), 3, to_checksum(tower.address))
        assert receipt_signer(s, got, good) == s.tower_key.address and got["from_block"] == tower.head
        held = tower.store.get(y)

        async def refused(payload: dict[str, Any], expected: tuple[int, str]) -> None:
            r = await client.post("/states", json=payload)
            assert reason(r) == expected, r.text
            assert r.json()["error"]["detail"]
            assert tower.store.get(y) == held  # nothing changed

        mallory = key("api mallory")
        newer = eth_state(y, 4, 60)
        forged = sign(s.adj.domain, newer, mallory, mallory)
        await refused(state_json(forged, s), (422, "wrong_signer"))
        both_by_a = sign(s.adj.domain, newer, s.a, s.a)
        await refused(state_json(both_by_a, s), (422, "wrong_signer"))
        one_signed = {**state_json(sign(s.adj.domain, newer, s.a, s.b), s), "sig_b": "0x" + "00" * 65}
        await refused(one_signed, (422, "bad_signature"))
        high = sign(s.adj.domain, newer, s.a, s.b)
        sig = high.sig_b
        malleated = sig.r.to_bytes(32, "big") + (SECP256K1_N - sig.s).to_bytes(32, "big") + bytes([55 - sig.v])
        await refused({**state_json(high, s), "sig_b": "0x" + malleated.hex()}, (422, "bad_signature"))  # high s
        await refused({**state_json(high, s), "sig_a": "0x1234"}, (422, "bad_signature"))
        for_x = sign(s.adj.domain, eth_state(x, 9, 1), s.a, s.b)  # valid for X, pushed as Y
        await refused(state_json(for_x, s, channel_id=y), (422, "wrong_signer"))
        await refused(state_json(sign(s.adj.domain, eth_state(y, 3, 51), s.a, s.b), s), (409, "stale_version"))
        unordered = {**state_json(high, s), "assets": [to_checksum(TOKEN), to_checksum(ETH)], "transfers": ["1", "2"]}
        await refused(unordered, (422, "bad_assets"))
        await refused({**state_json(high, s), "transfers": []}, (422, "bad_assets"))
        await refused({**state_json(high, s), "assets": ["0xzz"]}, (422, "bad_assets"))
        await refused({**state_json(high, s), "transfers": ["1.5"]}, (422, "bad_state"))
        await refused({**state_json(high, s), "transfers": [str(2**255)]}, (422, "bad_state"))
        await refused({**state_json(high, s), "transfers": [60]}, (422, "validation"))
        await refused({**state_json(high, s), "transfers": ["1"] * 100}, (422, "validation"))  # bounded before parsing
        await refused({**state_json(high, s), "version": 4.0}, (422, "validation"))
        await refused({**state_json(high, s), "version": 2**48}, (422, "bad_state"))
        await refused({**state_json(high, s), "app_data": "0x00"}, (422, "bad_state"))
        unregistered = sign(s.adj.domain, State(b"\x42" * 32, 1, (ETH,), (0,)), s.a, s.b)
        await refused(state_json(unregistered, s), (404, "unknown_channel"))

        again = await client.post("/states", json=state_json(good, s))  # the same state: a fresh receipt
        assert again.status_code == 200 and again.json()["version"] == 3
        assert receipt_signer(s, again.json(), good) == s.tower_key.address
        assert (await client.post("/states", json=state_json(high, s))).status_code == 200
        view = (await client.get(f"/channels/0x{y.hex()}")).json()
        assert (view["version"], view["status"]) == (4, "watching")
        assert (await client.get(f"/channels/0x{x.hex()}")).json()["version"] is None

    run_api(tmp_path, body)


def test_requests_must_be_signed_by_a_participant_for_this_tower(tmp_path: Path) -> None:
    """Issue 10, deliverable 2: a client proves it is a party, to this tower, now; anything else changes nothing."""

    async def body(s: Setup, tower: Tower, client: httpx.AsyncClient) -> None:
        params = open_channel(s, 1)
        cid = s.adj.channel_id(params)
        mallory = key("api mallory")
        assert reason(await client.post("/channels", json=params_json(params, s, by=mallory))) == (401, "unauthorized")
        forged = {**params_json(params, s), "client": to_checksum(s.a.address)}  # B's signature, claimed as A's
        assert reason(await client.post("/channels", json=forged)) == (401, "unauthorized")
        other = {**params_json(params, s), "timestamp": int(time.time()) - 3600}  # old (and so not what B signed)
        assert reason(await client.post("/channels", json=other)) == (401, "unauthorized")
        elsewhere = Setup(s.chain, s.adj, s.a, s.b, key("another tower"))  # signed for another tower
        assert reason(await client.post("/channels", json=params_json(params, elsewhere))) == (401, "unauthorized")
        assert tower.row(cid) is None
        assert (await client.post("/channels", json=params_json(params, s, by=s.a))).status_code == 201
        v2 = sign(s.adj.domain, eth_state(cid, 2, 5), s.a, s.b)
        assert reason(await client.post("/states", json=state_json(v2, s, by=mallory))) == (401, "unauthorized")
        replayed = {**state_json(v2, s), **{k: state_json(v2, elsewhere)[k] for k in ("timestamp", "auth")}}
        assert reason(await client.post("/states", json=replayed)) == (401, "unauthorized")
        row = tower.row(cid)
        assert row is not None and row.states == ()
        assert (await client.post("/states", json=state_json(v2, s))).status_code == 200
        view = (await client.get(f"/channels/0x{cid.hex()}")).json()
        assert view["held"] == [{"client": "b", "version": 2}]

    run_api(tmp_path, body)


def test_short_windows_and_full_quotas_are_refused(tmp_path: Path) -> None:
    async def body(s: Setup, tower: Tower, client: httpx.AsyncClient) -> None:
        short = open_channel(s, 1, period=30)
        assert reason(await client.post("/channels", json=params_json(short, s))) == (422, "period_too_short")
        tower.quotas = Quotas(channels=1, states=1, bytes=1000)
        first, second = open_channel(s, 2), open_channel(s, 3)
        assert (await client.post("/channels", json=params_json(first, s))).status_code == 201
        assert reason(await client.post("/channels", json=params_json(second, s))) == (403, "quota_exceeded")
        assert (await client.post("/channels", json=params_json(second, s, by=s.a))).status_code == 201
        assert tower.store.client_usage(s.b.address) == (1, 0)

    run_api(tmp_path, body)

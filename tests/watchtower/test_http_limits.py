"""Request bodies the tower refuses before parsing them, from anyone: too large (413), nested too deep (422).

The attack: `POST /states` with `{"state":` and 100,000 `[` (no token needed) used to kill the tower
process with SIGSEGV, because eth-account's py_ecc raises the recursion limit to 100,000 and the stdlib
JSON parser then overflows the C stack instead of raising RecursionError. With its tower dead and its node
offline, a party can be robbed by a stale close. Here, against the real process and through the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.rpc import RpcChain
from statechannel.node.keys import write_keystore
from statechannel.watchtower.http import MAX_BODY_BYTES, MAX_BODY_DEPTH, create_tower_app
from tests.anvil import Anvil
from tests.hostile_bodies import DEEP, JSON, nested, probe, reason
from tests.watchtower.helpers import deploy, eth_state, open_channel, params_json, running_tower, sign, state_json
from tests.watchtower.test_process import PASSWORD, start_tower


@pytest.mark.anvil
def test_the_tower_process_refuses_a_deep_body_and_keeps_serving(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "body limits")
    write_keystore(tmp_path / "tower-key.json", s.tower_key, PASSWORD, scrypt_n=2**10)
    params = open_channel(s, 1, period=120)
    cid = s.adj.channel_id(params)
    signed = sign(s.adj.domain, eth_state(cid, 3, 10**17), s.a, s.b)

    tower = start_tower(tmp_path / "tower-key.json", tmp_path / "tower", anvil.url, s.adj.address)
    try:
        with httpx.Client(base_url=tower.info["api"], timeout=30) as api:
            probe(api, "/states", "state", 5000, tower.proc, tower.log.read_text)
            assert reason(api.post("/states", content=nested("state", MAX_BODY_DEPTH), headers=JSON)) == (
                422,
                "validation",
            )

            assert api.get("/info").status_code == 200  # the same process still answers, and still works:
            assert api.post("/channels", json=params_json(params, s)).status_code == 201
            pushed = api.post("/states", json=state_json(signed, s))
            assert pushed.status_code == 200 and pushed.json()["version"] == 3, pushed.text
        assert tower.proc.poll() is None
    finally:
        if tower.proc.poll() is None:
            assert tower.stop() == 0, tower.log.read_text()
    assert "Traceback" not in tower.log.read_text()


# ------------------------------------------------------------------ the app, in process


def run_app(tmp_path: Path, scenario: Any) -> None:
    s = deploy(EmbeddedChain(), "limits app")

    async def main() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            transport = httpx.ASGITransport(app=create_tower_app(tower))
            async with httpx.AsyncClient(transport=transport, base_url="http://tower") as client:
                await asyncio.wait_for(scenario(s, client), 60)

    asyncio.run(main())


def test_the_app_bounds_size_and_depth_before_parsing(tmp_path: Path) -> None:
    async def scenario(s: Any, client: httpx.AsyncClient) -> None:
        assert reason(await client.post("/states", content=DEEP, headers=JSON)) == (413, "too_large")
        over = b'{"app_data": "' + b"0" * MAX_BODY_BYTES + b'"}'
        assert reason(await client.post("/states", content=over, headers=JSON)) == (413, "too_large")

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b" " * 1024

        assert reason(await client.post("/channels", content=endless(), headers=JSON)) == (413, "too_large")

        for path in ("/states", "/channels"):
            assert reason(await client.post(path, content=nested("state", MAX_BODY_DEPTH + 1), headers=JSON)) == (
                422,
                "too_deep",
            )
            # exactly at the limit: parsed, and refused by validation as the malformed body it is
            assert reason(await client.post(path, content=nested("state", MAX_BODY_DEPTH), headers=JSON)) == (
                422,
                "validation",
            )
        brackets = b'{"channel_id": "' + b"[" * 500 + b'\\"{{{{"}'  # in a string: not nesting
        assert reason(await client.post("/states", content=brackets, headers=JSON)) == (422, "validation")

        assert reason(await client.post("/states", content='{"x": 1}'.encode("utf-16"), headers=JSON)) == (
            415,
            "bad_encoding",
        )
        params = open_channel(s, 7)
        assert (await client.post("/channels", json=params_json(params, s))).status_code == 201
        signed = sign(s.adj.domain, eth_state(s.adj.channel_id(params), 1, 5), s.a, s.b)
        pushed = await client.post("/states", json=state_json(signed, s))
        assert pushed.status_code == 200, pushed.text

    run_app(tmp_path, scenario)


def test_a_largest_legitimate_push_is_far_inside_the_limit() -> None:
    """8 assets (core.types.MAX_ASSETS) with the longest amounts, pretty-printed: under an eighth of it."""
    import json

    from statechannel.core.types import MAX_ASSETS

    body = {
        "channel_id": "0x" + "ab" * 32,
        "version": 2**48 - 1,
        "is_final": False,
        "assets": ["0x" + "cd" * 20] * MAX_ASSETS,
        "transfers": [str(-(2**255))] * MAX_ASSETS,
        "app_data": "0x" + "ef" * 32,
        "sig_a": "0x" + "12" * 65,
        "sig_b": "0x" + "34" * 65,
    }
    assert len(json.dumps(body, indent=2).encode()) * 8 < MAX_BODY_BYTES

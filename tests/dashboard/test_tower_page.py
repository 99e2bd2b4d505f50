"""The tower's page, `/overview` and `/metrics`: a stale close answered in process, counted and shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from statechannel.chain.embedded import EmbeddedChain
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.page import FILES
from tests.dashboard.test_metrics_and_pages import value
from tests.watchtower.helpers import (
    closes,
    deploy,
    eth_state,
    eventually,
    key,
    open_channel,
    params_json,
    running_tower,
    sign,
    state_json,
)


def test_tower_counts_receipts_disputes_and_challenges_with_their_gas(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "page")
    params = open_channel(s, 1)
    cid = s.adj.channel_id(params)
    old = sign(s.adj.domain, eth_state(cid, 2, 100), s.a, s.b)
    new = sign(s.adj.domain, eth_state(cid, 5, 700), s.a, s.b)

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            app = create_tower_app(tower)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tower") as api:
                for path in FILES:
                    r = await api.get(path)
                    assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
                assert (await api.post("/channels", json=params_json(params, s))).status_code == 201
                for signed in (old, new):
                    assert (await api.post("/states", json=state_json(signed, s))).status_code == 200
                stranger = state_json(old, s, by=key("stranger"))  # not a party of the channel: no receipt
                assert (await api.post("/states", json=stranger)).status_code == 401
                s.adj.close(s.a, params, old.state, old.sig_a, old.sig_b)
                await eventually("the challenge", lambda: any(e.version == 5 and e.challenge for e in closes(s, cid)))

                async def mined() -> bool:
                    o = (await api.get("/overview")).json()
                    return bool(o["challenges"]) and o["challenges"][0]["outcome"] == "mined"

                for _ in range(200):
                    if await mined():
                        break
                    await asyncio.sleep(0.05)
                o = (await api.get("/overview")).json()
                assert o["watched"] == 1 and o["receipts_issued"] == 2 and o["disputes_seen"] >= 1
                [c] = o["challenges"]
                assert (c["channel_id"], c["against"], c["version"], c["outcome"]) == ("0x" + cid.hex(), 2, 5, "mined")
                challenge_tx = next(e for e in closes(s, cid) if e.challenge).origin.tx_hash
                assert c["tx_hashes"] == ["0x" + challenge_tx.hex()]
                receipt = s.chain._tester.get_transaction_receipt("0x" + challenge_tx.hex())  # type: ignore[attr-defined]
                assert c["gas_used"] == int(receipt["gas_used"])  # the page's gas is the chain's
                assert o["disputes"][-1]["version"] == 2 and o["disputes"][-1]["channel_id"] == "0x" + cid.hex()

                text = (await api.get("/metrics")).text
                assert value(text, "statechannel_tower_watched_channels") == 1
                assert value(text, "statechannel_tower_receipts_total") == 2
                assert value(text, "statechannel_tower_refused_requests_total", status="401") == 1
                assert value(text, "statechannel_tower_disputes_total") >= 1
                assert value(text, "statechannel_tower_challenges_total", outcome="mined") == 1
                assert value(text, "statechannel_tower_challenge_gas_total") == int(receipt["gas_used"])
                assert value(text, "statechannel_tower_close_to_challenge_chain_seconds_count") == 1

    asyncio.run(asyncio.wait_for(scenario(), 60))

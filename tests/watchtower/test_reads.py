"""A participant's read of what the tower holds (decision 0011): both participants may read the channel's
parameters and every both-signed state held (either side's); nobody else can, nor a request signed for
another tower or outside the allowed skew."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from statechannel.core.crypto import PrivateKey
from statechannel.core.tower import authorize
from statechannel.core.towerread import read_request
from statechannel.core.types import to_checksum
from statechannel.watchtower.service import Tower
from tests.watchtower.helpers import Setup, eth_state, key, open_channel, params_json, sign, state_json
from tests.watchtower.test_api import reason, run_api


def read_body(
    s: Setup, by: PrivateKey, cid: bytes, tower: bytes | None = None, at: int | None = None
) -> dict[str, Any]:
    when = int(time.time()) if at is None else at
    auth = authorize(by, s.adj.domain, tower or s.tower_key.address, cid, read_request(cid), when)
    return {"client": to_checksum(by.address), "timestamp": when, "auth": "0x" + auth.signature.to_bytes().hex()}


def test_only_a_participant_reads_the_states_and_parameters(tmp_path: Path) -> None:
    async def body(s: Setup, tower: Tower, client: httpx.AsyncClient) -> None:
        params = open_channel(s, 7)
        cid = s.adj.channel_id(params)
        assert (await client.post("/channels", json=params_json(params, s))).status_code == 201
        v3 = sign(s.adj.domain, eth_state(cid, 3, 30), s.a, s.b)
        v5 = sign(s.adj.domain, eth_state(cid, 5, 50), s.a, s.b)
        assert (await client.post("/states", json=state_json(v3, s, by=s.a))).status_code == 200
        assert (await client.post("/states", json=state_json(v5, s, by=s.b))).status_code == 200
        path = f"/channels/0x{cid.hex()}/read"
        for reader in (s.a, s.b):
            got = (await client.post(path, json=read_body(s, reader, cid))).json()
            assert (got["a"], got["b"], got["nonce"]) == (to_checksum(s.a.address), to_checksum(s.b.address), "7")
            assert [(x["pushed_by"], x["version"], x["transfers"]) for x in got["states"]] == [
                ("b", 5, ["50"]),
                ("a", 3, ["30"]),
            ]
            assert got["states"][0]["sig_a"] == "0x" + v5.sig_a.to_bytes().hex()
        stranger = key("reads stranger")
        refused = [
            read_body(s, stranger, cid),  # not a participant
            read_body(s, s.a, cid, tower=key("other tower").address),  # signed for another tower
            read_body(s, s.a, cid, at=int(time.time()) - 3600),  # an old request
            {**read_body(s, s.a, cid), "client": to_checksum(s.b.address)},  # A's signature, claiming to be B
        ]
        for bad in refused:
            r = await client.post(path, json=bad)
            assert reason(r) == (401, "unauthorized"), r.text
            assert "states" not in r.text
        # a read signed for one channel does not read another
        other = open_channel(s, 8)
        oid = s.adj.channel_id(other)
        assert (await client.post("/channels", json=params_json(other, s))).status_code == 201
        assert reason(await client.post(f"/channels/0x{oid.hex()}/read", json=read_body(s, s.a, cid))) == (
            401,
            "unauthorized",
        )
        unknown = bytes(31) + b"\x01"
        assert reason(await client.post(f"/channels/0x{unknown.hex()}/read", json=read_body(s, s.a, unknown)))[0] == 404

    run_api(tmp_path, body)

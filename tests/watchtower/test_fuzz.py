"""The tower's HTTP API fuzzed against its own OpenAPI document with schemathesis, over real HTTP.

A real tower (embedded EVM, SQLite store) serves its API with uvicorn on 127.0.0.1; one channel is
registered and holds a pushed state. Every operation gets generated requests (valid and invalid bodies
and paths; half the path ids aimed at the real channel, half the push bodies carrying its id). The API
never answers 5xx, and a refused call (4xx) leaves the tower as it was: its store's rows and the
channel's view compared before and after.

A second fuzz signs what it sends: pushes and registrations correctly authorised by A, B or a stranger,
carrying generated states (any version, up to 8 assets in order or not, extreme transfers, final or not,
signed by the right keys or the wrong ones), so the calls get past authentication into the tower's checks
and its store. The same two rules hold.

Short by default (a few examples per operation); `STATECHANNEL_FUZZ=full` runs many more."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from statechannel.chain.embedded import EmbeddedChain
from statechannel.core.errors import StatechannelError
from statechannel.core.types import INT256_MAX, INT256_MIN, ChannelParams, State
from statechannel.runtime import QuietServer
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.service import Tower
from tests.watchtower.helpers import (
    Setup,
    deploy,
    eth_state,
    key,
    open_channel,
    params_json,
    push,
    register,
    running_tower,
    sign,
    state_json,
)

FULL = os.environ.get("STATECHANNEL_FUZZ") == "full"
EXAMPLES = 150 if FULL else 10


def snapshot(client: httpx.Client, tower: Tower, cid: bytes) -> str:
    view = client.get(f"/channels/0x{cid.hex()}")
    held = tower.store.get(cid)
    rows = repr(held) if held is not None else None
    return json.dumps([view.status_code, view.json(), tower.store.count(), rows], sort_keys=True)


def fuzz(url: str, schema_doc: dict[str, Any], tower: Tower, cid: bytes) -> list[str]:
    schema = schemathesis.openapi.from_dict(schema_doc)
    ops = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=url, timeout=30) as client:
        for op in ops:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],
            )
            @given(case=op.as_strategy(), aim=st.booleans())
            def one(case: Any, aim: bool) -> None:
                if aim and "channel_id" in (case.path_parameters or {}):
                    case.path_parameters["channel_id"] = "0x" + cid.hex()
                if aim and isinstance(case.body, dict) and "channel_id" in case.body:
                    case.body["channel_id"] = "0x" + cid.hex()
                before = snapshot(client, tower, cid)
                kwargs = case.as_transport_kwargs(base_url=url)
                r = client.request(
                    kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params"),
                    content=_body(kwargs), timeout=30,
                )  # fmt: skip
                statuses[r.status_code // 100] += 1
                where = f"{case.method} {case.formatted_path} -> {r.status_code} {r.text[:200]}"
                if r.status_code >= 500:
                    problems.append("server error: " + where)
                elif r.status_code >= 400 and snapshot(client, tower, cid) != before:
                    problems.append("a refused call changed the tower: " + where)

            one()
    if not (statuses[2] and statuses[4] and sum(statuses.values()) >= len(ops) * EXAMPLES // 2):
        problems.append(f"the fuzz barely ran: {dict(statuses)}")
    return problems


def _body(kwargs: dict[str, Any]) -> bytes | None:
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data") or kwargs.get("content")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else None


def test_the_tower_api_fuzzed_against_its_openapi_never_errs_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "fuzz")

    async def scenario() -> list[str]:
        async with running_tower(s, tmp_path / "t.db") as tower:
            params = open_channel(s, 1)
            cid = s.adj.channel_id(params)
            await register(tower, params, s.a)
            await push(tower, sign(s.adj.domain, eth_state(cid, 2, 10), s.a, s.b), s.a)
            app = create_tower_app(tower)
            sock = socket.create_server(("127.0.0.1", 0))
            server = QuietServer(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                while not server.started:
                    await asyncio.sleep(0.02)
                url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                return await asyncio.to_thread(fuzz, url, app.openapi(), tower, cid)
            finally:
                server.should_exit = True
                await serving

    problems = asyncio.run(asyncio.wait_for(scenario(), 3600 if FULL else 600))
    assert not problems, "\n".join(problems[:20])


ASSETS = [bytes(20), bytes.fromhex("00" * 19 + "01"), bytes.fromhex("ff" * 20), bytes.fromhex("12" * 20)]
AMOUNTS = st.sampled_from([0, 1, -1, INT256_MAX, INT256_MIN, 10**18, -(10**18), 2 * 10**18]) | st.integers(
    INT256_MIN, INT256_MAX
)


def signed_fuzz(url: str, s: Setup, tower: Tower, cids: list[bytes], params: list[ChannelParams]) -> list[str]:
    stranger = key("fuzz stranger")
    keys = st.sampled_from([s.a, s.b, stranger])
    problems: list[str] = []
    statuses: Counter[int] = Counter()

    def check(client: httpx.Client, path: str, body: dict[str, Any], cid: bytes) -> None:
        before = snapshot(client, tower, cid)
        r = client.post(path, json=body)
        statuses[r.status_code // 100] += 1
        where = f"POST {path} {json.dumps(body)[:300]} -> {r.status_code} {r.text[:200]}"
        if r.status_code >= 500:
            problems.append("server error: " + where)
        elif r.status_code >= 400 and snapshot(client, tower, cid) != before:
            problems.append("a refused call changed the tower: " + where)

    with httpx.Client(base_url=url, timeout=30) as client:

        @settings(
            max_examples=EXAMPLES * 4,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        @given(
            which=st.integers(0, len(cids) - 1),
            version=st.sampled_from([0, 1, 2, 3, 2**48 - 1]) | st.integers(0, 2**48 - 1),
            assets=st.lists(st.sampled_from(ASSETS), max_size=8),
            amounts=st.lists(AMOUNTS, min_size=8, max_size=8),
            is_final=st.booleans(),
            app_data=st.binary(min_size=32, max_size=32),
            signers=st.just((s.a, s.b)) | st.just((s.a, s.b)) | st.tuples(keys, keys),  # mostly the right keys
            by=keys,
        )
        def pushes(
            which: int,
            version: int,
            assets: list[bytes],
            amounts: list[int],
            is_final: bool,
            app_data: bytes,
            signers: tuple[Any, Any],
            by: Any,
        ) -> None:
            cid = cids[which]
            try:
                state = State(cid, version, tuple(assets), tuple(amounts[: len(assets)]), is_final, app_data)
            except StatechannelError:
                state = State(cid, version, tuple(sorted(set(assets))), tuple(amounts[: len(set(assets))]))
            signed = sign(s.adj.domain, state, *signers)
            check(client, "/states", state_json(signed, s, by=by), cid)

        @settings(
            max_examples=EXAMPLES * 2,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        @given(
            which=st.integers(0, len(params) - 1),
            period=st.sampled_from([0, 1, 59, 60, 1000, 2**32]) | st.integers(0, 2**64),
            nonce=st.sampled_from([0, 1, 2, 2**256 - 1]) | st.integers(0, 2**256 - 1),
            swap=st.booleans(),
            by=keys,
        )
        def registrations(which: int, period: int, nonce: int, swap: bool, by: Any) -> None:
            p = params[which]
            a, b = (p.b, p.a) if swap else (p.a, p.b)
            try:
                candidate = ChannelParams(a, b, period, nonce)
            except StatechannelError:
                candidate = p
            check(client, "/channels", params_json(candidate, s, by=by), cids[which])

        registrations()  # first: one channel is not registered until a fuzzed registration of it passes
        pushes()
    if not (statuses[2] and statuses[4]):
        problems.append(f"the signed fuzz barely ran: {dict(statuses)}")
    return problems


def test_signed_calls_fuzzed_never_err_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    s = deploy(EmbeddedChain(), "signed fuzz")

    async def scenario() -> list[str]:
        async with running_tower(s, tmp_path / "t.db") as tower:
            params = [open_channel(s, 1), open_channel(s, 2, period=60, deposit_b=0)]
            cids = [s.adj.channel_id(p) for p in params]
            await register(tower, params[0], s.a)
            await push(tower, sign(s.adj.domain, eth_state(cids[0], 5, 10), s.a, s.b), s.b)
            app = create_tower_app(tower)
            sock = socket.create_server(("127.0.0.1", 0))
            server = QuietServer(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                while not server.started:
                    await asyncio.sleep(0.02)
                url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                return await asyncio.to_thread(signed_fuzz, url, s, tower, cids, params)
            finally:
                server.should_exit = True
                await serving

    problems = asyncio.run(asyncio.wait_for(scenario(), 3600 if FULL else 600))
    assert not problems, "\n".join(problems[:20])

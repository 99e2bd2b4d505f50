"""The node's HTTP API fuzzed against its own OpenAPI document with schemathesis, over real HTTP.

Node A serves its API with uvicorn on 127.0.0.1; node B is its peer, one channel between them is open and
has moved. Every operation gets generated requests (valid and invalid bodies, queries and paths; half of
them aimed at the real channel). The API never answers 5xx, and a refused call (4xx) leaves the node as it
was: channels, payments and the node's counts compared before and after.

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

from statechannel.api.routes import VERDICT_WAIT
from statechannel.core.channel import Phase as ChannelPhase
from statechannel.core.types import ETH
from statechannel.runtime import QuietServer
from tests.api.harness import ETHER, TOKEN, World, run

FULL = os.environ.get("STATECHANNEL_FUZZ") == "full"
EXAMPLES = 150 if FULL else 8
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMING = {("GET", "/events")}
"""Served as a stream; fuzzing it would only wait out its timeouts."""
LAST = ("/close", "/withdraw", "/streams", "/recurring", "/watches", "/peers")
"""Operations whose accepted calls change the node in the background (a close is mined, a stream pays
on): fuzzed last, and checked for server errors only, since what they start may land during a later call."""


def snapshot(client: httpx.Client) -> str:
    parts: list[Any] = []
    for path in ("/channels", "/payments", "/streams", "/recurring", "/positions", "/fills"):
        r = client.get(path, headers=AUTH)
        parts.append((path, r.status_code, r.json() if r.status_code == 200 else None))
    node = client.get("/node", headers=AUTH).json()
    parts.append({k: node[k] for k in ("address", "channels", "terms")})
    return json.dumps(parts, sort_keys=True)


def fuzz(url: str, schema_doc: dict[str, Any], cid: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(schema_doc)
    ops = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    ops = [op for op in ops if (op.method.upper(), op.path) not in STREAMING]
    ops.sort(key=lambda op: any(op.path.endswith(s) or op.path.startswith(s) for s in LAST))
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=url, timeout=CALL_TIMEOUT) as client:
        for op in ops:
            flags = [any(op.path.endswith(s) or op.path.startswith(s) for s in LAST)]  # background?

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
                    case.path_parameters["channel_id"] = cid
                before = None if flags[0] else snapshot(client)  # noqa: B023 (called at once, below)
                kwargs = case.as_transport_kwargs(base_url=url, headers=AUTH)
                kwargs.pop("verify", None)
                kwargs.pop("allow_redirects", None)
                kwargs.pop("cookies", None)
                r = client.request(
                    kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params"),
                    content=_body(kwargs), timeout=CALL_TIMEOUT,
                )  # fmt: skip
                statuses[r.status_code // 100] += 1
                where = f"{case.method} {case.formatted_path} -> {r.status_code} {r.text[:200]}"
                if r.status_code >= 500:
                    problems.append("server error: " + where)
                elif r.status_code >= 400 and before is not None and snapshot(client) != before:
                    problems.append("a refused call changed the node: " + where)

            one()
    if not (statuses[2] and statuses[4] and sum(statuses.values()) >= len(ops) * EXAMPLES // 2):
        problems.append(f"the fuzz barely ran: {dict(statuses)}")
    return problems


WAITS = ("wait", "timeout")
"""Body fields that ask the node to wait (up to 600 s, by design): a generated valid one is cut to
SHORT_WAIT, so that a call that still takes longer than CALL_TIMEOUT is a hang, not a wait asked for."""
SHORT_WAIT = 1.0
CALL_TIMEOUT = VERDICT_WAIT + 30
"""A unilateral close waits up to VERDICT_WAIT for its transaction's verdict, whatever the body says."""


def _body(kwargs: dict[str, Any]) -> bytes | None:
    if "json" in kwargs:
        body = kwargs["json"]
        if isinstance(body, dict):
            for k in WAITS:
                v = body.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 600:
                    body = {**body, k: min(v, SHORT_WAIT)}
        return json.dumps(body).encode()
    data = kwargs.get("data") or kwargs.get("content")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else None


def test_the_api_fuzzed_against_its_openapi_never_errs_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    async def scenario(w: World) -> list[str]:
        cid = await w.a.open_channel(w.b.address, {ETH: (10 * ETHER, 0)}, challenge_period=600)
        await w.a.wait_for(cid, ChannelPhase.OPEN, 60)
        for _ in range(3):
            await w.a.pay(cid, ETH, 1000)
        sock = socket.create_server(("127.0.0.1", 0))
        server = QuietServer(uvicorn.Config(w.app_a, lifespan="off", log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            return await asyncio.to_thread(fuzz, url, w.app_a.openapi(), "0x" + cid.hex())
        finally:
            server.should_exit = True
            await serving

    problems = run(tmp_path, scenario, timeout=3600 if FULL else 600)
    assert not problems, "\n".join(problems[:20])

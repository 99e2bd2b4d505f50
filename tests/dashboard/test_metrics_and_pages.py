"""The dashboard's files, `/metrics` on node and tower, and the JSON logs, in process (no browser)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from statechannel.api.app import create_app
from statechannel.api.dashboard import PUBLIC_PATHS
from statechannel.api.metrics import NodeMetrics
from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import TransactionReverted
from statechannel.chain.embedded import EmbeddedChain
from statechannel.chain.metered import MeteredChain
from statechannel.core.channel import Phase
from statechannel.core.types import to_checksum
from statechannel.logs import JsonFormatter, TextFormatter, redact
from tests.api.harness import TOKEN, World, client, key, run


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def open_and_pay(w: World, payments: int) -> str:
    r = await w.api_a.post("/channels", json={"peer": to_checksum(w.b.address), "deposits": {"eth": str(10**18)}})
    assert r.status_code == 201, r.text
    cid: str = r.json()["channel_id"]
    await w.a.wait_for(bytes.fromhex(cid[2:]), Phase.OPEN)
    await w.b.wait_for(bytes.fromhex(cid[2:]), Phase.OPEN)
    for _ in range(payments):
        r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "5"})
        assert r.status_code == 200 and r.json()["status"] == "sent", r.text
    return cid


def test_the_page_is_public_and_holds_no_data_everything_else_needs_the_token(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        anonymous = client(w.app_a, token=None)
        for path in PUBLIC_PATHS:
            r = await anonymous.get(path)
            assert r.status_code == 200, path
            assert "default-src 'none'" in r.headers["content-security-policy"]
            assert to_checksum(w.a.address) not in r.text and TOKEN not in r.text  # no data, no secret
        page = (await anonymous.get("/")).text
        assert '<script src="/dashboard/app.js"' in page and "http" not in page.replace("http-equiv", "")
        js = (await anonymous.get("/dashboard/app.js")).text
        assert "sessionStorage" in js and "localStorage" not in js
        assert "?token" not in js and "access_token" not in js  # the token goes in a header only
        for path in ("/metrics", "/channels", "/node", "/events", "/dashboard/", "/dashboard/../api-token"):
            assert (await anonymous.get(path)).status_code == 401, path
        assert (await anonymous.post("/", json={})).status_code == 401  # only GET is public
        assert (await anonymous.get("/", headers={"Authorization": "Bearer wrong"})).status_code == 200

    run(tmp_path, scenario)


def test_node_metrics_count_updates_latency_commits_and_phases(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        await open_and_pay(w, 20)
        r = await w.api_a.post("/channels/0x" + "00" * 32 + "/payments", json={"amount": "1"})
        assert r.status_code == 404
        text = (await w.api_a.get("/metrics")).text
        assert value(text, "statechannel_payments_total", outcome="sent") == 20
        assert value(text, "statechannel_updates_total", direction="ours") >= 20
        assert value(text, "statechannel_channels", phase="open") == 1
        assert value(text, "statechannel_channels", phase="closed") == 0
        leader = value(text, "statechannel_update_round_trip_seconds_count", role="leader")
        follower = value(text, "statechannel_update_round_trip_seconds_count", role="follower")
        assert leader + follower >= 20  # whichever side leads, each payment's round trip is timed
        assert value(text, "statechannel_store_commit_seconds_count") >= 1
        assert value(text, "statechannel_store_saves_per_commit_sum") >= value(
            text, "statechannel_store_commit_seconds_count"
        )
        b_text = (await w.api_b.get("/metrics")).text
        assert value(b_text, "statechannel_updates_total", direction="theirs") >= 20

    run(tmp_path, scenario)


def test_refusals_are_counted_by_reason(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_and_pay(w, 1)
        r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": str(10**19)})  # more than it holds
        assert r.status_code == 400
        text = (await w.api_a.get("/metrics")).text
        assert value(text, "statechannel_refusals_total", by="local", reason="insufficient_funds") == 1
        assert value(text, "statechannel_payments_total", outcome="refused") == 1

    run(tmp_path, scenario)


def test_chain_calls_and_errors_are_counted() -> None:
    metrics = NodeMetrics()
    chain = MeteredChain(EmbeddedChain(), metrics.observe_chain)
    deployer = key("deployer")
    chain.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(chain, deployer)
    with pytest.raises(TransactionReverted):
        adj.abi  # noqa: B018 (the contract is there)
        chain.send_transaction(deployer, adj.address, b"\x12\x34\x56\x78", value=0)
    text = metrics.render().decode()
    assert value(text, "statechannel_chain_calls_total", method="send_transaction") >= 2
    assert value(text, "statechannel_chain_errors_total", method="send_transaction", kind="reverted") == 1
    assert value(text, "statechannel_chain_call_seconds_count", method="fund") == 1


def test_metrics_given_to_the_app_are_the_ones_served(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        metrics = NodeMetrics()
        metrics.watch(w.a)
        app = create_app(w.a, TOKEN, metrics=metrics)
        metrics.observe_chain("call", 0.001, "error")
        async with client(app) as api:
            text = (await api.get("/metrics")).text
        assert value(text, "statechannel_chain_errors_total", method="call", kind="error") == 1

    run(tmp_path, scenario)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("statechannel.node", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_logs_are_one_object_a_line_with_channel_peer_event_reason() -> None:
    cid = "0x" + "ab" * 32
    line = JsonFormatter().format(_record("channel %s: payment refused", cid, reason="insufficient_funds"))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["channel"] == cid and obj["reason"] == "insufficient_funds"
    assert obj["event"] == "channel %s: payment refused" and obj["level"] == "info"
    peer = "0x" + "12" * 20
    obj = json.loads(JsonFormatter().format(_record("dialling peer %s", peer)))
    assert obj["peer"] == peer


def test_secrets_never_reach_a_log_line() -> None:
    secret = "dashboard test secret 7f3a"
    redact(secret)
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(_record("oops: %s", secret))
        assert secret not in text and "[redacted]" in text
        try:
            raise ValueError(f"bad password {secret}")
        except ValueError:
            import sys

            record = _record("failed")
            record.exc_info = sys.exc_info()
            assert secret not in formatter.format(record)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(_record("x %s", secret))
    assert secret not in stream.getvalue() and re.search(r"\[redacted\]", stream.getvalue())


def test_every_page_file_ships_in_the_package() -> None:
    """The pages are served from the installed package: each file must match a package-data glob."""
    import fnmatch
    import tomllib

    root = Path(__file__).parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["statechannel"]
    package = root / "src" / "statechannel"
    files = [
        p.relative_to(package).as_posix() for d in ("api/static", "watchtower/static") for p in (package / d).iterdir()
    ]
    assert len(files) == 6
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name

"""The node's API refuses oversized and over-nested request bodies before parsing them, after the token
check (so a caller without the token still learns nothing but 401).

The attack, with the token: a body of 100,000 `[` used to kill the node process with SIGSEGV (eth-account's
py_ecc raises the recursion limit to 100,000, and the stdlib JSON parser then overflows the C stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from statechannel.api.app import MAX_BODY_BYTES, MAX_BODY_DEPTH
from tests.api.harness import World, client, error, run
from tests.cli.helpers import make_keystore, start_daemon
from tests.hostile_bodies import DEEP, JSON, nested, probe


def test_the_node_process_refuses_a_deep_body_and_keeps_serving(tmp_path: Path) -> None:
    keystore, data = tmp_path / "k.json", tmp_path / "data"
    make_keystore(keystore, "body limits")
    node = start_daemon(keystore, data)
    try:
        token = (data / "api-token").read_text().strip()
        with httpx.Client(base_url=node.info["api"], timeout=30, headers={"Authorization": f"Bearer {token}"}) as api:
            probe(api, "/channels", "peer", 30_000, node.proc, node.log)
            anonymous = httpx.post(f"{node.info['api']}/channels", content=DEEP, headers=JSON, timeout=30)
            assert error(anonymous) == (401, "unauthorized")  # the token is checked first

            info = api.get("/node")  # the same process still answers
            assert info.status_code == 200 and info.json()["address"] == node.info["address"]
            assert api.get("/channels").json() == []
        assert node.proc.poll() is None
    finally:
        code = node.stop() if node.proc.poll() is None else node.proc.returncode
    log = node.log()
    assert code == 0, log
    assert "Traceback" not in log


def test_the_app_bounds_size_and_depth_after_the_token(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        api = w.api_a
        assert error(await api.post("/channels", content=DEEP, headers=JSON)) == (413, "too_large")
        over = b'{"peer": "' + b"0" * MAX_BODY_BYTES + b'"}'
        assert error(await api.post("/peers", content=over, headers=JSON)) == (413, "too_large")

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b" " * 4096

        assert error(await api.post("/channels", content=endless(), headers=JSON)) == (413, "too_large")
        assert error(await api.post("/channels", content=nested("peer", MAX_BODY_DEPTH + 1), headers=JSON)) == (
            422,
            "too_deep",
        )
        at_limit = await api.post("/channels", content=nested("peer", MAX_BODY_DEPTH), headers=JSON)
        assert error(at_limit) == (422, "validation")  # parsed: refused as the malformed request it is
        brackets = b'{"peer": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"{{{{", "deposits": {"eth": "1"}}'
        assert error(await api.post("/channels", content=brackets, headers=JSON)) == (422, "validation")
        utf16 = '{"peer": "x"}'.encode("utf-16")
        assert error(await api.post("/channels", content=utf16, headers=JSON)) == (415, "bad_encoding")

        async with client(w.app_a, token=None) as anonymous:
            assert error(await anonymous.post("/channels", content=DEEP, headers=JSON)) == (401, "unauthorized")
        async with client(w.app_a, token="cd" * 32) as wrong:
            assert error(await wrong.post("/channels", content=endless(), headers=JSON)) == (401, "unauthorized")

        # a legitimate body still goes through to its route (which says the in-memory transport cannot dial)
        peer = {"address": "0x" + w.b.address.hex(), "host": "127.0.0.1", "port": 1}
        assert error(await api.post("/peers", json=peer)) == (400, "unsupported")
        streamed = await api.get("/events", params={"since": 0, "timeout": 0.2})  # and so does a stream
        assert streamed.status_code == 200

    run(tmp_path, scenario)

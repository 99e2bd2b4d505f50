"""The node's interfaces to its own machine: who may call its API, where it listens, who may read its
files, and what its logs (and its tower's) never hold."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.node.keys import write_keystore
from tests.anvil import Anvil, free_port
from tests.cli.helpers import PASSWORD, cli_json, make_keystore, start_daemon
from tests.integration.test_hostile_peer import LogTail, views, wait_until
from tests.watchtower.test_process import PASSWORD as TOWER_PASSWORD
from tests.watchtower.test_process import start_tower

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset()
"""Routes served without the token: none. Even the OpenAPI document needs it (docs/security.md)."""


def private(path: Path) -> bool:
    return not path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)


def test_every_route_needs_the_token_and_everything_listens_on_loopback(tmp_path: Path) -> None:
    make_keystore(tmp_path / "k.json", "interfaces")
    node = start_daemon(tmp_path / "k.json", tmp_path / "data")
    try:
        assert node.info["api"].startswith("http://127.0.0.1:")
        assert node.info["listen"].startswith("127.0.0.1:")
        token = (node.data_dir / "api-token").read_text().strip()
        with httpx.Client(base_url=node.info["api"], timeout=30) as client:
            assert client.get("/openapi.json").status_code == 401
            schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
            routes = [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops]
            assert len(routes) > 20
            for method, path in routes:
                if (method, path) in PUBLIC_ROUTES:
                    continue
                url = path.replace("{channel_id}", "0x" + "11" * 32).replace("{stream_id}", "x")
                url = url.replace("{watch_id}", "x").replace("{schedule_id}", "x")
                for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": token}):
                    r = client.request(method, url, headers=headers, json={})
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.json()["error"]["reason"] == "unauthorized"
    finally:
        node.stop()


def test_keystore_token_and_data_dir_are_the_owners_alone(tmp_path: Path) -> None:
    make_keystore(tmp_path / "k.json", "interfaces files")
    assert private(tmp_path / "k.json")
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)  # as a user's mkdir would leave it
    for data_dir in (tmp_path / "fresh" / "data", loose):
        node = start_daemon(tmp_path / "k.json", data_dir)
        try:
            cli_json("node", "info", "--data-dir", str(data_dir))
        finally:
            node.stop()
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        files = list(data_dir.rglob("*"))
        assert {"api-token", "node.lock"} <= {f.name for f in files}
        for f in files:
            assert private(f), f"{f} is mode {stat.filemode(f.stat().st_mode)}"


@pytest.mark.anvil
def test_a_whole_runs_logs_hold_no_password_and_no_token(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(b"interfaces deployer"))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    ka = make_keystore(tmp_path / "a.json", "logs A")
    kb = make_keystore(tmp_path / "b.json", "logs B")
    write_keystore(tmp_path / "t.json", PrivateKey(keccak(b"logs tower")), TOWER_PASSWORD, scrypt_n=2**10)
    for k in (ka, kb):
        rpc.fund(k.address, 10**20)
    tower = start_tower(tmp_path / "t.json", tmp_path / "t", anvil.url, adj.address)
    common = ("--adjudicator", "0x" + adj.address.hex(), "--log-level", "debug")
    port = free_port()
    b = start_daemon(tmp_path / "b.json", tmp_path / "b", anvil.url, *common, "--listen", f"127.0.0.1:{port}")
    a = start_daemon(tmp_path / "a.json", tmp_path / "a", anvil.url, *common, "--tower", tower.info["api"])
    logs = [LogTail(a), LogTail(b)]
    try:
        da = ("--data-dir", str(a.data_dir))
        cli_json("peer", "connect", "0x" + kb.address.hex(), f"127.0.0.1:{port}", *da)
        cid = cli_json("channel", "open", "--peer", "0x" + kb.address.hex(), "--deposit", "eth=1000000", *da)[
            "channel_id"
        ]
        wait_until("open", lambda: views(b).get(cid, {}).get("phase") == "open", 120)
        for _ in range(3):
            cli_json("channel", "pay", cid, "1000", *da)
        cli_json("channel", "close", cid, *da)
        wait_until("closed", lambda: views(a)[cid]["phase"] == "closed", 120)
        with httpx.Client(base_url=a.info["api"], timeout=30) as client:  # refused calls log too
            client.get("/channels", headers={"Authorization": "Bearer wrong"})
    finally:
        a.stop()
        b.stop()
        tower.stop()
    secrets = [PASSWORD, TOWER_PASSWORD] + [(d / "api-token").read_text().strip() for d in (a.data_dir, b.data_dir)]
    texts = [t.text() for t in logs] + [tower.log.read_text()]
    assert all(texts[:2]), "the nodes logged nothing: the test would prove nothing"
    for text in texts:
        for secret in secrets:
            assert secret not in text

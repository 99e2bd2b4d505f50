"""A paid watchtower end to end, every part its own process on 127.0.0.1 against anvil: the tower operator's
node O (`node start`), a paid tower reading O's payments (`watchtower start --price-per-state ... --pay-to O`),
and the client C (`node start --tower T --tower-budget N`) with a channel to O.

C pays the tower by itself and gets receipts; when its budget is spent it says so (alert `tower_lapsing`), the
tower carries it for the grace period, then stops protecting it, and C's node says that too (`tower_lapsed`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.tower import NO_CHANNEL, account_request, authorize
from statechannel.core.types import Domain, address_from_hex, to_checksum
from tests.anvil import Anvil, free_port
from tests.cli.helpers import Daemon, cli, cli_json, make_keystore, start_daemon
from tests.integration.test_watchtower_e2e import launch_tower, ready, wait_until

pytestmark = pytest.mark.anvil

PRICE = 1000
BUDGET = 12 * PRICE
GRACE = 3


def api(node: Daemon) -> httpx.Client:
    token = (node.data_dir / "api-token").read_text().strip()
    return httpx.Client(base_url=node.info["api"], headers={"Authorization": f"Bearer {token}"}, timeout=60)


def channel(node: Daemon, cid: str) -> dict[str, Any]:
    with api(node) as client:
        r = client.get(f"/channels/{cid}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def alerts(node: Daemon) -> str:
    """Every event the node's buffer still holds, as the raw server-sent stream."""
    with api(node) as client:
        return client.get("/events", params={"since": 0, "timeout": 1}).text


def billing(node: Daemon, cid: str) -> dict[str, Any]:
    [b] = channel(node, cid)["tower_billing"]
    assert isinstance(b, dict)
    return b


def test_the_node_pays_its_tower_by_itself_until_the_budget_ends_then_protection_lapses(
    tmp_path: Path, anvil: Anvil
) -> None:
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(f"paid tower e2e deployer {tmp_path.name}".encode()))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    adjudicator = to_checksum(adj.address)
    ko = make_keystore(tmp_path / "o.json", f"paid e2e O {tmp_path.name}")
    kc = make_keystore(tmp_path / "c.json", f"paid e2e C {tmp_path.name}")
    kt = make_keystore(tmp_path / "t.json", f"paid e2e tower {tmp_path.name}")
    for k in (ko, kc, kt):
        rpc.fund(k.address, 10**20)
    port_o = free_port()
    o = start_daemon(
        tmp_path / "o.json", tmp_path / "o", anvil.url, "--adjudicator", adjudicator, "--listen", f"127.0.0.1:{port_o}"
    )
    procs: list[Any] = [o]
    try:
        tower_args = ["--price-per-state", str(PRICE), "--grace", str(GRACE), "--pay-to", to_checksum(ko.address)]
        tower_args += ["--payee-api", o.info["api"], "--payee-token-file", str(tmp_path / "o" / "api-token")]
        tower = ready(launch_tower(tmp_path / "t.json", tmp_path / "tower", anvil.url, adjudicator, *tower_args))
        procs.append(tower)
        info = httpx.get(f"{tower.url}/info", timeout=10).json()
        assert info["terms"]["price_per_state"] == str(PRICE)
        c_args = ("--adjudicator", adjudicator, "--tower", tower.url, "--tower-budget", str(BUDGET))
        c = start_daemon(tmp_path / "c.json", tmp_path / "c", anvil.url, *c_args)
        procs.append(c)
        o_hex = "0x" + ko.address.hex()
        cli_json("peer", "connect", o_hex, f"127.0.0.1:{port_o}", "--data-dir", str(c.data_dir))
        opened = cli_json(
            "channel", "open", "--peer", o_hex, "--deposit", "eth=1000000000000000000", "--challenge-period", "600",
            "--data-dir", str(c.data_dir),
        )  # fmt: skip
        cid = opened["channel_id"]
        wait_until("open on both", lambda: channel(o, cid)["phase"] == channel(c, cid)["phase"] == "open")
        # C pays by itself; the tower signs receipts (verified by C's node)
        wait_until("a receipt", lambda: channel(c, cid)["protection"])
        b = wait_until("paid", lambda: (v := billing(c, cid))["paid"] != "0" and v)
        assert b["terms"]["price_per_state"] == str(PRICE) and b["budget"] == str(BUDGET)
        # O pays C back 1 wei at a time: each a new state C pushes and pays for, until the budget is spent
        with api(o) as client:
            for _ in range(80):
                r = client.post(f"/channels/{cid}/payments", json={"amount": "1", "timeout": 30})
                assert r.status_code == 200 and r.json()["status"] == "sent", r.text
                time.sleep(0.1)  # let C push each one (only the newest state is ever pushed)
                if billing(c, cid)["budget_left"] == "0" and "tower_lapsing" in alerts(c):
                    break
            assert billing(c, cid)["budget_left"] == "0" and "tower_lapsing" in alerts(c)
            # ... and more: the tower carries C on credit for GRACE s, then refuses it
            deadline = time.monotonic() + 60
            while "tower_lapsed" not in alerts(c):
                assert time.monotonic() < deadline, "C's node never said its protection lapsed"
                r = client.post(f"/channels/{cid}/payments", json={"amount": "1", "timeout": 30})
                assert r.status_code == 200, r.text
                time.sleep(0.5)
        paid = sum(
            int(p["amount"])
            for p in cli_json("payments", "--all", "--data-dir", str(o.data_dir))
            if p["direction"] == "in"
        )
        assert paid == BUDGET, "C paid exactly its budget, never more"
        wait_until("the tower's word kept", lambda: billing(c, cid)["standing"]["protected"] is False, 30)
        shown = cli("channel", "show", cid, "--data-dir", str(c.data_dir), env={"COLUMNS": "200"}).stdout
        assert "paid watchtower" in shown and f"0 of {BUDGET}" in shown and "protected False" in shown
        # the tower's own word, read the only way it shows it: signed by C
        domain = Domain(rpc.chain_id, adj.address)
        auth = authorize(
            kc, domain, address_from_hex(tower.address), NO_CHANNEL, account_request(kc.address), int(time.time())
        )
        body = {
            "client": to_checksum(kc.address),
            "timestamp": auth.timestamp,
            "auth": "0x" + auth.signature.to_bytes().hex(),
        }
        acct = httpx.post(f"{tower.url}/accounts/{to_checksum(kc.address)}", json=body, timeout=10).json()
        assert acct["protected"] is False and acct["paid"] == str(BUDGET) and int(acct["balance"]) < 0
    finally:
        for p in reversed(procs):
            if p.proc.poll() is None:
                p.proc.terminate()
                p.proc.wait(30)

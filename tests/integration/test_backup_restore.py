"""Lost disk (issue 12): B exports an encrypted backup, pays on, then loses its data directory. Restored
from the (now stale) backup, B's node takes the newest state A can prove, signs nothing more, closes with
it, and is paid exactly what it was owed. The file is readable only with B's key."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.backup import BackupError, read
from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from tests.anvil import Anvil, free_port
from tests.cli.helpers import PASSWORD, Daemon, cli, make_keystore, start_daemon

pytestmark = pytest.mark.anvil
ETHER = 10**18


def api(node: Daemon) -> httpx.Client:
    token = (node.data_dir / "api-token").read_text().strip()
    return httpx.Client(base_url=node.info["api"], headers={"Authorization": f"Bearer {token}"}, timeout=60)


def until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return got


def test_a_node_restored_from_a_stale_backup_closes_with_the_newest_provable_state(
    tmp_path: Path, anvil: Anvil
) -> None:
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(b"backup deployer"))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    ka, kb = make_keystore(tmp_path / "a.json", "backup A"), make_keystore(tmp_path / "b.json", "backup B")
    for k in (ka, kb):
        rpc.fund(k.address, 10**20)
    common = ("--adjudicator", "0x" + adj.address.hex())
    port_b = free_port()
    b_args = (tmp_path / "b.json", tmp_path / "b", anvil.url, *common, "--listen", f"127.0.0.1:{port_b}")
    a = start_daemon(tmp_path / "a.json", tmp_path / "a", anvil.url, *common)
    b = start_daemon(*b_args, "--recovery-wait", "3")
    env = {"STATECHANNEL_PASSWORD": PASSWORD}
    try:
        with api(a) as ca:
            assert ca.post("/peers", json={"address": "0x" + kb.address.hex(), "host": "127.0.0.1", "port": port_b})
            opened = ca.post(
                "/channels",
                json={
                    "peer": "0x" + kb.address.hex(),
                    "deposits": {"eth": str(ETHER)},
                    "challenge_period": 5,
                    "wait": 30,
                },
            ).json()
            cid = opened["channel_id"]
            assert opened["phase"] == "open"
            for amount in (1000, 2000):
                assert ca.post(f"/channels/{cid}/payments", json={"amount": str(amount)}).json()["status"] == "sent"
            out = tmp_path / "b.backup"
            exported = cli("backup", "export", "--data-dir", str(b.data_dir), "--keystore", str(tmp_path / "b.json"),
                           "--out", str(out), "--json", env=env)  # fmt: skip
            assert exported.exit_code == 0, exported.output
            assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
            with pytest.raises(BackupError):
                read(out, ka)  # another key cannot read it
            for amount in (30_000, 400_000):  # paid after the backup: the backup knows nothing of them
                assert ca.post(f"/channels/{cid}/payments", json={"amount": str(amount)}).json()["status"] == "sent"
            owed_b = 1000 + 2000 + 30_000 + 400_000
        b.proc.send_signal(signal.SIGKILL)  # the disk is gone
        b.proc.wait(10)
        restored_dir = tmp_path / "b-restored"
        rows = cli_json_env(env, "backup", "restore", "--in", str(out), "--keystore", str(tmp_path / "b.json"),
                            "--data-dir", str(restored_dir))  # fmt: skip
        assert [(r["channel_id"], r["phase"]) for r in rows] == [(cid, "recovering")]
        before = rpc.balance(kb.address)
        b = start_daemon(tmp_path / "b.json", restored_dir, anvil.url, *common, "--listen", f"127.0.0.1:{port_b}",
                         "--recovery-wait", "3")  # fmt: skip
        chan = bytes.fromhex(cid[2:])
        until("B's close on chain", lambda: adj.channel(chan).status is Status.CLOSING, 60)
        recorded = adj.recorded(chan)
        with api(a) as ca:
            newest = ca.get(f"/channels/{cid}").json()["version"]
        assert recorded is not None and recorded.version == newest > rows[0]["version"], "closed with A's proof"
        rpc.advance_time(6)
        until("concluded", lambda: adj.channel(chan).status is Status.CONCLUDED, 60)
        with api(b) as cb:
            view = until("B reports it", lambda: (v := cb.get(f"/channels/{cid}").json())["phase"] == "closed" and v)
        assert view["outcome"]["loss"] is False
        paid = int(view["outcome"]["paid"][0]["my_balance"])
        assert paid == owed_b, "the newest state A proved, not the backup's"
        gas = owed_b - (rpc.balance(kb.address) - before)
        assert 0 <= gas < ETHER // 100
    finally:
        for node in (a, b):
            if node.proc.poll() is None:
                node.stop()


def cli_json_env(env: dict[str, str], *args: str) -> Any:
    result = cli(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)

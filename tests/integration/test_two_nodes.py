"""Two node processes over real TCP against a real anvil node, driven by the CLI.

Open, 1,000 payments each way (the receiver killed with SIGKILL and restarted in
the middle of one stream), cooperative close, and on-chain balances exactly right."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.observed import ChainObservedConcluded
from tests.anvil import Anvil, free_port
from tests.cli.helpers import Daemon, cli_json, make_keystore, node_command, start_daemon

pytestmark = pytest.mark.anvil

DEPOSIT = 10**18
PAY_A, PAY_B = 1_000_000, 700_000  # wei per payment
COUNT = 1000


def hexa(key: PrivateKey) -> str:
    return "0x" + key.address.hex()


def channel_view(node: Daemon, cid: str) -> dict[str, Any]:
    views = cli_json("channel", "list", "--data-dir", str(node.data_dir))
    return next(v for v in views if v["channel_id"] == cid)


def pay_one_by_one(node: Daemon, cid: str, amount: int, count: int, outcome: dict[str, Any]) -> None:
    """POST one payment at a time; retry a refused one (the peer is down) until it is sent."""
    token = (node.data_dir / "api-token").read_text().strip()
    url = node.info["api"]
    outcome.update(sent=0, refused=0)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while outcome["sent"] < count:
            r = client.post(f"/channels/{cid}/payments", json={"amount": str(amount), "timeout": 60})
            if r.status_code == 200 and r.json()["status"] == "sent":
                outcome["sent"] += 1
            elif r.status_code == 503:
                outcome["refused"] += 1
                time.sleep(0.05)
            else:
                outcome["error"] = f"{r.status_code} {r.text}"
                return


def pay_through_a_kill(payer: Daemon, victim: Daemon, restart: tuple[Any, ...], cid: str, amount: int) -> Daemon:
    """Stream COUNT payments from `payer`; SIGKILL `victim` a quarter of the way in and restart
    it; every payment must end up sent exactly once. Returns the restarted victim."""
    outcome: dict[str, Any] = {}
    stream = threading.Thread(target=pay_one_by_one, args=(payer, cid, amount, COUNT, outcome))
    stream.start()
    wait_until("a quarter of the stream", lambda: outcome.get("sent", 0) >= COUNT // 4, 120)
    victim.proc.send_signal(signal.SIGKILL)
    at_kill = outcome["sent"]
    victim.proc.wait(10)
    (victim.data_dir / "node.json").unlink(missing_ok=True)
    revived = start_daemon(*restart)
    stream.join(300)
    assert not stream.is_alive()
    assert outcome["sent"] == COUNT, outcome
    assert at_kill < COUNT, "the kill came after the stream ended"
    return revived


def wait_until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_processes_pay_survive_a_kill_and_settle_exactly(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(b"integration deployer"))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    ka = make_keystore(tmp_path / "a.json", "integration A")
    kb = make_keystore(tmp_path / "b.json", "integration B")
    for k in (ka, kb):
        rpc.fund(k.address, 10**20)
    common = ("--adjudicator", "0x" + adj.address.hex())
    port_b = free_port()
    b_args = (tmp_path / "b.json", tmp_path / "b", anvil.url, *common, "--listen", f"127.0.0.1:{port_b}")
    a_args = (tmp_path / "a.json", tmp_path / "a", anvil.url, *common)
    a = start_daemon(*a_args)
    b = start_daemon(*b_args)
    try:
        da, db = ("--data-dir", str(a.data_dir)), ("--data-dir", str(b.data_dir))
        cli_json("peer", "connect", hexa(kb), f"127.0.0.1:{port_b}", *da)
        opened = cli_json(
            "channel", "open", "--peer", hexa(kb), "--deposit", f"eth={DEPOSIT}", "--challenge-period", "600", *da
        )
        cid = opened["channel_id"]
        wait_until("open on both", lambda: channel_view(b, cid)["phase"] == "open")
        cli_json("channel", "deposit", cid, "eth", str(DEPOSIT), *db)
        wait_until("B's deposit seen by A", lambda: channel_view(a, cid)["balances"][0]["peer_funded"] == str(DEPOSIT))

        # A pays 1,000 times, one request at a time like a metered client, while B is killed
        # with SIGKILL and restarted; then B pays A the same way while A, the side that
        # dialled, is killed and restarted (it must find B again from its peer book).
        # Requests in flight at a kill complete after the restart; requests made while the
        # peer is down are refused (peer unreachable) and retried. Nothing is lost or paid twice.
        b = pay_through_a_kill(payer=a, victim=b, restart=b_args, cid=cid, amount=PAY_A)
        a = pay_through_a_kill(payer=b, victim=a, restart=a_args, cid=cid, amount=PAY_B)
        wait_until("both agree", lambda: channel_view(a, cid)["version"] == channel_view(b, cid)["version"])

        view_a, view_b = channel_view(a, cid), channel_view(b, cid)
        assert view_a["version"] == view_b["version"] and view_a["in_flight"] == view_b["in_flight"] == 0
        net = COUNT * (PAY_A - PAY_B)  # A to B
        assert view_a["balances"][0]["my_balance"] == str(DEPOSIT - net)
        assert view_b["balances"][0]["my_balance"] == str(DEPOSIT + net)
        received = [p for p in cli_json("payments", "--limit", "10000", *db) if p["direction"] == "in"]
        assert sum(int(p["amount"]) for p in received) == COUNT * PAY_A

        # cooperative close: B submits nothing, so its balance rises by exactly its payout
        b_before = rpc.balance(kb.address)
        a_before = rpc.balance(ka.address)
        cli_json("channel", "close", cid, "--wait", "120", *da)
        wait_until("closed on B", lambda: channel_view(b, cid)["phase"] == "closed")
        assert rpc.balance(kb.address) - b_before == DEPOSIT + net
        concluded = [e for e in adj.events(0) if isinstance(e, ChainObservedConcluded)]
        assert len(concluded) == 1 and "0x" + concluded[0].channel_id.hex() == cid
        receipt = rpc._rpc("eth_getTransactionReceipt", ["0x" + concluded[0].origin.tx_hash.hex()])
        fee = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        assert rpc.balance(ka.address) - a_before == DEPOSIT - net - fee
        assert rpc.balance(adj.address) == 0
    finally:
        for node in (a, b):
            if node.proc.poll() is None:
                node.stop()


def test_node_command_is_documented() -> None:
    """The integration relies on these flags; fail loudly if the CLI drops one."""
    cmd = node_command(Path("k"), Path("d"), "embedded", "--listen", "127.0.0.1:1")
    assert cmd[3:5] == ["node", "start"] and "--keystore" in cmd and "--data-dir" in cmd

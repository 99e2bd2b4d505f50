"""`statechannel node start` as a real process, driven by the client commands.

The embedded-chain test covers the daemon's own life (node.json, token, lock, SIGTERM); the anvil test
covers two daemons paying each other over TCP, every command once."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.types import to_checksum
from statechannel.store.sqlite import SqliteStore
from tests.anvil import Anvil
from tests.cli.helpers import (
    PASSWORD,
    Daemon,
    cli,
    cli_json,
    make_keystore,
    node_command,
    one_line_error,
    start_daemon,
)

ETHER = 10**18


def test_daemon_advertises_itself_and_stops_cleanly(tmp_path: Path) -> None:
    keystore, data = tmp_path / "k.json", tmp_path / "data"
    key = make_keystore(keystore, "daemon")
    node = start_daemon(keystore, data)
    try:
        assert node.info["pid"] == node.proc.pid
        assert node.info["address"] == to_checksum(key.address)
        assert node.info["api"].startswith("http://127.0.0.1:")
        assert stat.S_IMODE((data / "api-token").stat().st_mode) == 0o600
        assert len((data / "api-token").read_text().strip()) == 64

        info = cli_json("node", "info", "--data-dir", str(data))
        assert info["address"] == to_checksum(key.address)
        assert info["peer_listen"] == node.info["listen"]
        assert int(info["eth_balance"]) > 0
        assert cli_json("channel", "list", "--data-dir", str(data)) == []
        assert cli_json("payments", "--data-dir", str(data)) == []
        human = cli("node", "info", "--data-dir", str(data))
        assert human.exit_code == 0 and to_checksum(key.address) in human.stdout

        line = one_line_error(cli("channel", "pay", "0x" + "11" * 32, "5", "--data-dir", str(data)))
        assert line.startswith("Error: unknown channel:")
        line = one_line_error(cli("channel", "close", "0x" + "11" * 32, "--data-dir", str(data)))
        assert line.startswith("Error: unknown channel:")
        stranger = "0x" + "ab" * 20
        line = one_line_error(
            cli("peer", "connect", stranger, "127.0.0.1:1", "--timeout", "0.5", "--data-dir", str(data))
        )
        assert line.startswith("Error: peer unreachable:")
        ended = cli("events", "--timeout", "0.3", "--data-dir", str(data))
        assert ended.exit_code == 0, ended.output

        # one node per data directory: a second one is refused before it touches anything
        second = subprocess.run(
            node_command(keystore, data, "embedded"),
            env={**os.environ, "STATECHANNEL_PASSWORD": PASSWORD},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert second.stderr.decode().strip().splitlines()[-1] == (
            f"Error: another node is running with data directory {data}"
        )
        assert json.loads((data / "node.json").read_text()) == node.info
    finally:
        code = node.stop()
    log = node.log()
    assert code == 0, log
    assert "node stopped" in log and "Traceback" not in log
    assert not (data / "node.json").exists()
    store = SqliteStore(data / "node.db")  # closed cleanly: opens again, checkpoint and all
    try:
        assert store.load_checkpoint() is not None
    finally:
        import asyncio

        asyncio.run(store.close())
    line = one_line_error(cli("node", "info", "--data-dir", str(data)))
    assert line.startswith("Error: node not running")


@pytest.mark.anvil
def test_two_daemons_pay_each_other(tmp_path: Path, anvil: Anvil) -> None:
    chain = RpcChain(anvil.url)
    keys = {name: make_keystore(tmp_path / f"{name}.json", f"two daemons {name}") for name in ("a", "b", "deployer")}
    for k in keys.values():
        chain.fund(k.address, 100 * ETHER)
    adj, _ = Adjudicator.deploy(chain, keys["deployer"])
    # issue 13: `dev fund` is refused on a chain that is not a dev chain (this anvil has a public-looking id)
    line = one_line_error(cli("dev", "fund", "--rpc", anvil.url, to_checksum(keys["a"].address)))
    assert "not a dev chain" in line
    extra = ("--adjudicator", to_checksum(adj.address))
    da, db = tmp_path / "A", tmp_path / "B"
    node_a = start_daemon(tmp_path / "a.json", da, anvil.url, *extra, "--history", "50")
    node_b: Daemon | None = None
    try:
        node_b = start_daemon(tmp_path / "b.json", db, anvil.url, *extra)
        _two_daemons(da, db, node_b.info)
    finally:
        codes = [node_a.stop(), node_b.stop() if node_b else 0]
    assert codes == [0, 0], node_a.log() + (node_b.log() if node_b else "")


def _two_daemons(da: Path, db: Path, b_info: dict[str, object]) -> None:
    a, b = ("--data-dir", str(da)), ("--data-dir", str(db))
    peer = str(b_info["address"])
    host, port = str(b_info["listen"]).rsplit(":", 1)
    want = {"address": peer, "connected": True, "host": host, "port": int(port), "channels": 0}
    assert cli_json("peer", "connect", peer, str(b_info["listen"]), *a) == want
    assert cli_json("peer", "list", *a) == [want]  # issue 13: the peer book is listed

    ch = cli_json("channel", "open", "--peer", peer, "--deposit", f"eth={ETHER}", "--challenge-period", "60", *a)
    assert ch["phase"] == "open" and ch["balances"][0]["my_balance"] == str(ETHER)
    cid = ch["channel_id"]
    # issue 13: more than the wallet holds fails at once, with the reason, and leaves no channel behind
    line = one_line_error(cli("channel", "open", "--peer", peer, "--deposit", f"eth={10**30}", *a))
    assert line.startswith("Error: insufficient balance: the wallet"), line
    assert len(cli_json("channel", "list", *a)) == 1
    schedule = cli_json("recurring", "add", cid, "1", "--every-ms", "60000", *a)
    cancelled = cli("recurring", "cancel", schedule["schedule_id"], *a)  # a 204 was "bad_response", exit 1
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout, cancelled.output

    last = max(int(str(e["id"])) for e in _events(a, "--since", "0", "--timeout", "0.5"))
    live = subprocess.Popen(  # a stream open while the payment happens: delivered live through uvicorn
        [sys.executable, "-m", "statechannel.cli", "events", "--since", str(last), "--count", "1", "--json", *a],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    paid = cli_json("channel", "pay", cid, "1000", *a)
    assert paid["status"] == "sent" and paid["amount"] == "1000"
    out, err = live.communicate(timeout=60)
    assert live.returncode == 0, err
    (event,) = [json.loads(line) for line in out.decode().splitlines()]
    assert event["kind"] == "sent" and event["data"]["payments"] == [paid["payment_id"]]

    batch = cli_json("channel", "pay", cid, "10", "--count", "100", "--history", "per-payment", *a)
    assert (batch["sent"], batch["failed"], batch["pending"]) == (100, 0, 0)
    human = cli("channel", "pay", cid, "10", "--count", "5", *a)  # one batch: one row on each side
    assert human.exit_code == 0 and human.stdout.startswith("5 sent, 0 failed"), human.output
    assert "total 50" in human.stdout

    line = one_line_error(cli("channel", "pay", cid, str(2 * ETHER), *a))
    assert line.startswith("Error: insufficient balance:")

    # issue 13: A keeps its newest 50 rows (--history 50), pages through them, and says it pruned the rest
    paged = cli("payments", "--channel", cid, "--all", "--page-size", "7", "--json", *a)
    assert paged.exit_code == 0, paged.output
    assert len(json.loads(paged.stdout)) == 50 and "older payment rows were pruned" in paged.stderr
    assert "keeps the newest 50" in paged.stderr
    assert json.loads(paged.stdout) == cli_json("payments", "--channel", cid, "--limit", "1000", *a)
    received = cli_json("payments", "--channel", cid, "--all", "--page-size", "7", *b)
    assert {p["direction"] for p in received} == {"in"}
    assert len(received) == 1 + 100 + 1  # one row per payment on the side paid too, one for the batch
    assert sorted(p["count"] for p in received)[-1] == 5
    assert sum(int(p["amount"]) for p in received) == 1000 + 1000 + 50
    kinds = [e["kind"] for e in _events(b, "--since", "0", "--timeout", "0.5")]
    assert kinds[:2] == ["phase", "phase"] and "received" in kinds

    deposited = cli_json("channel", "deposit", cid, "eth", "500", *b)
    assert deposited["balances"][0]["my_deposit"] == "0"  # what was agreed at opening
    assert deposited["balances"][0]["my_funded"] == "500"  # issue 13: the balances after the deposit, not before
    _until(lambda: _balance(a, "peer_funded") == 500)
    withdrawn = cli_json("channel", "withdraw", cid, "eth", "100", *a)
    assert int(withdrawn["balances"][0]["my_balance"]) == ETHER - 2050 - 100
    _until(lambda: _balance(a, "my_funded") == ETHER - 100)  # co-signed by B, submitted by A, seen on chain

    closed = cli_json("channel", "close", cid, *a)
    assert closed["phase"] == "closed"
    _until(lambda: cli_json("channel", "list", *b)[0]["phase"] == "closed")  # when B's watcher sees it
    (mine,) = cli_json("channel", "list", *b)
    assert mine["channel_id"] == cid
    assert mine["balances"][0]["my_balance"] == str(2050 + 500)
    table = cli("channel", "list", *a, env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "closed" in table.stdout
    lines = table.stdout.splitlines()
    assert any(cid in line for line in lines)  # issue 13: the whole id on one line, to copy
    (final,) = cli_json("channel", "list", *a)
    for bal in final["balances"]:  # and every number whole (they were folded over lines at 80 columns)
        assert any(bal["my_balance"] in line and bal["peer_balance"] in line for line in lines), table.stdout
    assert all(len(line) <= 80 for line in lines if cid not in line), table.stdout
    gone = cli_json("peer", "disconnect", peer, *a)
    assert gone["connected"] is False
    assert cli_json("peer", "list", *a)[0]["host"] is None  # forgotten: not dialled again


def _balance(data_dir: tuple[str, str], field: str) -> int:
    (ch,) = cli_json("channel", "list", *data_dir)
    return int(ch["balances"][0][field])


def _until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """For what only the chain watcher will tell: poll, bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the chain"
        time.sleep(0.1)


def _events(data_dir: tuple[str, str], *args: str) -> list[dict[str, object]]:
    result = cli("events", "--json", *args, *data_dir)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_sigint_stops_the_node_too(tmp_path: Path) -> None:
    keystore, data = tmp_path / "k.json", tmp_path / "data"
    make_keystore(keystore, "sigint")
    node = start_daemon(keystore, data)
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(30) == 0, node.log()
    assert not (data / "node.json").exists()
    # the embedded chain starts empty each time: reusing its data directory would strand its channels
    again = subprocess.run(
        node_command(keystore, data, "embedded"),
        env={**os.environ, "STATECHANNEL_PASSWORD": PASSWORD},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "use a fresh --data-dir" in again.stderr.decode()

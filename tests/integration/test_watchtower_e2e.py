"""Watchtowers end to end: node and tower processes over real HTTP and TCP against anvil.

A pays B; A's key then closes with a stale (both-signed, older) state while A's node is down. Whoever
protects B must answer within the window: (a) B's tower while B is offline (B's node flushed to it on
SIGTERM), (b) B's own node while it is online, (d) two towers at once, exactly one of them on chain.
Settlement must then pay B exactly its latest balance (less its own gas when it acted itself)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import TransactionReverted
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import state_digest, state_hash
from statechannel.core.observed import ChainObservedClose, ChainObservedConcluded
from statechannel.core.persist import decode_channel
from statechannel.core.types import ETH, ChannelParams, State, address_from_hex
from statechannel.store.sqlite import SqliteStore
from tests.anvil import Anvil, free_port
from tests.cli.helpers import PASSWORD, Daemon, cli, cli_json, make_keystore, start_daemon

pytestmark = pytest.mark.anvil

DEPOSIT = 10**18
PAY = 10**15
EARLY, LATE = 5, 25  # payments before the stale state is taken, and after it
WINDOW = 600
TIMEOUT = 60.0


def wait_until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


@dataclass
class Tower:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    url: str = ""
    address: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def channel(self, cid: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/channels/{cid}", timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def launch_tower(keystore: Path, data_dir: Path, rpc: str, adjudicator: str, *extra: str) -> Tower:
    """`statechannel watchtower start` as its own process; its log goes to a file the test can read live."""
    data_dir.mkdir(parents=True)
    log_path = data_dir.with_suffix(".log")
    command = [sys.executable, "-m", "statechannel.cli", "watchtower", "start", "--rpc", rpc]
    command += ["--adjudicator", adjudicator, "--keystore", str(keystore), "--data-dir", str(data_dir), *extra]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            env={**os.environ, "STATECHANNEL_PASSWORD": PASSWORD},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return Tower(proc, data_dir, log_path)


def ready(tower: Tower) -> Tower:
    tower_json = tower.data_dir / "tower.json"

    def written() -> bool:
        assert tower.proc.poll() is None, f"the tower exited before it was ready:\n{tower.log()}"
        return tower_json.exists()

    wait_until("tower.json", written)
    info = json.loads(tower_json.read_text())
    tower.url, tower.address = info["api"], info["address"]
    return tower


@dataclass
class World:
    rpc: RpcChain
    adj: Adjudicator
    deployer: PrivateKey
    ka: PrivateKey
    kb: PrivateKey
    a: Daemon
    b: Daemon
    towers: list[Tower]
    cid: str


def view(node: Daemon, cid: str) -> dict[str, Any]:
    return next(v for v in cli_json("channel", "list", "--data-dir", str(node.data_dir)) if v["channel_id"] == cid)


def pay(node: Daemon, cid: str, count: int) -> None:
    """One payment per request, so each is its own version."""
    token = (node.data_dir / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=node.info["api"], headers=headers, timeout=60) as client:
        for _ in range(count):
            r = client.post(f"/channels/{cid}/payments", json={"amount": str(PAY), "timeout": 30})
            assert r.status_code == 200 and r.json()["status"] == "sent", r.text


@contextmanager
def world(tmp: Path, anvil: Anvil, towers: int, policy: str = "every-update") -> Iterator[World]:
    """A (deposits) and B with an open channel; B pushes to `towers` towers, if any."""
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(f"watchtower e2e deployer {tmp.name}".encode()))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    adjudicator = "0x" + adj.address.hex()
    ka = make_keystore(tmp / "a.json", f"e2e A {tmp.name}")
    kb = make_keystore(tmp / "b.json", f"e2e B {tmp.name}")
    launched = []
    for i in range(towers):
        kt = make_keystore(tmp / f"t{i}.json", f"e2e tower {i} {tmp.name}")
        rpc.fund(kt.address, 10**20)
        launched.append(launch_tower(tmp / f"t{i}.json", tmp / f"tower{i}", anvil.url, adjudicator))
    for k in (ka, kb):
        rpc.fund(k.address, 10**20)
    port_b = free_port()
    nodes: list[Daemon] = []
    try:
        nodes.append(start_daemon(tmp / "a.json", tmp / "a", anvil.url, "--adjudicator", adjudicator))
        tower_args = [arg for t in launched for arg in ("--tower", ready(t).url)]
        b_args = ("--adjudicator", adjudicator, "--listen", f"127.0.0.1:{port_b}", "--tower-policy", policy)
        nodes.append(start_daemon(tmp / "b.json", tmp / "b", anvil.url, *b_args, *tower_args))
        a, b = nodes
        b_hex = "0x" + kb.address.hex()
        cli_json("peer", "connect", b_hex, f"127.0.0.1:{port_b}", "--data-dir", str(a.data_dir))
        deposit = ("--deposit", f"eth={DEPOSIT}", "--challenge-period", str(WINDOW))
        opened = cli_json("channel", "open", "--peer", b_hex, *deposit, "--data-dir", str(a.data_dir))
        cid = opened["channel_id"]
        wait_until("open on both", lambda: view(a, cid)["phase"] == view(b, cid)["phase"] == "open")
        yield World(rpc, adj, deployer, ka, kb, a, b, launched, cid)
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.stop()
        for t in launched:
            if t.proc.poll() is None:
                t.proc.terminate()
                t.proc.wait(30)


def stale_then_latest(w: World) -> tuple[State, dict[str, Any]]:
    """A pays B EARLY times (that state becomes the stale one), then LATE more; B's final view."""
    pay(w.a, w.cid, EARLY)
    early = view(w.a, w.cid)
    transfer = DEPOSIT - int(early["balances"][0]["my_balance"])
    stale = State(bytes.fromhex(w.cid[2:]), early["version"], (ETH,), (transfer,))
    pay(w.a, w.cid, LATE)
    latest = wait_until("B in step", lambda: (v := view(w.b, w.cid))["version"] == view(w.a, w.cid)["version"] and v)
    assert int(latest["balances"][0]["my_balance"]) == (EARLY + LATE) * PAY
    return stale, latest


def params_of(w: World) -> ChannelParams:
    """The channel's parameters, as A's node stored them (the nonce is in no API view)."""
    store = SqliteStore(w.a.data_dir / "node.db")
    try:
        return decode_channel(store.load_channels()[bytes.fromhex(w.cid[2:])]).params
    finally:
        asyncio.run(store.close())


def close_stale(w: World, stale: State) -> ChannelParams:
    """A's key (A's node is down: it would answer its own cheat) closes with the stale state."""
    params = params_of(w)
    digest = state_digest(w.adj.domain, stale)
    w.adj.close(w.ka, params, stale, w.ka.sign_digest(digest), w.kb.sign_digest(digest))
    return params


def challenges(w: World) -> list[ChainObservedClose]:
    return [e for e in w.adj.events(0) if isinstance(e, ChainObservedClose) and e.challenge]


def settle_after_window(w: World, params: ChannelParams, latest: dict[str, Any], by_b_node: bool) -> None:
    """Move past the window; B's node settles by itself when online, else a third party settles."""
    [challenged] = challenges(w)
    w.rpc.advance_time(WINDOW + 1)
    if not by_b_node:
        state = State(bytes.fromhex(w.cid[2:]), latest["version"], (ETH,), (int(latest["balances"][0]["my_balance"]),))
        assert state_hash(state) == challenged.state_hash
        with contextlib.suppress(TransactionReverted):  # a tower may settle too: the Concluded check is what counts
            w.adj.settle(w.deployer, params, state, challenged.finalizes_at)
    wait_until("concluded", lambda: [e for e in w.adj.events(0) if isinstance(e, ChainObservedConcluded)], 30)


def test_b_offline_its_tower_answers_a_stale_close_and_settle_pays_b_exactly(tmp_path: Path, anvil: Anvil) -> None:
    with world(tmp_path, anvil, towers=1, policy="every:10") as w:
        [tower] = w.towers
        stale, latest = stale_then_latest(w)
        # B's latest changed 2 + EARLY + LATE times: the policy pushed every 10th, and the protection shows it
        pushed = 29  # the 30th change
        [held] = wait_until("a receipt", lambda: [p for p in view(w.b, w.cid)["protection"] if p["version"] == pushed])
        assert held["tower"] == tower.url and held["address"] == tower.address and latest["version"] > pushed
        table = cli("channel", "list", "--data-dir", str(w.b.data_dir), env={"COLUMNS": "400"}).stdout
        assert f"tower {tower.url} holds v{pushed}" in table
        b_before = w.rpc.balance(w.kb.address)
        assert w.b.stop() == 0  # SIGTERM: flushes the held-back newest state to the tower
        assert tower.channel(w.cid)["version"] == latest["version"]
        assert w.a.stop() == 0
        params = close_stale(w, stale)
        [c] = wait_until("the tower's challenge", lambda: challenges(w), 30)
        assert c.version == latest["version"]
        settle_after_window(w, params, latest, by_b_node=False)
        assert w.rpc.balance(w.kb.address) - b_before == (EARLY + LATE) * PAY
        assert tower.proc.poll() is None


def test_b_online_challenges_by_itself(tmp_path: Path, anvil: Anvil) -> None:
    with world(tmp_path, anvil, towers=0) as w:
        stale, latest = stale_then_latest(w)
        b_before = w.rpc.balance(w.kb.address)
        assert w.a.stop() == 0
        params = close_stale(w, stale)
        [c] = wait_until("B's own challenge", lambda: challenges(w), 30)
        assert c.version == latest["version"]
        wait_until("B sees its challenge", lambda: (view(w.b, w.cid)["dispute"] or {}).get("version") == c.version)
        settle_after_window(w, params, latest, by_b_node=True)
        concluded = [e for e in w.adj.events(0) if isinstance(e, ChainObservedConcluded)]
        fees = 0
        for tx in (c.origin.tx_hash, concluded[0].origin.tx_hash):
            receipt = w.rpc._rpc("eth_getTransactionReceipt", ["0x" + tx.hex()])
            assert address_from_hex(receipt["from"]) == w.kb.address, "B's node sent the challenge and the settle"
            fees += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        assert w.rpc.balance(w.kb.address) - b_before == (EARLY + LATE) * PAY - fees


def test_two_towers_one_challenge_no_crash_no_endless_retries(tmp_path: Path, anvil: Anvil) -> None:
    with world(tmp_path, anvil, towers=2) as w:
        stale, latest = stale_then_latest(w)

        def all_hold(key: str) -> bool:
            return all(t.channel(w.cid)[key] == latest["version"] for t in w.towers)

        wait_until("each tower holds the latest", lambda: all_hold("version"))

        def receipts() -> list[tuple[str, int]]:
            return sorted((p["tower"], p["version"]) for p in view(w.b, w.cid)["protection"])

        wait_until("both receipts", lambda: receipts() == sorted((t.url, latest["version"]) for t in w.towers))
        b_before = w.rpc.balance(w.kb.address)
        assert w.b.stop() == 0
        assert w.a.stop() == 0
        params = close_stale(w, stale)
        wait_until("a challenge", lambda: challenges(w), 30)
        # both towers saw the close; give the slower one time to try, fail and (must) stop trying
        wait_until("both towers see the challenge", lambda: all_hold("recorded_version"), 30)
        time.sleep(3)
        assert len(challenges(w)) == 1
        outcomes = []
        for t in w.towers:
            assert t.proc.poll() is None, t.log()
            attempt = t.channel(w.cid)["challenge"]
            outcomes.append(None if attempt is None else (attempt["outcome"], attempt["reason"]))
            assert t.log().count("challenging with") <= 1, t.log()
        assert ("mined", "") in outcomes, outcomes
        [other] = [o for o in outcomes if o != ("mined", "")]
        loser = w.towers[outcomes.index(other)]
        if other is None:  # it saw the winning challenge before acting: skipped, no transaction
            assert "challenging with" not in loser.log(), loser.log()
        else:  # it raced the winner: one revert (the same version was recorded first), never retried
            assert other == ("reverted", "stale version"), outcomes
            assert loser.log().count("challenge reverted: stale version") == 1, loser.log()
        settle_after_window(w, params, latest, by_b_node=False)
        assert w.rpc.balance(w.kb.address) - b_before == (EARLY + LATE) * PAY

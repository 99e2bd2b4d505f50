"""The tower as a real process (`statechannel watchtower start`) against anvil: stopped, a stale close
while it is down, restarted inside the window, it catches up from its checkpoint and challenges; the
settlement after the window pays by the newer state."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import Signature
from statechannel.core.eip712 import state_hash
from statechannel.core.tower import Receipt
from statechannel.core.types import to_checksum
from statechannel.node.keys import write_keystore
from statechannel.watchtower.daemon import TowerConfig, TowerFile, run
from statechannel.watchtower.pg_store import PostgresTowerStore
from tests.anvil import Anvil
from tests.cli.helpers import cli, one_line_error
from tests.watchtower.helpers import ETHER, closes, deploy, eth_state, key, open_channel, params_json, sign, state_json
from tests.watchtower.pg import Postgres

pytestmark = pytest.mark.anvil
PASSWORD = "tower test password"
STARTUP_TIMEOUT = 60.0


@dataclass
class TowerProcess:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    log: Path

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("the tower did not stop after SIGTERM") from None


def start_tower(keystore: Path, data_dir: Path, rpc: str, adjudicator: bytes) -> TowerProcess:
    command = [
        sys.executable, "-m", "statechannel.cli", "watchtower", "start", "--rpc", rpc,
        "--adjudicator", to_checksum(adjudicator), "--keystore", str(keystore), "--data-dir", str(data_dir),
        "--poll-interval", "0.1",
    ]  # fmt: skip
    log = data_dir.parent / f"{data_dir.name}-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command, env={**os.environ, "STATECHANNEL_PASSWORD": PASSWORD}, stdout=subprocess.DEVNULL, stderr=err
        )
    ready = data_dir / "tower.json"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the tower exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"the tower did not write tower.json in time:\n{log.read_text()}")
        time.sleep(0.05)
    return TowerProcess(proc, json.loads(ready.read_text()), log)


def test_restarted_tower_process_challenges_a_close_made_while_it_was_down(tmp_path: Path, anvil: Anvil) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "process")
    write_keystore(tmp_path / "tower-key.json", s.tower_key, PASSWORD, scrypt_n=2**10)
    params = open_channel(s, 1, period=120, deposit_a=ETHER, deposit_b=2 * ETHER)
    cid = s.adj.channel_id(params)
    old = sign(s.adj.domain, eth_state(cid, 2, 10**17), s.a, s.b)
    new = sign(s.adj.domain, eth_state(cid, 7, 3 * 10**17), s.a, s.b)
    data_dir = tmp_path / "tower"

    tower = start_tower(tmp_path / "tower-key.json", data_dir, anvil.url, s.adj.address)
    try:
        assert tower.info == {
            "pid": tower.proc.pid,
            "address": to_checksum(s.tower_key.address),
            "api": tower.info["api"],
            "chain_id": rpc.chain_id,
            "adjudicator": to_checksum(s.adj.address),
        }
        info = cli("watchtower", "info", "--data-dir", str(data_dir), "--json")
        assert info.exit_code == 0 and json.loads(info.stdout)["address"] == to_checksum(s.tower_key.address)
        with httpx.Client(base_url=tower.info["api"], timeout=30) as api:
            assert api.post("/channels", json=params_json(params, s)).status_code == 201
            for signed in (old, new):
                r = api.post("/states", json=state_json(signed, s))
                assert r.status_code == 200, r.text
            got = r.json()
            receipt = Receipt(cid, 7, state_hash(signed.state), s.tower_key.address, got["from_block"])
            assert receipt.signer(s.adj.domain, Signature.from_bytes(bytes.fromhex(got["receipt"][2:]))) == (
                s.tower_key.address
            )
    finally:
        assert tower.stop() == 0, tower.log.read_text()
    assert not (data_dir / "tower.json").exists()

    s.adj.close(s.a, params, old.state, old.sig_a, old.sig_b)  # the stale close, while no tower runs
    rpc.mine(3)
    tower = start_tower(tmp_path / "tower-key.json", data_dir, anvil.url, s.adj.address)
    try:
        deadline = time.monotonic() + 30
        while not any(e.challenge for e in closes(s, cid)):
            assert time.monotonic() < deadline, f"no challenge on chain:\n{tower.log.read_text()}"
            time.sleep(0.1)
        with httpx.Client(base_url=tower.info["api"], timeout=30) as api:
            # the tower learns the challenge event and its own receipt in separate polls: wait for both
            while (view := api.get(f"/channels/0x{cid.hex()}").json())["recorded_version"] != 7 or (
                view["challenge"] or {}
            ).get("outcome") != "mined":
                assert time.monotonic() < deadline, view
                time.sleep(0.1)
        assert (view["status"], view["version"], view["challenge"]["outcome"]) == ("challenged", 7, "mined")
    finally:
        assert tower.stop() == 0, tower.log.read_text()

    close, challenge = closes(s, cid)
    assert (close.version, challenge.version, challenge.challenge) == (2, 7, True)
    assert challenge.origin.block_number < close.finalizes_at and challenge.finalizes_at == close.finalizes_at
    rpc.advance_time(121)
    before = rpc.balance(s.a.address), rpc.balance(s.b.address)
    s.adj.settle(s.tower_key, params, new.state, challenge.finalizes_at)
    assert rpc.balance(s.a.address) - before[0] == ETHER - 3 * 10**17
    assert rpc.balance(s.b.address) - before[1] == 2 * ETHER + 3 * 10**17


def test_start_and_info_fail_in_one_line(tmp_path: Path, anvil: Anvil) -> None:
    keystore = tmp_path / "k.json"
    write_keystore(keystore, key("cli tower"), PASSWORD, scrypt_n=2**10)
    env = {"STATECHANNEL_PASSWORD": PASSWORD}
    common = ("--keystore", str(keystore), "--data-dir", str(tmp_path / "t"))
    nothing_there = cli(
        "watchtower", "start", "--rpc", anvil.url, "--adjudicator", "0x" + "00" * 19 + "01", *common, env=env
    )
    assert "no statechannel adjudicator" in one_line_error(nothing_there)
    no_chain = cli(
        "watchtower", "start", "--rpc", "http://127.0.0.1:1", "--adjudicator", "0x" + "00" * 20, *common, env=env
    )
    assert "chain at http://127.0.0.1:1" in one_line_error(no_chain)
    assert not (tmp_path / "t" / "tower.json").exists()
    assert "no running tower" in one_line_error(cli("watchtower", "info", "--data-dir", str(tmp_path / "none")))


def test_daemon_on_postgresql_serves_and_cleans_up(tmp_path: Path, anvil: Anvil, postgres: Postgres) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "daemon on postgresql")
    params = open_channel(s, 1)
    dsn = postgres.new_database()
    config = TowerConfig(rpc=anvil.url, adjudicator=s.adj.address, data_dir=tmp_path / "t", db=dsn, poll_interval=0.1)

    async def scenario() -> None:
        stop = asyncio.Event()
        ready: list[TowerFile] = []
        task = asyncio.create_task(run(config, s.tower_key, stop=stop, on_ready=ready.append))
        while not ready:
            assert not task.done(), task
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=ready[0].api, timeout=30) as api:
            assert (await api.post("/channels", json=params_json(params, s))).status_code == 201
            assert (await api.get("/info")).json()["channels"] == 1
        assert (tmp_path / "t" / "tower.json").exists()
        stop.set()
        await asyncio.wait_for(task, 30)
        assert not (tmp_path / "t" / "tower.json").exists()
        store = PostgresTowerStore(dsn, rpc.chain_id, s.adj.address)
        assert store.get(s.adj.channel_id(params)) is not None and store.checkpoint() is not None
        await store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))

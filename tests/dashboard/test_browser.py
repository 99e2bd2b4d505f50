"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against two node processes
on anvil. Open, pay, stream and close are clicked on the page, and what the page shows is checked against
the API. Screenshots go to build/artifacts/dashboard/ (or $STATECHANNEL_ARTIFACTS).

The nodes log JSON; at the end the whole of both logs is read for the keystore password and the API
tokens, which must appear nowhere, and every line must be one JSON object."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from tests.anvil import Anvil, free_port
from tests.cli.helpers import PASSWORD, Daemon, make_keystore, start_daemon

pytestmark = pytest.mark.anvil
CHROMIUM = os.environ.get("STATECHANNEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STATECHANNEL_ARTIFACTS", Path(__file__).parents[2] / "build" / "artifacts"))
DEPOSIT = 10**18
PAY = 12_345
TIMEOUT_MS = 30_000

playwright_sync = pytest.importorskip("playwright.sync_api")


def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


def api(node: Daemon) -> httpx.Client:
    token = (node.data_dir / "api-token").read_text().strip()
    return httpx.Client(base_url=node.info["api"], headers={"Authorization": f"Bearer {token}"}, timeout=30)


@dataclass
class World:
    a: Daemon
    b: Daemon
    tower: subprocess.Popen[bytes]
    tower_url: str
    tower_log: Path


def start_tower(tmp: Path, rpc: str, adjudicator: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`statechannel watchtower start --log-format json`, its log in a file."""
    data_dir, log_path = tmp / "tower", tmp / "tower.log"
    command = [sys.executable, "-m", "statechannel.cli", "watchtower", "start", "--rpc", rpc, "--adjudicator"]
    command += [adjudicator, "--keystore", str(tmp / "t.json"), "--data-dir", str(data_dir), "--log-format", "json"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env={**os.environ, "STATECHANNEL_PASSWORD": PASSWORD}, stdout=subprocess.DEVNULL, stderr=log
        )

    def written() -> bool:
        assert proc.poll() is None, log_path.read_text()
        return (data_dir / "tower.json").exists()

    until("tower.json", written)
    return proc, json.loads((data_dir / "tower.json").read_text())["api"], log_path


@pytest.fixture
def world(tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    rpc = RpcChain(anvil.url)
    deployer = PrivateKey(keccak(b"dashboard deployer"))
    rpc.fund(deployer.address, 10**20)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    keys = [make_keystore(tmp_path / f"{who}.json", f"dashboard {who}") for who in ("a", "b", "t")]
    for k in keys:
        rpc.fund(k.address, 10**20)
    adjudicator = "0x" + adj.address.hex()
    tower, tower_url, tower_log = start_tower(tmp_path, anvil.url, adjudicator)
    common = ("--adjudicator", adjudicator, "--log-format", "json")
    port_b = free_port()
    daemons: list[Daemon] = []
    try:
        daemons.append(start_daemon(tmp_path / "a.json", tmp_path / "a", anvil.url, *common, "--tower", tower_url))
        daemons.append(
            start_daemon(tmp_path / "b.json", tmp_path / "b", anvil.url, *common, "--listen", f"127.0.0.1:{port_b}")
        )
        a, b = daemons
        with api(a) as client:
            r = client.post("/peers", json={"address": b.info["address"], "host": "127.0.0.1", "port": port_b})
            assert r.status_code == 200, r.text
        yield World(a, b, tower, tower_url, tower_log)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.stop()
        if tower.poll() is None:
            tower.terminate()
            tower.wait(30)


def test_open_pay_stream_and_close_by_clicking(world: World) -> None:
    a, b = world.a, world.b
    token = (a.data_dir / "api-token").read_text().strip()
    shots = ARTIFACTS / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as pw, api(a) as node_a, api(b) as node_b:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        seen_urls: list[str] = []
        page.on("request", lambda req: seen_urls.append(req.url))
        page.goto(a.info["api"] + "/")

        # the token, asked once, kept for the session, never in a URL
        page.locator("#token").fill(token)
        page.locator("#login-button").click()
        page.get_by_test_id("address").wait_for()
        assert page.get_by_test_id("address").inner_text() == node_a.get("/node").json()["address"]
        assert page.evaluate("sessionStorage.getItem('statechannel-api-token')") == token
        page.reload()
        page.get_by_test_id("address").wait_for()  # no second prompt
        assert page.locator("#login").is_hidden()
        page.get_by_test_id("live").filter(has_text="live").wait_for()
        page.screenshot(path=str(shots / "1-unlocked.png"))

        # open
        page.locator("#open-peer").fill(b.info["address"])
        page.locator("#open-eth").fill(str(DEPOSIT))
        page.locator("#open-period").fill("600")
        page.locator("#open-button").click()
        page.locator('#channels tbody tr[data-phase="open"]').wait_for()
        cid = page.locator("#channels tbody tr").first.get_attribute("data-channel")
        assert cid is not None
        row = page.locator(f'#channels tbody tr[data-channel="{cid}"]')
        view = node_a.get(f"/channels/{cid}").json()
        assert view["phase"] == "open"
        assert row.locator("[data-testid=mine]").inner_text() == view["balances"][0]["my_balance"] == str(DEPOSIT)
        page.screenshot(path=str(shots / "2-opened.png"))

        # pay
        row.locator("[data-testid=pay-amount]").fill(str(PAY))
        row.locator("[data-testid=pay]").click()
        page.get_by_test_id("message").filter(has_text="pay: done").wait_for()
        until(
            "the page to show the payment", lambda: row.locator("[data-testid=mine]").inner_text() == str(DEPOSIT - PAY)
        )
        view = node_a.get(f"/channels/{cid}").json()
        assert row.locator("[data-testid=version]").inner_text() == str(view["version"])
        assert row.locator("[data-testid=theirs]").inner_text() == view["balances"][0]["peer_balance"] == str(PAY)
        page.locator("#events li[data-kind=sent]").first.wait_for()  # from the event stream
        b_view = node_b.get(f"/channels/{cid}").json()
        assert b_view["balances"][0]["my_balance"] == str(PAY)
        protected = until("the tower's receipt", lambda: node_a.get(f"/channels/{cid}").json()["protection"])
        held = f"holds v{protected[0]['version']}"
        until("the page to show the tower", lambda: held in row.locator("[data-testid=towers]").inner_text())
        page.screenshot(path=str(shots / "3-paid.png"))

        # stream (the amount box is the rate per second), then stop it
        row.locator("[data-testid=pay-amount]").fill("1000")
        row.locator("[data-testid=stream]").click()
        stream_row = page.locator("#streams tbody tr").first
        stream_row.wait_for()
        until("a few ticks", lambda: int(node_a.get("/streams").json()[0]["paid"]) > 0)
        page.screenshot(path=str(shots / "4-streaming.png"))
        stream_row.locator("[data-testid=stop-stream]").click()
        stream_row.locator("[data-testid=stream-status]").filter(has_text="stopped").wait_for()
        [stream] = node_a.get("/streams").json()
        assert stream["status"] == "stopped"
        paid = int(stream["paid"])
        until(
            "the page to show the streamed total",
            lambda: (
                row.locator("[data-testid=mine]").inner_text()
                == node_a.get(f"/channels/{cid}").json()["balances"][0]["my_balance"]
                == str(DEPOSIT - PAY - paid)
            ),
        )

        # close cooperatively
        row.locator("[data-testid=close]").click()
        page.locator(f'#channels tbody tr[data-channel="{cid}"][data-phase="closed"]').wait_for()
        view = node_a.get(f"/channels/{cid}").json()
        assert view["phase"] == "closed" and view["outcome"]["cooperative"] is True
        assert "closed cooperatively" in row.locator("[data-testid=onchain]").inner_text()
        page.locator("#events li[data-kind=concluded]").first.wait_for()
        page.screenshot(path=str(shots / "5-closed.png"), full_page=True)

        # a second channel, closed on chain without the peer: the dispute's deadline counts down
        page.locator("#open-button").click()
        second = until(
            "a second channel",
            lambda: next((c["channel_id"] for c in node_a.get("/channels").json() if c["channel_id"] != cid), None),
        )
        row2 = page.locator(f'#channels tbody tr[data-channel="{second}"][data-phase="open"]')
        row2.wait_for()
        page.once("dialog", lambda dialog: dialog.accept())
        row2.locator("[data-testid=force-close]").click()
        disputed = page.locator(f'#channels tbody tr[data-channel="{second}"][data-phase="dispute"]')
        disputed.wait_for()
        dispute = node_a.get(f"/channels/{second}").json()["dispute"]
        countdown = disputed.locator(".countdown")
        assert countdown.get_attribute("data-finalizes") == str(dispute["finalizes_at"])
        assert re.fullmatch(rf"dispute v{dispute['version']}: finalizes in \d+ s", countdown.inner_text())
        page.screenshot(path=str(shots / "6-dispute.png"), full_page=True)

        # the tower's page, against the tower's own overview
        page.goto(world.tower_url + "/")
        overview = httpx.get(world.tower_url + "/overview", timeout=10).json()
        assert overview["watched"] >= 1 and overview["receipts_issued"] >= 1
        page.get_by_test_id("watched").filter(has_text=str(overview["watched"])).wait_for()
        until("the receipts", lambda: int(page.get_by_test_id("receipts").inner_text() or 0) >= 1)
        assert page.get_by_test_id("who").inner_text().startswith(overview["address"])
        page.screenshot(path=str(shots / "7-tower.png"))
        browser.close()
    assert seen_urls and not any(token in url for url in seen_urls)  # not in a single URL the page asked for

    a_token, b_token = token, (b.data_dir / "api-token").read_text().strip()
    world.tower.terminate()
    world.tower.wait(30)
    for d in (a, b):
        d.stop()
    for log in (a.log(), b.log(), world.tower_log.read_text()):
        for secret in (PASSWORD, a_token, b_token):
            assert secret not in log
        lines = [line for line in log.splitlines() if line.strip()]
        assert lines, "the node logged nothing"
        objects = [json.loads(line) for line in lines]  # every line one JSON object
        assert all({"ts", "level", "logger", "msg", "event"} <= set(o) for o in objects)

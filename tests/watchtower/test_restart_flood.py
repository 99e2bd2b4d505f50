"""The tower process SIGKILLed in the middle of a flood of pushes and stale closes, then restarted: every
state it acknowledged with a receipt is still held, and every stale close, those it saw before the kill and
those made while it was down, is answered on chain with the best acknowledged state inside its window."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from statechannel.chain.rpc import RpcChain
from statechannel.node.keys import write_keystore
from tests.anvil import Anvil
from tests.watchtower.helpers import closes, deploy, eth_state, open_channel, params_json, sign, state_json
from tests.watchtower.test_process import PASSWORD, start_tower

pytestmark = pytest.mark.anvil
CHANNELS = 8
CLOSED_BEFORE_KILL = 3
CLOSED_WHILE_DOWN = 2
QUOTA_STATES = 3
"""The tower's default: the best 3 states kept per channel for each participant."""


def test_a_tower_killed_mid_flood_loses_no_receipted_state_and_answers_every_stale_close(
    tmp_path: Path, anvil: Anvil
) -> None:
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "restart flood")
    write_keystore(tmp_path / "tower-key.json", s.tower_key, PASSWORD, scrypt_n=2**10)
    params = [open_channel(s, n, period=180) for n in range(1, CHANNELS + 1)]
    cids = [s.adj.channel_id(p) for p in params]
    data_dir = tmp_path / "tower"
    tower = start_tower(tmp_path / "tower-key.json", data_dir, anvil.url, s.adj.address)
    acked: dict[bytes, list[int]] = {cid: [] for cid in cids}
    stop = threading.Event()

    def flood() -> None:
        """Push versions 2, 3, ... to every channel in turn, as B, until the tower stops answering."""
        with httpx.Client(base_url=tower.info["api"], timeout=10) as api:
            version = 2
            while not stop.is_set():
                for cid in cids:
                    body = state_json(sign(s.adj.domain, eth_state(cid, version, version * 1000), s.a, s.b), s)
                    try:
                        r = api.post("/states", json=body)
                    except httpx.HTTPError:
                        return
                    assert r.status_code == 200, r.text
                    assert r.json()["version"] == version and r.json()["receipt"].startswith("0x")
                    acked[cid].append(version)
                version += 1

    try:
        with httpx.Client(base_url=tower.info["api"], timeout=30) as api:
            for p in params:
                assert api.post("/channels", json=params_json(p, s)).status_code == 201
        pusher = threading.Thread(target=flood, daemon=True)
        pusher.start()
        deadline = time.monotonic() + 60
        while min(len(v) for v in acked.values()) < 5:
            assert time.monotonic() < deadline and pusher.is_alive(), "the flood did not get going"
            time.sleep(0.05)
        stale = [sign(s.adj.domain, eth_state(cid, 1, 0), s.a, s.b) for cid in cids]
        for p, st in list(zip(params, stale, strict=True))[:CLOSED_BEFORE_KILL]:
            s.adj.close(s.a, p, st.state, st.sig_a, st.sig_b)  # disputes in flight when the tower dies
        tower.proc.kill()
        tower.proc.wait(10)
    finally:
        stop.set()
        if tower.proc.poll() is None:
            tower.proc.kill()
            tower.proc.wait(10)
    pusher.join(30)
    assert not pusher.is_alive()
    closed = list(zip(params, stale, strict=True))[: CLOSED_BEFORE_KILL + CLOSED_WHILE_DOWN]
    for p, st in closed[CLOSED_BEFORE_KILL:]:
        s.adj.close(s.a, p, st.state, st.sig_a, st.sig_b)  # stale closes while no tower runs
    best = {cid: max(v) for cid, v in acked.items()}

    (data_dir / "tower.json").unlink(missing_ok=True)  # a killed tower leaves its ready file behind
    tower = start_tower(tmp_path / "tower-key.json", data_dir, anvil.url, s.adj.address)
    try:
        with httpx.Client(base_url=tower.info["api"], timeout=30) as api:
            for cid in cids:
                view = api.get(f"/channels/0x{cid.hex()}").json()
                held = {h["version"] for h in view["held"] if h["client"] == "b"}
                # the push in flight at the kill may have been stored without its answer: at most one version more
                assert view["version"] in (best[cid], best[cid] + 1), (view, best[cid])
                unanswered = {v for v in held if v > best[cid]}
                kept = sorted(acked[cid], reverse=True)[: QUOTA_STATES - len(unanswered)]
                assert set(kept) <= held, (held, acked[cid])
            deadline = time.monotonic() + 60
            for p, _ in closed:
                cid = s.adj.channel_id(p)
                while (events := closes(s, cid))[-1].version < best[cid]:
                    assert time.monotonic() < deadline, f"no answer with {best[cid]}:\n{tower.log.read_text()}"
                    time.sleep(0.1)
                assert events[0].version == 1 and not events[0].challenge
                assert all(e.challenge for e in events[1:]) and events[-1].version >= best[cid]
                assert events[-1].finalizes_at == events[0].finalizes_at
    finally:
        assert tower.stop() == 0, tower.log.read_text()

"""The main job, run the way a new user runs it: `statechannel demo` in its own process."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_and_every_balance_checks_out() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statechannel.cli", "demo", "--json"], capture_output=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert len(summary["balances"]) >= 6 and all(b["ok"] for b in summary["balances"])
    acts = " ".join(summary["acts"])
    for needle in ("stale state", "watchtower challenged", "trades", "closed cooperatively", "streams"):
        assert needle in acts, needle
    assert summary["updates"] > 0 and summary["payments"] == 40_000
    assert summary["trades"] == 2_000 and summary["trades_per_s"] > 0
    assert {"Open", "Deposit", "Close", "Challenge (by the tower)", "Settle", "CloseCooperative"} <= set(summary["gas"])

"""`statechannel demo --keep` says where the dashboard is and leaves it up until it is told to stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_demo_keep_serves_the_dashboard_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "statechannel.cli", "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    seen, url, token_file = [], "", ""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line)
            if found := re.search(r"dashboard of node A: (http://127\.0\.0\.1:\d+/)\s+\(token: ([^)]+)\)", line):
                url, token_file = found.group(1), found.group(2)
            if "--keep" in line and "stays up" in line:
                break
        assert url and token_file, "".join(seen)[-3000:]
        token = Path(token_file).read_text().strip()
        assert httpx.get(url, timeout=10).status_code == 200  # the page itself: no token needed
        assert httpx.get(url + "channels", timeout=10).status_code == 401
        channels = httpx.get(url + "channels", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert len(channels) == 2 and all(ch["phase"] == "closed" for ch in channels)  # the demo's, concluded
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(seen)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

"""Save before send, under SIGKILL: whatever a process announced after `await save` survives its death."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from statechannel.store import SqliteStore
from tests.store.helpers import blob, cid, record

ROOT = Path(__file__).resolve().parents[2]
COUNT = 1_000_000  # far more than it can save before the kill, so the kill always lands mid-way
KILL_AFTER = 300


@pytest.mark.parametrize("durability", ["fsync", "process-crash-safe"])
@pytest.mark.parametrize("writers", [1, 32], ids=["sequential", "concurrent"])
def test_every_reported_save_survives_sigkill(tmp_path: Path, writers: int, durability: str) -> None:
    """Both modes survive the process being killed (process-crash-safe promises no more than that)."""
    path = tmp_path / "crash.db"
    stderr_path = tmp_path / "child.err"
    with stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.store.crash_child", str(path), str(COUNT), str(writers), durability],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            text=True,
        )
    watchdog = threading.Timer(60, child.kill)  # a hung child must not hang the suite
    watchdog.start()
    reported: list[int] = []
    try:
        assert child.stdout is not None
        while len(reported) < KILL_AFTER and (line := child.stdout.readline()):
            reported.append(int(line))
        child.send_signal(signal.SIGKILL)
        # lines already in the pipe were reported too; reading to EOF collects them
        reported += [int(x) for x in child.stdout.read().split()]
        child.wait(timeout=30)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    errors = stderr_path.read_text()
    assert child.returncode == -signal.SIGKILL, errors
    assert len(reported) >= KILL_AFTER, errors
    assert len(set(reported)) == len(reported)

    async def check() -> None:
        store = SqliteStore(path)
        channels = store.load_channels()
        missing = [i for i in reported if channels.get(cid(i)) != blob(i)]
        assert missing == [], f"{len(missing)} reported saves lost, e.g. {missing[:5]}"
        # saves that finished but were not yet reported may be there too, but never torn
        assert all(value == blob(int.from_bytes(key, "big")) for key, value in channels.items())
        stored = {p.payment_id: p for p in store.payments(limit=len(channels) + 1)}
        assert len(stored) == len(channels)  # each channel and its payment landed together
        for i in reported:
            assert stored[f"p{i}"] == record(f"p{i}", cid(i), status="sent", version=i, created_ms=i)
        await store.close()

    asyncio.run(asyncio.wait_for(check(), 60))

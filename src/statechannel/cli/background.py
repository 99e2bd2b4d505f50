"""Daemons in the background: `start --detach` runs the same command as a child in its own session, its
output going to a log file, and returns once the child advertises itself (or fails with the log's last
lines); `stop` sends SIGTERM to the advertised pid and waits until it is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from statechannel.cli.common import PASSWORD_ENV, fail

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


def detach(kind: str, data_dir: Path, advert: str, log_file: Path, password: str) -> None:
    """Run this very command again without --detach, in the background; wait until `advert` names it."""
    argv = [a for a in sys.argv[1:] if a != "--detach"]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, PASSWORD_ENV: password}  # the key was unlocked here: the child needs no prompt
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(
            [sys.executable, "-m", "statechannel.cli", *argv],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C or a closed terminal in the shell does not reach it
        )
    deadline = time.monotonic() + READY_TIMEOUT
    path = data_dir / advert
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise fail(f"the {kind} exited with code {child.returncode}: {_tail(log_file)} (log: {log_file})")
        info = _read(path)
        if info is not None and info.get("pid") == child.pid:
            where = f"API {info.get('api')}" + (f", peers at {info['listen']}" if "listen" in info else "")
            click.echo(f"{kind} started in the background (pid {child.pid}): {where}; log {log_file}")
            return
        time.sleep(0.1)
    child.terminate()
    raise fail(f"the {kind} did not come up within {READY_TIMEOUT:.0f} s: {_tail(log_file)} (log: {log_file})")


def stop(kind: str, data_dir: Path, advert: str) -> None:
    """SIGTERM to the daemon advertised in `data_dir`, then wait until it exits (it removes its advert)."""
    path = data_dir / advert
    info = _read(path)
    pid = info.get("pid") if info is not None else None
    if not isinstance(pid, int) or not _alive(pid):
        raise fail(f"no {kind} is running in {data_dir} (no live process in {path})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            raise fail(f"the {kind} (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM")
        time.sleep(0.1)
    click.echo(f"{kind} stopped (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of ours that exited is a zombie until reaped: gone for our purpose
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _read(path: Path) -> dict[str, object] | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _tail(log_file: Path, lines: int = 3) -> str:
    try:
        text = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "nothing logged"

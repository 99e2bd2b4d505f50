"""Running the `statechannel` command: in process for clients (fast), as a real process for the daemon
(it owns signals, and SIGTERM is part of what is tested)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from eth_hash.auto import keccak

from statechannel.cli import main
from statechannel.core.crypto import PrivateKey
from statechannel.node.keys import write_keystore

PASSWORD = "correct horse battery staple"
STARTUP_TIMEOUT = 60.0


def cli(*args: str, stdin: str | None = None, env: Mapping[str, str | None] | None = None) -> Result:
    """One command in process; an unexpected exception propagates (so a traceback fails the test)."""
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    """The failure contract: exit code 1 and a single line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def make_keystore(path: Path, name: str) -> PrivateKey:
    """A keystore with a cheap KDF: the daemon tests exercise the node, not scrypt."""
    key = PrivateKey(keccak(f"statechannel cli test {name}".encode()))
    write_keystore(path, key, PASSWORD, scrypt_n=2**10)
    return key


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    info: dict[str, Any]

    def stop(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("the node did not stop within its timeout after SIGTERM") from None

    def log(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def node_command(keystore: Path, data_dir: Path, rpc: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "statechannel.cli",
        "node",
        "start",
        "--rpc",
        rpc,
        "--keystore",
        str(keystore),
        "--data-dir",
        str(data_dir),
        "--min-challenge-period",  # dev chains move time at will: short windows are fine in tests
        "1",
        *extra,
    ]


def start_daemon(keystore: Path, data_dir: Path, rpc: str = "embedded", *extra: str) -> Daemon:
    env = {**os.environ, "STATECHANNEL_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        node_command(keystore, data_dir, rpc, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    node_json = data_dir / "node.json"
    while not node_json.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the node exited with {proc.returncode} before it was ready:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise AssertionError("the node did not write node.json in time")
        time.sleep(0.05)
    return Daemon(proc, data_dir, json.loads(node_json.read_text()))

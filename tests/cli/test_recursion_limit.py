"""No process of ours runs with the recursion limit that py_ecc (through eth-account) and py-evm leave
behind (100,000): at that limit deep JSON overflows the C stack and the process dies of SIGSEGV, where at
`SAFE_RECURSION_LIMIT` it raises RecursionError. Checked in fresh processes, the way the CLI starts them;
the embedded EVM must still work at the safe limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statechannel.runtime import SAFE_RECURSION_LIMIT
from tests.cli.helpers import PASSWORD, STARTUP_TIMEOUT, make_keystore

PROBE = """
import atexit, runpy, sys
out = sys.argv[1]
sys.argv = ["statechannel", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(str(sys.getrecursionlimit())))
runpy.run_module("statechannel.cli", run_name="__main__", alter_sys=True)
"""
"""`python -m statechannel.cli ARGS`, noting the process's recursion limit in a file as it exits."""


def probed(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", PROBE, str(out), *args]


ENV = {**os.environ, "STATECHANNEL_PASSWORD": PASSWORD}


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False, env=ENV)
    assert done.returncode == 0, f"exit code {done.returncode}:\n{done.stderr.decode(errors='replace')}"
    return done.stdout.decode().strip()


NODE_START = (  # what `node start` imports: the CLI, the key (eth-account), the daemon, then the chain
    "statechannel.cli",
    "statechannel.node.keys",
    "statechannel.daemon",
    "statechannel.chain.embedded",
    "statechannel.chain.rpc",
)


@pytest.mark.parametrize(
    "modules",
    [
        NODE_START,
        # `watchtower start`, then the PostgreSQL store it may open
        (
            "statechannel.cli",
            "statechannel.node.keys",
            "statechannel.watchtower.daemon",
            "statechannel.watchtower.pg_store",
        ),
        ("statechannel.cli", "statechannel.demo"),  # `statechannel demo`
    ],
)
def test_entry_modules_leave_the_recursion_limit_safe(modules: tuple[str, ...]) -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    assert python(code + "print(sys.getrecursionlimit())") == str(SAFE_RECURSION_LIMIT)


def test_at_the_safe_limit_deep_json_raises_instead_of_crashing() -> None:
    code = "".join(f"import {m}\n" for m in NODE_START) + (
        "import json, sys\n"
        "try:\n"
        "    json.loads(b'{\"state\":' + b'[' * 100_000 + b']' * 100_000 + b'}')\n"
        "except RecursionError:\n"
        "    print('RecursionError at', sys.getrecursionlimit())\n"
    )
    assert python(code) == f"RecursionError at {SAFE_RECURSION_LIMIT}"


def test_a_started_node_daemon_runs_at_the_safe_limit(tmp_path: Path) -> None:
    keystore, data, out = tmp_path / "k.json", tmp_path / "data", tmp_path / "limit"
    make_keystore(keystore, "recursion")
    command = probed(out, "node", "start", "--rpc", "embedded", "--keystore", str(keystore), "--data-dir", str(data))
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (data / "node.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert out.read_text() == str(SAFE_RECURSION_LIMIT)


def test_cli_commands_run_at_the_safe_limit_and_the_evm_still_works(tmp_path: Path) -> None:
    out = tmp_path / "limit"
    # `keys new` imports eth-account (so py_ecc) only once the command runs
    keys = subprocess.run(
        probed(out, "keys", "new", "--keystore", str(tmp_path / "new.json"), "--json"),
        env=ENV,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert keys.returncode == 0, keys.stderr.decode()
    assert out.read_text() == str(SAFE_RECURSION_LIMIT)

    # both channel lifecycles, ERC-20 included (adjudicator -> token: nested calls), on the in-process EVM
    gas = subprocess.run(probed(out, "gas", "--json"), env=ENV, capture_output=True, timeout=300, check=False)
    assert gas.returncode == 0, gas.stderr.decode()
    assert json.loads(gas.stdout)["erc20"]["settle"] > 0
    assert out.read_text() == str(SAFE_RECURSION_LIMIT)

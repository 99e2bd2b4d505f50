"""Issue 13, part 1: README's "Using it on a chain" runs as written, top to bottom, against a real anvil.

The test takes the section's shell block exactly as it stands (no paraphrase) and runs it with bash in a
fresh directory that has only the installed `.venv` and `.tools` of this checkout, as a new user's clone
would after `make chain`. Before: new keys held no ether, the token had no supply, daemons ran in the
foreground, and the trade line was a placeholder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.anvil import REPO

PORTS = (8545, 9001, 9002, 9100)


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it on a chain") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "no sh block in the chain section"
    return match.group(1)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kill_leftovers(work: Path) -> None:
    for advert in ("a/node.json", "b/node.json", "t/tower.json"):
        try:
            pid = int(json.loads((work / advert).read_text())["pid"])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.mark.anvil
def test_the_readme_chain_section_runs_as_written(tmp_path: Path) -> None:
    busy = [p for p in PORTS if not _free(p)]
    if busy:
        pytest.skip(f"the README's fixed ports {busy} are taken on this machine")
    work = tmp_path / "clone"
    work.mkdir()
    for installed in (".venv", ".tools"):
        (work / installed).symlink_to((REPO / installed).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECHANNEL_")}
    env["PYTHONPATH"] = str(REPO / "src")  # this checkout's sources, whatever the venv's editable install says
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + readme_block()
    try:
        done = subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
    finally:
        _kill_leftovers(work)
    logs = "".join(
        f"\n--- {p.relative_to(work)}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(work.glob("*/*.log"))
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}{logs}"
    out = done.stdout
    assert "node stopped" in out and "watchtower stopped" in out
    assert "100 sent, 0 failed" in out
    assert not (work / "a" / "node.json").exists()  # a clean stop removes its advert

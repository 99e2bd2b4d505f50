"""Start a real anvil node on 127.0.0.1 for tests (installed by `make install`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from statechannel.chain.base import ChainError
from statechannel.chain.rpc import RpcChain

# the embedded chain's id: with it, signatures and so calldata (and gas) match byte for byte
EMBEDDED_CHAIN_ID = 131277322940537
REPO = Path(__file__).resolve().parent.parent
LOCAL_ANVIL = REPO / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def anvil_binary() -> str:
    for candidate in (os.environ.get("ANVIL_BIN"), str(LOCAL_ANVIL), shutil.which("anvil")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("anvil not found: run `make install` (it installs anvil from npm)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process; stopped by `stop()`. With `state`, it keeps its chain in that file across
    `restart()` (anvil's `--state`: loaded at start, dumped at exit) on the same port."""

    def __init__(self, chain_id: int = EMBEDDED_CHAIN_ID, state: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chain_id = chain_id
        self.state = state
        self._start()

    def restart(self) -> None:
        self.stop()
        self._start()

    def _start(self) -> None:
        extra = ["--state", str(self.state)] if self.state is not None else []
        self.proc = subprocess.Popen(
            [
                anvil_binary(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--silent",
                "--hardfork",
                "prague",
                "--chain-id",
                str(self.chain_id),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                RpcChain(self.url)
                return
            except ChainError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"anvil did not start: {err}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

"""Vyper sources and their committed compiled artifacts (ABI + bytecode).

`build.py` regenerates the artifacts; `tests/contracts/test_artifacts.py` fails
when they no longer match the sources."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"
CONTRACTS = ("Adjudicator", "TestToken", "HostileToken")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    source_sha256: str
    compiler: str


@cache
def load(name: str) -> Artifact:
    if name not in CONTRACTS:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}")
    data = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return Artifact(
        name=name,
        abi=tuple(data["abi"]),
        bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
        source_sha256=data["source_sha256"],
        compiler=data["compiler"],
    )

"""The committed artifacts are what the sources compile to."""

from __future__ import annotations

import json

from statechannel.contracts import ARTIFACTS, CONTRACTS, load
from statechannel.contracts.build import compile_all


def test_artifacts_match_sources() -> None:
    fresh = compile_all()
    assert sorted(fresh) == sorted(CONTRACTS)
    for name, data in fresh.items():
        committed = json.loads((ARTIFACTS / f"{name}.json").read_text())
        assert committed == data, f"{name}: run `make artifacts` and commit the result"


def test_loaded_artifact_is_deployable_code() -> None:
    adj = load("Adjudicator")
    assert adj.compiler == "vyper 0.4.3"
    assert len(adj.bytecode) > 1000
    names = {entry.get("name") for entry in adj.abi}
    assert {"open", "deposit", "close_cooperative", "close", "challenge", "settle", "withdraw"} <= names

"""Compile the Vyper sources into artifacts/, or check that they match.

python -m statechannel.contracts.build          # write artifacts
python -m statechannel.contracts.build --check  # exit 1 if stale
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from statechannel.contracts import ARTIFACTS, CONTRACTS, HERE


def compile_all() -> dict[str, dict[str, Any]]:
    import vyper  # only a build-time dependency

    out: dict[str, dict[str, Any]] = {}
    for name in CONTRACTS:
        source = (HERE / f"{name}.vy").read_text()
        compiled = vyper.compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"])
        out[name] = {
            "abi": compiled["abi"],
            "bytecode": compiled["bytecode"],
            "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
            "compiler": f"vyper {vyper.__version__}",
        }
    return out


def stale() -> list[str]:
    """Names whose committed artifact differs from a fresh compile."""
    fresh = compile_all()
    bad = []
    for name, data in fresh.items():
        path = ARTIFACTS / f"{name}.json"
        if not path.exists() or json.loads(path.read_text()) != data:
            bad.append(name)
    return bad


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        if bad:
            print(f"stale artifacts: {', '.join(bad)}; run python -m statechannel.contracts.build", file=sys.stderr)
            return 1
        print("artifacts match the sources")
        return 0
    ARTIFACTS.mkdir(exist_ok=True)
    for name, data in compile_all().items():
        (ARTIFACTS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote artifacts/{name}.json ({len(data['bytecode']) // 2 - 1} bytes of code)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

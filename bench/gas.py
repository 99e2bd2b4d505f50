"""Gas of every adjudicator step and of two whole lifecycles, on the embedded EVM.

python bench/gas.py --json
"""

from __future__ import annotations

import argparse
import json

from statechannel.chain.embedded import EmbeddedChain
from statechannel.gasreport import gas_report

TARGETS = {"open_with_deposit": 46_000, "deposit": 29_000, "cooperative_close": 60_000}
DISPUTE_TARGET = 120_000  # close_unilateral + settle, no challenge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    report = gas_report(EmbeddedChain)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for kind, steps in report.items():
        print(kind)
        for step, gas in steps.items():
            target = TARGETS.get(step) if kind == "eth" else None
            print(f"  {step:20} {gas:>9,}" + (f"   target <= {target:,}" if target else ""))
    eth = report["eth"]
    print(f"eth close_unilateral + settle = {eth['close_unilateral'] + eth['settle']:,}   target <= {DISPUTE_TARGET:,}")


if __name__ == "__main__":
    main()

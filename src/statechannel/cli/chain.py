"""`statechannel gas`: both channel lifecycles on a chain, with the gas of every step."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    pass

from statechannel.cli.common import (
    TARGETS,
    make_chain,
)


@click.command()
@click.option("--rpc", metavar="URL", help="JSON-RPC node (a dev chain: anvil); default: the embedded EVM")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def gas(rpc: str | None, as_json: bool) -> None:
    """Run the cooperative and dispute lifecycles; print the gas of every step."""
    from statechannel.chain.base import ChainError
    from statechannel.gasreport import LifecycleMismatch, gas_report

    try:
        report = gas_report(lambda: make_chain(rpc))
    except (ChainError, LifecycleMismatch) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    table = Table(title="adjudicator gas (every payout checked)")
    table.add_column("step")
    table.add_column("ETH channel", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ERC-20 channel", justify="right")
    for step, eth_gas in report["eth"].items():
        target = TARGETS.get(step)
        mark = "" if target is None else (f"<= {target:,} ok" if eth_gas <= target else f"<= {target:,} MISSED")
        table.add_row(step, f"{eth_gas:,}", mark, f"{report['erc20'][step]:,}")
    table.add_row("approve (ERC-20 only)", "", "", f"{report['erc20']['approve']:,}")
    eth = report["eth"]
    unilateral = eth["close_unilateral"] + eth["settle"]
    table.add_row(
        "close_unilateral + settle",
        f"{unilateral:,}",
        "<= 120,000 " + ("ok" if unilateral <= 120_000 else "MISSED"),
        "",
    )
    Console().print(table)

"""`statechannel demo` (the main job) and `statechannel deploy`."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from rich.console import Console

from statechannel.cli.common import fail, make_chain, unlock_key


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON only")
@click.option("--keep", is_flag=True, help="leave the nodes and the dashboard up afterwards, until Ctrl-C")
def demo(as_json: bool, keep: bool) -> None:
    """Everything in under a minute on the embedded chain: channels, a stream, trades, a
    stale close defeated by a watchtower, and every final balance checked."""
    from statechannel.demo import DemoFailed, render, run_demo

    console = Console(stderr=as_json)
    try:
        summary = asyncio.run(run_demo(console, quiet=as_json, keep=keep))
    except DemoFailed as exc:
        raise fail(f"demo failed: {exc}") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render(console, summary)
    if not summary["ok"]:
        click.echo("Error: a final balance differs from the expected one", err=True)
        sys.exit(1)


@click.command()
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC url of the chain")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False, exists=True), help="pays for the deploy")
@click.option("--password-file", type=click.Path(dir_okay=False), help="else $STATECHANNEL_PASSWORD, else a prompt")
@click.option("--token", "token_symbol", metavar="SYMBOL", help="also deploy a test ERC-20 with this symbol")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--env", "as_env", is_flag=True, help="print ADJUDICATOR=0x.. (and TOKEN=0x..) lines for a shell's eval")
def deploy(
    rpc: str, keystore: str, password_file: str | None, token_symbol: str | None, as_json: bool, as_env: bool
) -> None:
    """Deploy the adjudicator (and optionally a test token, supply 0: mint with `dev fund`) on a chain;
    print their addresses.

    \b
    Example:
      eval "$(statechannel deploy --rpc http://127.0.0.1:8545 --keystore a.json --token DDL --env)"
    """

    from statechannel.chain.adjudicator import Adjudicator, Token
    from statechannel.chain.base import ChainError
    from statechannel.core.errors import LocalError
    from statechannel.core.types import to_checksum

    try:
        key = unlock_key(keystore, password_file)
        chain = make_chain(rpc)
        adj, receipt = Adjudicator.deploy(chain, key)
        out = {"adjudicator": to_checksum(adj.address), "chain_id": chain.chain_id, "gas": receipt.gas_used}
        if token_symbol:
            out["token"] = to_checksum(Token.deploy(chain, key, f"Test {token_symbol}", token_symbol[:8]).address)
    except (LocalError, ChainError) as exc:
        raise fail(f"deploy failed: {exc}") from None
    if as_env:
        click.echo("\n".join(f"{k.upper()}={v}" for k, v in out.items() if k in ("adjudicator", "token")))
    else:
        click.echo(json.dumps(out, indent=2) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))

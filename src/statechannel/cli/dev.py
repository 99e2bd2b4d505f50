"""`statechannel dev`: conveniences for a local development chain (anvil, hardhat), refused elsewhere."""

from __future__ import annotations

import secrets
from typing import Any

import click

from statechannel.cli.common import amount_arg, fail, out

DEV_CHAIN_IDS = frozenset({31337, 1337})
"""Chain ids the dev nodes use by default; no public chain uses them."""
DEV_CLIENTS = ("anvil", "hardhat")
DEFAULT_ETH = 10 * 10**18


@click.group()
def dev() -> None:
    """Helpers for a local dev chain (anvil or hardhat); refused on any other chain."""


@dev.command("fund")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC url of the dev chain")
@click.option("--eth", "wei", default=str(DEFAULT_ETH), show_default=True, help="wei each address gets")
@click.option("--token", metavar="0x..", help="a test token (from `deploy --token`) to mint as well")
@click.option("--tokens", default="0", show_default=True, help="smallest units of --token minted to each")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dev_fund(addresses: tuple[str, ...], rpc: str, wei: str, token: str | None, tokens: str, as_json: bool) -> None:
    """Give each ADDRESS ether (and test tokens) on a dev chain. Refused unless the chain is one: its id
    must be a dev chain's (31337, 1337) and its client anvil or hardhat.

    \b
    Example:
      statechannel dev fund --rpc http://127.0.0.1:8545 --token 0xTOKEN --tokens 1000000 0xA.. 0xB..
    """
    from statechannel.chain.adjudicator import Token
    from statechannel.chain.base import ChainError
    from statechannel.chain.rpc import RpcChain
    from statechannel.core.crypto import PrivateKey
    from statechannel.core.errors import LocalError
    from statechannel.core.types import address_from_hex, to_checksum

    amount, minted = int(amount_arg(wei, "--eth")), int(amount_arg(tokens, "--tokens"))
    if minted and token is None:
        raise fail("--tokens needs --token")
    try:
        targets = [address_from_hex(a) for a in addresses]
        chain = RpcChain(rpc)
        client = str(chain._rpc("web3_clientVersion", []))
        if chain.chain_id not in DEV_CHAIN_IDS or not client.lower().startswith(DEV_CLIENTS):
            raise fail(
                f"refused: chain {chain.chain_id} ({client}) is not a dev chain: `dev fund` runs only on anvil or "
                f"hardhat with chain id {' or '.join(map(str, sorted(DEV_CHAIN_IDS)))}; fund keys from a wallet instead"
            )
        for target in targets:
            chain.fund(target, amount)
        rows: list[dict[str, Any]] = []
        if token is not None and minted:
            minter = PrivateKey(secrets.token_bytes(32))  # a throwaway key pays the mint's gas
            chain.fund(minter.address, 10**17)
            t = Token(chain, address_from_hex(token))
            for target in targets:
                t.mint(minter, target, minted)
        for target in targets:
            row: dict[str, Any] = {"address": to_checksum(target), "wei": str(chain.balance(target))}
            if token is not None:
                row["tokens"] = str(Token(chain, address_from_hex(token)).balance_of(target))
            rows.append(row)
    except (LocalError, ChainError) as exc:
        raise fail(f"dev fund failed: {exc}") from None

    def human() -> None:
        for r in rows:
            click.echo(f"{r['address']}: {int(r['wei']):,} wei" + (f", {int(r['tokens']):,} tokens" if token else ""))

    out(as_json, rows, human)

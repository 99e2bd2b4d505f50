"""`statechannel recover`: rebuild a node's channels without a backup (decision 0011)."""

from __future__ import annotations

from pathlib import Path

import click

from statechannel.cli.common import PASSWORD_ENV, fail, out, unlock_key


def _peer(text: str) -> tuple[bytes, str, int]:
    from statechannel.core.types import address_from_hex

    try:
        addr, hostport = text.split("@", 1)
        host, port = hostport.rsplit(":", 1)
        return address_from_hex(addr), host, int(port)
    except Exception:
        raise fail(f"--peer must be 0xADDRESS@HOST:PORT, got {text!r}") from None


@click.command()
@click.option("--keystore", required=True, type=click.Path(dir_okay=False, exists=True), help="the node's key")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC node of the chain the channels are on")
@click.option("--adjudicator", required=True, metavar="0x..", help="address of the adjudicator contract")
@click.option("--tower", "towers", multiple=True, metavar="URL", help="a watchtower the node pushed to (repeatable)")
@click.option("--peer", "peers", multiple=True, metavar="0xADDR@HOST:PORT", help="where a counterparty listens")
@click.option("--from-block", default=0, show_default=True, help="the first block to scan for channels opened")
@click.option("--data-dir", required=True, help="a new, empty data directory to rebuild into")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def recover(
    keystore: str,
    password_file: str | None,
    rpc: str,
    adjudicator: str,
    towers: tuple[str, ...],
    peers: tuple[str, ...],
    from_block: int,
    data_dir: str,
    as_json: bool,
) -> None:
    """Lost your disk and have no backup? Find your channels on chain from your key alone, take the highest
    both-signed state your towers hold (every signature checked), and rebuild a data directory. Started
    with `node start`, the node learns a higher state from the peer if it proves one, signs nothing more on
    these channels, and closes them with the highest state proven. What cannot be proven is printed.

    Example: statechannel recover --keystore a.json --rpc http://127.0.0.1:8545 --adjudicator 0xADJ
    --tower http://tower:8700 --peer 0xB@10.0.0.2:9735 --data-dir ./a-recovered"""
    from statechannel.chain.adjudicator import Adjudicator
    from statechannel.chain.base import ChainError
    from statechannel.cli.common import make_chain
    from statechannel.core.errors import StatechannelError
    from statechannel.core.types import address_from_hex
    from statechannel.lostdisk import recover as run

    book = {a: (h, p) for a, h, p in (_peer(x) for x in peers)}
    key = unlock_key(keystore, password_file)
    try:
        adj = Adjudicator(make_chain(rpc), address_from_hex(adjudicator))
        report = run(adj, key, list(towers), Path(data_dir).expanduser(), book, from_block=from_block)
    except (StatechannelError, ChainError) as exc:
        raise fail(str(exc)) from None
    rows = [r.as_json() for r in report]

    def human() -> None:
        for r in rows:
            got = f"version {r['version']} from {r['source']}" if r["version"] is not None else "nothing proven"
            click.echo(f"{r['channel_id']}  {r['status']}  {got}  -> {r['phase'] or 'not written'}")
            for x in r["refused"]:
                click.echo(f"  refused v{x['version']} from {x['source']}: {x['reason']}: {x['detail']}")
            for u in r["unproven"]:
                click.echo(f"  unproven: {u}")
        click.echo(f"{len(rows)} channel(s) found; start the node on {data_dir} to recover them")

    out(as_json, rows, human)

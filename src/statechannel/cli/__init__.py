"""The `statechannel` command: the one place that picks concrete backends.

`node start` and `watchtower start` run daemons in the foreground; every other
node command is a client of the node's HTTP API, found through
`<data-dir>/node.json` and `<data-dir>/api-token`. Failures end in one line on
stderr and exit code 1: a traceback tells a user nothing they can act on."""

from __future__ import annotations

import click

from statechannel.cli.backup import backup
from statechannel.cli.chain import gas
from statechannel.cli.channel import channel, events, payments
from statechannel.cli.demo import demo, deploy
from statechannel.cli.dev import dev
from statechannel.cli.node import keys, node, peer
from statechannel.cli.recover import recover
from statechannel.cli.stream import recurring, stream, watch
from statechannel.cli.trade import trade
from statechannel.cli.watchtower import watchtower
from statechannel.runtime import limit_recursion


@click.group()
@click.version_option(package_name="statechannel")
def main() -> None:
    """Two-party state channels on Ethereum-style chains."""
    # eth-account (keys, signing) pulls in py_ecc, which raises the recursion limit to 100,000 when first
    # imported: import it now and put the limit back. py-evm (0.5 s to import) is left to the commands that
    # run a chain: the daemons, the demo and make_chain restore the limit after importing it.
    limit_recursion(preload=("py_ecc",))


for command in (
    demo,
    gas,
    deploy,
    node,
    keys,
    peer,
    channel,
    payments,
    events,
    stream,
    recurring,
    watch,
    trade,
    watchtower,
    backup,
    recover,
    dev,
):
    main.add_command(command)

__all__ = ["main"]

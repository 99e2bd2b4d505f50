"""`statechannel node`, `keys` and `peer`: run a node, manage keystores, connect peers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    pass

from statechannel.cli.common import (
    PASSWORD_ENV,
    ask_password,
    client_options,
    data_dir_option,
    fail,
    kv_table,
    log_format_option,
    node_api,
    out,
    run_foreground,
    unlock,
)

# ------------------------------------------------------------------ node


@click.group()
def node() -> None:
    """Run a node, or ask the running one about itself."""


@node.command("start")
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC url of the chain, or 'embedded' (a throwaway one)")
@click.option("--adjudicator", metavar="0x..", help="address of the adjudicator contract (not with 'embedded')")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="the node's encrypted key")
@data_dir_option
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="for peers")
@click.option("--api", "api_at", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="HTTP API")
@click.option("--confirmations", default=0, show_default=True, type=click.IntRange(0, 1000))
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@log_format_option
@click.option("--tower", "towers", multiple=True, metavar="URL", help="a watchtower to push states to (repeatable)")
@click.option(
    "--tower-policy",
    default="every-update",
    show_default=True,
    metavar="POLICY",
    help="when to push: every-update, every:N (updates) or every:Tms (and always before stopping)",
)
@click.option(
    "--tower-budget",
    type=click.IntRange(0, 2**256 - 1),
    metavar="AMOUNT",
    help="pay paid towers automatically, at most this much in all, ever (smallest unit of their asset; "
    "kept across restarts in <data-dir>/towerpay.json); needs an open channel with each tower's payee",
)
@click.option(
    "--tower-accept-terms",
    is_flag=True,
    help="consent to each paid tower's current terms (after it raised them); what was spent still counts",
)
@click.option(
    "--min-challenge-period",
    default=3600,
    show_default=True,
    type=click.IntRange(1, 2**32 - 1),
    help="s: shortest window accepted in a channel (long enough to answer a stale close)",
)
@click.option(
    "--max-challenge-period",
    default=14 * 24 * 3600,
    show_default=True,
    type=click.IntRange(1, 2**32 - 1),
    help="s: longest window accepted (how long a counterparty may lock your money)",
)
@click.option(
    "--recovery-wait",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="s: how long a channel restored from a backup waits for the peer's newer state before closing",
)
@click.option(
    "--always-settle",
    is_flag=True,
    help="settle and challenge whatever the gas costs (default: only where the stake is worth it; logged)",
)
@click.option(
    "--history",
    default=100_000,
    show_default=True,
    type=click.IntRange(0, 10**9),
    metavar="N",
    help="payment rows kept, newest first; older ones are pruned and `payments` says how many",
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "process-crash-safe"]),
    default="fsync",
    show_default=True,
    help="fsync: every save is fsynced before the node signs or sends (survives a power cut); "
    "process-crash-safe: faster, survives the process being killed but a power cut or OS crash may lose "
    "the last saves (a state this node signed could be missing after reboot)",
)
@click.option("--detach", is_flag=True, help="run in the background, logging to --log-file; `node stop` ends it")
@click.option("--log-file", type=click.Path(dir_okay=False), help="with --detach  [default: <data-dir>/node.log]")
def node_start(
    rpc: str,
    adjudicator: str | None,
    keystore: str,
    data_dir: str,
    password_file: str | None,
    listen: str,
    api_at: str,
    confirmations: int,
    log_level: str,
    log_format: str,
    towers: tuple[str, ...],
    tower_policy: str,
    tower_budget: int | None,
    tower_accept_terms: bool,
    min_challenge_period: int,
    max_challenge_period: int,
    recovery_wait: float,
    always_settle: bool,
    history: int,
    durability: str,
    detach: bool,
    log_file: str | None,
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM, or with --detach in the background.

    \b
    Example:
      statechannel node start --rpc http://127.0.0.1:8545 --adjudicator 0xADJ \\
        --keystore a.json --data-dir ./a --listen 127.0.0.1:9001 --detach
    """

    from statechannel.core.errors import LocalError
    from statechannel.core.machine import Terms
    from statechannel.core.types import address_from_hex
    from statechannel.daemon import DaemonConfig, DaemonError, parse_hostport, run
    from statechannel.node.towerstate import TowerPolicy, tower_url

    if tower_budget is not None and not towers:
        raise fail("--tower-budget needs at least one --tower")
    if tower_accept_terms and tower_budget is None:
        raise fail("--tower-accept-terms needs --tower-budget")
    try:
        config = DaemonConfig(
            rpc=rpc,
            adjudicator=address_from_hex(adjudicator) if adjudicator else None,
            data_dir=Path(data_dir).expanduser(),
            listen=parse_hostport(listen),
            api=parse_hostport(api_at),
            confirmations=confirmations,
            towers=tuple(tower_url(t) for t in towers),
            tower_policy=TowerPolicy.parse(tower_policy),
            tower_budget=tower_budget,
            tower_accept_terms=tower_accept_terms,
            terms=Terms(min_challenge_period, max_challenge_period),
            recovery_wait=recovery_wait,
            weigh_gas=not always_settle,
            history=history,
            durability=durability,
        )
    except (ValueError, LocalError) as exc:
        raise fail(str(exc)) from None
    key, password = unlock(keystore, password_file)
    if detach:
        from statechannel.api.discovery import NODE_FILE
        from statechannel.cli.background import detach as go

        logs = Path(log_file).expanduser() if log_file else config.data_dir / "node.log"
        go("node", config.data_dir, NODE_FILE, logs, password)
        return
    run_foreground(run(config, key), (DaemonError,), log_level, log_format)


@node.command("stop")
@data_dir_option
def node_stop(data_dir: str) -> None:
    """Stop the node running in the data directory (SIGTERM: it finishes its work and exits cleanly).

    \b
    Example:
      statechannel node stop --data-dir ./a
    """
    from statechannel.api.discovery import NODE_FILE
    from statechannel.cli.background import stop

    stop("node", Path(data_dir).expanduser(), NODE_FILE)


@node.command("info")
@client_options
def node_info(data_dir: str, as_json: bool) -> None:
    """Address, chain, listen address and channel counts of the running node."""
    with node_api(data_dir) as api:
        info = api.get("/node")

    def table() -> None:
        t = info.get("terms") or {}
        terms = f"challenge period {t.get('min_challenge_period')}..{t.get('max_challenge_period')} s"
        kv_table("node", {**info, "channels": _phase_counts(info["channels"]), "terms": terms})

    out(as_json, info, table)


def _phase_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {phase}" for phase, n in counts.items() if n) or "none"


# ------------------------------------------------------------------ keys


@click.group()
def keys() -> None:
    """Create or import the node's encrypted key (a keystore file)."""


@keys.command("new")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="file to create (never overwritten)")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def keys_new(keystore: str, password_file: str | None, as_json: bool) -> None:
    """Generate a key and write it encrypted; prints only its address."""
    from statechannel.node.keys import new_keystore

    _write_keystore(keystore, password_file, as_json, lambda path, pw: new_keystore(path, pw).address)


@keys.command("address")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False, exists=True), help="a keystore file")
def keys_address(keystore: str) -> None:
    """Print the address a keystore holds (no password needed), for scripts.

    \b
    Example:
      B=$(statechannel keys address --keystore b.json)
    """
    from statechannel.core.types import address_from_hex, to_checksum
    from statechannel.node.keys import keystore_address

    try:
        click.echo(to_checksum(address_from_hex(keystore_address(Path(keystore)))))
    except Exception as exc:  # not JSON, no address field: say so in one line
        raise fail(f"{keystore} is not a keystore with an address: {exc}") from None


@keys.command("import")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="file to create (never overwritten)")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def keys_import(keystore: str, password_file: str | None, as_json: bool) -> None:
    """Encrypt an existing private key, read from a hidden prompt or from stdin (never an argument,
    which would land in the shell history and the process list)."""
    from statechannel.core.crypto import PrivateKey
    from statechannel.core.errors import LocalError
    from statechannel.node.keys import write_keystore

    if sys.stdin.isatty():
        text = str(click.prompt("private key (hex)", hide_input=True, err=True))
    else:
        text = sys.stdin.readline()
    text = text.strip().removeprefix("0x").removeprefix("0X")
    try:
        key = PrivateKey(bytes.fromhex(text))
    except (ValueError, LocalError):
        raise fail("that is not a private key (expected 64 hex digits)") from None

    def write(path: Path, password: str) -> bytes:
        write_keystore(path, key, password)
        return key.address

    _write_keystore(keystore, password_file, as_json, write)


def _write_keystore(
    keystore: str, password_file: str | None, as_json: bool, make: Callable[[Path, str], bytes]
) -> None:
    from statechannel.core.types import to_checksum

    path = Path(keystore).expanduser()
    if path.exists():
        raise fail(f"{path} exists; a keystore is never overwritten")
    password = ask_password(password_file, confirm=True)
    if not password:
        raise fail("refusing an empty password: the key would be protected by nothing")
    try:
        address = to_checksum(make(path, password))
    except FileExistsError:
        raise fail(f"{path} exists; a keystore is never overwritten") from None
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc.strerror}") from None
    out(as_json, {"address": address, "keystore": str(path)}, lambda: click.echo(f"{address}  ({path}, mode 0600)"))


# ------------------------------------------------------------------ peers


@click.group()
def peer() -> None:
    """Peers the node talks to."""


@peer.command("connect")
@click.argument("address")
@click.argument("hostport", metavar="HOST:PORT")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 120))
@client_options
def peer_connect(address: str, hostport: str, timeout: float, data_dir: str, as_json: bool) -> None:
    """Connect to the node with ADDRESS listening at HOST:PORT (kept up, redialled after drops)."""
    from statechannel.daemon import parse_hostport

    try:
        host, port = parse_hostport(hostport)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with node_api(data_dir) as api:
        result = api.post("/peers", {"address": address, "host": host, "port": port, "timeout": timeout})
    out(as_json, result, lambda: click.echo(f"connected to {result['address']} at {host}:{port}"))


@peer.command("list")
@client_options
def peer_list(data_dir: str, as_json: bool) -> None:
    """Peers the node dials or holds channels with, and whether each is connected.

    \b
    Example:
      statechannel peer list --data-dir ./a
    """
    from rich.console import Console
    from rich.table import Table

    with node_api(data_dir) as api:
        peers = api.get("/peers")
    table = Table(title="peers")
    for name in ("address", "connected", "dials", "channels"):
        table.add_column(name, no_wrap=name == "address", justify="right" if name == "channels" else "left")
    for p in peers:
        dials = f"{p['host']}:{p['port']}" if p["host"] else "-"
        table.add_row(p["address"], "yes" if p["connected"] else "no", dials, str(p["channels"]))
    out(as_json, peers, lambda: Console().print(table if peers else "no peers"))


@peer.command("disconnect")
@click.argument("address")
@client_options
def peer_disconnect(address: str, data_dir: str, as_json: bool) -> None:
    """Stop dialling ADDRESS, forget where it listens and drop its connection (it may still dial this node;
    its channels are unchanged).

    \b
    Example:
      statechannel peer disconnect 0xB0b... --data-dir ./a
    """
    with node_api(data_dir) as api:
        result = api.request("DELETE", f"/peers/{address}")
    out(as_json, result, lambda: click.echo(f"disconnected from {result['address']}"))

"""The `statechannel` command: the one place that picks concrete backends.

`node start` runs the daemon in the foreground; every other node command is a client of its HTTP API,
found through `<data-dir>/node.json` and `<data-dir>/api-token`. Failures end in one line on stderr and
exit code 1: a traceback tells a user nothing they can act on."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from statechannel.chain.base import Chain

if TYPE_CHECKING:
    from statechannel.api.client import ApiClient

TARGETS = {"open_with_deposit": 46_000, "deposit": 29_000, "cooperative_close": 60_000}
PASSWORD_ENV = "STATECHANNEL_PASSWORD"  # noqa: S105 (the variable's name, not a password)
DEFAULT_DATA_DIR = "~/.statechannel"
F = TypeVar("F", bound=Callable[..., Any])
_REASON_PREFIX = {
    "insufficient_funds": "insufficient balance",
    "wrong_channel": "unknown channel",
    "wrong_phase": "wrong phase",
    "peer_unreachable": "peer unreachable",
    "handshake_failed": "peer unreachable",
    "unauthorized": "not authorised (is api-token the running node's?)",
    "chain_unavailable": "chain unavailable",
    "timeout": "timed out",
    "validation": "invalid input",
}


def _chain(rpc: str | None) -> Chain:
    if rpc:
        from statechannel.chain.rpc import RpcChain

        return RpcChain(rpc)
    from statechannel.chain.embedded import EmbeddedChain

    return EmbeddedChain()


@click.group()
@click.version_option(package_name="statechannel")
def main() -> None:
    """Two-party state channels on Ethereum-style chains."""


@main.command()
@click.option("--rpc", metavar="URL", help="JSON-RPC node (a dev chain: anvil); default: the embedded EVM")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def gas(rpc: str | None, as_json: bool) -> None:
    """Run the cooperative and dispute lifecycles; print the gas of every step."""
    from statechannel.chain.base import ChainError
    from statechannel.gasreport import LifecycleMismatch, gas_report

    try:
        report = gas_report(lambda: _chain(rpc))
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


# ------------------------------------------------------------------ shared pieces


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message.replace("\n", " "))


def _data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        envvar="STATECHANNEL_DATA_DIR",
        help="the node's data directory (holds node.json and api-token)",
    )(f)


def _client_options(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    return _data_dir_option(f)


def _out(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


@contextmanager
def _api(data_dir: str) -> Iterator[ApiClient]:
    """A client of the node in `data_dir`; every failure becomes one line naming what went wrong."""
    from statechannel.api.auth import TokenFileError
    from statechannel.api.client import ApiClientError
    from statechannel.api.discovery import NodeNotRunning, connect

    try:
        info, client = connect(data_dir)
    except NodeNotRunning as exc:
        raise _fail(f"node not running: {exc} (start one with `statechannel node start`)") from None
    except TokenFileError as exc:
        raise _fail(str(exc)) from None
    try:
        yield client
    except ApiClientError as exc:
        if exc.reason == "node_unreachable":
            raise _fail(f"node not running: nothing answers at {info.api} (stale node.json?)") from None
        prefix = _REASON_PREFIX.get(exc.reason, exc.reason)
        raise _fail(f"{prefix}: {exc.detail}" if exc.detail else prefix) from None
    finally:
        client.close()


def _amount(text: str, what: str = "amount") -> str:
    if not re.fullmatch(r"[0-9]+", text):
        raise _fail(f"{what} must be a whole number of the smallest unit (wei for eth), got {text!r}")
    return str(int(text))


def _asset(text: str) -> str:
    if text.lower() != "eth" and not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise _fail(f"asset must be 'eth' or a 0x token address, got {text!r}")
    return text


def _channel_id(text: str) -> str:
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", text):
        raise _fail(f"a channel id is 0x and 64 hex digits, got {text!r}")
    return text


def _deposits(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        asset, sep, amount = pair.partition("=")
        if not sep:
            raise _fail(f"{option} takes ASSET=AMOUNT (like eth=1000), got {pair!r}")
        out[_asset(asset)] = _amount(amount, f"{option} amount")
    return out


def _password(password_file: str | None, *, confirm: bool) -> str:
    """From the file, else the environment, else a prompt (only at a terminal: never read from a pipe
    that may be carrying something else, such as an imported key)."""
    from statechannel.node.keys import read_password

    if password_file or PASSWORD_ENV in os.environ:
        try:
            return read_password(password_file, PASSWORD_ENV, prompt=False)
        except OSError as exc:
            raise _fail(f"cannot read the password file: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise _fail(f"no password: pass --password-file or set {PASSWORD_ENV}")
    return str(click.prompt("keystore password", hide_input=True, confirmation_prompt=confirm, err=True))


def _kv_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows.items():
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)


# ------------------------------------------------------------------ node


@main.group()
def node() -> None:
    """Run a node, or ask the running one about itself."""


@node.command("start")
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC url of the chain, or 'embedded' (a throwaway one)")
@click.option("--adjudicator", metavar="0x..", help="address of the adjudicator contract (not with 'embedded')")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="the node's encrypted key")
@_data_dir_option
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="for peers")
@click.option("--api", "api_at", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="HTTP API")
@click.option("--confirmations", default=0, show_default=True, type=click.IntRange(0, 1000))
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@click.option("--tower", "towers", multiple=True, metavar="URL", help="a watchtower to push states to (repeatable)")
@click.option(
    "--tower-policy",
    default="every-update",
    show_default=True,
    metavar="POLICY",
    help="when to push: every-update, every:N (updates) or every:Tms (and always before stopping)",
)
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
    towers: tuple[str, ...],
    tower_policy: str,
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM."""
    import asyncio
    import logging

    from statechannel.core.errors import LocalError
    from statechannel.core.types import address_from_hex
    from statechannel.daemon import DaemonConfig, DaemonError, parse_hostport, run
    from statechannel.node.keys import load_keystore
    from statechannel.node.towerstate import TowerPolicy, tower_url

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
        )
    except (ValueError, LocalError) as exc:
        raise _fail(str(exc)) from None
    if not Path(keystore).expanduser().is_file():
        raise _fail(f"no keystore at {keystore} (create one with `statechannel keys new`)")
    password = _password(password_file, confirm=False)
    try:
        key = load_keystore(Path(keystore).expanduser(), password)
    except LocalError as exc:
        raise _fail(exc.detail) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(config, key))
    except DaemonError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        sys.exit(130)


@node.command("info")
@_client_options
def node_info(data_dir: str, as_json: bool) -> None:
    """Address, chain, listen address and channel counts of the running node."""
    with _api(data_dir) as api:
        info = api.get("/node")
    _out(as_json, info, lambda: _kv_table("node", {**info, "channels": _phase_counts(info["channels"])}))


def _phase_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {phase}" for phase, n in counts.items() if n) or "none"


# ------------------------------------------------------------------ keys


@main.group()
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
        raise _fail("that is not a private key (expected 64 hex digits)") from None

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
        raise _fail(f"{path} exists; a keystore is never overwritten")
    password = _password(password_file, confirm=True)
    if not password:
        raise _fail("refusing an empty password: the key would be protected by nothing")
    try:
        address = to_checksum(make(path, password))
    except FileExistsError:
        raise _fail(f"{path} exists; a keystore is never overwritten") from None
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror}") from None
    _out(as_json, {"address": address, "keystore": str(path)}, lambda: click.echo(f"{address}  ({path}, mode 0600)"))


# ------------------------------------------------------------------ peers


@main.group()
def peer() -> None:
    """Peers the node talks to."""


@peer.command("connect")
@click.argument("address")
@click.argument("hostport", metavar="HOST:PORT")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 120))
@_client_options
def peer_connect(address: str, hostport: str, timeout: float, data_dir: str, as_json: bool) -> None:
    """Connect to the node with ADDRESS listening at HOST:PORT (kept up, redialled after drops)."""
    from statechannel.daemon import parse_hostport

    try:
        host, port = parse_hostport(hostport)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    with _api(data_dir) as api:
        result = api.post("/peers", {"address": address, "host": host, "port": port, "timeout": timeout})
    _out(as_json, result, lambda: click.echo(f"connected to {result['address']} at {host}:{port}"))


# ------------------------------------------------------------------ channels


@main.group()
def channel() -> None:
    """Open, fund, pay through and close channels."""


@channel.command("open")
@click.option("--peer", "peer_address", required=True, metavar="ADDRESS", help="a connected peer")
@click.option("--deposit", "deposits", multiple=True, required=True, metavar="ASSET=AMOUNT", help="what you deposit")
@click.option(
    "--peer-deposit",
    "peer_deposits",
    multiple=True,
    metavar="ASSET=AMOUNT",
    help="asked of the peer (nodes of this version refuse)",
)
@click.option("--challenge-period", default=3600, show_default=True, type=click.IntRange(1, 2**32 - 1), help="s")
@click.option("--wait", default=120.0, show_default=True, type=click.FloatRange(0, 600), help="s to wait for open")
@_client_options
def channel_open(
    peer_address: str,
    deposits: tuple[str, ...],
    peer_deposits: tuple[str, ...],
    challenge_period: int,
    wait: float,
    data_dir: str,
    as_json: bool,
) -> None:
    """Open a channel with a connected peer and deposit into it."""
    body = {
        "peer": peer_address,
        "deposits": _deposits(deposits, "--deposit"),
        "peer_deposits": _deposits(peer_deposits, "--peer-deposit"),
        "challenge_period": challenge_period,
        "wait": wait,
    }
    with _api(data_dir) as api:
        ch = api.post("/channels", body, timeout=wait + 30)
    _out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("deposit")
@click.argument("channel_id")
@click.argument("asset")
@click.argument("amount")
@_client_options
def channel_deposit(channel_id: str, asset: str, amount: str, data_dir: str, as_json: bool) -> None:
    """Deposit AMOUNT of ASSET ('eth' or a token address) into a channel, on chain."""
    from statechannel.api.client import SLOW_TIMEOUT

    body = {"asset": _asset(asset), "amount": _amount(amount)}
    with _api(data_dir) as api:
        ch = api.post(f"/channels/{_channel_id(channel_id)}/deposit", body, timeout=SLOW_TIMEOUT)
    _out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("withdraw")
@click.argument("channel_id")
@click.argument("asset")
@click.argument("amount")
@_client_options
def channel_withdraw(channel_id: str, asset: str, amount: str, data_dir: str, as_json: bool) -> None:
    """Take AMOUNT of ASSET out of an open channel (the peer co-signs; the node submits it)."""
    body = {"asset": _asset(asset), "amount": _amount(amount)}
    with _api(data_dir) as api:
        ch = api.post(f"/channels/{_channel_id(channel_id)}/withdraw", body)
    _out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("pay")
@click.argument("channel_id")
@click.argument("amount")
@click.option("--asset", default="eth", show_default=True, help="'eth' or a token address")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1_000_000), help="pay AMOUNT N times")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600), help="s to wait")
@_client_options
def channel_pay(
    channel_id: str, amount: str, asset: str, count: int, timeout: float, data_dir: str, as_json: bool
) -> None:
    """Pay AMOUNT to the peer of a channel; returns once the peer has countersigned."""
    body = {"amount": _amount(amount), "asset": _asset(asset), "count": count, "timeout": timeout}
    with _api(data_dir) as api:
        result = api.post(f"/channels/{_channel_id(channel_id)}/payments", body, timeout=timeout + 30)
    if count > 1:
        human = f"{result['sent']} sent, {result['failed']} failed, {result['pending']} pending"
        human += f" in {result['elapsed_ms']} ms" + "".join(f"; {n} {why}" for why, n in result["failures"].items())
    else:
        human = f"payment {result['payment_id']}: {result['status']}"
        human += f" (version {result['version']})" if result["status"] == "sent" else " (not yet countersigned)"
    _out(as_json, result, lambda: click.echo(human))


@channel.command("close")
@click.argument("channel_id")
@click.option("--unilateral", is_flag=True, help="close on chain without the peer (then the challenge window)")
@click.option("--wait", default=None, type=click.FloatRange(0, 600), help="s to wait for closed [120; 0 unilateral]")
@_client_options
def channel_close(channel_id: str, unilateral: bool, wait: float | None, data_dir: str, as_json: bool) -> None:
    """Close a channel, cooperatively unless --unilateral."""
    wait = (0.0 if unilateral else 120.0) if wait is None else wait
    with _api(data_dir) as api:
        ch = api.post(
            f"/channels/{_channel_id(channel_id)}/close", {"unilateral": unilateral, "wait": wait}, timeout=wait + 30
        )
    _out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("list")
@_client_options
def channel_list(data_dir: str, as_json: bool) -> None:
    """Every channel of the node, with balances."""
    with _api(data_dir) as api:
        chs = api.get("/channels")
    _out(as_json, chs, lambda: _channels_table(chs))


def _channels_table(chs: list[dict[str, Any]]) -> None:
    table = Table(title="channels")
    for name in ("channel", "peer", "phase", "version", "asset", "mine", "peer's", "towers hold"):
        table.add_column(name, overflow="fold", justify="right" if name in ("version", "mine", "peer's") else "left")
    for ch in chs:
        version = "-" if ch["version"] is None else str(ch["version"])
        peer_text = ch["peer"] + ("" if ch["peer_connected"] else " (offline)")
        # which watchtower holds which version (its receipt is in --json)
        towers = "\n".join(f"v{p['version']} {p['tower']}" for p in ch.get("protection", [])) or "-"
        for i, bal in enumerate(ch["balances"]):
            first = i == 0
            table.add_row(
                ch["channel_id"] if first else "",
                peer_text if first else "",
                ch["phase"] if first else "",
                version if first else "",
                bal["asset"],
                bal["my_balance"],
                bal["peer_balance"],
                towers if first else "",
            )
    Console().print(table if chs else "no channels")


# ------------------------------------------------------------------ payments and events


@main.command()
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_client_options
def payments(channel_id: str | None, limit: int, data_dir: str, as_json: bool) -> None:
    """Sent and received payments, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if channel_id is not None:
        params["channel_id"] = _channel_id(channel_id)
    with _api(data_dir) as api:
        rows = api.get("/payments", params=params)
    table = Table(title="payments")
    for name in ("id", "channel", "direction", "asset", "amount", "status", "version"):
        table.add_column(name, overflow="fold", justify="right" if name in ("amount", "version") else "left")
    for p in rows:
        status = p["status"] + (f" ({p['reason']})" if p["reason"] else "")
        table.add_row(
            p["payment_id"], p["channel_id"], p["direction"], p["asset"], p["amount"], status, str(p["version"])
        )
    _out(as_json, rows, lambda: Console().print(table if rows else "no payments"))


@main.command()
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--count", type=click.IntRange(1), help="stop after this many events")
@click.option("--since", type=click.IntRange(0), help="replay buffered events numbered above this")
@click.option("--timeout", type=click.FloatRange(0.1), help="stop after this many seconds")
@_client_options
def events(
    channel_id: str | None, count: int | None, since: int | None, timeout: float | None, data_dir: str, as_json: bool
) -> None:
    """Print channel and payment events as they happen (Ctrl-C to stop)."""
    params: dict[str, Any] = {}
    if timeout is not None:
        params["timeout"] = timeout
    if channel_id is not None:
        params["channel_id"] = _channel_id(channel_id)
    if count is not None:
        params["limit"] = count
    if since is not None:
        params["since"] = since
    try:
        with _api(data_dir) as api:
            for ev in api.events(params):
                data = ev["data"]
                if as_json:
                    click.echo(json.dumps({"id": int(ev.get("id", 0)), **data}))
                else:
                    detail = " ".join(f"{k}={_short(v)}" for k, v in data["data"].items())
                    click.echo(f"[{ev.get('id', '')}] {data['kind']:<8} {data['channel_id']} {detail}")
    except KeyboardInterrupt:
        pass


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} items]"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


# ------------------------------------------------------------------ watchtower

DEFAULT_TOWER_DIR = "~/.statechannel-tower"


@main.group()
def watchtower() -> None:
    """Run a watchtower: it keeps your latest states and answers stale closes while you are offline."""


@watchtower.command("start")
@click.option("--rpc", required=True, metavar="URL", help="JSON-RPC url of the chain")
@click.option("--adjudicator", required=True, metavar="0x..", help="address of the adjudicator to watch")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="the tower's key (signs, pays gas)")
@click.option("--data-dir", default=DEFAULT_TOWER_DIR, show_default=True, help="holds tower.json and tower.db")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--api", "api_at", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="HTTP API")
@click.option("--db", default="sqlite", show_default=True, metavar="sqlite|postgresql://...", help="the store")
@click.option("--confirmations", default=0, show_default=True, type=click.IntRange(0, 1000))
@click.option("--poll-interval", default=0.5, show_default=True, type=click.FloatRange(0.01, 60), help="s")
@click.option("--bump-after", default=3.0, show_default=True, type=click.FloatRange(0.1, 600), help="s unmined")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
def watchtower_start(
    rpc: str,
    adjudicator: str,
    keystore: str,
    data_dir: str,
    password_file: str | None,
    api_at: str,
    db: str,
    confirmations: int,
    poll_interval: float,
    bump_after: float,
    log_level: str,
) -> None:
    """Run the watchtower in the foreground until Ctrl-C or SIGTERM."""
    import asyncio
    import logging

    from statechannel.core.errors import LocalError
    from statechannel.core.types import address_from_hex
    from statechannel.daemon import parse_hostport
    from statechannel.node.keys import load_keystore
    from statechannel.watchtower.daemon import TowerConfig, TowerDaemonError, run

    try:
        config = TowerConfig(
            rpc=rpc,
            adjudicator=address_from_hex(adjudicator),
            data_dir=Path(data_dir).expanduser(),
            api=parse_hostport(api_at),
            db=db,
            confirmations=confirmations,
            poll_interval=poll_interval,
            bump_after=bump_after,
        )
    except (ValueError, LocalError) as exc:
        raise _fail(str(exc)) from None
    if not Path(keystore).expanduser().is_file():
        raise _fail(f"no keystore at {keystore} (create one with `statechannel keys new`)")
    password = _password(password_file, confirm=False)
    try:
        key = load_keystore(Path(keystore).expanduser(), password)
    except LocalError as exc:
        raise _fail(exc.detail) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(config, key))
    except TowerDaemonError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)


@watchtower.command("info")
@click.option("--data-dir", default=DEFAULT_TOWER_DIR, show_default=True, help="the running tower's data directory")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def watchtower_info(data_dir: str, as_json: bool) -> None:
    """Address, chain and number of channels of the running tower."""
    import httpx

    path = Path(data_dir).expanduser() / "tower.json"
    try:
        url = json.loads(path.read_text())["api"]
        info = httpx.get(f"{url}/info", timeout=10).raise_for_status().json()
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(f"no running tower found through {path}: {exc}") from None
    except httpx.HTTPError as exc:
        raise _fail(f"the tower at {path} did not answer: {exc}") from None
    _out(as_json, info, lambda: _kv_table("watchtower", info))


if __name__ == "__main__":
    main()

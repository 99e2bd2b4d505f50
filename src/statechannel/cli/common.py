"""Pieces every `statechannel` command shares: finding the node, one-line failures, argument checks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from statechannel.chain.base import Chain

if TYPE_CHECKING:
    from statechannel.api.client import ApiClient
    from statechannel.core.crypto import PrivateKey

TARGETS = {"open_with_deposit": 46_000, "deposit": 29_000, "cooperative_close": 60_000}
PASSWORD_ENV = "STATECHANNEL_PASSWORD"  # noqa: S105 (the variable's name, not a password)
DEFAULT_DATA_DIR = "~/.statechannel"
F = TypeVar("F", bound=Callable[..., Any])
REASON_PREFIX = {
    "insufficient_funds": "insufficient balance",
    "wrong_channel": "unknown channel",
    "wrong_phase": "wrong phase",
    "peer_unreachable": "peer unreachable",
    "handshake_failed": "peer unreachable",
    "unauthorized": "not authorised (is api-token the running node's?)",
    "chain_unavailable": "chain unavailable",
    "timeout": "timed out",
    "validation": "invalid input",
    "unknown_quote": "unknown quote",
    "expired": "quote expired",
    "oversize": "more than the quote has left",
    "bad_amount": "bad amount",
    "tx_failed": "failed on chain",
}


def make_chain(rpc: str | None) -> Chain:
    from statechannel.runtime import limit_recursion

    limit_recursion()  # imports py-evm and py_ecc first, so the chain's imports below cannot raise it again
    if rpc:
        from statechannel.chain.rpc import RpcChain

        return RpcChain(rpc)
    from statechannel.chain.embedded import EmbeddedChain

    return EmbeddedChain()


def fail(message: str) -> click.ClickException:
    return click.ClickException(message.replace("\n", " "))


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        envvar="STATECHANNEL_DATA_DIR",
        help="the node's data directory (holds node.json and api-token)",
    )(f)


def client_options(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    return data_dir_option(f)


def out(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


@contextmanager
def node_api(data_dir: str) -> Iterator[ApiClient]:
    """A client of the node in `data_dir`; every failure becomes one line naming what went wrong."""
    from statechannel.api.auth import TokenFileError
    from statechannel.api.client import ApiClientError
    from statechannel.api.discovery import NodeNotRunning, connect

    try:
        info, client = connect(data_dir)
    except NodeNotRunning as exc:
        raise fail(f"node not running: {exc} (start one with `statechannel node start`)") from None
    except TokenFileError as exc:
        raise fail(str(exc)) from None
    try:
        yield client
    except ApiClientError as exc:
        if exc.reason == "node_unreachable":
            raise fail(f"node not running: nothing answers at {info.api} (stale node.json?)") from None
        prefix = REASON_PREFIX.get(exc.reason, exc.reason)
        raise fail(f"{prefix}: {exc.detail}" if exc.detail else prefix) from None
    finally:
        client.close()


def amount_arg(text: str, what: str = "amount") -> str:
    if not re.fullmatch(r"[0-9]+", text):
        raise fail(f"{what} must be a whole number of the smallest unit (wei for eth), got {text!r}")
    return str(int(text))


def positive_arg(text: str, what: str = "amount") -> str:
    if not re.fullmatch(r"[0-9]+", text) or int(text) == 0:
        raise fail(f"{what} must be a positive whole number of the smallest unit, got {text!r}")
    return str(int(text))


def asset_arg(text: str) -> str:
    if text.lower() != "eth" and not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise fail(f"asset must be 'eth' or a 0x token address, got {text!r}")
    return text


def channel_id_arg(text: str) -> str:
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", text):
        raise fail(f"a channel id is 0x and 64 hex digits, got {text!r}")
    return text


def deposits_arg(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        asset, sep, amount = pair.partition("=")
        if not sep:
            raise fail(f"{option} takes ASSET=AMOUNT (like eth=1000), got {pair!r}")
        out[asset_arg(asset)] = amount_arg(amount, f"{option} amount")
    return out


def ask_password(password_file: str | None, *, confirm: bool) -> str:
    """From the file, else the environment, else a prompt (only at a terminal: never read from a pipe
    that may be carrying something else, such as an imported key)."""
    from statechannel.node.keys import read_password

    if password_file or PASSWORD_ENV in os.environ:
        try:
            return read_password(password_file, PASSWORD_ENV, prompt=False)
        except OSError as exc:
            raise fail(f"cannot read the password file: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise fail(f"no password: pass --password-file or set {PASSWORD_ENV}")
    return str(click.prompt("keystore password", hide_input=True, confirmation_prompt=confirm, err=True))


def kv_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows.items():
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)


def unlock_key(keystore: str, password_file: str | None) -> PrivateKey:
    """The key in `keystore`, or a one-line failure (no file, wrong password)."""
    return unlock(keystore, password_file)[0]


def unlock(keystore: str, password_file: str | None) -> tuple[PrivateKey, str]:
    """The key in `keystore` and the password that opened it, or a one-line failure."""
    from statechannel.core.errors import LocalError
    from statechannel.logs import redact
    from statechannel.node.keys import load_keystore

    path = Path(keystore).expanduser()
    if not path.is_file():
        raise fail(f"no keystore at {keystore} (create one with `statechannel keys new`)")
    password = ask_password(password_file, confirm=False)
    redact(password)  # never in a log line, whatever prints it
    try:
        return load_keystore(path, password), password
    except LocalError as exc:
        raise fail(exc.detail) from None


def log_format_option(f: F) -> F:
    return click.option(
        "--log-format",
        default="text",
        show_default=True,
        type=click.Choice(["text", "json"]),
        help="json: one object per line (ts, level, logger, msg, event, channel, peer, reason)",
    )(f)


def run_foreground(
    main: Coroutine[Any, Any, None], errors: tuple[type[Exception], ...], log_level: str, log_format: str = "text"
) -> None:
    """Run a daemon in this process until it stops; its own errors become one line."""
    import logging

    from statechannel.logs import setup

    setup(log_level, log_format)
    if log_level != "debug":  # a line per tower push or chain call drowned the node's own (issue 13)
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        asyncio.run(main)
    except errors as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        sys.exit(130)


def short_id(full: str) -> str:
    """`0x4a274cc8…c9d1`: enough to tell ids apart in a table; the full one is in --json and below it."""
    return full if len(full) <= 18 else f"{full[:10]}…{full[-4:]}"


def number_column(table: Table, name: str) -> None:
    """A column of amounts: right-aligned and never folded or cut (a number cut in two is a wrong number)."""
    table.add_column(name, justify="right", no_wrap=True, overflow="ignore")

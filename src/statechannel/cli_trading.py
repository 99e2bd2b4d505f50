"""`statechannel trade`: quote, take, and read positions, as a client of the running node's HTTP API.

Like the other client commands, it finds the node through `<data-dir>/node.json` and `api-token`, and a
failure ends in one line on stderr with exit code 1. Prices are typed as "Q" or "Q/B": Q quote units
for every B base units (B defaults to 1), both whole numbers, so a price is never rounded."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from statechannel.api.client import ApiClient

F = TypeVar("F", bound=Callable[..., Any])
_REASON_PREFIX = {
    "insufficient_funds": "insufficient balance",
    "wrong_channel": "unknown channel",
    "wrong_phase": "wrong phase",
    "unknown_quote": "unknown quote",
    "expired": "quote expired",
    "oversize": "more than the quote has left",
    "bad_amount": "bad amount",
    "peer_unreachable": "peer unreachable",
    "unauthorized": "not authorised (is api-token the running node's?)",
    "timeout": "timed out",
    "validation": "invalid input",
}


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message.replace("\n", " "))


def _options(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
    return click.option(
        "--data-dir",
        default="~/.statechannel",
        show_default=True,
        envvar="STATECHANNEL_DATA_DIR",
        help="the node's data directory (holds node.json and api-token)",
    )(f)


@contextmanager
def _api(data_dir: str) -> Iterator[ApiClient]:
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


def _whole(text: str, what: str) -> str:
    if not re.fullmatch(r"[0-9]+", text) or int(text) == 0:
        raise _fail(f"{what} must be a positive whole number of the smallest unit, got {text!r}")
    return str(int(text))


def _asset(text: str) -> str:
    if text.lower() != "eth" and not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise _fail(f"an asset is 'eth' or a 0x token address, got {text!r}")
    return text


def _channel_id(text: str) -> str:
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", text):
        raise _fail(f"a channel id is 0x and 64 hex digits, got {text!r}")
    return text


def _price(text: str) -> tuple[str, str]:
    """(quote_unit, base_unit) from "Q" or "Q/B"."""
    quote_unit, _, base_unit = text.partition("/")
    return _whole(quote_unit, "the price's quote units"), _whole(base_unit or "1", "the price's base units")


def _out(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


@click.group()
def trade() -> None:
    """Swap two assets of a channel at quoted prices."""


@trade.command("quote")
@click.argument("channel_id")
@click.argument("side", type=click.Choice(["sell", "buy"]))
@click.argument("base")
@click.argument("quote")
@click.option("--price", required=True, metavar="Q[/B]", help="Q quote units per B base units (B: 1)")
@click.option("--size", required=True, help="the most base this quote may swap, over all takes")
@click.option("--ttl", default=30.0, show_default=True, type=click.FloatRange(0.001, 7 * 24 * 3600), help="s")
@_options
def trade_quote(
    channel_id: str, side: str, base: str, quote: str, price: str, size: str, ttl: float, data_dir: str, as_json: bool
) -> None:
    """Offer the peer to SIDE (sell or buy) BASE for QUOTE: e.g. `sell 0xTOKEN eth --price 3/1000`."""
    quote_unit, base_unit = _price(price)
    body = {
        "side": side,
        "base": _asset(base),
        "quote": _asset(quote),
        "base_unit": base_unit,
        "quote_unit": quote_unit,
        "size": _whole(size, "size"),
        "ttl_ms": max(1, round(ttl * 1000)),
    }
    with _api(data_dir) as api:
        q = api.post(f"/channels/{_channel_id(channel_id)}/quotes", body)
    _out(as_json, q, lambda: click.echo(f"quote {q['quote_id']}: {_describe(q)}"))


@trade.command("quotes")
@click.argument("channel_id")
@_options
def trade_quotes(channel_id: str, data_dir: str, as_json: bool) -> None:
    """The peer's live quotes (what you can take) and yours (with how much was taken)."""
    with _api(data_dir) as api:
        book = api.get(f"/channels/{_channel_id(channel_id)}/quotes")

    def human() -> None:
        table = Table(title="quotes")
        for name in ("id", "by", "offer", "size", "filled", "expires (ms)"):
            table.add_column(name, overflow="fold")
        for who, rows in (("peer", book["received"]), ("me", book["sent"])):
            for q in rows:
                filled = "-" if q["filled"] is None else q["filled"]
                table.add_row(q["quote_id"], who, _describe(q), q["size"], filled, str(q["expires_at_ms"]))
        Console().print(table if book["received"] or book["sent"] else "no live quotes")

    _out(as_json, book, human)


@trade.command("take")
@click.argument("channel_id")
@click.argument("quote_id")
@click.argument("base_amount")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100_000), help="take N times")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600), help="s to wait")
@_options
def trade_take(
    channel_id: str, quote_id: str, base_amount: str, count: int, timeout: float, data_dir: str, as_json: bool
) -> None:
    """Take BASE_AMOUNT of the peer's quote QUOTE_ID in one swap; returns once both signed it."""
    if not re.fullmatch(r"[0-9]{1,20}", quote_id):
        raise _fail(f"a quote id is a whole number, got {quote_id!r}")
    body: dict[str, Any] = {"quote_id": str(int(quote_id)), "base_amount": _whole(base_amount, "base amount")}
    body |= {"count": count, "timeout": timeout}
    with _api(data_dir) as api:
        result = api.post(f"/channels/{_channel_id(channel_id)}/takes", body, timeout=timeout + 30)
    if count > 1:
        human = f"{result['filled']} filled, {result['failed']} failed, {result['pending']} pending"
        human += f" in {result['elapsed_ms']} ms" + "".join(f"; {n} {why}" for why, n in result["failures"].items())
    elif result["version"]:
        human = (
            f"{'bought' if result['side'] == 'buy' else 'sold'} {result['base_amount']} {result['base']} for "
            f"{result['quote_amount']} {result['quote']} (version {result['version']})"
        )
    else:
        human = "take sent, not yet countersigned"
    _out(as_json, result, lambda: click.echo(human))


@trade.command("positions")
@click.option("--channel", "channel_id", help="only this channel")
@_options
def trade_positions(channel_id: str | None, data_dir: str, as_json: bool) -> None:
    """Net base and quote per pair, and realised P&L (average cost, exact)."""
    path = "/positions" if channel_id is None else f"/channels/{_channel_id(channel_id)}/positions"
    with _api(data_dir) as api:
        rows = api.get(path)

    def human() -> None:
        table = Table(title="positions")
        for name in ("channel", "pair", "base net", "quote net", "trades", "avg price", "realised P&L"):
            table.add_column(name, overflow="fold")
        for p in rows:
            table.add_row(
                p["channel_id"],
                f"{p['base']}/{p['quote']}",
                p["base_net"],
                p["quote_net"],
                str(p["trades"]),
                p["average_price"] or "-",
                p["realised_pnl"],
            )
        Console().print(table if rows else "no trades")

    _out(as_json, rows, human)


@trade.command("fills")
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_options
def trade_fills(channel_id: str | None, limit: int, data_dir: str, as_json: bool) -> None:
    """Recent fills, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if channel_id is not None:
        params["channel_id"] = _channel_id(channel_id)
    with _api(data_dir) as api:
        rows = api.get("/fills", params=params)

    def human() -> None:
        table = Table(title="fills")
        for name in ("version", "quote", "role", "side", "base", "quote amount"):
            table.add_column(name, overflow="fold")
        for f in rows:
            role = "maker" if f["maker"] else "taker"
            base = f"{f['base_amount']} {f['base']}"
            table.add_row(str(f["version"]), f["quote_id"], role, f["side"], base, f"{f['quote_amount']} {f['quote']}")
        Console().print(table if rows else "no fills")

    _out(as_json, rows, human)


def _describe(q: dict[str, Any]) -> str:
    return f"{q['side']} {q['base']} at {q['quote_unit']} {q['quote']} per {q['base_unit']}"

"""`statechannel trade`: quote, take, and read positions, as a client of the running node's HTTP API.

Like the other client commands, it finds the node through `<data-dir>/node.json` and `api-token`, and a
failure ends in one line on stderr with exit code 1. Prices are typed as "Q" or "Q/B": Q quote units
for every B base units (B defaults to 1), both whole numbers, so a price is never rounded."""

from __future__ import annotations

import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from statechannel.cli.common import asset_arg, channel_id_arg, client_options, fail, node_api, out, positive_arg


def _price(text: str) -> tuple[str, str]:
    """(quote_unit, base_unit) from "Q" or "Q/B"."""
    quote_unit, _, base_unit = text.partition("/")
    return positive_arg(quote_unit, "the price's quote units"), positive_arg(base_unit or "1", "the price's base units")


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
@click.option("-q", "--quiet", is_flag=True, help="print only the quote id (for scripts: Q=$(...))")
@client_options
def trade_quote(
    channel_id: str,
    side: str,
    base: str,
    quote: str,
    price: str,
    size: str,
    ttl: float,
    quiet: bool,
    data_dir: str,
    as_json: bool,
) -> None:
    """Offer the peer to SIDE (sell or buy) BASE for QUOTE: e.g. `sell 0xTOKEN eth --price 3/1000`.

    \b
    Example:
      statechannel trade quote 0xCHANNEL sell 0xTOKEN eth --price 3/1000 --size 1000000 --data-dir ./a
    """
    quote_unit, base_unit = _price(price)
    body = {
        "side": side,
        "base": asset_arg(base),
        "quote": asset_arg(quote),
        "base_unit": base_unit,
        "quote_unit": quote_unit,
        "size": positive_arg(size, "size"),
        "ttl_ms": max(1, round(ttl * 1000)),
    }
    with node_api(data_dir) as api:
        q = api.post(f"/channels/{channel_id_arg(channel_id)}/quotes", body)
    if quiet and not as_json:
        click.echo(q["quote_id"])
        return
    out(as_json, q, lambda: click.echo(f"quote {q['quote_id']}: {_describe(q)}"))


@trade.command("quotes")
@click.argument("channel_id")
@client_options
def trade_quotes(channel_id: str, data_dir: str, as_json: bool) -> None:
    """The peer's live quotes (what you can take) and yours (with how much was taken)."""
    with node_api(data_dir) as api:
        book = api.get(f"/channels/{channel_id_arg(channel_id)}/quotes")

    def human() -> None:
        table = Table(title="quotes")
        for name in ("id", "by", "offer", "size", "filled", "expires (ms)"):
            table.add_column(name, overflow="fold")
        for who, rows in (("peer", book["received"]), ("me", book["sent"])):
            for q in rows:
                filled = "-" if q["filled"] is None else q["filled"]
                table.add_row(q["quote_id"], who, _describe(q), q["size"], filled, str(q["expires_at_ms"]))
        Console().print(table if book["received"] or book["sent"] else "no live quotes")

    out(as_json, book, human)


@trade.command("take")
@click.argument("channel_id")
@click.argument("quote_id")
@click.argument("base_amount")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100_000), help="take N times")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600), help="s to wait")
@client_options
def trade_take(
    channel_id: str, quote_id: str, base_amount: str, count: int, timeout: float, data_dir: str, as_json: bool
) -> None:
    """Take BASE_AMOUNT of the peer's quote QUOTE_ID in one swap; returns once both signed it."""
    if not re.fullmatch(r"[0-9]{1,20}", quote_id):
        raise fail(f"a quote id is a whole number, got {quote_id!r}")
    body: dict[str, Any] = {"quote_id": str(int(quote_id)), "base_amount": positive_arg(base_amount, "base amount")}
    body |= {"count": count, "timeout": timeout}
    with node_api(data_dir) as api:
        result = api.post(f"/channels/{channel_id_arg(channel_id)}/takes", body, timeout=timeout + 30)
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
    out(as_json, result, lambda: click.echo(human))


@trade.command("positions")
@click.option("--channel", "channel_id", help="only this channel")
@client_options
def trade_positions(channel_id: str | None, data_dir: str, as_json: bool) -> None:
    """Net base and quote per pair, and realised P&L (average cost, exact)."""
    path = "/positions" if channel_id is None else f"/channels/{channel_id_arg(channel_id)}/positions"
    with node_api(data_dir) as api:
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

    out(as_json, rows, human)


@trade.command("fills")
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@client_options
def trade_fills(channel_id: str | None, limit: int, data_dir: str, as_json: bool) -> None:
    """Recent fills, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if channel_id is not None:
        params["channel_id"] = channel_id_arg(channel_id)
    with node_api(data_dir) as api:
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

    out(as_json, rows, human)


def _describe(q: dict[str, Any]) -> str:
    return f"{q['side']} {q['base']} at {q['quote_unit']} {q['quote']} per {q['base_unit']}"

"""`statechannel stream`, `watch` and `recurring`: payment streams through the node's HTTP API."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from statechannel.cli.common import amount_arg, asset_arg, channel_id_arg, client_options, node_api, out


def _stream_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="streams")
    for col in ("stream_id", "status", "rate_per_s", "paid", "owed", "cap", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("stream_id", "status", "rate_per_s", "paid", "owed", "cap", "reason")))
    Console().print(table)


@click.group()
def stream() -> None:
    """Pay a rate per second, in ticks, up to a cap."""


@stream.command("start")
@click.argument("channel_id")
@click.argument("rate_per_s")
@click.option("--cap", required=True, help="the most the stream may pay, in the smallest unit")
@click.option("--asset", default="eth", show_default=True)
@click.option("--tick-ms", default=100, show_default=True, type=click.IntRange(5, 60_000))
@client_options
def stream_start(
    channel_id: str, rate_per_s: str, cap: str, asset: str, tick_ms: int, data_dir: str, as_json: bool
) -> None:
    """Pay RATE_PER_S smallest units per second to the peer, in ticks, until --cap is paid. Kept across
    node restarts: a running stream resumes at its rate (the time the node was down owes nothing); it
    stops, with a `stream_stopped` event, when the channel closes.

    \b
    Example:
      statechannel stream start 0xCHANNEL 1000000 --cap 60000000 --data-dir ./a
    """
    body = {
        "channel_id": channel_id_arg(channel_id),
        "asset": asset_arg(asset),
        "rate_per_s": amount_arg(rate_per_s, "rate"),
        "cap": amount_arg(cap, "cap"),
        "tick_ms": tick_ms,
    }
    with node_api(data_dir) as client:
        view = client.post("/streams", body)
    out(as_json, view, lambda: _stream_table([view]))


def _control(action: str) -> Any:
    @stream.command(
        action,
        help=f"{action.capitalize()} a stream."
        + (" Stopping pays what is owed up to now." if action == "stop" else "")
        + f"\n\n\b\nExample:\n  statechannel stream {action} STREAM_ID --data-dir ./a",
    )
    @click.argument("stream_id")
    @client_options
    def command(stream_id: str, data_dir: str, as_json: bool) -> None:
        with node_api(data_dir) as client:
            view = client.post(f"/streams/{stream_id}/{action}", {})
        out(as_json, view, lambda: _stream_table([view]))

    return command


for _action in ("pause", "resume", "stop"):
    _control(_action)


@stream.command("meter")
@click.argument("stream_id")
@click.argument("units", type=click.IntRange(1))
@click.argument("price_per_unit")
@client_options
def stream_meter(stream_id: str, units: int, price_per_unit: str, data_dir: str, as_json: bool) -> None:
    """Pay for UNITS of metered service at PRICE_PER_UNIT each (within the stream's cap).

    \b
    Example:
      statechannel stream meter STREAM_ID 3 500 --data-dir ./a
    """
    with node_api(data_dir) as client:
        view = client.post(
            f"/streams/{stream_id}/meter", {"units": units, "price_per_unit": amount_arg(price_per_unit)}
        )
    out(as_json, view, lambda: _stream_table([view]))


@stream.command("list")
@client_options
def stream_list(data_dir: str, as_json: bool) -> None:
    """Every stream of the node (running, paused, stopped, completed, failed) with what it paid.

    \b
    Example:
      statechannel stream list --data-dir ./a
    """
    with node_api(data_dir) as client:
        rows = client.get("/streams")
    out(as_json, rows, lambda: _stream_table(rows))


@click.group()
def recurring() -> None:
    """An amount every period, on a schedule that survives restarts."""


@recurring.command("add")
@click.argument("channel_id")
@click.argument("amount")
@click.option("--every-ms", "period_ms", required=True, type=click.IntRange(100))
@click.option("--count", type=click.IntRange(1), help="how many times (default: until cancelled)")
@click.option("--asset", default="eth", show_default=True)
@click.option(
    "--catch-up",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="occurrences paid at most after the node was down (the rest are skipped, never paid in a lump)",
)
@client_options
def recurring_add(
    channel_id: str,
    amount: str,
    period_ms: int,
    count: int | None,
    asset: str,
    catch_up: int,
    data_dir: str,
    as_json: bool,
) -> None:
    """Pay AMOUNT every --every-ms milliseconds on an open channel (--count times, or until cancelled);
    kept across restarts, and ended, with a `recurring_stopped` event, when the channel closes.

    \b
    Example:
      statechannel recurring add 0xCHANNEL 5000 --every-ms 60000 --count 12 --data-dir ./a
    """
    body = {
        "channel_id": channel_id_arg(channel_id),
        "asset": asset_arg(asset),
        "amount": amount_arg(amount),
        "period_ms": period_ms,
        "count": count,
        "catch_up": catch_up,
    }
    with node_api(data_dir) as client:
        view = client.post("/recurring", body)
    out(as_json, view, lambda: click.echo(f"schedule {view['schedule_id']}: {view['amount']} every {period_ms} ms"))


@recurring.command("list")
@client_options
def recurring_list(data_dir: str, as_json: bool) -> None:
    """Every recurring payment: when it is next due, how many remain and were paid, the last error.

    \b
    Example:
      statechannel recurring list --data-dir ./a
    """
    with node_api(data_dir) as client:
        rows = client.get("/recurring")

    def human() -> None:
        table = Table(title="recurring payments")
        for col in ("schedule_id", "channel_id", "amount", "period_ms", "remaining", "paid_count", "last_error"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(*(str(r[c]) for c in ("schedule_id", "channel_id", "amount", "period_ms", "remaining",
                                                "paid_count", "last_error")))  # fmt: skip
        Console().print(table)

    out(as_json, rows, human)


@recurring.command("cancel")
@click.argument("schedule_id")
@client_options
def recurring_cancel(schedule_id: str, data_dir: str, as_json: bool) -> None:
    """Cancel a recurring payment (what it paid stays paid).

    \b
    Example:
      statechannel recurring cancel SCHEDULE_ID --data-dir ./a
    """
    with node_api(data_dir) as client:
        client.request("DELETE", f"/recurring/{schedule_id}")
    out(as_json, {"cancelled": schedule_id}, lambda: click.echo(f"cancelled {schedule_id}"))


@click.group()
def watch() -> None:
    """As a receiver: watch incoming payments against an agreed rate."""


@watch.command("start")
@click.argument("channel_id")
@click.argument("rate_per_s")
@click.option("--grace", default="0", show_default=True, help="how far behind counts as lagging")
@click.option("--asset", default="eth", show_default=True)
@client_options
def watch_start(channel_id: str, rate_per_s: str, grace: str, asset: str, data_dir: str, as_json: bool) -> None:
    body = {
        "channel_id": channel_id_arg(channel_id),
        "asset": asset_arg(asset),
        "rate_per_s": amount_arg(rate_per_s, "rate"),
        "grace": amount_arg(grace, "grace"),
    }
    with node_api(data_dir) as client:
        view = client.post("/watches", body)
    out(as_json, view, lambda: click.echo(f"watch {view['watch_id']}: received {view['received']}"))


@watch.command("show")
@click.argument("watch_id")
@client_options
def watch_show(watch_id: str, data_dir: str, as_json: bool) -> None:
    with node_api(data_dir) as client:
        view = client.get(f"/watches/{watch_id}")
    verdict = "LAGGING" if view["lagging"] else "on pace"
    out(as_json, view, lambda: click.echo(f"received {view['received']} of {view['expected']} expected: {verdict}"))

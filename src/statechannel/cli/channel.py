"""`statechannel channel`, `payments` and `events`: clients of the running node's HTTP API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    pass

from statechannel.cli.common import (
    amount_arg,
    asset_arg,
    channel_id_arg,
    client_options,
    deposits_arg,
    fail,
    node_api,
    number_column,
    out,
    short_id,
)

# ------------------------------------------------------------------ channels


@click.group()
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
@click.option("-q", "--quiet", is_flag=True, help="print only the channel id (for scripts: CH=$(...))")
@client_options
def channel_open(
    peer_address: str,
    deposits: tuple[str, ...],
    peer_deposits: tuple[str, ...],
    challenge_period: int,
    wait: float,
    quiet: bool,
    data_dir: str,
    as_json: bool,
) -> None:
    """Open a channel with a connected peer and deposit into it; fails at once, with the chain's reason,
    if the wallet cannot make the deposit or the chain refuses a step.

    \b
    Example:
      statechannel channel open --peer 0xB0b... --deposit eth=1000000000000000000 --data-dir ./a
    """
    body = {
        "peer": peer_address,
        "deposits": deposits_arg(deposits, "--deposit"),
        "peer_deposits": deposits_arg(peer_deposits, "--peer-deposit"),
        "challenge_period": challenge_period,
        "wait": wait,
    }
    with node_api(data_dir) as api:
        ch = api.post("/channels", body, timeout=wait + 30)
    if wait > 0 and ch["phase"] != "open":  # not an error on chain, but not what was asked either
        raise fail(f"channel {ch['channel_id']} is still {ch['phase']} after {wait:g} s (see `channel list`)")
    if quiet and not as_json:
        click.echo(ch["channel_id"])
        return
    out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("deposit")
@click.argument("channel_id")
@click.argument("asset")
@click.argument("amount")
@client_options
def channel_deposit(channel_id: str, asset: str, amount: str, data_dir: str, as_json: bool) -> None:
    """Deposit AMOUNT of ASSET ('eth' or a token address) into a channel, on chain."""
    from statechannel.api.client import SLOW_TIMEOUT

    body = {"asset": asset_arg(asset), "amount": amount_arg(amount)}
    with node_api(data_dir) as api:
        ch = api.post(f"/channels/{channel_id_arg(channel_id)}/deposit", body, timeout=SLOW_TIMEOUT)
    out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("withdraw")
@click.argument("channel_id")
@click.argument("asset")
@click.argument("amount")
@client_options
def channel_withdraw(channel_id: str, asset: str, amount: str, data_dir: str, as_json: bool) -> None:
    """Take AMOUNT of ASSET out of an open channel (the peer co-signs; the node submits it)."""
    body = {"asset": asset_arg(asset), "amount": amount_arg(amount)}
    with node_api(data_dir) as api:
        ch = api.post(f"/channels/{channel_id_arg(channel_id)}/withdraw", body)
    out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("pay")
@click.argument("channel_id")
@click.argument("amount")
@click.option("--asset", default="eth", show_default=True, help="'eth' or a token address")
@click.option(
    "--count", default=1, show_default=True, type=click.IntRange(1, 10**12), help="pay AMOUNT N times, as one batch"
)
@click.option(
    "--history",
    type=click.Choice(["batch", "per-payment"]),
    default="batch",
    show_default=True,
    help="with --count: one row for the batch on each side, or one per payment (count <= 1,000,000)",
)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600), help="s to wait")
@click.option("--idempotency-key", metavar="KEY", help="a retry with the same KEY pays once (not per-payment)")
@client_options
def channel_pay(
    channel_id: str,
    amount: str,
    asset: str,
    count: int,
    history: str,
    timeout: float,
    idempotency_key: str | None,
    data_dir: str,
    as_json: bool,
) -> None:
    """Pay AMOUNT to the peer of a channel; returns once the peer has countersigned. With --count, a
    batch: one payment of the total, one history row on each side (unless --history per-payment).

    \b
    Example:
      statechannel channel pay 0xCHANNEL 1000 --idempotency-key order-1234 --data-dir ./a
      statechannel channel pay 0xCHANNEL 1 --count 100000 --data-dir ./a
    """
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = {"amount": amount_arg(amount), "asset": asset_arg(asset), "count": count, "timeout": timeout}
    if count > 1:
        body["history"] = history
    with node_api(data_dir) as api:
        path = f"/channels/{channel_id_arg(channel_id)}/payments"
        result = api.post(path, body, timeout=timeout + 30, headers=headers)
    if count > 1:
        human = f"{result['sent']} sent, {result['failed']} failed, {result['pending']} pending"
        human += f" (batch {result['batch_id']}, total {result['total']})" if result.get("batch_id") else ""
        human += f" in {result['elapsed_ms']} ms" + "".join(f"; {n} {why}" for why, n in result["failures"].items())
    else:
        human = f"payment {result['payment_id']}: {result['status']}"
        human += f" (version {result['version']})" if result["status"] == "sent" else " (not yet countersigned)"
    out(as_json, result, lambda: click.echo(human))


@channel.command("close")
@click.argument("channel_id")
@click.option("--unilateral", is_flag=True, help="close on chain without the peer (then the challenge window)")
@click.option("--wait", default=None, type=click.FloatRange(0, 600), help="s to wait for closed [120; 0 unilateral]")
@client_options
def channel_close(channel_id: str, unilateral: bool, wait: float | None, data_dir: str, as_json: bool) -> None:
    """Close a channel, cooperatively unless --unilateral."""
    wait = (0.0 if unilateral else 120.0) if wait is None else wait
    with node_api(data_dir) as api:
        body = {"unilateral": unilateral, "wait": wait}
        ch = api.post(f"/channels/{channel_id_arg(channel_id)}/close", body, timeout=max(wait, 30) + 30)
    out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("abandon")
@click.argument("channel_id")
@client_options
def channel_abandon(channel_id: str, data_dir: str, as_json: bool) -> None:
    """Give up a channel that cannot open (its open or a deposit failed, or the peer never answered).

    Never on chain: it is forgotten. Open on chain: it is closed with the pre-fund state both signed,
    which returns every deposit once the challenge period is over.

    \b
    Example:
      statechannel channel abandon 0x3f2a...c9 --data-dir ./a
    """
    with node_api(data_dir) as api:
        result = api.post(f"/channels/{channel_id_arg(channel_id)}/abandon", {}, timeout=90)
    out(as_json, result, lambda: click.echo(result["action"]))


@channel.command("settle")
@click.argument("channel_id")
@click.option("--wait", default=60.0, show_default=True, type=click.FloatRange(0, 600), help="s to wait for closed")
@client_options
def channel_settle(channel_id: str, wait: float, data_dir: str, as_json: bool) -> None:
    """Settle a channel in dispute whose challenge window is over (the node also does it by itself);
    fails at once, saying how long is left, while the window is open.

    \b
    Example:
      statechannel channel settle 0x3f2a...c9 --data-dir ./a
    """
    with node_api(data_dir) as api:
        ch = api.post(f"/channels/{channel_id_arg(channel_id)}/settle", {"wait": wait}, timeout=wait + 30)
    out(as_json, ch, lambda: _channels_table([ch]))


@channel.command("show")
@click.argument("channel_id")
@client_options
def channel_show(channel_id: str, data_dir: str, as_json: bool) -> None:
    """One channel, and every watchtower receipt the node verified for it (or why one did not verify)."""
    with node_api(data_dir) as api:
        ch = api.get(f"/channels/{channel_id_arg(channel_id)}")
    out(as_json, ch, lambda: _show(ch))


def _show(ch: dict[str, Any]) -> None:
    _channels_table([ch])
    table = Table(title="watchtower receipts (verified)")
    for name in ("tower", "address", "version", "from block", "state hash"):
        table.add_column(name, overflow="fold")
    for p in ch.get("protection", []):
        table.add_row(p["tower"], p["address"], str(p["version"]), str(p["from_block"]), p["state_hash"])
    Console().print(table if ch.get("protection") else "no watchtower receipt")
    for e in ch.get("tower_errors", []):
        Console().print(f"[red]tower {e['tower']}: receipt does not verify, no protection: {e['detail']}[/red]")


@channel.command("list")
@client_options
def channel_list(data_dir: str, as_json: bool) -> None:
    """Every channel of the node, with balances."""
    with node_api(data_dir) as api:
        chs = api.get("/channels")
    out(as_json, chs, lambda: _channels_table(chs))


def _channels_table(chs: list[dict[str, Any]]) -> None:
    """Fits 80 columns: ids shortened (whole below the table, to copy), amounts never folded or cut."""
    table = Table(title="channels", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("channel", no_wrap=True)
    table.add_column("phase", overflow="fold", min_width=10)
    table.add_column("asset", no_wrap=True, min_width=11)
    number_column(table, "mine")
    number_column(table, "peer's")
    notes: list[str] = []
    for ch in chs:
        phase, balances = ch["phase"], ch["balances"]
        phase += "" if ch["version"] is None else f" v{ch['version']}"
        outcome = ch.get("outcome")
        if outcome is not None:  # what the chain concluded and paid, never what this node hoped
            phase = f"closed at v{outcome['version']}" + (", challenged" if outcome["challenged"] else "")
            phase += ", LOSS: below my latest" if outcome["loss"] else ""
            balances = outcome["paid"] or balances
        for i, bal in enumerate(balances):
            first = i == 0
            table.add_row(
                short_id(ch["channel_id"]) if first else "",
                phase if first else "",
                bal["asset"] if len(bal["asset"]) < 12 else f"{bal['asset'][:6]}…{bal['asset'][-4:]}",
                bal["my_balance"],
                bal["peer_balance"],
            )
        # the whole ids to copy, and which watchtower holds which version (its receipt is in --json)
        line = f"channel {ch['channel_id']}\n  peer {ch['peer']}" + ("" if ch["peer_connected"] else " (offline)")
        line += "".join(f"\n  tower {p['tower']} holds v{p['version']}" for p in ch.get("protection", []))
        notes.append(line)
    Console().print(table if chs else "no channels")
    for line in notes:
        click.echo(line)


# ------------------------------------------------------------------ payments and events

PAGE = 1_000  # rows asked for per request when following pages


@click.command()
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10**9), help="rows at most")
@click.option("--all", "everything", is_flag=True, help="every row the node keeps (follows all pages)")
@click.option("--page-size", default=PAGE, show_default=True, type=click.IntRange(1, 10_000), help="rows a request")
@client_options
def payments(
    channel_id: str | None, limit: int, everything: bool, page_size: int, data_dir: str, as_json: bool
) -> None:
    """Sent and received payments, newest first, fetched page by page (by cursor, so payments arriving
    meanwhile neither repeat nor skip a row). One row per payment, on both sides. Says on stderr when the
    node's retention (`node start --history`) has pruned older rows.

    \b
    Example:
      statechannel payments --channel 0xCHANNEL --all --data-dir ./a
    """
    params: dict[str, Any] = {}
    if channel_id is not None:
        params["channel_id"] = channel_id_arg(channel_id)
    rows: list[dict[str, Any]] = []
    pruned, retention, cursor = 0, "", None
    with node_api(data_dir) as api:
        while everything or len(rows) < limit:
            size = page_size if everything else min(page_size, limit - len(rows))
            page = {"limit": size} if cursor is None else {"limit": size, "cursor": cursor}
            rows.extend(api.get("/payments", params={**params, **page}))
            pruned = int(api.last_headers.get("X-History-Pruned", "0"))
            retention = api.last_headers.get("X-History-Retention", "")
            cursor = api.last_headers.get("X-Next-Cursor")  # by cursor: payments arriving meanwhile shift nothing
            if cursor is None:
                break
    if pruned:
        click.echo(
            f"{pruned} older payment rows were pruned: this node keeps the newest {retention} (node start --history)",
            err=True,
        )
    table = Table(title="payments")
    for name in ("id", "channel", "direction", "asset", "amount", "status", "version"):
        if name in ("amount", "version"):
            number_column(table, name)
        else:
            table.add_column(name, overflow="fold", no_wrap=name in ("id", "channel", "asset"))
    for p in rows:
        status = p["status"] + (f" ({p['reason']})" if p["reason"] else "")
        table.add_row(
            short_id(p["payment_id"]),
            short_id(p["channel_id"]),
            p["direction"],
            short_id(p["asset"]),
            p["amount"],
            status,
            str(p["version"]),
        )
    out(as_json, rows, lambda: Console().print(table if rows else "no payments"))


@click.command()
@click.option("--channel", "channel_id", help="only this channel")
@click.option("--count", type=click.IntRange(1), help="stop after this many events")
@click.option("--since", type=click.IntRange(0), help="replay buffered events numbered above this")
@click.option("--timeout", type=click.FloatRange(0.1), help="stop after this many seconds")
@client_options
def events(
    channel_id: str | None, count: int | None, since: int | None, timeout: float | None, data_dir: str, as_json: bool
) -> None:
    """Print channel and payment events as they happen (Ctrl-C to stop)."""
    params: dict[str, Any] = {}
    if timeout is not None:
        params["timeout"] = timeout
    if channel_id is not None:
        params["channel_id"] = channel_id_arg(channel_id)
    if count is not None:
        params["limit"] = count
    if since is not None:
        params["since"] = since
    try:
        with node_api(data_dir) as api:
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

"""`statechannel watchtower`: run a watchtower and ask it what it watches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    pass

from statechannel.cli.common import (
    PASSWORD_ENV,
    fail,
    kv_table,
    log_format_option,
    out,
    run_foreground,
    unlock,
)

# ------------------------------------------------------------------ watchtower

DEFAULT_TOWER_DIR = "~/.statechannel-tower"


@click.group()
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
@click.option(
    "--min-challenge-period",
    default=60,
    show_default=True,
    type=click.IntRange(1, 2**32 - 1),
    help="s; shorter: refused",
)
@click.option("--max-channels-per-client", default=10_000, show_default=True, type=click.IntRange(1, None))
@click.option(
    "--states-per-client", default=3, show_default=True, type=click.IntRange(1, 64), help="kept per channel, best first"
)
@click.option("--max-bytes-per-client", default=32 * 1024 * 1024, show_default=True, type=click.IntRange(1024, None))
@click.option("--price-per-state", default=0, type=click.IntRange(0, 2**256 - 1), help="paid tower: smallest unit")
@click.option("--price-per-period", default=0, type=click.IntRange(0, 2**256 - 1), help="paid tower: per --period")
@click.option("--period", default=0, type=click.IntRange(0, 10 * 365 * 86400), help="s, with --price-per-period")
@click.option("--grace", default=3600, show_default=True, type=click.IntRange(0, 365 * 86400), help="s unpaid")
@click.option("--pay-asset", default="eth", show_default=True, metavar="eth|0x..", help="asset of the prices")
@click.option("--pay-to", metavar="0x..", help="paid tower: the operator node's address clients pay")
@click.option("--payee-api", metavar="URL", help="paid tower: that node's API, where payments are read")
@click.option("--payee-token-file", type=click.Path(dir_okay=False), help="paid tower: that API's bearer token")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@log_format_option
@click.option("--detach", is_flag=True, help="run in the background, logging to --log-file; `watchtower stop` ends it")
@click.option("--log-file", type=click.Path(dir_okay=False), help="with --detach  [default: <data-dir>/tower.log]")
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
    min_challenge_period: int,
    max_channels_per_client: int,
    states_per_client: int,
    max_bytes_per_client: int,
    price_per_state: int,
    price_per_period: int,
    period: int,
    grace: int,
    pay_asset: str,
    pay_to: str | None,
    payee_api: str | None,
    payee_token_file: str | None,
    log_level: str,
    log_format: str,
    detach: bool,
    log_file: str | None,
) -> None:
    """Run the watchtower in the foreground until Ctrl-C or SIGTERM, or with --detach in the background.

    \b
    Example:
      statechannel watchtower start --rpc http://127.0.0.1:8545 --adjudicator 0xADJ \\
        --keystore t.json --data-dir ./t --api 127.0.0.1:9100 --detach
    """

    from statechannel.core.errors import LocalError
    from statechannel.core.types import ETH, address_from_hex
    from statechannel.daemon import parse_hostport
    from statechannel.watchtower.billing import BillingError, Terms
    from statechannel.watchtower.daemon import TowerConfig, TowerDaemonError, run
    from statechannel.watchtower.storage import Quotas

    terms, token = None, ""
    if price_per_state or price_per_period:
        if not (pay_to and payee_api and payee_token_file):
            raise fail("a paid tower needs --pay-to, --payee-api and --payee-token-file")
        try:
            token = Path(payee_token_file).expanduser().read_text().strip()
            asset = ETH if pay_asset.lower() == "eth" else address_from_hex(pay_asset)
            terms = Terms(address_from_hex(pay_to), asset, price_per_state, price_per_period, period, grace)
        except (OSError, ValueError, LocalError, BillingError) as exc:
            raise fail(f"paid tower: {exc}") from None
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
            min_challenge_period=min_challenge_period,
            quotas=Quotas(max_channels_per_client, states_per_client, max_bytes_per_client),
            terms=terms,
            payee_api=payee_api or "",
            payee_token=token,
        )
    except (ValueError, LocalError) as exc:
        raise fail(str(exc)) from None
    key, password = unlock(keystore, password_file)
    if detach:
        from statechannel.cli.background import detach as go
        from statechannel.watchtower.daemon import TOWER_FILE

        logs = Path(log_file).expanduser() if log_file else config.data_dir / "tower.log"
        go("watchtower", config.data_dir, TOWER_FILE, logs, password)
        return
    run_foreground(run(config, key), (TowerDaemonError,), log_level, log_format)


@watchtower.command("stop")
@click.option("--data-dir", default=DEFAULT_TOWER_DIR, show_default=True, help="the running tower's data directory")
def watchtower_stop(data_dir: str) -> None:
    """Stop the watchtower running in the data directory (SIGTERM, then wait until it exited).

    \b
    Example:
      statechannel watchtower stop --data-dir ./t
    """
    from statechannel.cli.background import stop
    from statechannel.watchtower.daemon import TOWER_FILE

    stop("watchtower", Path(data_dir).expanduser(), TOWER_FILE)


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
        raise fail(f"no running tower found through {path}: {exc}") from None
    except httpx.HTTPError as exc:
        raise fail(f"the tower at {path} did not answer: {exc}") from None
    out(as_json, info, lambda: kv_table("watchtower", _flat(info)))


def _flat(info: dict[str, object]) -> dict[str, object]:
    quotas, terms = info.get("quotas"), info.get("terms")
    rest = {k: v for k, v in info.items() if k not in ("quotas", "terms")}
    if isinstance(quotas, dict):
        rest |= {f"per client: {k}": v for k, v in quotas.items()}
    if isinstance(terms, dict):
        rest |= {f"terms: {k}": v for k, v in terms.items()}
    else:
        rest["terms"] = "free"
    return rest


@watchtower.command("channel")
@click.argument("channel_id")
@click.option("--data-dir", default=DEFAULT_TOWER_DIR, show_default=True, help="the running tower's data directory")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def watchtower_channel(channel_id: str, data_dir: str, as_json: bool) -> None:
    """What the running tower holds for one channel: each participant's states, the dispute, its challenge."""
    import httpx

    path = Path(data_dir).expanduser() / "tower.json"
    try:
        url = json.loads(path.read_text())["api"]
        r = httpx.get(f"{url}/channels/{channel_id}", timeout=10)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"no running tower found through {path}: {exc}") from None
    except httpx.HTTPError as exc:
        raise fail(f"the tower at {path} did not answer: {exc}") from None
    try:
        view = r.json()
    except ValueError:
        raise fail(f"the tower answered HTTP {r.status_code} without JSON") from None
    if r.status_code != 200:
        raise fail(str(view.get("error", {}).get("detail", view)) if isinstance(view, dict) else str(view))
    held = ", ".join(f"v{h['version']} ({h['client'].upper()})" for h in view.get("held", [])) or "-"
    out(as_json, view, lambda: kv_table("channel", {**{k: v for k, v in view.items() if k != "held"}, "held": held}))

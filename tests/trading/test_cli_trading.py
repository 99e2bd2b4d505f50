"""`statechannel trade` against two real nodes, each served over real HTTP in this process.

The client commands are synchronous, so they run in a worker thread while the event loop serves the
nodes and their APIs; each data directory holds the node.json and api-token a daemon would write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from click.testing import CliRunner, Result

from statechannel.api.auth import load_or_create_token
from statechannel.api.discovery import NodeFile
from statechannel.cli.trade import trade
from statechannel.core.types import to_checksum
from statechannel.node.node import Node
from tests.trading.world import World, app_of, eventually, open_two_assets, run


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own signal handlers
        yield


@asynccontextmanager
async def serve(node: Node, data_dir: Path) -> AsyncIterator[None]:
    """Serve the node's API (with the trading router) on a free port and advertise it in `data_dir`."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = app_of(node, load_or_create_token(data_dir))
    server = _Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        NodeFile(os.getpid(), to_checksum(node.address), f"http://127.0.0.1:{port}", "", 0, "").write(data_dir)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def cli(data_dir: Path, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, trade, [*args, "--data-dir", str(data_dir)], catch_exceptions=False
    )


async def cli_json(data_dir: Path, *args: str) -> Any:
    result = await cli(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_trade_commands(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        cid = await open_two_assets(w)
        channel = f"0x{cid.hex()}"
        token = to_checksum(w.token.address)
        dirs = [tmp_path / "a", tmp_path / "b"]
        async with AsyncExitStack() as stack:
            for node, directory in zip((w.a, w.b), dirs, strict=True):
                directory.mkdir()
                await stack.enter_async_context(serve(node, directory))
            a_dir, b_dir = dirs
            made = await cli_json(a_dir, "quote", channel, "sell", token, "eth", "--price", "9/4", "--size", "400")
            assert (made["side"], made["base_unit"], made["quote_unit"], made["size"]) == ("sell", "4", "9", "400")
            await eventually(lambda: w.b.quotes(cid))
            book = await cli_json(b_dir, "quotes", channel)
            assert [q["quote_id"] for q in book["received"]] == [made["quote_id"]]

            human = await cli(b_dir, "take", channel, made["quote_id"], "8")
            assert human.exit_code == 0, human.output
            assert human.stdout.startswith(f"bought 8 {token} for 18 eth")
            batch = await cli_json(b_dir, "take", channel, made["quote_id"], "4", "--count", "20")
            assert (batch["filled"], batch["quote_amount"]) == (20, "180")

            refused = await cli(b_dir, "take", channel, made["quote_id"], "400")
            assert refused.exit_code == 1 and "more than the quote has left" in refused.stderr
            bad = await cli(b_dir, "take", channel, made["quote_id"], "3")
            assert bad.exit_code == 1 and bad.stderr.startswith("Error: bad amount")
            typo = await cli(a_dir, "quote", channel, "sell", token, "eth", "--price", "1.5", "--size", "4")
            assert typo.exit_code == 1 and "whole number" in typo.stderr

            (pos,) = await cli_json(b_dir, "positions", "--channel", channel)
            assert (pos["base_net"], pos["quote_net"], pos["average_price"]) == ("88", "-198", "9/4")
            table = await cli(a_dir, "positions")
            assert table.exit_code == 0 and "-88" in table.stdout
            fills = await cli_json(a_dir, "fills", "--limit", "3")
            assert len(fills) == 3 and all(f["maker"] for f in fills)
            listing = await cli(a_dir, "quotes", channel)
            assert listing.exit_code == 0 and made["quote_id"] in listing.stdout

    run(tmp_path, scenario)

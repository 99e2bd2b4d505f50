"""Builds the node's HTTP API around a running `Node`: routes, the token check, one error shape, and an
OpenAPI document that says how to authenticate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import statechannel
from statechannel.api.auth import BearerAuth
from statechannel.api.dashboard import PUBLIC_PATHS, dashboard_router
from statechannel.api.errors import install_error_handlers
from statechannel.api.events import EventHub
from statechannel.api.metrics import NodeMetrics
from statechannel.api.metrics import router as metrics_router
from statechannel.api.models import ErrorResponse
from statechannel.api.routes import ApiContext, router
from statechannel.api.streams import StreamService
from statechannel.api.streams import router as streams_router
from statechannel.api.trading import router as trading_router
from statechannel.httplimits import BodyLimits
from statechannel.node.node import Node

MAX_BODY_BYTES = 64 * 1024
"""The largest request body the node reads. Its largest legitimate one, opening a channel with all 8
assets, is about 2 KB; batches are a count (`count` in a payment or take), never a list, so 64 KiB is a
wide margin that still costs nothing to buffer and scan."""
MAX_BODY_DEPTH = 16
"""Request bodies nest 2 deep (an object holding the deposits); 16 leaves room for new fields."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Bad input (insufficient funds, an asset the channel lacks, ...)",
        401: "Missing or wrong bearer token",
        404: "Unknown channel",
        409: "The channel is in the wrong phase for this",
        413: f"too_large: a request body over {MAX_BODY_BYTES} bytes",
        415: "bad_encoding: a request body that is not UTF-8",
        422: "Malformed request (a float or negative amount, a bad address, ...; too_deep: JSON nested over "
        f"{MAX_BODY_DEPTH} levels)",
        503: "Chain or peer unavailable",
    }.items()
}


def create_app(
    node: Node,
    token: str,
    *,
    peer_listen: str | None = None,
    data_dir: Path | None = None,
    metrics: NodeMetrics | None = None,
) -> FastAPI:
    """The API of a started `node`. `peer_listen` (host:port) is only reported, so users can tell peers.
    `metrics`: already counting this node (the daemon builds it first, to count chain calls); else made here.

    Serve it with its lifespan (uvicorn does; in tests enter `app.router.lifespan_context(app)`): that
    starts the event buffer, so the event stream can replay what happened before a client connected."""
    hub = EventHub(node)
    streams = StreamService(node, data_dir) if data_dir is not None else None  # recurring.json lives there

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub.start()
        if streams is not None:
            streams.start()
        try:
            yield
        finally:
            if streams is not None:
                await streams.close()
            await hub.close()

    app = FastAPI(
        title="statechannel node",
        version=statechannel.__version__,
        description="Open, fund, pay through and close two-party state channels. Every request needs "
        "`Authorization: Bearer <token>`, the token being the contents of `api-token` in the node's data "
        "directory. Amounts are decimal strings of the smallest unit; ether is the asset `eth`.",
        lifespan=lifespan,
        docs_url=None,  # the browser UIs fetch the schema without the token, so they could not work
        redoc_url=None,
        responses=_ERRORS,
    )
    app.state.ctx = ApiContext(node, hub, peer_listen)
    app.state.streams = streams
    if metrics is None:
        metrics = NodeMetrics()
        metrics.watch(node)
    app.state.metrics = metrics
    install_error_handlers(app)
    # Added first, so it runs second: the token is checked before a byte of the body is read.
    app.add_middleware(BodyLimits, max_bytes=MAX_BODY_BYTES, max_depth=MAX_BODY_DEPTH)
    app.add_middleware(BearerAuth, token=token, public=PUBLIC_PATHS)  # the dashboard's files: no data
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(router)
    app.include_router(streams_router)  # served once the daemon sets app.state.streams
    app.include_router(trading_router)
    app.include_router(metrics_router)
    app.include_router(dashboard_router())
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the bearer scheme, which FastAPI cannot see because the check is
    middleware rather than a dependency."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema

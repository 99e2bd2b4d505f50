"""Serving a page's few files from inside the package: no build step, nothing fetched at run time.

Each page (the node's dashboard, the tower's page) names a fixed list of paths, read once at startup, so
no request can reach any other file; every answer carries a policy that lets the page load scripts and
styles from its own server only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
HTML, JS, CSS = "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8"


def static_router(package: str, files: dict[str, str], tag: str) -> APIRouter:
    """Routes serving `files` (URL path -> file name in `package`/static); the type follows the suffix."""
    router = APIRouter(include_in_schema=False)
    types = {".html": HTML, ".js": JS, ".css": CSS}
    for path, name in files.items():
        body = resources.files(package).joinpath("static", name).read_bytes()
        kind = types[name[name.rindex(".") :]]
        router.add_api_route(path, _server(body, kind), methods=["GET"], name=f"{tag}:{name}")
    return router


def _server(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve

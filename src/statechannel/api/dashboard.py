"""The node's web dashboard: a page and its two assets, shipped in the package, served at `/`.

These files hold no data and are the only paths served without the bearer token (a browser cannot send
a header when it navigates). The page asks for the token once, keeps it in `sessionStorage` and sends it
as `Authorization: Bearer` on every call, the event stream included (read with `fetch`, since
`EventSource` cannot send headers): the token is never in a URL, so never in a history, a log or a
Referer. The page reads only the public API; there is no endpoint made for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

STATIC = "static"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""Every path the dashboard serves: a fixed list, so no request can name another file."""
PUBLIC_PATHS = frozenset(FILES)
HEADERS = {
    # Scripts and styles only from this server, no frames, no form posts elsewhere, no referrer.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(STATIC, name).read_bytes()


def static_router(package: str, files: dict[str, tuple[str, str]], tag: str) -> APIRouter:
    """Routes serving `files` (path -> (file in `package`/static, media type)), read once at startup."""
    router = APIRouter(include_in_schema=False)
    for path, (name, media_type) in files.items():
        router.add_api_route(path, _server(asset(package, name), media_type), methods=["GET"], name=f"{tag}:{name}")
    return router


def _server(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve


def dashboard_router() -> APIRouter:
    return static_router("statechannel.api", FILES, "dashboard")

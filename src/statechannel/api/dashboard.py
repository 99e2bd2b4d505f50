"""The node's web dashboard: a page and its two assets, shipped in the package, served at `/`.

These files hold no data and are the only paths served without the bearer token (a browser cannot send
a header when it navigates). The page asks for the token once, keeps it in `sessionStorage` and sends it
as `Authorization: Bearer` on every call, the event stream included (read with `fetch`, since
`EventSource` cannot send headers): the token is never in a URL, so never in a history, a log or a
Referer. The page reads only the public API; there is no endpoint made for it."""

from __future__ import annotations

from fastapi import APIRouter

from statechannel.staticfiles import static_router

FILES = {"/": "index.html", "/dashboard/app.js": "app.js", "/dashboard/style.css": "style.css"}
PUBLIC_PATHS = frozenset(FILES)


def dashboard_router() -> APIRouter:
    return static_router("statechannel.api", FILES, "dashboard")

"""The API's one credential: a random bearer token in `<data-dir>/api-token`, readable only by its owner.

Anyone who can read the data directory can already read the node's database, so a file there is the
right trust boundary for a loopback API. The check runs as ASGI middleware, ahead of routing and body
parsing, so an unauthenticated caller learns nothing (not even whether its JSON was well formed)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from statechannel.api.errors import Code, error_response

TOKEN_FILE = "api-token"  # noqa: S105 (a file name, not a secret)
TOKEN_BYTES = 32


class TokenFileError(Exception):
    """The token file is missing, malformed, or readable by others."""


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def load_or_create_token(data_dir: Path) -> str:
    """The node's token, created (0600, never overwritten) on first start."""
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(data_dir)
    token = secrets.token_hex(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(data_dir: Path) -> str:
    path = token_path(data_dir)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise TokenFileError(f"no API token at {path}") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"{path} is accessible to other users (mode {stat.filemode(mode)}); chmod 600 it")
    if len(text) != 2 * TOKEN_BYTES or any(c not in "0123456789abcdef" for c in text):
        raise TokenFileError(f"{path} does not hold a token ({2 * TOKEN_BYTES} hex digits)")
    return text


class BearerAuth:
    """Refuses every HTTP request that lacks `Authorization: Bearer <token>` with a 401."""

    def __init__(self, app: ASGIApp, token: str, public: frozenset[str] = frozenset()) -> None:
        """`public`: exact paths anyone may GET (the dashboard's static files, which hold no data)."""
        if not token:
            raise ValueError("an empty API token would let anyone in")
        self.app = app
        self._token = token.encode()
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        problem = self._problem(Headers(scope=scope).get("authorization"))
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation: no HTTP body to carry JSON
            return
        response = error_response(401, Code.UNAUTHORIZED, problem, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _problem(self, header: str | None) -> str | None:
        if header is None:
            return "missing bearer token (Authorization: Bearer <contents of api-token>)"
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if not secrets.compare_digest(presented.strip().encode(), self._token):
            return "wrong bearer token"
        return None

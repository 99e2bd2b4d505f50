"""Bounds on HTTP request bodies, enforced before anything parses them: one ASGI middleware that both the
node's API and the watchtower's wrap around their apps.

A body is read (never more than the size limit, whether it announces its length or arrives chunked) and
its JSON nesting depth counted on the raw bytes, without recursion and skipping the contents of strings,
before the app sees a byte of it. Refusals use the project's error shape, `{"error": {"reason",
"detail"}}`: 413 `too_large`, 422 `too_deep`, 415 `bad_encoding` (JSON that is not UTF-8: its bytes could
hide brackets from the count)."""

from __future__ import annotations

import json
import re

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "too_large"
TOO_DEEP = "too_deep"
BAD_ENCODING = "bad_encoding"

_SPECIAL = re.compile(rb'[\[\]{}"\\]')
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_UTF8 = ("utf-8", "utf-8-sig")


class JsonDepth:
    """How deep JSON nests, counted over its raw UTF-8 bytes as they arrive, in chunks split anywhere.

    Brackets inside strings do not count; inside a string a backslash escapes the next byte (so `\\"`
    does not end it). In UTF-8 every byte below 0x80 is that ASCII character, so the bytes that matter
    are never part of another character. The count is an upper bound of what a JSON parser reaches: they
    agree on every byte of the valid prefix of a document, and a parser stops at the first invalid one.
    """

    __slots__ = ("_escaped", "_in_string", "depth", "limit", "max_depth")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the depth limit must be at least 1")
        self.limit = limit
        self.depth = 0
        self.max_depth = 0
        self._in_string = False
        self._escaped = False

    @property
    def exceeded(self) -> bool:
        return self.max_depth > self.limit

    def feed(self, data: bytes) -> bool:
        """Count `data`, the next bytes of the body; False once the nesting has gone past the limit."""
        if self.exceeded:
            return False
        skip = -1
        if self._escaped and data:
            self._escaped = False
            skip = 0
        depth, in_string = self.depth, self._in_string
        for match in _SPECIAL.finditer(data):
            at = match.start()
            if at == skip:
                continue
            byte = data[at]
            if in_string:
                if byte == _BACKSLASH:
                    skip = at + 1
                    if skip == len(data):
                        self._escaped = True
                elif byte == _QUOTE:
                    in_string = False
            elif byte == _QUOTE:
                in_string = True
            elif byte in _OPEN:
                depth += 1
                self.max_depth = max(self.max_depth, depth)
                if depth > self.limit:
                    return False
            elif byte in _CLOSE:
                depth = max(depth - 1, 0)  # a stray close never buys room for more opens
        self.depth, self._in_string = depth, in_string
        return True


def refusal(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail}}, status_code=status)


class BodyLimits:
    """Reads each HTTP request's body in full (at most `max_bytes` of it) and checks it, then hands the app
    the checked bytes. A body over `max_bytes` is refused as soon as its Content-Length says so, or as soon
    as the bytes received pass it; a body nested deeper than `max_depth` as soon as the count passes it.
    The connection's other messages (a disconnect) reach the app untouched; WebSocket and lifespan pass."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        if max_bytes < 1 or max_depth < 1:
            raise ValueError("body limits must be positive")
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        depth = JsonDepth(self.max_depth)
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before it finished sending
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not depth.feed(chunk):
                await refusal(422, TOO_DEEP, f"the request body nests deeper than {self.max_depth} levels")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and json.detect_encoding(body) not in _UTF8:
            await refusal(415, BAD_ENCODING, "a JSON request body must be UTF-8")(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes"
        await refusal(413, TOO_LARGE, detail)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then whatever the connection says next."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed

"""The body limits both HTTP servers share (statechannel.httplimits), on their own: the depth count over raw
bytes, and the middleware's size and depth refusals, through a small ASGI app that parses JSON the way
FastAPI does. The node's and the tower's apps and processes are tested in test_body_limits.py and
tests/watchtower/test_http_limits.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from statechannel.httplimits import BodyLimits, JsonDepth

LIMIT_BYTES = 1000
LIMIT_DEPTH = 4


def depth_ok(limit: int, *chunks: bytes) -> bool:
    counter = JsonDepth(limit)
    return all([counter.feed(chunk) for chunk in chunks])


def every_split(data: bytes) -> list[tuple[bytes, ...]]:
    """`data` whole, one byte at a time, and cut in two at every offset: the count must not depend on it."""
    return [(data,), tuple(data[i : i + 1] for i in range(len(data)))] + [
        (data[:i], data[i:]) for i in range(1, len(data))
    ]


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b'{"a": 1}', 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[[[]]]]", 4),
        (b'["[[[[[[[[", "{{{{{{{{"]', 1),  # brackets inside strings do not count
        (b'["\\"[[[[[[[[", 1]', 1),  # an escaped quote does not end the string
        (b'["\\\\", [[[]]]]', 4),  # an escaped backslash does not escape the closing quote
        (b'["\\u0022[[[[["]', 1),  # \u0022 is a quote to the parser, not to the byte count: still a string
        (b'{"k\\"[[": {"[": [["]]]]"]]}}', 4),
        (b"]]]]][[[[", 4),  # a stray close never earns room for more opens
    ],
)
def test_depth_is_counted_outside_strings_however_the_bytes_are_split(body: bytes, depth: int) -> None:
    for chunks in every_split(body):
        counter = JsonDepth(100)
        for chunk in chunks:
            assert counter.feed(chunk)
        assert counter.max_depth == depth, (chunks, counter.max_depth)
    assert depth_ok(max(depth, 1), body)
    if depth > 1:
        assert not depth_ok(depth - 1, body)


def test_exactly_at_the_limit_passes_and_one_over_fails() -> None:
    at = b"[" * 32 + b"]" * 32
    over = b"[" * 33 + b"]" * 33
    assert depth_ok(32, at) and not depth_ok(32, over)
    assert depth_ok(32, *(bytes([b]) for b in at)) and not depth_ok(32, *(bytes([b]) for b in over))
    strings = b'{"x": ' + b"[" * 31 + b'"]]]][[[[\\"[["' + b"]" * 31 + b"}"  # 32 levels, brackets in a string
    assert depth_ok(32, strings) and not depth_ok(31, strings)


def test_a_refusal_sticks_and_the_attack_is_counted_without_recursion() -> None:
    counter = JsonDepth(16)
    assert not counter.feed(b'{"state":' + b"[" * 100_000)
    assert not counter.feed(b"]" * 100_000 + b"}")  # closing brackets do not undo it
    assert counter.exceeded
    assert not JsonDepth(64).feed(b"[" * 10_000_000)  # no stack involved, whatever the depth


def test_an_escape_split_across_chunks_still_escapes() -> None:
    # the backslash ends one chunk, the quote it escapes starts the next: the string is still open after it
    assert depth_ok(1, b'["\\', b'"[[[[[["]')
    assert not depth_ok(1, b'["\\\\', b'"[[[[[[]')  # here the quote is real: the string ended, brackets count


# ------------------------------------------------------------------ the middleware


async def parse(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body as Starlette (and so FastAPI) does, then json.loads it."""
    request = Request(scope, receive)
    body = await request.body()
    await JSONResponse({"bytes": len(body), "json": json.loads(body) if body else None})(scope, receive, send)


def limited_client() -> httpx.AsyncClient:
    app = BodyLimits(parse, max_bytes=LIMIT_BYTES, max_depth=LIMIT_DEPTH)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://limits.test")


def run(scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with limited_client() as client:
            await asyncio.wait_for(scenario(client), 30)

    asyncio.run(main())


def refused(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"reason", "detail"}, body
    assert isinstance(body["error"]["detail"], str) and body["error"]["detail"]
    return r.status_code, body["error"]["reason"]


def test_bodies_within_the_limits_reach_the_app_unchanged() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        doc = {"a": [[["x[[[[[[[["]]], "pad": "y" * 500}
        r = await client.post("/", json=doc)
        assert r.status_code == 200 and r.json()["json"] == doc

        exact = b'"' + b"z" * (LIMIT_BYTES - 2) + b'"'  # exactly the size limit
        r = await client.post("/", content=exact)
        assert r.status_code == 200 and r.json()["bytes"] == LIMIT_BYTES

        async def chunks() -> AsyncIterator[bytes]:
            for piece in (b"[[", b"[", b'"\\', b'"]]]]]"', b"]]]"):
                yield piece

        r = await client.post("/", content=chunks())  # streamed: no Content-Length
        assert r.status_code == 200 and r.json()["json"] == [[['"]]]]]']]]
        assert (await client.get("/")).json() == {"bytes": 0, "json": None}

    run(scenario)


def test_too_deep_is_refused_before_parsing() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        at = b"[" * LIMIT_DEPTH + b"]" * LIMIT_DEPTH
        assert (await client.post("/", content=at)).status_code == 200
        over = b"[" * (LIMIT_DEPTH + 1) + b"]" * (LIMIT_DEPTH + 1)
        assert refused(await client.post("/", content=over)) == (422, "too_deep")
        hidden = b'{"a": "' + b"[" * 100 + b'"}'
        assert (await client.post("/", content=hidden)).status_code == 200

    run(scenario)


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    async def receive() -> Message:
        raise AssertionError("the body was read")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the app was called")

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", str(LIMIT_BYTES + 1).encode())],
    }
    asyncio.run(BodyLimits(app, max_bytes=LIMIT_BYTES, max_depth=LIMIT_DEPTH)(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["reason"] == "too_large"

    async def scenario(client: httpx.AsyncClient) -> None:
        assert refused(await client.post("/", content=b" " * (LIMIT_BYTES + 1))) == (413, "too_large")

    run(scenario)


def test_an_endless_stream_is_refused_once_it_passes_the_limit() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b" " * 100

    async def scenario(client: httpx.AsyncClient) -> None:
        r = await client.post("/", content=endless())
        assert refused(r) == (413, "too_large")
        assert pulled == LIMIT_BYTES // 100 + 1  # read up to the first byte over, not one chunk more

        async def deep() -> AsyncIterator[bytes]:
            for _ in range(100_000):
                yield b"["

        assert refused(await client.post("/", content=deep())) == (422, "too_deep")

    run(scenario)


def test_json_that_is_not_utf8_is_refused() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        # In UTF-16 a character's bytes can include 0x22 ('"') or 0x5b ('['): a byte count cannot follow it.
        for encoding in ("utf-16-le", "utf-16-be", "utf-32", "utf-16"):
            r = await client.post("/", content='["x"]'.encode(encoding))
            assert refused(r) == (415, "bad_encoding"), encoding
        r = await client.post("/", content='\ufeff["x"]'.encode())  # UTF-8 with a BOM is UTF-8
        assert r.status_code == 200 and r.json()["json"] == ["x"]

    run(scenario)


def test_other_messages_pass_through() -> None:
    """After the body, what the connection says next (a disconnect) reaches the app, and lifespan passes."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"[1", "more_body": True},
        {"type": "http.request", "body": b"]", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())

    async def send(message: Message) -> None:
        raise AssertionError(message)

    limits = BodyLimits(app, max_bytes=LIMIT_BYTES, max_depth=LIMIT_DEPTH)
    asyncio.run(limits({"type": "http", "headers": []}, receive, send))
    assert seen == [{"type": "http.request", "body": b"[1]", "more_body": False}, {"type": "http.disconnect"}]

    lifespan: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        lifespan.append(scope["type"])

    asyncio.run(BodyLimits(lifespan_app, max_bytes=1, max_depth=1)({"type": "lifespan"}, receive, send))
    assert lifespan == ["lifespan"]

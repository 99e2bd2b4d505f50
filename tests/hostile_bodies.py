"""The hostile request bodies both HTTP servers must refuse before parsing (issue 9, attack 6), and the
probe that sends them to a real server process: each is refused with its reason and the process lives."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator

import httpx

DEEP = b'{"state":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
"""About 200 KB: it used to kill the process with SIGSEGV (py_ecc raises the recursion limit to 100,000)."""
JSON = {"content-type": "application/json"}


def nested(field: str, depth: int) -> bytes:
    """A body whose `field` nests `depth` - 1 lists deep (the object itself is the first level)."""
    return b'{"' + field.encode() + b'":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def reason(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"reason", "detail"}, body
    return r.status_code, body["error"]["reason"]


def _streamed(body: bytes) -> Iterator[bytes]:  # chunked, so no Content-Length to refuse it by
    for at in range(0, len(body), 4096):
        yield body[at : at + 4096]


def died(proc: subprocess.Popen[bytes], what: str, exc: Exception, log: Callable[[], str]) -> AssertionError:
    try:
        code = proc.wait(10)
    except Exception:
        return AssertionError(f"{what}: the connection failed ({exc!r}) though the process still runs")
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return AssertionError(f"{what}: the process died ({how}):\n{log()[-2000:]}")


def probe(
    api: httpx.Client,
    path: str,
    field: str,
    small_depth: int,
    proc: subprocess.Popen[bytes],
    log: Callable[[], str],
) -> None:
    """Send every hostile body to `path` of a running server: the deep one whole and chunked, a long
    shallow one, and a small one nested `small_depth` deep."""
    try:
        assert reason(api.post(path, content=DEEP, headers=JSON)) == (413, "too_large")
        chunked = api.post(path, content=_streamed(DEEP), headers=JSON)
        shallow = api.post(path, content=_streamed(b'"' + b"x" * 200_000 + b'"'), headers=JSON)
        small_but_deep = api.post(path, content=nested(field, small_depth), headers=JSON)
    except httpx.TransportError as exc:
        raise died(proc, f"POST {path} with a hostile body", exc, log) from None
    # whichever limit the bytes read so far pass first (uvicorn decides how they are split)
    assert reason(chunked) in {(413, "too_large"), (422, "too_deep")}
    assert reason(shallow) == (413, "too_large")
    assert reason(small_but_deep) == (422, "too_deep")

"""A small synchronous client of the node's API, for the CLI and for scripts.

Every failure surfaces as one `ApiClientError` with a reason a program can branch on and a detail a
person can read, whether the API answered with an error or never answered at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_TIMEOUT = 30.0
SLOW_TIMEOUT = 660.0  # deposits wait for mining; pays and closes may wait as long as the caller asked


class ApiClientError(Exception):
    """`reason` is the API's reason, or `node_unreachable` / `timeout` / `bad_response` from this side."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.last_headers: httpx.Headers = httpx.Headers()
        """The headers of the last answer (a page's `X-Next-Cursor`, `X-History-Pruned`)."""
        self._http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiClientError("node_unreachable", f"cannot reach the node's API at {self.base_url}") from exc
        except httpx.TimeoutException as exc:
            raise ApiClientError("timeout", f"the node did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise ApiClientError("node_unreachable", f"talking to {self.base_url} failed: {exc}") from exc
        self.last_headers = response.headers
        return _decode(response)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def events(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Decoded events from the stream, as they arrive; ends when the server ends the stream."""
        try:
            with self._http.stream("GET", "/events", params=params, timeout=httpx.Timeout(10.0, read=None)) as resp:
                if resp.status_code != 200:
                    resp.read()
                    _decode(resp)
                yield from _parse_sse(resp.iter_lines())
        except httpx.ConnectError as exc:
            raise ApiClientError("node_unreachable", f"cannot reach the node's API at {self.base_url}") from exc
        except httpx.HTTPError as exc:
            raise ApiClientError("node_unreachable", f"the event stream from {self.base_url} broke: {exc}") from exc


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or (response.is_success and not response.content):
        return None  # done, and nothing to say (a DELETE)
    try:
        body = response.json()
    except ValueError:
        raise ApiClientError("bad_response", f"HTTP {response.status_code} with a body that is not JSON") from None
    if response.is_success:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise ApiClientError(str(error.get("reason", "unknown")), str(error.get("detail", "")), response.status_code)
    raise ApiClientError("bad_response", f"HTTP {response.status_code}", response.status_code)


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Enough of the event-stream format for our server: `id`, `event` and one-line JSON `data`."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue  # keep-alive comment
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                event["data"] = json.loads(value)
            elif name in ("id", "event"):
                event[name] = value

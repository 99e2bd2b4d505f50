"""A fault-injecting JSON-RPC proxy for tests: an HTTP server on 127.0.0.1 (port 0) that forwards to a
real node (anvil) and, by a seeded draw per request, drops it (the connection closes unanswered),
delays it, answers a JSON-RPC error or an HTTP 502 without forwarding, or -- for
`eth_sendRawTransaction` -- forwards it and loses the answer (the client sees its connection closed
although the transaction reached the pool).

The draws come from `random.Random(seed)` in the order requests arrive; with one client the run
replays exactly, with several threads the order of arrival (so which request meets which fault) may
vary, but the mix of faults does not. `holds` delays every request of a method by a fixed time (a
stuck send; "*" for every method, "batch" for batches: a remote node's latency); `sent` counts the
`eth_sendRawTransaction` requests that reached the node. `refuse` and `rewrite` are a faulty node's
answers written by a test: `refuse(request)` may answer a request without forwarding it, `rewrite(request,
answer)` replaces the node's answer (LOST: the connection closes unanswered); both see parsed JSON."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SEND = "eth_sendRawTransaction"
LOST = object()
"""What `rewrite` returns to lose the answer."""


@dataclass
class Faults:
    """Per-request probabilities (each in [0, 1]; drawn in this order)."""

    drop: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.3
    rpc_error: float = 0.0
    http_5xx: float = 0.0
    lose_send_answer: float = 0.0
    """Only for eth_sendRawTransaction: forwarded, answer lost."""
    spare: frozenset[str] = field(default_factory=lambda: frozenset({"eth_chainId"}))
    """Methods never faulted (a client's constructor asks the chain id once)."""


class RpcProxy:
    def __init__(self, upstream: str, seed: int, faults: Faults | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.seed = seed
        self.faults = faults or Faults()
        self.holds: dict[str, float] = {}
        self.injected: Counter[str] = Counter()
        self.sent = 0
        self.holding = 0
        """eth_sendRawTransaction requests being held right now (by `holds`)."""
        self._rng = random.Random(seed)  # noqa: S311 - a test's replayable draws
        self._lock = threading.Lock()
        self.enabled = True
        self.lose_next_sends = 0
        """The answers of this many coming eth_sendRawTransaction requests are lost (after the draws)."""
        self.refuse: Callable[[Any], Any] | None = None
        self.rewrite: Callable[[Any, Any], Any] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy._handle(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpcproxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RpcProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ one request

    def _draw(self, method: str) -> str | None:
        f = self.faults
        if not self.enabled or method in f.spare:
            return None
        with self._lock:
            if method == SEND and self.lose_next_sends > 0:
                self.lose_next_sends -= 1
                self.injected["lose_send_answer"] += 1
                return "lose_send_answer"
            x = self._rng.random()
            for name, p in (
                ("drop", f.drop),
                ("delay", f.delay),
                ("rpc_error", f.rpc_error),
                ("http_5xx", f.http_5xx),
                ("lose_send_answer", f.lose_send_answer if method == SEND else 0.0),
            ):
                if x < p:
                    self.injected[name] += 1
                    return name
                x -= p
        return None

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        method = parsed.get("method", "") if isinstance(parsed, dict) else "batch"
        fault = self._draw(method)
        hold = self.holds.get(method, self.holds.get("*", 0.0))
        if hold:
            with self._lock:
                self.holding += method == SEND
            try:
                time.sleep(hold)
            finally:
                with self._lock:
                    self.holding -= method == SEND
        if fault == "drop":
            h.close_connection = True
            return
        if fault == "delay":
            time.sleep(self.faults.delay_s)
        if fault == "rpc_error":
            rid = parsed.get("id") if isinstance(parsed, dict) else None
            answer = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": "injected fault"}}
            self._answer(h, 200, json.dumps(answer).encode())
            return
        if fault == "http_5xx":
            self._answer(h, 502, b"bad gateway (injected)")
            return
        if self.refuse is not None:
            refused = self.refuse(parsed)
            if refused is not None:
                self._answer(h, 200, json.dumps(refused).encode())
                return
        status, data = self._forward(body)
        if self.rewrite is not None and status == 200:
            answer = self.rewrite(parsed, json.loads(data))
            if answer is LOST:
                h.close_connection = True
                return
            data = json.dumps(answer).encode()
        if method == SEND:
            with self._lock:
                self.sent += 1
        if fault == "lose_send_answer":
            h.close_connection = True
            return
        self._answer(h, status, data)

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=60)
        try:
            conn.request("POST", self.upstream.path or "/", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 502, b"upstream unreachable"
        finally:
            conn.close()

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass

"""A stand-in watchtower implementing the HTTP contract the node's client is written against, in memory.

The real tower (statechannel.watchtower) runs in the end-to-end tests; this one exists for what a real tower
cannot be made to do on demand: answer unknown_channel a set number of times, sign receipts with the wrong
key, watch another chain, hold a newer version than the client, or go down and come back. It checks what it
is sent as strictly as a real tower would (both signatures, decimal-string transfers), so the client's wire
format is tested too, and the client's request signatures are checked. The typed digests of requests and
receipts are computed here independently, from the EIP-712 rules and their type strings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from statechannel.core.crypto import PrivateKey, Signature, recover
from statechannel.core.eip712 import state_digest, state_hash
from statechannel.core.types import ChannelParams, Domain, State, address_from_hex, to_checksum


def _typed(domain: Domain, struct: bytes) -> bytes:
    separator = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak(b"statechannel"),
                keccak(b"1"),
                domain.chain_id,
                domain.adjudicator,
            ],
        )
    )
    return keccak(b"\x19\x01" + separator + struct)


def receipt_digest(domain: Domain, channel_id: bytes, version: int, state: bytes, tower: bytes, block: int) -> bytes:
    typehash = keccak(
        b"TowerReceipt(bytes32 channelId,uint48 version,bytes32 stateHash,address tower,uint64 fromBlock)"
    )
    return _typed(
        domain,
        keccak(
            abi_encode(
                ["bytes32", "bytes32", "uint48", "bytes32", "address", "uint64"],
                [typehash, channel_id, version, state, tower, block],
            )
        ),
    )


def request_digest(domain: Domain, tower: bytes, channel_id: bytes, request: bytes, timestamp: int) -> bytes:
    typehash = keccak(b"TowerRequest(address tower,bytes32 channelId,bytes32 request,uint64 timestamp)")
    return _typed(
        domain,
        keccak(
            abi_encode(
                ["bytes32", "address", "bytes32", "bytes32", "uint64"],
                [typehash, tower, channel_id, request, timestamp],
            )
        ),
    )


def register_request(p: ChannelParams) -> bytes:
    return keccak(
        abi_encode(
            ["bytes32", "address", "address", "uint256", "uint256"],
            [keccak(b"statechannel-tower-register"), p.a, p.b, p.challenge_period, p.nonce],
        )
    )


def _error(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail}}, status_code=status)


@dataclass
class FakeTower:
    domain: Domain
    key: PrivateKey = field(default_factory=lambda: PrivateKey(keccak(b"fake tower")))
    unknown_for: int = 0
    """Answer unknown_channel to this many registrations first (an open not yet mined)."""
    signer: PrivateKey | None = None
    """Sign receipts with this key instead of `key` (a lying or misconfigured tower)."""
    chain_id: int | None = None
    """Report this chain id in /info instead of the domain's."""
    unavailable: bool = False
    """Answer every request with 503."""
    bad_receipt: str | None = None
    """Answer with a receipt that names something else than what was pushed: 'version', 'state' or 'tower'."""
    from_block: int = 7
    """The block the receipts say the tower protects from."""
    terms: dict[str, Any] | None = None
    """A paid tower's terms, served in /info and in every 402 (a test may change them: a tower raising its price)."""
    demand: Callable[[], dict[str, Any]] | None = None
    """While set, every push is answered 402 with this billing view (a tower claiming whatever it likes)."""
    held: dict[bytes, int] = field(default_factory=dict)
    clients: dict[bytes, set[bytes]] = field(default_factory=dict)
    """Per channel, the participants whose signed requests came in."""
    params: dict[bytes, ChannelParams] = field(default_factory=dict)
    requests: list[tuple[str, int | None]] = field(default_factory=list)

    def states_posted(self) -> list[int]:
        return [v for path, v in self.requests if path == "/states" and v is not None]

    def _client(self, body: dict[str, Any], p: ChannelParams, request: bytes) -> bytes | None:
        client = address_from_hex(body["client"])
        cid = p.channel_id(self.domain.chain_id, self.domain.adjudicator)
        digest = request_digest(self.domain, self.key.address, cid, request, int(body["timestamp"]))
        if client not in (p.a, p.b) or recover(digest, Signature.from_bytes(bytes.fromhex(body["auth"][2:]))) != client:
            return None
        self.clients.setdefault(cid, set()).add(client)
        return client

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def outage(request: Request, call_next: Any) -> Any:
            if self.unavailable:
                return _error(503, "unavailable", "down for the test")
            return await call_next(request)

        @app.get("/info")
        async def info() -> dict[str, Any]:
            self.requests.append(("/info", None))
            paid = {} if self.terms is None else {"terms": self.terms}
            return paid | {
                "address": to_checksum(self.key.address),
                "chain_id": self.chain_id if self.chain_id is not None else self.domain.chain_id,
                "adjudicator": to_checksum(self.domain.adjudicator),
                "channels": len(self.params),
                "head": 0,
            }

        @app.post("/channels")
        async def register(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(("/channels", None))
            p = ChannelParams(
                address_from_hex(body["a"]), address_from_hex(body["b"]), body["challenge_period"], int(body["nonce"])
            )
            assert isinstance(body["nonce"], str)
            if self._client(body, p, register_request(p)) is None:
                return _error(401, "unauthorized", "not signed by a participant")
            if self.unknown_for > 0:
                self.unknown_for -= 1
                return _error(404, "unknown_channel", "not on chain yet")
            cid = p.channel_id(self.domain.chain_id, self.domain.adjudicator)
            status = 200 if cid in self.params else 201
            self.params[cid] = p
            return JSONResponse({"channel_id": "0x" + cid.hex()}, status_code=status)

        @app.post("/states")
        async def push(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(("/states", body["version"]))
            cid = bytes.fromhex(body["channel_id"][2:])
            p = self.params.get(cid)
            if p is None:
                return _error(404, "unknown_channel", "register it first")
            assert all(isinstance(t, str) for t in body["transfers"])
            state = State(
                cid,
                body["version"],
                tuple(address_from_hex(a) for a in body["assets"]),
                tuple(int(t) for t in body["transfers"]),
                body["is_final"],
                bytes.fromhex(body["app_data"][2:]),
            )
            if self._client(body, p, state_hash(state)) is None:
                return _error(401, "unauthorized", "not signed by a participant")
            digest = state_digest(self.domain, state)
            for who, sig in ((p.a, body["sig_a"]), (p.b, body["sig_b"])):
                if recover(digest, Signature.from_bytes(bytes.fromhex(sig[2:]))) != who:
                    return _error(400, "wrong_signer", "not signed by both")
            if self.demand is not None:
                billing = {"reason": "payment_required", "detail": "pay up", "billing": self.demand()}
                return JSONResponse({"error": billing | {"terms": self.terms}}, status_code=402)
            if self.held.get(cid, -1) >= state.version:
                return _error(409, "stale_version", f"holding {self.held[cid]}")
            self.held[cid] = state.version
            version, named, tower = state.version, state_hash(state), self.key.address
            if self.bad_receipt == "version":
                version += 1
            elif self.bad_receipt == "state":
                named = keccak(named)
            elif self.bad_receipt == "tower":
                tower = (self.signer or self.key).address
            sig = (self.signer or self.key).sign_digest(
                receipt_digest(self.domain, cid, version, named, tower, self.from_block)
            )
            return JSONResponse(
                {
                    "channel_id": body["channel_id"],
                    "version": version,
                    "state_hash": "0x" + named.hex(),
                    "tower": to_checksum(tower),
                    "from_block": self.from_block,
                    "receipt": "0x" + sig.to_bytes().hex(),
                }
            )

        @app.get("/channels/{channel_id}")
        async def channel(channel_id: str) -> dict[str, Any]:
            cid = bytes.fromhex(channel_id[2:])
            return {"channel_id": channel_id, "version": self.held.get(cid), "status": "watching"}

        return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test owns the signals
        yield


@asynccontextmanager
async def serve(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 in the running loop (port 0: any free one); yields its URL."""
    sock = socket.create_server(("127.0.0.1", port))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()

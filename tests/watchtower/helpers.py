"""Building blocks for tower tests: keys, channels on a chain, both-signed states, a tower in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import Chain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import state_digest
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObservedClose
from statechannel.core.types import ETH, ChannelParams, Domain, State, to_checksum
from statechannel.watchtower.sender import PlainSender, Sender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore

ETHER = 10**18
TIMEOUT = 30.0


def key(label: str) -> PrivateKey:
    return PrivateKey(keccak(f"statechannel tower test {label}".encode()))


@dataclass(frozen=True)
class Setup:
    chain: Chain
    adj: Adjudicator
    a: PrivateKey
    b: PrivateKey
    tower_key: PrivateKey


def deploy(chain: Chain, label: str) -> Setup:
    a, b, deployer, tower_key = (key(f"{label} {who}") for who in ("A", "B", "deployer", "tower"))
    for k in (a, b, deployer, tower_key):
        chain.fund(k.address, 100 * ETHER)
    adj, _ = Adjudicator.deploy(chain, deployer)
    return Setup(chain, adj, a, b, tower_key)


def open_channel(
    s: Setup, nonce: int, period: int = 1000, deposit_a: int = ETHER, deposit_b: int = ETHER
) -> ChannelParams:
    params = ChannelParams(s.a.address, s.b.address, period, nonce)
    s.adj.open(s.a, params, deposit_a)
    if deposit_b:
        s.adj.deposit(s.b, s.adj.channel_id(params), 1, deposit_b)
    return params


def sign(domain: Domain, state: State, a: PrivateKey, b: PrivateKey) -> SignedState:
    digest = state_digest(domain, state)
    return SignedState(state, a.sign_digest(digest), b.sign_digest(digest))


def eth_state(cid: bytes, version: int, transfer: int) -> State:
    return State(cid, version, (ETH,), (transfer,))


def state_json(signed: SignedState, channel_id: bytes | None = None) -> dict[str, Any]:
    s = signed.state
    return {
        "channel_id": "0x" + (channel_id or s.channel_id).hex(),
        "version": s.version,
        "is_final": s.is_final,
        "assets": [to_checksum(x) for x in s.assets],
        "transfers": [str(t) for t in s.transfers],
        "app_data": "0x" + s.app_data.hex(),
        "sig_a": "0x" + signed.sig_a.to_bytes().hex(),
        "sig_b": "0x" + signed.sig_b.to_bytes().hex(),
    }


def params_json(p: ChannelParams) -> dict[str, Any]:
    return {"a": to_checksum(p.a), "b": to_checksum(p.b), "challenge_period": p.challenge_period, "nonce": str(p.nonce)}


def close_with(s: Setup, params: ChannelParams, signed: SignedState) -> None:
    s.adj.close(s.a, params, signed.state, signed.sig_a, signed.sig_b)


def closes(s: Setup, cid: bytes, since: int = 0) -> list[ChainObservedClose]:
    return [e for e in s.adj.events(since) if isinstance(e, ChainObservedClose) and e.channel_id == cid]


@asynccontextmanager
async def running_tower(
    s: Setup, db: Path, *, sender: Sender | None = None, poll_interval: float = 0.02
) -> AsyncIterator[Tower]:
    store = SqliteTowerStore(db, s.chain.chain_id, s.adj.address)
    tower = Tower(
        s.chain,
        s.adj.address,
        s.tower_key,
        store,
        sender or PlainSender(s.chain, s.tower_key),
        poll_interval=poll_interval,
    )
    await tower.start()
    try:
        yield tower
    finally:
        await tower.stop()
        await store.close()


async def eventually(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)

"""Building blocks for tower tests: keys, channels on a chain, both-signed states, a tower in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.base import Chain
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import state_digest
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObservedClose
from statechannel.core.tower import (
    NO_CHANNEL,
    ClientAuth,
    Receipt,
    account_request,
    authorize,
    push_request,
    register_request,
)
from statechannel.core.types import ETH, ChannelParams, Domain, State, to_checksum
from statechannel.watchtower.billing import Billing
from statechannel.watchtower.records import WatchedChannel
from statechannel.watchtower.sender import OneByOne, OnSent, PlainSender, Sender, Settled
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


def _auth_json(s: Setup, by: PrivateKey | None, channel_id: bytes, request: bytes) -> dict[str, Any]:
    who = by or s.b
    auth = authorize(who, s.adj.domain, s.tower_key.address, channel_id, request, int(time.time()))
    return {
        "client": to_checksum(who.address),
        "timestamp": auth.timestamp,
        "auth": "0x" + auth.signature.to_bytes().hex(),
    }


def account_json(s: Setup, holder: PrivateKey, by: PrivateKey) -> dict[str, Any]:
    """A read of `holder`'s account at the setup's tower, signed by `by`."""
    return _auth_json(s, by, NO_CHANNEL, account_request(holder.address))


def state_json(
    signed: SignedState, s: Setup, channel_id: bytes | None = None, by: PrivateKey | None = None
) -> dict[str, Any]:
    """A push body, signed by participant `by` (B unless told) for the setup's tower."""
    st = signed.state if channel_id is None else replace(signed.state, channel_id=channel_id)
    return {
        "channel_id": "0x" + st.channel_id.hex(),
        "version": st.version,
        "is_final": st.is_final,
        "assets": [to_checksum(x) for x in st.assets],
        "transfers": [str(t) for t in st.transfers],
        "app_data": "0x" + st.app_data.hex(),
        "sig_a": "0x" + signed.sig_a.to_bytes().hex(),
        "sig_b": "0x" + signed.sig_b.to_bytes().hex(),
        **_auth_json(s, by, st.channel_id, push_request(SignedState(st, signed.sig_a, signed.sig_b))),
    }


def params_json(p: ChannelParams, s: Setup, by: PrivateKey | None = None) -> dict[str, Any]:
    cid = p.channel_id(s.chain.chain_id, s.adj.address)
    return {
        "a": to_checksum(p.a),
        "b": to_checksum(p.b),
        "challenge_period": p.challenge_period,
        "nonce": str(p.nonce),
        **_auth_json(s, by, cid, register_request(p)),
    }


def close_with(s: Setup, params: ChannelParams, signed: SignedState) -> None:
    s.adj.close(s.a, params, signed.state, signed.sig_a, signed.sig_b)


def closes(s: Setup, cid: bytes, since: int = 0) -> list[ChainObservedClose]:
    return [e for e in s.adj.events(since) if isinstance(e, ChainObservedClose) and e.channel_id == cid]


def auth_for(tower: Tower, by: PrivateKey, channel_id: bytes, request: bytes, at: int | None = None) -> ClientAuth:
    when = int(time.time()) if at is None else at
    return authorize(by, tower.domain, tower.address, channel_id, request, when)


async def register(tower: Tower, params: ChannelParams, by: PrivateKey) -> tuple[bool, WatchedChannel]:
    """Register as participant `by` (a request signed for this tower, now)."""
    cid = params.channel_id(tower.domain.chain_id, tower.domain.adjudicator)
    return await tower.register(params, auth_for(tower, by, cid, register_request(params)))


async def push(tower: Tower, signed: SignedState, by: PrivateKey) -> tuple[WatchedChannel, Receipt, Signature]:
    """Push as participant `by`."""
    return await tower.push(signed, auth_for(tower, by, signed.state.channel_id, push_request(signed)))


@asynccontextmanager
async def running_tower(
    s: Setup,
    db: Path,
    *,
    sender: Sender | None = None,
    poll_interval: float = 0.02,
    billing: Callable[[SqliteTowerStore], Billing] | None = None,
) -> AsyncIterator[Tower]:
    """A tower on SQLite at `db`; `billing` makes it a paid one (given the tower's store)."""
    store = SqliteTowerStore(db, s.chain.chain_id, s.adj.address)
    tower = Tower(
        s.chain,
        s.adj.address,
        s.tower_key,
        store,
        sender or PlainSender(s.chain, s.tower_key),
        poll_interval=poll_interval,
        billing=billing(store) if billing is not None else None,
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


class Delegating(OneByOne):
    """A sender that hands everything to `inner`: a test's faulty sender overrides only what it faults."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner

    def submit(self, to: bytes, data: bytes, *, on_sent: OnSent | None = None) -> int:
        return self.inner.submit(to, data, on_sent=on_sent)

    def poll(self) -> list[Settled]:
        return self.inner.poll()

    def abandon(self, ticket: int) -> None:
        self.inner.abandon(ticket)

    def in_flight(self) -> int:
        return self.inner.in_flight()

    def reset(self) -> None:
        self.inner.reset()

"""The node's watchtower client against a stand-in tower over real HTTP: policies, coalescing, the retry
queue across restarts, receipt checking, and towers that are slow, dead, lying or on another chain."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from eth_hash.auto import keccak

from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey, Signature, recover
from statechannel.core.eip712 import state_digest, state_hash
from statechannel.core.errors import LocalError
from statechannel.core.io import SignedState
from statechannel.core.types import ETH, ChannelParams, Domain, State
from statechannel.node.towers import TowerClient
from statechannel.node.towerstate import TowerPolicy
from tests.anvil import free_port
from tests.towers.fake import FakeTower, receipt_digest, serve

T = TypeVar("T")
KA, KB = PrivateKey(keccak(b"towers test A")), PrivateKey(keccak(b"towers test B"))
DOMAIN = Domain(31337, b"\xad" * 20)
PARAMS = ChannelParams(KA.address, KB.address, 600, 7)
CID = PARAMS.channel_id(DOMAIN.chain_id, DOMAIN.adjudicator)
FAST = TowerPolicy(flush_timeout=1.0, request_timeout=1.0)


def channel(version: int) -> Channel:
    """B's view of a channel whose latest state, signed by both, is `version` (transfer = version wei)."""
    state = State(CID, version, (ETH,), (version,))
    digest = state_digest(DOMAIN, state)
    signed = SignedState(state, KA.sign_digest(digest), KB.sign_digest(digest))
    return Channel(PARAMS, DOMAIN, 1, (ETH,), ((10**6, 0),), Phase.OPEN, signed, funded=((10**6, 0),))


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    async def main() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(main())


async def eventually(check: Callable[[], Any], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_policy_parses_and_refuses_nonsense() -> None:
    assert TowerPolicy.parse("every-update") == TowerPolicy()
    assert TowerPolicy.parse("every:10") == TowerPolicy(every_updates=10)
    assert TowerPolicy.parse("every:250ms") == TowerPolicy(every_ms=250)
    assert TowerPolicy.parse("every:2s") == TowerPolicy(every_ms=2000)
    for bad in ("", "every", "every:0", "every:-1", "every:1h", "always"):
        with pytest.raises(LocalError):
            TowerPolicy.parse(bad)
    with pytest.raises(LocalError):
        TowerClient(["ftp://tower"], Path("unused"))
    with pytest.raises(LocalError):
        TowerClient([], Path("unused"))


def test_every_update_reaches_the_tower_with_a_verified_receipt(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN)
        async with serve(tower.app()) as url:
            client = TowerClient([url + "/"], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            for v in range(1, 21):
                client.offer(channel(v))
                await asyncio.sleep(0.002)
            client.offer(channel(7))  # a save that completed late: never replaces a newer state
            await eventually(lambda: [p.version for p in client.protection(CID)] == [20])
            [p] = client.protection(CID)
            named = state_hash(channel(20).latest.state)  # type: ignore[union-attr]
            assert (p.tower, p.address, p.version, p.state_hash, p.from_block) == (url, tower.key.address, 20, named, 7)
            digest = receipt_digest(DOMAIN, CID, 20, named, tower.key.address, 7)
            assert recover(digest, Signature.from_bytes(p.receipt)) == tower.key.address
            assert tower.clients[CID] == {KB.address}  # every request was signed by this node's key
            posted = tower.states_posted()
            assert posted == sorted(set(posted)), "each version at most once, newest last"
            await client.close()
            assert tower.requests.count(("/channels", None)) == 1

    run(scenario)


def test_every_n_updates_pushes_only_the_newest_then_flushes_on_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", TowerPolicy(every_updates=3, flush_timeout=2))
            await client.start(DOMAIN, [], KB)
            for v in range(1, 8):  # released at the 3rd and 6th offer; the worker only ever sees the newest
                client.offer(channel(v))
            await eventually(lambda: tower.held.get(CID) == 6)
            await asyncio.sleep(0.2)
            assert tower.states_posted() == [6]
            await client.close()
            assert tower.states_posted() == [6, 7]

    run(scenario)


def test_every_t_ms_coalesces_a_burst_into_one_push(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", TowerPolicy(every_ms=600))
            await client.start(DOMAIN, [], KB)
            for v in range(1, 11):
                client.offer(channel(v))
            await asyncio.sleep(0.15)
            assert tower.states_posted() == []
            await eventually(lambda: tower.held.get(CID) == 10, timeout=5)
            assert tower.states_posted() == [10]
            await client.close()

    run(scenario)


def test_registration_is_retried_while_the_tower_has_not_seen_the_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN, unknown_for=3)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            client.offer(channel(1))
            await eventually(lambda: client.protection(CID) != [])
            assert tower.requests.count(("/channels", None)) == 4
            assert [p.version for p in client.protection(CID)] == [1]
            await client.close()

    run(scenario)


def test_a_tower_holding_a_newer_version_counts_as_done_and_is_not_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN, held={CID: 10}, params={CID: PARAMS})
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            client.offer(channel(5))
            await eventually(lambda: tower.states_posted() == [5])
            await asyncio.sleep(0.5)
            assert tower.states_posted() == [5] and client.protection(CID) == []
            client.offer(channel(11))
            await eventually(lambda: [p.version for p in client.protection(CID)] == [11])
            await client.close()

    run(scenario)


def test_a_receipt_not_signed_by_the_towers_key_is_not_protection(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN, signer=PrivateKey(keccak(b"someone else")))
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            client.offer(channel(1))
            await eventually(lambda: tower.states_posted() == [1])
            await asyncio.sleep(0.5)
            assert tower.states_posted() == [1], "a refused version is not retried"
            assert client.protection(CID) == []
            client.offer(channel(2))  # the client reads the tower's key again before trying the next one
            await eventually(lambda: tower.states_posted() == [1, 2])
            assert tower.requests.count(("/info", None)) == 2
            assert client.protection(CID) == []
            await client.close()

    run(scenario)


@pytest.mark.parametrize("lie", ["version", "state", "tower"])
def test_a_receipt_that_names_something_else_is_an_error_not_protection(tmp_path: Path, lie: str) -> None:
    """Issue 10, deliverable 3: the tower's key signed it, but for another version, state or tower."""

    async def scenario() -> None:
        tower = FakeTower(DOMAIN, bad_receipt=lie, signer=PrivateKey(keccak(b"other")) if lie == "tower" else None)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            client.offer(channel(1))
            await eventually(lambda: client.receipt_errors(CID) != [])
            assert client.protection(CID) == []
            [(where, why)] = client.receipt_errors(CID)
            assert where == url and why
            tower.bad_receipt, tower.signer = None, None
            client.offer(channel(2))
            await eventually(lambda: [p.version for p in client.protection(CID)] == [2])
            assert client.receipt_errors(CID) == []
            await client.close()

    run(scenario)


def test_a_tower_on_another_chain_gets_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN, chain_id=1)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", TowerPolicy(flush_timeout=0.3))
            await client.start(DOMAIN, [], KB)
            client.offer(channel(1))
            await eventually(lambda: ("/info", None) in tower.requests)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await client.close()
            assert time.monotonic() - started < 2
            assert tower.states_posted() == [] and client.protection(CID) == []

    run(scenario)


def test_the_queue_and_the_receipts_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    journal = tmp_path / "towers.db"

    async def scenario() -> None:
        # the tower is down: the flush gives up at its bound and the state stays queued on disk
        client = TowerClient([url], journal, TowerPolicy(every_updates=100, flush_timeout=0.5))
        await client.start(DOMAIN, [], KB)
        client.offer(channel(3))
        started = time.monotonic()
        await client.close()
        assert time.monotonic() - started < 3

        tower = FakeTower(DOMAIN)
        async with serve(tower.app(), port):
            client = TowerClient([url], journal, FAST)
            await client.start(DOMAIN, [], KB)  # no channel offered: the journal alone knows what is pending
            await eventually(lambda: client.protection(CID) != [])
            await client.close()

            client = TowerClient([url], journal, FAST)
            await client.start(DOMAIN, [channel(3)], KB)
            assert [p.version for p in client.protection(CID)] == [3]
            await asyncio.sleep(0.3)
            assert tower.states_posted() == [3], "an acknowledged version is not pushed again"
            await client.close()

            client = TowerClient([url], journal, FAST)  # a newer state the policy held back when the node died
            await client.start(DOMAIN, [channel(4)], KB)
            await eventually(lambda: [p.version for p in client.protection(CID)] == [4])
            await client.close()

    run(scenario)


def test_a_hanging_tower_slows_neither_offers_nor_the_other_tower(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN)
        with socket.create_server(("127.0.0.1", 0), backlog=64) as hanging:  # accepts connections, never answers
            dead = f"http://127.0.0.1:{hanging.getsockname()[1]}"
            async with serve(tower.app()) as url:
                policy = TowerPolicy(flush_timeout=1.0, request_timeout=0.5)
                client = TowerClient([dead, url], tmp_path / "towers.db", policy)
                await client.start(DOMAIN, [], KB)
                chans = [channel(v) for v in range(1, 301)]
                spent = 0.0
                for ch in chans:
                    started = time.perf_counter()
                    client.offer(ch)
                    spent += time.perf_counter() - started
                    await asyncio.sleep(0)
                assert spent < 0.2, f"300 offers took {spent:.3f} s"
                await eventually(lambda: [p.version for p in client.protection(CID)] == [300], timeout=5)
                started = time.monotonic()
                await client.close()
                assert time.monotonic() - started < 3
                assert [p.tower for p in client.protection(CID)] == [url]

    run(scenario)


def test_an_outage_is_retried_with_backoff_until_the_tower_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        tower = FakeTower(DOMAIN, unavailable=True)
        async with serve(tower.app()) as url:
            client = TowerClient([url], tmp_path / "towers.db", FAST)
            await client.start(DOMAIN, [], KB)
            client.offer(channel(1))
            await asyncio.sleep(1.0)
            tower.unavailable = False
            await eventually(lambda: tower.held.get(CID) == 1, timeout=5)
            await client.close()

    run(scenario)

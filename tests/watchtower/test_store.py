"""One suite, both tower stores: SQLite and a real PostgreSQL server started by the fixture."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from statechannel.core.io import SignedState
from statechannel.core.types import ETH, ChannelParams, Domain, State
from statechannel.store.base import Checkpoint
from statechannel.watchtower.records import Dispute, TowerStatus, WatchedChannel, encode_state
from statechannel.watchtower.sqlbase import SqlTowerStore
from statechannel.watchtower.storage import (
    PutOutcome,
    PutResult,
    QuotaExceeded,
    Quotas,
    StoreMismatch,
    TowerStoreClosed,
)
from tests.watchtower.conftest import StoreFactory
from tests.watchtower.helpers import key, sign

CHAIN_ID = 31337
ADJ = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
DOMAIN = Domain(CHAIN_ID, ADJ)
A, B = key("store A"), key("store B")
TOKEN = bytes.fromhex("00000000000000000000000000000000000000aa")


def channel(nonce: int) -> WatchedChannel:
    params = ChannelParams(A.address, B.address, 3600, nonce)
    return WatchedChannel(params.channel_id(CHAIN_ID, ADJ), params)


def signed(ch: WatchedChannel, version: int, transfer: int = 0) -> SignedState:
    state = State(
        ch.channel_id, version, (ETH, TOKEN), (transfer, -5), is_final=version % 7 == 6, app_data=b"\x01" * 32
    )
    return sign(DOMAIN, state, A, B)


def put(store: SqlTowerStore, s: SignedState, client: int = 1, quotas: Quotas | None = None) -> Awaitable[PutResult]:
    return store.put_state(s, client, (A, B)[client].address, quotas)


def dispute(version: int, block: int, index: int = 0) -> Dispute:
    return Dispute(version, 1_700_000_000 + block, bytes([version]) * 32, block, bytes([block]) * 32, index)


def test_register_push_and_versions(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        ch, other = channel(1), channel(2)
        assert (await put(store, signed(ch, 1))).outcome is PutOutcome.UNKNOWN
        assert await store.register(ch, B.address) == (True, ch)
        assert await store.register(ch, A.address) == (False, ch)
        assert store.count() == 1 and store.get(other.channel_id) is None
        assert store.client_usage(B.address) == (1, 0) and store.client_usage(A.address) == (0, 0)
        v1 = signed(ch, 1, 10)
        first = await put(store, v1)
        assert first.outcome is PutOutcome.ACCEPTED and first.channel is not None and first.channel.latest == v1
        assert (await put(store, v1)).outcome is PutOutcome.SAME
        assert (await put(store, signed(ch, 1, 11))).outcome is PutOutcome.STALE  # another state, same version
        v3 = signed(ch, 3, -(2**200))
        assert (await put(store, v3)).outcome is PutOutcome.ACCEPTED
        assert (await put(store, signed(ch, 2))).outcome is PutOutcome.ACCEPTED  # a slot was free
        stale = await put(store, signed(ch, 0, 10))  # three slots full, all higher
        assert stale.outcome is PutOutcome.STALE and stale.channel is not None and stale.channel.version == 3
        assert (await put(store, signed(ch, 4))).outcome is PutOutcome.ACCEPTED  # evicts version 1
        held = store.get(ch.channel_id)
        assert held is not None and held.params == ch.params
        assert [x.state.version for x in held.of_client(1)] == [4, 3, 2] and held.of_client(0) == []
        await store.register(other, B.address)
        assert store.count() == 2 and store.client_usage(B.address)[0] == 2
        await store.close()

    asyncio.run(run())


def test_one_participant_never_displaces_the_other(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        ch = channel(6)
        await store.register(ch, B.address)
        mine = signed(ch, 2, 5)
        await put(store, mine, client=1)
        for v in range(3, 40):  # the other side floods higher versions
            assert (await put(store, signed(ch, v, 1), client=0)).outcome is PutOutcome.ACCEPTED
        held = store.get(ch.channel_id)
        assert held is not None and held.of_client(1) == [mine]
        assert [x.state.version for x in held.of_client(0)] == [39, 38, 37]
        assert held.candidates()[-1] == mine and held.latest == signed(ch, 39, 1)
        await store.close()

    asyncio.run(run())


def test_quotas_per_client(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        state_bytes = len(encode_state(signed(channel(7), 1)))
        q = Quotas(channels=2, states=2, bytes=3 * state_bytes)
        chs = [channel(n) for n in (7, 8, 9)]
        await store.register(chs[0], B.address, q)
        await store.register(chs[1], B.address, q)
        with pytest.raises(QuotaExceeded):
            await store.register(chs[2], B.address, q)
        assert store.get(chs[2].channel_id) is None and store.count() == 2
        assert (await store.register(chs[2], A.address, q))[0] is True  # A's quota is A's
        await put(store, signed(chs[0], 1), quotas=q)
        await put(store, signed(chs[0], 2), quotas=q)
        await put(store, signed(chs[0], 3), quotas=q)  # replaces version 1: no more bytes
        await put(store, signed(chs[1], 1), quotas=q)
        with pytest.raises(QuotaExceeded):
            await put(store, signed(chs[1], 2), quotas=q)
        assert store.client_usage(B.address) == (2, 3 * state_bytes)
        held = store.get(chs[1].channel_id)
        assert held is not None and [x.state.version for x in held.of_client(1)] == [1]
        await put(store, signed(chs[1], 2), client=0, quotas=q)  # A's bytes are A's
        await store.close()

    asyncio.run(run())


def test_concurrent_pushes_keep_the_highest(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        ch = channel(3)
        await store.register(ch)
        states = sorted((signed(ch, v) for v in range(1, 121)), key=lambda s: s.state.version * 37 % 121)
        await asyncio.gather(*(put(store, s) for s in states))
        held = store.get(ch.channel_id)
        assert held is not None and [x.state.version for x in held.of_client(1)] == [120, 119, 118]
        assert store.count() == 1
        await store.close()

    asyncio.run(run())


def test_chain_records_apply_once_in_order(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        ch, quiet = channel(4), channel(5)
        await store.register(ch)
        await store.register(quiet)
        assert await store.apply_close(b"\x09" * 32, dispute(2, 10)) == (False, None)
        changed, row = await store.apply_close(ch.channel_id, dispute(2, 10))
        assert changed and row is not None and row.status is TowerStatus.CHALLENGED and row.dispute == dispute(2, 10)
        assert (await store.apply_close(ch.channel_id, dispute(2, 10)))[0] is False  # the same event again
        assert (await store.apply_close(ch.channel_id, dispute(1, 9, 4)))[0] is False  # an older one
        changed, row = await store.apply_close(ch.channel_id, dispute(5, 10, 1))
        assert changed and row is not None and row.dispute is not None and row.dispute.version == 5
        assert [c.channel_id for c in store.disputed()] == [ch.channel_id]
        assert (await store.apply_concluded(ch.channel_id))[0] is True
        assert (await store.apply_concluded(ch.channel_id))[0] is False
        assert (await store.apply_close(ch.channel_id, dispute(6, 11)))[0] is False  # concluded is final
        closed = store.get(ch.channel_id)
        assert closed is not None and closed.status is TowerStatus.CLOSED and store.disputed() == []
        reset = await store.set_dispute(quiet.channel_id, TowerStatus.CHALLENGED, dispute(1, 3))
        assert reset is not None and store.disputed()[0].dispute == dispute(1, 3)
        back = await store.set_dispute(quiet.channel_id, TowerStatus.WATCHING, None)
        assert back is not None and back.dispute is None and store.disputed() == []
        await store.close()

    asyncio.run(run())


def test_everything_survives_a_reopen(open_store: StoreFactory) -> None:
    async def run() -> None:
        store = open_store(CHAIN_ID, ADJ)
        assert store.checkpoint() is None
        chs = [channel(n) for n in range(10, 20)]
        assert await store.bulk_register(chs) == 10
        assert await store.bulk_register(chs[:3]) == 0
        await put(store, signed(chs[0], 9, 1))
        await store.apply_close(chs[1].channel_id, dispute(4, 20))
        await store.save_checkpoint(Checkpoint(19, b"\x01" * 32))
        await store.save_checkpoint(Checkpoint(20, b"\x02" * 32))
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(TowerStoreClosed):
            await put(store, signed(chs[0], 10))

        again = open_store(CHAIN_ID, ADJ)
        assert again.count() == 10 and again.checkpoint() == Checkpoint(20, b"\x02" * 32)
        first = again.get(chs[0].channel_id)
        assert first is not None and first.latest == signed(chs[0], 9, 1)
        assert [c.channel_id for c in again.disputed()] == [chs[1].channel_id]
        await again.close()
        with pytest.raises(StoreMismatch):
            open_store(CHAIN_ID + 1, ADJ)

    asyncio.run(run())

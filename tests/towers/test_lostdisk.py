"""Recovery without a backup (decision 0011), on the embedded chain and on anvil, with a real tower app in process:
the node's channels are found from its key alone, the tower's states are checked one by one, and a tower that
shows a forged state, another channel's state or another channel's parameters is refused with the reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from statechannel.chain.adjudicator import Status
from statechannel.chain.base import Chain
from statechannel.core.channel import Phase
from statechannel.core.errors import Reason, StatechannelError
from statechannel.core.io import ActionCloseUnilateral, ActionPay, Payment, SubmitTxClose
from statechannel.core.machine import transition
from statechannel.core.observed import ChainObservedClose
from statechannel.core.persist import decode_channel
from statechannel.core.recovery import adopt
from statechannel.core.types import ETH, to_checksum
from statechannel.lostdisk import Found, find_channels, recover, tower_states
from statechannel.store.sqlite import SqliteStore
from statechannel.watchtower.http import create_tower_app
from statechannel.watchtower.reads import state_view
from tests.watchtower.helpers import deploy, eth_state, key, open_channel, push, register, running_tower, sign


def stored(data_dir: Path) -> list[Any]:
    async def load() -> list[Any]:
        store = SqliteStore(data_dir / "node.db")
        try:
            return [decode_channel(blob) for blob in store.load_channels().values()]
        finally:
            await store.close()

    return asyncio.run(load())


def test_channels_are_found_from_the_key_and_the_towers_best_state_is_recovered(tmp_path: Path, chain: Chain) -> None:
    s = deploy(chain, "lostdisk")
    mine = open_channel(s, 1)
    cid = s.adj.channel_id(mine)
    assert [f.channel_id for f in find_channels(s.adj, s.a.address)] == [cid]
    stranger = key("lostdisk stranger")
    assert find_channels(s.adj, stranger.address) == []
    v4 = sign(s.adj.domain, eth_state(cid, 4, 400), s.a, s.b)
    v6 = sign(s.adj.domain, eth_state(cid, 6, 600), s.a, s.b)
    report: list[Any] = []
    stranger_read: list[str | None] = []

    async def scenario() -> None:
        async with running_tower(s, tmp_path / "t.db") as tower:
            await register(tower, mine, s.a)
            await push(tower, v4, s.a)
            await push(tower, v6, s.b)  # the counterparty's push counts too: A signed it
            app, loop = create_tower_app(tower), asyncio.get_running_loop()

            def run() -> None:
                with httpx.Client(transport=_Sync(app, loop), base_url="http://tower") as http:
                    report.extend(recover(s.adj, s.a, ["http://tower"], tmp_path / "a", {}, http=http))
                    # someone who is not a participant learns nothing from the tower: its read is refused (401)
                    told, shown, bad, why = tower_states(http, "http://tower", stranger, s.adj, Found(cid, mine))
                    assert (told, shown, bad) == (None, [], [])
                    stranger_read.append(why)

            await asyncio.to_thread(run)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    [r] = report
    assert (r.version, r.status, r.phase, r.refused) == (6, "open", "recovering", [])
    assert any("above version 6" in u for u in r.unproven)
    [ch] = stored(tmp_path / "a")
    assert ch.latest == v6 and ch.signed_upto == 6 and ch.me == 0 and ch.funded == ((10**18, 10**18),)
    [why] = stranger_read
    assert why is not None and "refused the read: unauthorized" in why
    # the rebuilt channel signs nothing more (A may have signed above 6: a new version 7 could be a second one)
    with pytest.raises(StatechannelError) as refused:
        transition(ch, ActionPay((Payment("p1", ETH, 1),)), s.a)
    assert refused.value.reason is Reason.WRONG_PHASE
    # the peer's Sync proving a higher both-signed state is taken; a forged one is not
    v7 = sign(s.adj.domain, eth_state(cid, 7, 700), s.a, s.b)
    with pytest.raises(StatechannelError):
        adopt(ch, sign(s.adj.domain, eth_state(cid, 8, 10**18), s.b, s.b))
    ch, _ = adopt(ch, v7)
    assert (ch.latest, ch.signed_upto, ch.phase) == (v7, 7, Phase.RECOVERING)
    # and it closes with the highest it proves; the chain pays exactly that after the window
    _, effects = transition(ch, ActionCloseUnilateral(), s.a)
    [close] = [e for e in effects if isinstance(e, SubmitTxClose)]
    assert close.signed == v7
    rec = s.adj.receipt_events(s.adj.close(s.a, ch.params, v7.state, v7.sig_a, v7.sig_b))[0]
    assert isinstance(rec, ChainObservedClose) and rec.version == 7
    a0, b0 = s.chain.balance(s.a.address), s.chain.balance(s.b.address)
    s.chain.advance_time(mine.challenge_period + 1)
    s.adj.settle(s.tower_key, ch.params, v7.state, rec.finalizes_at)
    assert s.chain.balance(s.a.address) - a0 == 10**18 - 700
    assert s.chain.balance(s.b.address) - b0 == 10**18 + 700
    assert s.adj.channel(cid).status is Status.CONCLUDED


def test_a_tower_showing_forged_or_foreign_states_is_refused_with_the_reason(tmp_path: Path, chain: Chain) -> None:
    s = deploy(chain, "lostdisk hostile")
    mine, theirs = open_channel(s, 1), open_channel(s, 2)
    cid, oid = s.adj.channel_id(mine), s.adj.channel_id(theirs)
    good = sign(s.adj.domain, eth_state(cid, 3, 300), s.a, s.b)
    forged = sign(s.adj.domain, eth_state(cid, 9, 10**18), s.a, key("lostdisk forger"))
    foreign = sign(s.adj.domain, eth_state(oid, 12, 5), s.a, s.b)  # valid, but of another channel
    info = {"address": to_checksum(s.tower_key.address), "chain_id": s.chain.chain_id,
            "adjudicator": to_checksum(s.adj.address)}  # fmt: skip
    params = {"a": to_checksum(mine.a), "b": to_checksum(mine.b), "challenge_period": mine.challenge_period}

    def hostile(nonce: str, states: list[Any]) -> httpx.Client:
        def answer(req: httpx.Request) -> httpx.Response:
            if req.url.path == "/info":
                return httpx.Response(200, json=info)
            if req.url.path == f"/channels/0x{oid.hex()}/read":
                return httpx.Response(401, json={"error": {"reason": "unauthorized", "detail": "not yours"}})
            body = {**params, "nonce": nonce, "channel_id": "0x" + cid.hex(), "status": "watching",
                    "recorded_version": None, "finalizes_at": None, "states": states}  # fmt: skip
            return httpx.Response(200, json=body)

        return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://evil")

    views = [json.loads(state_view(0, x).model_dump_json()) for x in (forged, foreign, good)]
    with hostile("1", views) as http:
        report = recover(s.adj, s.a, ["http://evil"], tmp_path / "a", {}, http=http)
    r = next(x for x in report if x.channel_id == cid)
    assert r.version == 3, "only the genuine state is proof"
    assert sorted((x.version, x.reason) for x in r.refused) == [(9, "wrong_signer"), (12, "wrong_channel")]
    assert stored(tmp_path / "a")[0].latest == good
    # parameters of another channel (they do not hash to the id asked for): nothing from that tower counts
    with hostile("2", views) as http:
        [r2, _] = recover(s.adj, s.a, ["http://evil"], tmp_path / "b", {}, http=http)
    assert r2.version is None and r2.refused[0].reason == "wrong_channel" and stored(tmp_path / "b") == []
    assert any("no both-signed state proven" in u for u in r2.unproven)


class _Sync(httpx.BaseTransport):
    """The tower's ASGI app for a sync client in a worker thread: each request runs on the test's loop."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.inner, self.loop = httpx.ASGITransport(app=app), loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            resp = await self.inner.handle_async_request(request)
            return httpx.Response(resp.status_code, headers=resp.headers, content=await resp.aread())

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

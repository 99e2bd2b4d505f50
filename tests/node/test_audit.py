"""Attacks an audit of the money paths found against real nodes on the embedded EVM; each test failed
before its fix (the findings and their reproductions are summed up in the closing note of issue 9)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode

from statechannel.chain.adjudicator import Status, Token
from statechannel.chain.base import ChainError, TransactionReverted
from statechannel.contracts import load
from statechannel.core import closing
from statechannel.core import messages as m
from statechannel.core.channel import Phase
from statechannel.core.crypto import PrivateKey, recover
from statechannel.core.eip712 import state_digest
from statechannel.core.hashing import keccak
from statechannel.core.io import NotifyReceived, SendMessage, SubmitTxCloseCooperative
from statechannel.core.machine import open_channel
from statechannel.core.types import ETH, ChannelParams, State, to_checksum
from statechannel.node.chainio import ChainIO
from statechannel.node.node import Node
from statechannel.store.base import PaymentRecord
from statechannel.store.sqlite import SqliteStore
from tests.node.test_safety import ETHER, RawPeer, World, chain_of, run, until
from tests.terms import TEST_TERMS


def test_b_never_signs_two_prefund_states_of_one_channel(tmp_path: Path) -> None:
    """The channel id covers neither assets nor deposits: a second OpenRequest of the same id with other
    assets got B's signature on a second version-0 state (invariant 3). Now only the very request B
    accepted is answered again; another is refused."""

    async def scenario(w: World) -> None:
        b = await w.node(1)
        a = RawPeer(w, 0)
        params = ChannelParams(a.key.address, b.address, 60, 42)
        cid = params.channel_id(b.domain.chain_id, b.domain.adjudicator)
        signed: set[State] = set()
        tries = (((ETH,), ((ETHER, 0),)), ((ETH, w.token.address), ((ETHER, 0), (5, 0))), ((ETH,), ((ETHER, 0),)))
        answers = []
        for assets, deposits in tries:
            _, effects = open_channel(params, b.domain, assets, deposits, a.key)
            count = len(a.inbox)
            await a.send(b.address, next(e.message for e in effects if isinstance(e, SendMessage)))
            await until("B's answer", lambda n=count: len(a.inbox) > n)  # type: ignore[misc]
            answer = a.inbox[-1]
            answers.append(type(answer).__name__)
            if isinstance(answer, m.Accept):
                prefund = State(cid, 0, assets, tuple(0 for _ in assets))
                assert recover(state_digest(b.domain, prefund), m.signature(answer.sig)) == b.address
                signed.add(prefund)
        assert answers == ["Accept", "Reject", "Accept"] and len(signed) == 1

    run(tmp_path, scenario)


def test_one_channels_failing_chain_input_never_blinds_the_node_to_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError while handling one channel's `Concluded` escaped the watcher, which then re-read the
    same block forever: no other channel of the node was watched. A stale close of another channel went
    unanswered, even after a restart."""

    async def scenario(w: World) -> None:
        a, b = await w.node(0), await w.node(1)
        x = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=60)
        y = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=3600)
        for cid in (x, y):
            await b.wait_for(cid, Phase.OPEN)
            await a.wait_for(cid, Phase.OPEN)
        stale = a.channel(y).latest
        assert stale is not None
        await a.pay(y, ETH, ETHER // 2)
        await b.idle(y)
        real = closing._paid

        def broken(ch: Any, state: State) -> Any:
            if ch.channel_id == x:
                raise ValueError("a bug while concluding channel x")
            return real(ch, state)

        monkeypatch.setattr(closing, "_paid", broken)
        await a.close(x)  # concludes x: B's handling of it fails
        await until("x concluded on chain", lambda: w.adj.channel(x).status is Status.CONCLUDED, 20)
        await asyncio.sleep(0.5)
        await a.stop()
        params = a.channel(y).params
        await chain_of(b, lambda: w.adj.close(w.keys[0], params, stale.state, stale.sig_a, stale.sig_b))
        latest = b.channel(y).latest
        assert latest is not None
        await until(
            "B challenges y",
            lambda: (r := w.adj.recorded(y)) is not None and r.version == latest.state.version,
            20,
        )

    run(tmp_path, scenario)


class Flaky:
    """The same chain, but sends fail (ChainError, as an unreachable RPC gives) while `down`."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain
        self.down = False
        self.refused = 0

    def send_transaction(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            self.refused += 1
            raise ChainError("connection refused")
        return self._chain.send_transaction(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)


async def node_on(w: World, i: int, chain: Any, name: str) -> Node:
    """Participant `i`'s node, on `chain` (a wrapper of the world's chain that faults)."""
    key = w.keys[i]
    node = Node(
        key,
        ChainIO(chain, w.adj.address, key),
        SqliteStore(w.tmp / f"{name}.db"),
        w.link[i],
        poll_interval=0.02,
        terms=TEST_TERMS,
    )
    await node.start()
    w.nodes.append(node)
    return node


async def flaky_node(w: World, i: int) -> tuple[Node, Flaky]:
    flaky = Flaky(w.chain)
    return await node_on(w, i, flaky, f"flaky{i}"), flaky


async def paid_then_closed_stale(
    w: World, a: Node, b: Node, period: int, before_close: Callable[[], None] = lambda: None
) -> bytes:
    """A opens to B, pays B half and stops; then A closes by hand with the post-fund state, where it paid
    nothing (its own node would answer that). `before_close` runs just before (a fault switched on)."""
    cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=period)
    await b.wait_for(cid, Phase.OPEN)
    await a.wait_for(cid, Phase.OPEN)
    stale = a.channel(cid).latest
    assert stale is not None
    await a.pay(cid, ETH, ETHER // 2)
    await b.idle(cid)
    await a.stop()
    before_close()
    params = a.channel(cid).params
    await chain_of(b, lambda: w.adj.close(w.keys[0], params, stale.state, stale.sig_a, stale.sig_b))
    return cid


@pytest.mark.parametrize("restart", [False, True])
def test_a_challenge_lost_to_an_outage_is_sent_again_within_the_window(tmp_path: Path, restart: bool) -> None:
    """`answered` was set before the challenge went out and nothing sent it again (not the clock, not a
    restart): an RPC outage of a few seconds cost the whole window."""

    async def scenario(w: World) -> None:
        a = await w.node(0)
        b, flaky = await flaky_node(w, 1)
        cid = await paid_then_closed_stale(w, a, b, 3600, lambda: setattr(flaky, "down", True))
        await b.wait_for(cid, Phase.DISPUTE)
        await until("B's challenge gives up", lambda: flaky.refused >= 5, 30)
        node = b
        if restart:
            await b.stop()
            assert isinstance(b.store, SqliteStore)
            node = Node(b.key, b.chainio, SqliteStore(b.store.path), w.link[1], poll_interval=0.02, terms=TEST_TERMS)
            w.nodes.append(node)
        flaky.down = False
        await chain_of(b, lambda: w.chain.advance_time(closing.RETRY))
        if restart:
            await node.start()
        latest = node.channel(cid).latest
        assert latest is not None
        await until(
            "B's challenge", lambda: (r := w.adj.recorded(cid)) is not None and r.version == latest.state.version, 20
        )

    run(tmp_path, scenario)


def test_a_challenge_lost_to_an_outage_is_sent_again_within_a_window_shorter_than_the_retry(tmp_path: Path) -> None:
    """A 40 s window (terms may allow it on a fast chain): the challenge lost to an outage was sent again
    only after RETRY, 60 s of chain time, when the window was long over. Now it is sent again after a
    quarter of the window at most, so a 40 s window gets four tries."""

    async def scenario(w: World) -> None:
        a = await w.node(0)
        b, flaky = await flaky_node(w, 1)
        cid = await paid_then_closed_stale(w, a, b, 40, lambda: setattr(flaky, "down", True))
        await b.wait_for(cid, Phase.DISPUTE)
        await until("B's challenge gives up", lambda: flaky.refused >= 5, 30)
        flaky.down = False
        await chain_of(b, lambda: w.chain.advance_time(10))
        latest = b.channel(cid).latest
        assert latest is not None
        await until(
            "B's challenge", lambda: (r := w.adj.recorded(cid)) is not None and r.version == latest.state.version, 20
        )
        recorded = w.adj.recorded(cid)
        assert recorded is not None and recorded.challenge

    run(tmp_path, scenario)


def test_a_settle_lost_to_an_outage_is_sent_again(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        a = await w.node(0)
        b, flaky = await flaky_node(w, 1)
        cid = await a.open_channel(b.address, {ETH: (ETHER, 0)}, challenge_period=60)
        await b.wait_for(cid, Phase.OPEN)
        await a.wait_for(cid, Phase.OPEN)
        await a.pay(cid, ETH, ETHER // 2)
        await b.idle(cid)
        await a.stop()
        await b.close(cid, cooperative=False)
        await until("B's close is recorded", lambda: b.channel(cid).phase is Phase.DISPUTE, 30)
        flaky.down = True
        await chain_of(b, lambda: w.chain.advance_time(61))
        await until("B's settle gives up", lambda: flaky.refused >= 5, 30)
        flaky.down = False
        await chain_of(b, lambda: w.chain.advance_time(closing.RETRY))
        await until("concluded", lambda: w.adj.channel(cid).status is Status.CONCLUDED, 20)

    run(tmp_path, scenario)


def test_a_channel_open_on_chain_is_never_abandoned_so_a_top_up_is_never_stranded(tmp_path: Path) -> None:
    """The unfunded expiry abandoned a channel open on chain whose top-up by B was mined but not yet read:
    B's money then sat in a channel its node called closed and would not close."""

    async def scenario(w: World) -> None:
        b = await w.node(1, confirmations=3, unfunded_ttl=0.5)
        a = RawPeer(w, 0)
        params = ChannelParams(a.key.address, b.address, 60, 7)
        _, effects = open_channel(params, b.domain, (ETH,), ((ETHER, 0),), a.key)
        await a.send(b.address, next(e.message for e in effects if isinstance(e, SendMessage)))
        await until("B accepts", lambda: any(isinstance(x, m.Accept) for x in a.inbox))
        cid = params.channel_id(b.domain.chain_id, b.domain.adjudicator)
        await chain_of(b, lambda: w.adj.open(a.key, params, 0))  # A opens with nothing in and goes quiet
        await chain_of(b, lambda: w.chain.mine(3))
        await until("B sees it opened", lambda: b.channel(cid).opened)
        await b.deposit(cid, ETH, ETHER)
        await asyncio.sleep(1.0)  # past the expiry
        assert b.channel(cid).phase is Phase.FUNDING, "open on chain: kept"
        await chain_of(b, lambda: w.chain.mine(3))
        await until("B sees its deposit", lambda: b.channel(cid).funded == ((0, ETHER),))
        await b.close(cid, cooperative=False)  # the pre-fund state gives it back
        await until("B's close on chain", lambda: w.adj.channel(cid).status is Status.CLOSING, 20)
        await chain_of(b, lambda: w.chain.mine(3))
        await until("B sees its close", lambda: b.channel(cid).phase is Phase.DISPUTE, 20)

    run(tmp_path, scenario)


def test_a_payout_the_token_refused_is_reported_as_deferred_not_paid(tmp_path: Path) -> None:
    """A refused token payout is credited to `claimable`; the node reported it as paid, no alert."""

    async def scenario(w: World) -> None:
        akey = w.keys[0]
        r = w.chain.send_transaction(akey, None, load("HostileToken").bytecode)
        assert r.contract_address is not None
        ht = Token(w.chain, r.contract_address, contract="HostileToken")
        ht.send(akey, "mint", "0x" + akey.address.hex(), 1000)
        a, b = await w.node(0), await w.node(1)
        cid = await a.open_channel(b.address, {ETH: (ETHER, 0), ht.address: (0, 0)}, challenge_period=60)
        await b.wait_for(cid, Phase.OPEN)
        await a.wait_for(cid, Phase.OPEN)
        i = b.channel(cid).assets.index(ht.address)
        await chain_of(a, lambda: w.adj.deposit_token(akey, cid, 0, ht.address, 500))
        await until("the token deposit", lambda: b.channel(cid).funded[i] == (500, 0) == a.channel(cid).funded[i])
        await a.pay(cid, ht.address, 200)
        await b.idle(cid)
        await chain_of(a, lambda: ht.send(akey, "arm", "0x" + w.adj.address.hex(), b"", 3))  # it refuses now
        await a.close(cid)
        await b.wait_for(cid, Phase.CLOSED)
        outcome = b.channel(cid).outcome
        assert outcome is not None and outcome.paid is not None
        got = await chain_of(b, lambda: ht.balance_of(b.address))
        held = await chain_of(b, lambda: w.adj.claimable(b.address, ht.address))
        assert (got, held) == (0, 200)
        assert outcome.paid[i][1] == got and outcome.deferred == ((ht.address, 200),)

    run(tmp_path, scenario)


def test_free_channels_are_forgotten_and_bounded_overall(tmp_path: Path) -> None:
    """Abandoned free channels stayed in memory and the store for good, and new keys cost nothing."""

    async def scenario(w: World) -> None:
        b = await w.node(1, max_unfunded_per_peer=3, unfunded_ttl=0.0)
        for k in range(4):
            peer = PrivateKey(keccak(f"sybil {k}".encode()))
            for rnd in range(3):
                last = b""
                for n in range(3):
                    params = ChannelParams(peer.address, b.address, 60, 1000 * rnd + n)
                    _, eff = open_channel(params, b.domain, (ETH,), ((ETHER, 0),), peer)
                    msg = next(e.message for e in eff if isinstance(e, SendMessage))
                    assert isinstance(msg, m.OpenRequest)
                    b._on_open_request(peer.address, msg)
                    last = params.channel_id(b.domain.chain_id, b.domain.adjudicator)
                await b.idle(last)
                b._expire_unfunded()
                await until("forgotten", lambda: not b.channels, 10)
        await asyncio.sleep(0.1)
        assert b.store.load_channels() == {}

    run(tmp_path, scenario)


def test_every_received_amount_is_recorded_even_when_asset_addresses_share_a_prefix(tmp_path: Path) -> None:
    cid = b"\x11" * 32
    t1 = bytes.fromhex("c0ffee00" + "11" * 16)
    t2 = bytes.fromhex("c0ffee00" + "22" * 16)
    effect = NotifyReceived(((t1, 5), (t2, 7)), 3)
    records = Node._payment_updates(SimpleNamespace(_records={}), cid, (effect,))  # type: ignore[arg-type]

    async def store_them() -> list[PaymentRecord]:
        store = SqliteStore(tmp_path / "s.db")
        await store.save(cid, b"{}", records)
        rows = store.payments(cid)
        await store.close()
        return rows

    rows = asyncio.run(store_them())
    assert sorted((r.asset, r.amount) for r in rows) == [(t1, 5), (t2, 7)]


# ------------------------------------------------------------------ a second audit, of the fixes


class Congested:
    """The same chain, with a mempool for one kind of transaction while `jam` is set: it is broadcast
    (counted as pending), the sender gets no receipt in time, and it is mined only at `release`."""

    def __init__(self, chain: Any, adjudicator: bytes, selector: bytes) -> None:
        self._chain, self.adj, self.selector = chain, adjudicator, selector
        self.jam = False
        self.held: list[tuple[Any, bytes, bytes, int, int]] = []

    def send_transaction(self, key: Any, to: Any, data: bytes, value: int = 0, gas: int | None = None) -> Any:
        if self.jam and to == self.adj and data[:4] == self.selector:
            est = self._chain._tester.estimate_gas(self._chain._tx(to, data, value, key.address))
            self.held.append((key, to, data, value, est))
            raise ChainError("no receipt after 60.0s")  # what rpc.py raises once broadcast
        return self._chain.send_transaction(key, to, data, value, gas)

    def pending(self, address: bytes) -> int:
        return sum(1 for key, *_ in self.held if key.address == address)

    def release(self) -> tuple[int, int]:
        landed = reverted = 0
        for key, to, data, value, gas in self.held:
            try:
                self._chain.send_transaction(key, to, data, value, gas)
                landed += 1
            except TransactionReverted:
                reverted += 1  # mined and reverted: its gas is spent
        self.held.clear()
        return landed, reverted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)


def test_a_jammed_challenge_is_not_sent_again_while_it_is_pending(tmp_path: Path) -> None:
    """The resend stacked duplicates behind a broadcast but unmined challenge: each passed its dry run
    and, once the jam cleared, was mined and reverted, paying gas (40 in six minutes)."""

    async def scenario(w: World) -> None:
        a = await w.node(0)
        jammed = Congested(w.chain, w.adj.address, w.adj.abi.functions["challenge"][0])
        b = await node_on(w, 1, jammed, "jammed")
        cid = await paid_then_closed_stale(w, a, b, 3600, lambda: setattr(jammed, "jam", True))
        await b.wait_for(cid, Phase.DISPUTE)
        await until("the challenge is broadcast", lambda: bool(jammed.held), 20)
        for _ in range(4):  # minutes of chain time while it sits in the mempool
            await chain_of(b, lambda: w.chain.advance_time(closing.RETRY))
            await asyncio.sleep(0.5)
        landed, reverted = await chain_of(b, jammed.release)
        assert (landed, reverted) == (1, 0)
        latest = b.channel(cid).latest
        assert latest is not None
        await until("recorded", lambda: (r := w.adj.recorded(cid)) is not None and r.version == latest.state.version)

    run(tmp_path, scenario)


def _batch(chain: Any, key: PrivateKey) -> bytes:
    code = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "bytecode", str(Path(__file__).parent / "contracts" / "Batch.vy")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    r = chain.send_transaction(key, None, bytes.fromhex(code.removeprefix("0x")))
    assert r.contract_address is not None
    return bytes(r.contract_address)


def test_payouts_held_back_are_charged_to_their_own_channel_when_one_tx_concludes_two(tmp_path: Path) -> None:
    """A PayoutDeferred names no channel: paired by transaction only, a batch concluding two channels
    charged each with the other's, and the report went negative."""

    async def scenario(w: World) -> None:
        akey = w.keys[0]
        r = w.chain.send_transaction(akey, None, load("HostileToken").bytecode)
        assert r.contract_address is not None
        ht = Token(w.chain, r.contract_address, contract="HostileToken")
        ht.send(akey, "mint", "0x" + akey.address.hex(), 10_000)
        batch = _batch(w.chain, akey)
        a, b = await w.node(0), await w.node(1)
        real_submit = a._submit

        async def no_coop(cid: bytes, tx: Any) -> None:  # A keeps its finals, to submit them in one batch
            if not isinstance(tx, SubmitTxCloseCooperative):
                await real_submit(cid, tx)

        a._submit = no_coop  # type: ignore[method-assign,assignment]
        cids = []
        for pay in (200, 300):
            cid = await a.open_channel(b.address, {ETH: (ETHER, 0), ht.address: (0, 0)}, challenge_period=60)
            await b.wait_for(cid, Phase.OPEN)
            await a.wait_for(cid, Phase.OPEN)
            i = b.channel(cid).assets.index(ht.address)
            await chain_of(a, lambda cid=cid: w.adj.deposit_token(akey, cid, 0, ht.address, 500))  # type: ignore[misc]
            await until("deposit", lambda c=cid, i=i: b.channel(c).funded[i] == (500, 0) == a.channel(c).funded[i])  # type: ignore[misc]
            await a.pay(cid, ht.address, pay)
            await b.idle(cid)
            cids.append(cid)
        for cid in cids:
            await a.close(cid)
            await until("final signed", lambda c=cid: (s := b.channel(c).latest) is not None and s.state.is_final)  # type: ignore[misc]
        await chain_of(a, lambda: ht.send(akey, "arm", "0x" + w.adj.address.hex(), b"", 3))  # it refuses payouts
        calls = []
        for cid in cids:
            s, params = b.channel(cid).latest, b.channel(cid).params
            assert s is not None
            calls.append(
                w.adj.abi.encode_call(
                    "close_cooperative", params.as_abi(), s.state.as_abi(), s.sig_a.as_abi(), s.sig_b.as_abi()
                )
            )
        data = keccak(b"two(address,bytes,bytes)")[:4] + abi_encode(
            ["address", "bytes", "bytes"], [to_checksum(w.adj.address), *calls]
        )
        await chain_of(a, lambda: w.chain.send_transaction(akey, batch, data))
        for cid in cids:
            await b.wait_for(cid, Phase.CLOSED)
        assert await chain_of(b, lambda: w.adj.claimable(b.address, ht.address)) == 500
        for cid, pay in zip(cids, (200, 300), strict=True):
            o = b.channel(cid).outcome
            i = b.channel(cid).assets.index(ht.address)
            assert o is not None and o.paid is not None
            assert o.deferred == ((ht.address, pay),) and o.paid[i] == (0, 0)

    run(tmp_path, scenario)


def test_throwaway_keys_cannot_lock_honest_peers_out(tmp_path: Path) -> None:
    """1,024 free requests from 128 throwaway keys filled the global bound for an hour, at no cost."""
    from statechannel.core.errors import StatechannelError
    from statechannel.node.node import MAX_UNFUNDED_PER_PEER, MAX_UNFUNDED_TOTAL

    async def scenario(w: World) -> None:
        b = await w.node(1)
        last = b""
        for k in range(MAX_UNFUNDED_TOTAL // MAX_UNFUNDED_PER_PEER):
            sybil = PrivateKey(keccak(f"sybil {k}".encode()))
            for n in range(MAX_UNFUNDED_PER_PEER):
                params = ChannelParams(sybil.address, b.address, 60, n)
                _, eff = open_channel(params, b.domain, (ETH,), ((0, 0),), sybil)
                msg = next(e.message for e in eff if isinstance(e, SendMessage))
                assert isinstance(msg, m.OpenRequest)
                with contextlib.suppress(StatechannelError):
                    b._on_open_request(sybil.address, msg)
                last = params.channel_id(b.domain.chain_id, b.domain.adjudicator)
        await b.idle(last)
        a = RawPeer(w, 0)
        params = ChannelParams(a.key.address, b.address, 60, 1)
        _, eff = open_channel(params, b.domain, (ETH,), ((ETHER, 0),), a.key)
        await a.send(b.address, next(e.message for e in eff if isinstance(e, SendMessage)))
        await until("B's answer", lambda: bool(a.inbox))
        assert isinstance(a.inbox[-1], m.Accept), a.inbox[-1]

    run(tmp_path, scenario, timeout=240)


def test_an_abandoned_channel_is_not_accepted_again(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        b = await w.node(1)
        a = RawPeer(w, 0)
        params = ChannelParams(a.key.address, b.address, 60, 5)
        cid = params.channel_id(b.domain.chain_id, b.domain.adjudicator)
        _, effects = open_channel(params, b.domain, (ETH,), ((ETHER, 0),), a.key)
        request = next(e.message for e in effects if isinstance(e, SendMessage))
        await a.send(b.address, request)
        await until("B accepts", lambda: any(isinstance(x, m.Accept) for x in a.inbox))
        a.inbox.clear()  # that Accept is lost: A is still opening
        await b.abandon(cid)
        await b.idle(cid)
        await a.send(b.address, request)  # A resends on reconnect
        await until("B's answer", lambda: bool(a.inbox))
        assert isinstance(a.inbox[-1], m.Reject), "never invite A to fund a channel B has abandoned"

    run(tmp_path, scenario)

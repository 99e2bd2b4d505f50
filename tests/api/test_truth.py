"""Issue 13, part 2: a failed on-chain step fails the request that caused it, at once and with the chain's
reason; a channel that can never open can be abandoned, and its deposit comes back where one was made.

Before: an open with more than the wallet held waited out `wait` and answered 201 with a channel left in
`funding` for good; a deposit into an address that is no token did the same; a unilateral close that
reverted answered 202; nothing could give such a channel up."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from statechannel.chain.adjudicator import Token
from statechannel.contracts import load
from statechannel.core.channel import Phase
from statechannel.core.types import ETH, to_checksum
from tests.api.harness import ETHER, World, error, eventually, run


def _open(w: World, deposits: dict[str, str], wait: float = 30) -> dict[str, object]:
    return {"peer": to_checksum(w.b.address), "deposits": deposits, "wait": wait, "challenge_period": 60}


def test_an_open_beyond_the_wallet_is_refused_at_once_and_leaves_no_channel(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        held = w.chain.balance(w.a.address)
        start = time.monotonic()
        r = await w.api_a.post("/channels", json=_open(w, {"eth": str(held + 1)}, wait=60))
        assert error(r) == (400, "insufficient_funds")
        assert f"{held:,}" in r.json()["error"]["detail"]
        assert time.monotonic() - start < 30  # not the 60 s wait
        assert w.a.channels == {} and w.b.channels == {}

    run(tmp_path, scenario)


def test_a_deposit_of_an_address_that_is_no_token_is_refused_at_once(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        not_a_token = "0x" + "22" * 20
        r = await w.api_a.post("/channels", json=_open(w, {"eth": "1000", not_a_token: "5"}))
        assert error(r) == (400, "bad_assets")
        assert "not an ERC-20" in r.json()["error"]["detail"]
        assert w.a.channels == {} and w.b.channels == {}

    run(tmp_path, scenario)


def test_an_open_the_chain_refuses_fails_with_its_reason_then_can_be_abandoned(tmp_path: Path) -> None:
    """The wallet holds the deposit but not the gas on top: the open fails on chain, the request says so,
    a unilateral close of it is refused with the chain's reason, and the channel can be abandoned."""

    async def scenario(w: World) -> None:
        held = w.chain.balance(w.a.address)
        r = await w.api_a.post("/channels", json=_open(w, {"eth": str(held)}, wait=60))
        assert error(r) == (502, "tx_failed")
        detail = r.json()["error"]["detail"]
        assert "Open failed" in detail and "channel abandon" in detail
        [cid] = list(w.a.channels)
        path = f"/channels/0x{cid.hex()}"
        assert w.a.channel(cid).phase is Phase.FUNDING

        r = await w.api_a.post(f"{path}/close", json={"unilateral": True})
        assert error(r) == (502, "tx_failed")
        assert "unknown channel" in r.json()["error"]["detail"]

        r = await w.api_a.post(f"{path}/abandon")
        assert r.status_code == 200, r.text
        assert r.json()["channel"]["phase"] == "closed" and "never opened" in r.json()["action"]
        await eventually(lambda: w.b.channels.get(cid) is None or w.b.channel(cid).phase is Phase.FUNDING)
        r = await w.api_b.post(f"{path}/abandon")  # B's side of it goes too
        assert r.status_code == 200 and r.json()["channel"]["phase"] == "closed", r.text
        assert w.chain.balance(w.a.address) == held  # nothing spent but what it tried to

    run(tmp_path, scenario)


def test_a_channel_whose_token_deposit_reverts_is_abandoned_and_its_ether_comes_back(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        akey = w.a.key
        r0 = w.chain.send_transaction(akey, None, load("HostileToken").bytecode)
        assert r0.contract_address is not None
        ht = Token(w.chain, r0.contract_address, contract="HostileToken")
        ht.send(akey, "mint", to_checksum(akey.address), 1000)
        ht.send(akey, "arm", to_checksum(w.adjudicator.address), b"", 3)  # its transferFrom returns false
        r = await w.api_a.post("/channels", json=_open(w, {"eth": str(ETHER), to_checksum(ht.address): "500"}))
        assert error(r) == (502, "tx_failed")
        assert "Deposit failed: reverted" in r.json()["error"]["detail"]
        [cid] = list(w.a.channels)
        # the open's ether is learnt from the chain's event, which the watcher may read after the answer
        await eventually(lambda: w.a.channel(cid).funded[w.a.channel(cid).assets.index(ETH)] == (ETHER, 0))
        ch = w.a.channel(cid)
        assert ch.phase is Phase.FUNDING

        r = await w.api_a.post(f"/channels/0x{cid.hex()}/abandon")
        assert r.status_code == 200, r.text
        assert "pre-fund state" in r.json()["action"]
        await w.a.wait_for(cid, Phase.DISPUTE)
        w.chain.advance_time(61)
        await w.a.wait_for(cid, Phase.CLOSED)
        outcome = w.a.channel(cid).outcome
        assert outcome is not None and outcome.version == 0
        assert outcome.paid is not None and outcome.paid[ch.assets.index(ETH)] == (ETHER, 0)

    run(tmp_path, scenario)


def test_a_deposit_answers_with_the_balances_after_it(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        r = await w.api_a.post("/channels", json=_open(w, {"eth": "1000"}))
        cid = r.json()["channel_id"]
        await w.b.wait_for(bytes.fromhex(cid[2:]), Phase.OPEN)
        r = await w.api_a.post(f"/channels/{cid}/deposit", json={"asset": "eth", "amount": "500"})
        assert r.status_code == 200, r.text
        assert r.json()["balances"][0]["my_funded"] == "1500"
        held = w.chain.balance(w.a.address)
        r = await w.api_a.post(f"/channels/{cid}/deposit", json={"asset": "eth", "amount": str(held + 1)})
        assert error(r) == (400, "insufficient_funds")

    run(tmp_path, scenario)


def test_peers_are_listed_and_disconnected(tmp_path: Path) -> None:
    """`peer list` and `peer disconnect` did not exist: a peer once dialled was dialled for good."""

    async def scenario(w: World) -> None:
        peer = to_checksum(w.b.address)
        r = await w.api_a.post("/peers", json={"address": peer, "host": "127.0.0.1", "port": w.b_listen})
        assert r.status_code == 200, r.text
        r = await w.api_a.post("/channels", json=_open(w, {"eth": "1000"}))
        assert r.status_code == 201, r.text
        peers = (await w.api_a.get("/peers")).json()
        assert peers == [{"address": peer, "connected": True, "host": None, "port": None, "channels": 1}]  # no book
        r = await w.api_a.delete(f"/peers/{peer}")
        assert r.status_code == 200 and r.json()["connected"] is False, r.text
        assert not w.a.transport.connected(w.b.address)
        assert error(await w.api_a.delete(f"/peers/{to_checksum(bytes(20))}")) == (404, "not_found")

    run(tmp_path, scenario, tcp=True)


def test_settle_says_how_long_the_window_has_left_then_settles(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        r = await w.api_a.post("/channels", json=_open(w, {"eth": "1000"}))
        cid = r.json()["channel_id"]
        raw = bytes.fromhex(cid[2:])
        await w.b.wait_for(raw, Phase.OPEN)
        assert error(await w.api_a.post(f"/channels/{cid}/settle", json={})) == (409, "wrong_phase")
        r = await w.api_a.post(f"/channels/{cid}/close", json={"unilateral": True})
        assert r.status_code == 202, r.text
        await w.a.wait_for(raw, Phase.DISPUTE)
        r = await w.api_a.post(f"/channels/{cid}/settle", json={})
        assert error(r) == (409, "wrong_phase") and "s more" in r.json()["error"]["detail"]
        w.chain.advance_time(61)
        r = await w.api_a.post(f"/channels/{cid}/settle", json={"wait": 30})
        assert r.status_code == 200 and r.json()["phase"] == "closed", r.text

    run(tmp_path, scenario)


async def _b_owed_1000_closes_and_the_window_ends(w: World, a_online: bool = True) -> bytes:
    """A funds 1 ETH and pays B 1,000 wei; B closes unilaterally; the window ends: both see it closed
    (or only B, with A stopped before the window ends)."""
    r = await w.api_a.post("/channels", json=_open(w, {"eth": str(ETHER)}))
    cid = r.json()["channel_id"]
    raw = bytes.fromhex(cid[2:])
    await w.b.wait_for(raw, Phase.OPEN)
    r = await w.api_a.post(f"/channels/{cid}/payments", json={"amount": "1000"})
    assert r.json()["status"] == "sent"
    await w.b.idle(raw)
    r = await w.api_b.post(f"/channels/{cid}/close", json={"unilateral": True})
    assert r.status_code == 202, r.text
    await w.a.wait_for(raw, Phase.DISPUTE)
    await w.b.wait_for(raw, Phase.DISPUTE)
    if not a_online:
        await w.a.stop()
    w.chain.advance_time(61)
    if a_online:
        await w.a.wait_for(raw, Phase.CLOSED)
    await w.b.wait_for(raw, Phase.CLOSED)
    return raw


def test_the_owed_side_settles_and_the_other_weighs_the_gas(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13, part 5. Before: both sides sent a settle, so B paid about 0.05 mETH of gas to collect
    1,000 wei; now B, owed less than the gas, leaves it to A (owed the rest) and says so in its log."""

    async def scenario(w: World) -> None:
        w.a.weigh_gas = w.b.weigh_gas = True  # as the daemon runs them
        raw = await _b_owed_1000_closes_and_the_window_ends(w)
        settles = {
            name: [o for o in n.txlog.since(raw, 0) if o.what == "Settle"] for name, n in (("a", w.a), ("b", w.b))
        }
        assert [o.ok for o in settles["a"]] == [True] and settles["b"] == []

    with caplog.at_level(logging.INFO, logger="statechannel.node.node"):
        run(tmp_path, scenario)
    assert "settling: about" in caplog.text  # A weighed it and said so (B, if it got that far, logs why not)


def test_always_settle_sends_the_settle_that_weighing_would_skip(tmp_path: Path) -> None:
    """`node start --always-settle` (weigh_gas off, the default of an embedded Node): B, owed 1,000 wei
    (less than the gas), sends its settle anyway, where the weighing test above sees it skipped. A is
    stopped first: with A online, A's settle could land before B looks, and B would rightly send none."""

    async def scenario(w: World) -> None:
        assert not w.a.weigh_gas and not w.b.weigh_gas
        raw = await _b_owed_1000_closes_and_the_window_ends(w, a_online=False)
        await eventually(lambda: any(o.what == "Settle" and o.ok for o in w.b.txlog.since(raw, 0)))
        assert all(o.what != "Settle" for o in w.a.txlog.since(raw, 0))  # B's settle was its own

    run(tmp_path, scenario)


def test_a_payment_retried_with_its_idempotency_key_pays_once(tmp_path: Path) -> None:
    """Issue 13, part 4: a client that lost the answer (killed mid-request, a timeout) could not retry
    without paying twice."""

    async def scenario(w: World) -> None:
        r = await w.api_a.post("/channels", json=_open(w, {"eth": "1000"}))
        cid = r.json()["channel_id"]
        raw = bytes.fromhex(cid[2:])
        await w.b.wait_for(raw, Phase.OPEN)
        path, key = f"/channels/{cid}/payments", {"Idempotency-Key": "order-1234"}
        first = await w.api_a.post(path, json={"amount": "7"}, headers=key)
        assert first.status_code == 200 and first.json()["status"] == "sent", first.text
        again = await w.api_a.post(path, json={"amount": "7"}, headers=key)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["payment_id"] == first.json()["payment_id"]
        assert error(await w.api_a.post(path, json={"amount": "8"}, headers=key)) == (409, "validation")
        other = await w.api_a.post(path, json={"amount": "7"}, headers={"Idempotency-Key": "order-1235"})
        assert other.json()["payment_id"] != first.json()["payment_id"]
        await w.b.idle(raw)
        assert w.b.channel(raw).my_balance(ETH) == 14  # two payments, not three

    run(tmp_path, scenario)

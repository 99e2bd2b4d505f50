"""Audit of the tower's batched challenge sending (`BumpingSender.submit_many`, `Dispatcher._send`) against a
faulty node: each test drives the real sender (and tower) on anvil through the fault proxy, and the ones
marked "found" failed on the code before their fix."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from statechannel.chain.base import ChainError
from statechannel.chain.rpc import BATCH_SIZE, RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum
from statechannel.watchtower.sender import BumpingSender, Call, SentTx, Settled
from tests.anvil import Anvil
from tests.rpcproxy import LOST, SEND, RpcProxy
from tests.watchtower.helpers import (
    ETHER,
    closes,
    deploy,
    eth_state,
    eventually,
    key,
    open_channel,
    push,
    register,
    running_tower,
    sign,
)
from tests.watchtower.test_watcher import CountingSender, snapshot

ESTIMATE = "eth_estimateGas"


def batch_of(request: Any, method: str) -> bool:
    return isinstance(request, list) and bool(request) and all(r.get("method") == method for r in request)


def once(hook: Any) -> Any:
    """`hook` for the first request it answers (not None), then never again."""
    done: list[bool] = []

    def first(*args: Any) -> Any:
        if done:
            return None if len(args) == 1 else args[-1]
        out = hook(*args)
        if out is not None and (len(args) == 1 or out is not args[-1]):
            done.append(True)
        return out

    return first


def mined_nonce(rpc: RpcChain, k: PrivateKey) -> int:
    return int(rpc._rpc("eth_getTransactionCount", [to_checksum(k.address), "latest"]), 16)


def settle_all(sender: BumpingSender, tickets: list[int], timeout: float = 30.0) -> dict[int, Settled]:
    """Poll until every ticket settled (a test's deadline, not a timed assertion)."""
    done: dict[int, Settled] = {}
    deadline = time.monotonic() + timeout
    while not set(tickets) <= set(done):
        if time.monotonic() > deadline:
            raise AssertionError(f"tickets {sorted(set(tickets) - set(done))} never settled")
        done.update((s.ticket, s) for s in sender.poll())
        time.sleep(0.05)
    return done


def tickets_of(out: list[int | ChainError]) -> list[int]:
    return [t for t in out if isinstance(t, int)]


@pytest.fixture
def funded(anvil: Anvil) -> tuple[RpcChain, PrivateKey, PrivateKey]:
    rpc = RpcChain(anvil.url)
    k, target = key("audit batch sender"), key("audit batch target")
    rpc.fund(k.address, 10 * ETHER)
    return rpc, k, target


# ------------------------------------------------------------------ the broadcast batch


@pytest.mark.anvil
def test_found_a_broadcast_batch_answered_with_one_error_object_leaves_no_nonce_gap(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """A node (or a gateway in front of it) answers the batch of broadcasts with one JSON-RPC error for the
    whole batch, forwarding none. `rpc_batch` raised ChainError out of `submit_many` after the nonces were
    taken: the sender forgot the transactions but kept the nonces, so every later challenge of the key sat
    behind the gap and was never mined."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy:
        proxy.refuse = once(
            lambda req: (
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "limit exceeded"}}
                if batch_of(req, SEND)
                else None
            )
        )
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        first = sender.submit_many([Call(target.address, b"") for _ in range(3)])
        later = sender.submit_many([Call(target.address, b"")])
        tickets = tickets_of(first) + tickets_of(later)
        assert len(tickets) == 4, f"calls given up although nothing was mined: {first} {later}"
        done = settle_all(sender, tickets)
    assert all(done[t].receipt is not None for t in tickets)
    assert mined_nonce(rpc, k) == start + 4


@pytest.mark.anvil
def test_found_a_broadcast_batch_answered_short_is_still_followed(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The node takes every transaction of the batch but its answer lacks one entry. `submit_many` raised:
    the transactions were mined but no ticket followed them (the tower called them failed and sent again),
    and their nonces were never given back or filled."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(lambda req, answer: answer[:-1] if batch_of(req, SEND) else answer)
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(3)])
        assert all(isinstance(t, int) for t in out), f"taken transactions reported unsent: {out}"
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + 3
    assert sorted({v.nonce for v in told}) == [start, start + 1, start + 2]


@pytest.mark.anvil
def test_held_a_broadcast_batch_whose_answer_is_lost_is_followed_as_sent(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The node took the batch and the connection closed before its answer: each is followed as sent (its
    owner told), and mined."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(lambda req, answer: LOST if batch_of(req, SEND) else answer)
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(4)])
        assert all(isinstance(t, int) for t in out)
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values()) and len(told) >= 4
    assert mined_nonce(rpc, k) == start + 4


@pytest.mark.anvil
def test_found_the_second_chunk_of_a_large_broadcast_batch_refused_unforwarded(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """More than BATCH_SIZE broadcasts: the first chunk is taken, the second is answered with one error for
    the whole batch and never reaches the node. `submit_many` raised, forgetting all of them with their
    nonces taken. Now every transaction is followed as sent; the lost ones go out again with bumped fees, and
    all are mined at consecutive nonces."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = BATCH_SIZE + 5
    chunks: list[int] = []

    def second_chunk_lost(req: Any) -> Any:
        if batch_of(req, SEND):
            chunks.append(len(req))
            if len(chunks) == 2:
                return {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": "upstream gone"}}
        return None

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.refuse = second_chunk_lost
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"") for _ in range(n)])
        assert chunks[:2] == [BATCH_SIZE, 5]
        assert len(tickets_of(out)) == n, f"{sum(not isinstance(t, int) for t in out)} calls given up"
        done = settle_all(sender, tickets_of(out), timeout=60)
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + n


@pytest.mark.anvil
def test_held_a_refusal_in_the_middle_of_the_batch_is_sent_again_and_later_nonces_not_stuck(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The node refuses the middle broadcast as underpriced (and does not take it) while it takes the others:
    it is sent again at bumped fees, its owner is told once, and the later nonce is not stuck behind it."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy, snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])

        def middle_refused(req: Any) -> Any:
            if not batch_of(req, SEND):
                return None
            proxy.refuse = None
            taken = [r for i, r in enumerate(req) if i != 1]
            answers = RpcChain(anvil.url)._w3.provider.make_batch_request([(r["method"], r["params"]) for r in taken])  # type: ignore[attr-defined]
            refusal = {"jsonrpc": "2.0", "id": req[1]["id"], "error": {"code": -32000, "message": "underpriced"}}
            return [
                {**answers[0], "id": req[0]["id"]},
                refusal,
                {**answers[1], "id": req[2]["id"]},
            ]

        proxy.refuse = middle_refused
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(3)])
        assert all(isinstance(t, int) for t in out)
        middle = [v for v in told if v.nonce == start + 1]
        assert len(middle) == 1 and sorted(v.nonce for v in told) == [start, start + 1, start + 2]
        assert middle[0].max_fee > told[0].max_fee
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + 3


# ------------------------------------------------------------------ the estimate batch


@pytest.mark.anvil
def test_found_a_junk_gas_estimate_fails_only_its_own_call_and_leaves_no_gap(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The node answers one dry run of the batch with a result that is no gas amount (null). `int(None, 16)`
    raised TypeError out of `submit_many` after the earlier calls had taken nonces: nothing was sent, the
    nonces were kept (a gap holding every later challenge), and the dispatcher, which only expects
    ChainError, left those channels marked busy for good."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)

    def junk(req: Any, answer: Any) -> Any:
        if batch_of(req, ESTIMATE):
            return [{**a, "result": None} if i == 1 else a for i, a in enumerate(answer)]
        return answer

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(junk)
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"") for _ in range(3)])
        assert isinstance(out[1], ChainError) and not isinstance(out[0], ChainError | None)
        later = sender.submit_many([Call(target.address, b"")])
        tickets = tickets_of(out) + tickets_of(later)
        assert len(tickets) == 3
        done = settle_all(sender, tickets)
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + 3


@pytest.mark.anvil
@pytest.mark.parametrize("bad", ["0x0", "-0x5208", "0x" + "f" * 20])
def test_found_an_absurd_gas_estimate_is_refused_before_a_nonce_is_taken(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey], bad: str
) -> None:
    """A zero, negative or absurd estimate is no reason to sign a transaction: that call fails alone (the
    dispatcher tries it again), the others are sent at consecutive nonces."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)

    def absurd(req: Any, answer: Any) -> Any:
        if batch_of(req, ESTIMATE):
            return [{**a, "result": bad} if i == 0 else a for i, a in enumerate(answer)]
        return answer

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(absurd)
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"") for _ in range(2)])
        assert isinstance(out[0], ChainError) and isinstance(out[1], int)
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + 1


# ------------------------------------------------------------------ the tower


@pytest.mark.anvil
def test_found_a_junk_fee_answer_does_not_leave_the_victims_channel_unanswered(tmp_path: Path, anvil: Anvil) -> None:
    """The node answers the latest block without a base fee once, just as the tower sends the victim's
    challenge. The KeyError escaped `submit_many`; `Dispatcher._send` only handled ChainError, so the channel
    stayed marked busy and no later event or retry ever sent its challenge: the stale close stood."""
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "audit batch fees")
    victim = open_channel(s, 1, period=60)
    vcid = s.adj.channel_id(victim)
    latest = sign(s.adj.domain, eth_state(vcid, 5, 700), s.a, s.b)
    stale = sign(s.adj.domain, eth_state(vcid, 2, 100), s.a, s.b)

    def no_base_fee(req: Any, answer: Any) -> Any:
        if len(sender.batches) > 1:  # only while the first submission runs
            return answer
        if isinstance(req, dict) and req.get("method") == "eth_getBlockByNumber" and isinstance(answer, dict):
            result = dict(answer.get("result") or {})
            result.pop("baseFeePerGas", None)
            return {**answer, "result": result}
        return answer

    with RpcProxy(anvil.url, 0) as proxy:
        remote = RpcChain(proxy.url)
        sender = CountingSender(BumpingSender(remote, s.tower_key, bump_after=0.5))

        async def scenario() -> None:
            async with running_tower(replace(s, chain=remote), tmp_path / "t.db", sender=sender) as tower:
                await register(tower, victim, s.b)
                await push(tower, latest, s.b)
                proxy.rewrite = no_base_fee
                s.adj.close(s.a, victim, stale.state, stale.sig_a, stale.sig_b)
                await eventually("the victim's challenge mined", lambda: len(closes(s, vcid)) == 2, timeout=30)

        asyncio.run(asyncio.wait_for(scenario(), 60))
    [_, answer] = closes(s, vcid)
    assert answer.version == 5


# ------------------------------------------------------------------ following a batch: bumps, fills, resets


def watching(proxy: RpcProxy) -> list[str]:
    """The method of every request that reaches the proxy from now on ("batch:<method>" for a batch)."""
    seen: list[str] = []

    def note(req: Any) -> None:
        if isinstance(req, list):
            seen.append("batch:" + (req[0].get("method", "") if req else ""))
        elif isinstance(req, dict):
            seen.append(str(req.get("method")))

    proxy.refuse = note
    return seen


@pytest.mark.anvil
def test_found_fee_bumps_of_a_flood_in_flight_go_out_in_one_batch(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """A flood's challenges wait in the pool past `bump_after` (the block is full, or just not yet mined).
    `poll` replaced each with a bumped version in its own request: through a remote node, hundreds of round
    trips on the sender's only thread, during which no new challenge (the victim's) could be sent. They now
    go out in one batch, like the first versions."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = 30
    with RpcProxy(anvil.url, 0) as proxy, snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(n)])
        time.sleep(0.3)
        seen = watching(proxy)
        assert sender.poll() == []
        assert SEND not in seen and len(seen) <= 3, f"the bumps took {len(seen)} requests: {seen[:5]}..."
        assert len(told) == 2 * n and {v.nonce for v in told[n:]} == set(range(start, start + n))
        assert all(b.max_fee > a.max_fee for a, b in zip(told[:n], told[n:], strict=True))
        proxy.refuse = None
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + n


@pytest.mark.anvil
def test_found_abandoning_a_flood_in_flight_fills_the_nonces_in_one_batch(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The attacker answers its own channels while the tower's challenges to them wait in the pool: all moot
    at once. Each `abandon` sent its filler in its own request (hundreds of round trips before the victim's
    challenge could go out); the fillers now go out in one batch with the next poll's bumps, and each
    abandoned ticket ends as a filler mined, the others as their challenge mined."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = 30
    with RpcProxy(anvil.url, 0) as proxy, snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=60)
        out = tickets_of(sender.submit_many([Call(target.address, b"") for _ in range(n)]))
        seen = watching(proxy)
        moot = out[::2]
        for t in moot:
            sender.abandon(t)
        assert sender.poll() == []
        assert SEND not in seen and len(seen) <= 3, f"the fills took {len(seen)} requests: {seen[:5]}..."
        proxy.refuse = None
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, out)
    assert all(done[t].receipt is None and done[t].error is None for t in moot)
    assert all(done[t].receipt is not None for t in out if t not in moot)
    assert mined_nonce(rpc, k) == start + n
    assert rpc.balance(target.address) == 0  # value 0 either way; the fillers went to the tower itself


@pytest.mark.anvil
def test_held_a_reset_between_batches_keeps_nonces_consecutive(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """A reorg makes the tower `reset()` between two batches while the first is still in the pool: the second
    takes the nonces after the first (the pool's count and the flight agree), none reused, none skipped."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        told: list[SentTx] = []
        sender = BumpingSender(rpc, k, bump_after=60)
        first = sender.submit_many([Call(target.address, b"", told.append) for _ in range(3)])
        sender.reset()
        second = sender.submit_many([Call(target.address, b"", told.append) for _ in range(2)])
        assert [v.nonce for v in told] == list(range(start, start + 5))
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, tickets_of(first) + tickets_of(second))
    assert all(s.receipt is not None for s in done.values())


@pytest.mark.anvil
def test_held_batch_answers_out_of_order_are_matched_by_id(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """JSON-RPC lets a node answer a batch in any order: web3 sorts the answers by id, so a reversed answer
    to the dry runs still gives each call its own estimate (a swapped one would leave the larger call short
    of gas)."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    big = b"\x01" * 2000  # 32,000 gas of calldata above a plain transfer
    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(lambda req, answer: answer[::-1] if batch_of(req, ESTIMATE) else answer)
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, big), Call(target.address, b"")])
        assert all(isinstance(t, int) for t in out)
        done = settle_all(sender, tickets_of(out))
    [big_receipt, small_receipt] = [done[t].receipt for t in tickets_of(out)]
    assert big_receipt is not None and small_receipt is not None
    assert big_receipt.gas_used > small_receipt.gas_used == 21_000
    assert mined_nonce(rpc, k) == start + 2


@pytest.mark.anvil
def test_held_a_dropped_estimate_batch_takes_no_nonce(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The batch of dry runs gets no answer: every call fails (the dispatcher tries them again), no nonce is
    taken, and the next batch starts at the key's next nonce."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy:
        proxy.rewrite = once(lambda req, answer: LOST if batch_of(req, ESTIMATE) else answer)
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        with pytest.raises(ChainError):
            sender.submit_many([Call(target.address, b"", told.append) for _ in range(3)])
        assert told == []
        out = sender.submit_many([Call(target.address, b"", told.append)])
        done = settle_all(sender, tickets_of(out))
    assert [v.nonce for v in told] == [start] and all(s.receipt is not None for s in done.values())


@pytest.mark.anvil
@pytest.mark.parametrize("junk", ["no status", "not an object"])
def test_found_a_junk_receipt_does_not_lose_the_others_settled_in_the_same_poll(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey], junk: str
) -> None:
    """The node answers one receipt of the poll's batch without a status (a pre-Byzantium shape, or junk).
    `poll` raised KeyError after it had taken the transactions settled before it out of flight: their endings
    were never reported, so the dispatcher kept their channels busy for good. Now the junk receipt counts
    as not found (read again next poll) and the others are reported."""
    _, k, target = funded
    with RpcProxy(anvil.url, 0) as proxy:
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=60)
        out = tickets_of(sender.submit_many([Call(target.address, b"") for _ in range(3)]))

        def no_status(req: Any, answer: Any) -> Any:
            if isinstance(req, list) and batch_of(req[1:], "eth_getTransactionReceipt") and isinstance(answer, list):
                bad = {**answer[2]["result"], "status": None} if junk == "no status" else "0xjunk"
                return [{**a, "result": bad} if i == 2 else a for i, a in enumerate(answer)]
            return answer

        proxy.rewrite = once(no_status)
        done = settle_all(sender, out)
    assert all(s.receipt is not None for s in done.values())


@pytest.mark.anvil
@pytest.mark.parametrize("automine", [False, True])
def test_found_a_broadcast_taken_but_answered_with_an_error_is_not_displaced_by_a_filler(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey], automine: bool
) -> None:
    """The node takes every broadcast of the batch but answers the middle one with an error. Sent again alone,
    anvil calls it "transaction already imported" (geth: "already known"), which the sender did not know:
    it gave the nonce up and filled it with a transfer priced to replace the challenge, which it did. The
    challenge was lost from the pool and went out again only after the dispatcher's back-off, at a new nonce.
    Mined at once (automine), the resend is "nonce too low" and the sender called the nonce taken by another
    transaction. Now it is followed as the node holds it, its owner told of it once."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy, snapshot(rpc):
        rpc._rpc("evm_setAutomine", [automine])

        def middle_errs(req: Any, answer: Any) -> Any:
            if batch_of(req, SEND) and isinstance(answer, list):
                err = {"code": -32603, "message": "internal error"}
                return [{"jsonrpc": "2.0", "id": a["id"], "error": err} if i == 1 else a for i, a in enumerate(answer)]
            return answer

        proxy.rewrite = once(middle_errs)
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=60)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(3)])
        assert all(isinstance(t, int) for t in out), f"a challenge the node holds reported unsent: {out}"
        assert sorted(v.nonce for v in told) == [start, start + 1, start + 2]
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values()), "a challenge was replaced by a filler"
    assert mined_nonce(rpc, k) == start + 3


@pytest.mark.anvil
def test_found_a_reorg_noticed_while_a_batch_is_signed_gives_no_nonce_twice(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The tower's watcher calls `sender.reset()` on its own thread when it sees a reorg, while the sender's
    thread may be signing a batch. A reset between two nonces of the batch made the next one re-read the
    node's pending count, which does not hold the batch (not broadcast yet, not in flight): the rest of the
    batch took nonces already given, so challenges replaced each other in the pool. A reset now takes
    effect at the next submission, on the sender's thread."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = 150
    with snapshot(rpc):
        rpc._rpc("evm_setAutomine", [False])
        told: list[SentTx] = []
        sender = BumpingSender(rpc, k, bump_after=60)
        out: list[list[int | ChainError]] = []
        batch = threading.Thread(
            target=lambda: out.append(sender.submit_many([Call(target.address, b"", told.append) for _ in range(n)]))
        )
        batch.start()
        while batch.is_alive():  # the watcher noticing reorgs, as often as it can
            sender.reset()
        batch.join()
        nonces = [v.nonce for v in told]
        assert len(set(nonces)) == len(nonces) == n, f"{len(nonces) - len(set(nonces))} nonces given twice"
        assert sorted(nonces) == list(range(start, start + n))
        rpc._rpc("evm_mine", [])
        done = settle_all(sender, tickets_of(out[0]))
    assert all(s.receipt is not None for s in done.values())


@pytest.mark.anvil
def test_found_a_failing_poll_does_not_stop_the_next_challenge_going_out(tmp_path: Path, anvil: Anvil) -> None:
    """The node fails the batch of receipts the sender reads each turn (one error for the whole batch: a batch
    too large for it, the flood's versions piling up). `Dispatcher._turn` polled first and the failure ended
    the turn before anything queued was sent: with one challenge in flight, the victim's close that came next
    was never answered. The receipts can wait a turn; the challenges waiting to go out cannot."""
    rpc = RpcChain(anvil.url)
    s = deploy(rpc, "audit batch poll")
    first, victim = open_channel(s, 1, period=60), open_channel(s, 2, period=60)
    fcid, vcid = s.adj.channel_id(first), s.adj.channel_id(victim)

    def polls(req: Any) -> Any:
        if isinstance(req, list) and req and req[0].get("method") == "eth_getTransactionCount":
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "batch too large"}}
        return None

    with RpcProxy(anvil.url, 0) as proxy:
        remote = RpcChain(proxy.url)
        sender = BumpingSender(remote, s.tower_key, bump_after=0.5)

        async def scenario() -> None:
            async with running_tower(replace(s, chain=remote), tmp_path / "t.db", sender=sender) as tower:
                for params, cid in ((first, fcid), (victim, vcid)):
                    await register(tower, params, s.b)
                    await push(tower, sign(s.adj.domain, eth_state(cid, 5, 700), s.a, s.b), s.b)
                proxy.refuse = polls
                stale = sign(s.adj.domain, eth_state(fcid, 2, 100), s.a, s.b)
                s.adj.close(s.a, first, stale.state, stale.sig_a, stale.sig_b)
                await eventually("the first challenge mined", lambda: len(closes(s, fcid)) == 2, timeout=30)
                stale = sign(s.adj.domain, eth_state(vcid, 2, 100), s.a, s.b)
                s.adj.close(s.a, victim, stale.state, stale.sig_a, stale.sig_b)
                await eventually("the victim's challenge mined", lambda: len(closes(s, vcid)) == 2, timeout=30)

        asyncio.run(asyncio.wait_for(scenario(), 90))
    assert [c.version for c in closes(s, vcid)] == [2, 5]


@pytest.mark.anvil
def test_held_a_nonce_taken_by_another_transaction_mid_batch_fails_that_call_alone(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """Between the dry runs and the broadcasts, another transaction of the tower's key takes the first nonce
    of the batch (an operator's transfer, a restarted process): that call alone fails ("nonce too low", to be
    sent again by the dispatcher), the others are mined, and the next submission starts after them."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    with RpcProxy(anvil.url, 0) as proxy:

        def first_nonce_taken(req: Any) -> Any:
            if batch_of(req, SEND):
                proxy.refuse = None
                BumpingSender(rpc, k).submit(k.address, b"")  # mined at once (automine)
            return None

        proxy.refuse = first_nonce_taken
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"") for _ in range(3)])
        assert isinstance(out[0], ChainError) and "taken" in str(out[0])
        later = sender.submit_many([Call(target.address, b"")])
        done = settle_all(sender, tickets_of(out) + tickets_of(later))
    assert len(done) == 3 and all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + 4  # the other transaction and our three, no gap


@pytest.mark.anvil
def test_found_a_batch_refused_entry_by_entry_is_handed_back_not_filled(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """A provider's rate limit answers every entry of the batch with its own error (nothing taken), and the
    lone resend of each too. The nonces were given back lowest first, so each but the last looked like a gap
    and got a filler transaction (one more round trip each, 21,000 gas each had the node taken them). The
    highest now goes first: every nonce is handed back, the next batch starts where this one did."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = 6
    singles: list[Any] = []

    def rate_limited(req: Any) -> Any:
        err = {"code": -32005, "message": "request rate exceeded"}
        if batch_of(req, SEND):
            return [{"jsonrpc": "2.0", "id": r["id"], "error": err} for r in req]
        if isinstance(req, dict) and req.get("method") == SEND:
            singles.append(req)
            return {"jsonrpc": "2.0", "id": req["id"], "error": err}
        return None

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.refuse = rate_limited
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=0.2)
        out = sender.submit_many([Call(target.address, b"") for _ in range(n)])
        assert all(isinstance(t, ChainError) for t in out)
        assert len(singles) == n, f"{len(singles) - n} fillers sent for nonces nobody used"
        proxy.refuse = None
        told: list[SentTx] = []
        later = sender.submit_many([Call(target.address, b"", told.append)])
        done = settle_all(sender, tickets_of(later))
    assert [v.nonce for v in told] == [start] and all(s.receipt is not None for s in done.values())


@pytest.mark.anvil
def test_found_a_batch_refused_as_underpriced_is_bumped_as_a_batch(
    anvil: Anvil, funded: tuple[RpcChain, PrivateKey, PrivateKey]
) -> None:
    """The node's price floor is above the tower's fees (an L2's minimum tip, a pool under pressure): every
    entry of the flood's batch is refused as underpriced. Each went through `_broadcast` alone, its bumps one
    request at a time: a round trip per challenge (per bump) through a remote node, while the victim waits.
    The refused ones now go again together at bumped fees."""
    rpc, k, target = funded
    start = mined_nonce(rpc, k)
    n = 20
    seen: list[str] = []

    def floor_once(req: Any) -> Any:
        if batch_of(req, SEND):
            seen.append("batch")
            if len(seen) == 1:
                err = {"code": -32000, "message": "transaction underpriced"}
                return [{"jsonrpc": "2.0", "id": r["id"], "error": err} for r in req]
        elif isinstance(req, dict) and req.get("method") == SEND:
            seen.append("single")
        return None

    with RpcProxy(anvil.url, 0) as proxy:
        proxy.refuse = floor_once
        told: list[SentTx] = []
        sender = BumpingSender(RpcChain(proxy.url), k, bump_after=60)
        out = sender.submit_many([Call(target.address, b"", told.append) for _ in range(n)])
        assert all(isinstance(t, int) for t in out)
        assert seen == ["batch", "batch"], f"{seen.count('single')} requests sent one at a time"
        assert sorted(v.nonce for v in told) == list(range(start, start + n))
        done = settle_all(sender, tickets_of(out))
    assert all(s.receipt is not None for s in done.values())
    assert mined_nonce(rpc, k) == start + n

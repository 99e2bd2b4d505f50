"""Issue 10, attack 1 measured: N hostile disputes in one block with a victim's stale close.

python bench/tower_flood.py --json            (N = 0, 50, 500; a few minutes on 2 cores)
python bench/tower_flood.py --n 50 --json

On a real anvil with a mempool (automine off): the bench mines a block of 12 s of chain time every
`--block-wall` seconds. The attacker owns N channels (both keys), has the tower watch each with version
2, and closes each with version 1 in the same block as the victim's stale close (the victim's last, a
60 s window for all). Two kinds of flood: `unfunded` (nothing deposited: the tower answers none of them)
and `funded` (1 wei deposited in each, so the tower must answer all N + 1, earliest window end first,
all in flight at once). Reported per run: the block in which the victim's challenge landed, counted
from the block of the close (the window is 5 blocks), and the gas the tower and the attacker spent."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_hash.auto import keccak

from statechannel.chain.adjudicator import Adjudicator
from statechannel.chain.rpc import RpcChain
from statechannel.core.crypto import PrivateKey
from statechannel.core.eip712 import state_digest
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObservedClose
from statechannel.core.types import ETH, ChannelParams, Domain, State, to_checksum
from statechannel.watchtower.sender import BumpingSender
from statechannel.watchtower.service import Tower
from statechannel.watchtower.sqlite_store import SqliteTowerStore

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tests.anvil import Anvil  # noqa: E402 (the anvil the test suite starts, started the same way)
from tests.watchtower.helpers import push, register  # noqa: E402 (requests signed by a party, as clients do)

ETHER = 10**18
WINDOW = 60
BLOCK_TIME = 12
GAS_LIMIT = 300_000_000  # room for 500 closes in one block (a real chain would spread them over a few)


def key(label: str) -> PrivateKey:
    return PrivateKey(keccak(f"bench tower flood {label}".encode()))


def sign(domain: Domain, state: State, a: PrivateKey, b: PrivateKey) -> SignedState:
    d = state_digest(domain, state)
    return SignedState(state, a.sign_digest(d), b.sign_digest(d))


def raw_send(rpc: RpcChain, k: PrivateKey, to: bytes, data: bytes, nonce: int, value: int = 0) -> None:
    base = int(rpc._rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    tx = {
        "type": 2,
        "chainId": rpc.chain_id,
        "nonce": nonce,
        "gas": 200_000,
        "maxFeePerGas": 4 * base + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "to": to_checksum(to),
        "value": value,
        "data": data,
    }
    rpc._rpc("eth_sendRawTransaction", ["0x" + bytes(Account.sign_transaction(tx, k.secret).raw_transaction).hex()])


def gas_of(rpc: RpcChain, sender: bytes, first: int, last: int) -> int:
    """Gas used by `sender`'s transactions mined in blocks first..last."""
    total = 0
    for n in range(first, last + 1):
        block = rpc._rpc("eth_getBlockByNumber", [hex(n), True])
        hashes = [t["hash"] for t in block["transactions"] if bytes.fromhex(t["from"][2:]) == sender]
        for r in rpc.rpc_batch([("eth_getTransactionReceipt", [h]) for h in hashes]):
            total += int(r["gasUsed"], 16)
    return total


def run(url: str, n: int, funded: bool, block_wall: float, tag: str) -> dict[str, Any]:
    rpc = RpcChain(url)
    snap = rpc._rpc("evm_snapshot", [])
    try:
        return asyncio.run(_run(rpc, n, funded, block_wall, tag))
    finally:
        rpc._rpc("evm_setAutomine", [True])
        rpc._rpc("evm_revert", [snap])


async def _run(rpc: RpcChain, n: int, funded: bool, block_wall: float, tag: str) -> dict[str, Any]:  # noqa: PLR0915
    a, b, x, y, deployer, tower_key = (key(f"{tag} {w}") for w in ("a", "b", "x", "y", "deployer", "tower"))
    for k in (a, b, x, y, deployer, tower_key):
        rpc.fund(k.address, 1000 * ETHER)
    adj, _ = Adjudicator.deploy(rpc, deployer)
    victim = ChannelParams(a.address, b.address, WINDOW, 1)
    adj.open(a, victim, ETHER)
    vcid = adj.channel_id(victim)
    latest = sign(adj.domain, State(vcid, 5, (ETH,), (700,)), a, b)
    stale = sign(adj.domain, State(vcid, 2, (ETH,), (100,)), a, b)
    start = rpc.block().number
    hostile = [ChannelParams(x.address, y.address, WINDOW, 1000 + i) for i in range(n)]
    for p in hostile:
        adj.open(x, p, 1 if funded else 0)
    setup_end = rpc.block().number
    setup_gas = gas_of(rpc, x.address, start + 1, setup_end)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteTowerStore(Path(tmp) / "t.db", rpc.chain_id, adj.address)
        tower = Tower(rpc, adj.address, tower_key, store, BumpingSender(rpc, tower_key), poll_interval=0.1)
        await tower.start()
        try:
            for p in hostile:
                await register(tower, p, x)
                await push(tower, sign(adj.domain, State(adj.channel_id(p), 2, (ETH,), (0,)), x, y), x)
            await register(tower, victim, b)
            await push(tower, latest, b)
            rpc._rpc("evm_setAutomine", [False])
            rpc._rpc("evm_setBlockGasLimit", [hex(GAS_LIMIT)])
            nonce = int(rpc._rpc("eth_getTransactionCount", [to_checksum(x.address), "pending"]), 16)
            for i, p in enumerate(hostile):
                v1 = sign(adj.domain, State(adj.channel_id(p), 1, (ETH,), (0,)), x, y)
                data = adj.abi.encode_call("close", p.as_abi(), v1.state.as_abi(), v1.sig_a.as_abi(), v1.sig_b.as_abi())
                raw_send(rpc, x, adj.address, data, nonce + i)
            b_nonce = int(rpc._rpc("eth_getTransactionCount", [to_checksum(b.address), "pending"]), 16)
            call = adj.abi.encode_call(
                "close", victim.as_abi(), stale.state.as_abi(), stale.sig_a.as_abi(), stale.sig_b.as_abi()
            )
            raw_send(rpc, b, adj.address, call, b_nonce)
            rpc._rpc("evm_mine", [rpc.block().timestamp + BLOCK_TIME])
            close_block = rpc.block().number
            [closed] = [
                e
                for e in adj.events(close_block, close_block)
                if isinstance(e, ChainObservedClose) and e.channel_id == vcid
            ]
            t0 = time.monotonic()
            landed = None
            while rpc.block().timestamp < closed.finalizes_at + 2 * BLOCK_TIME:
                await asyncio.sleep(block_wall)
                rpc._rpc("evm_mine", [rpc.block().timestamp + BLOCK_TIME])
                answers = [
                    e
                    for e in adj.events(close_block + 1)
                    if isinstance(e, ChainObservedClose) and e.channel_id == vcid and e.challenge
                ]
                if answers:
                    landed = answers[0].origin.block_number
                    break
            wall = time.monotonic() - t0
            # let the rest of the tower's challenges land before counting its gas
            for _ in range(10):
                if not tower.dispatch.busy:
                    break
                await asyncio.sleep(block_wall)
                rpc._rpc("evm_mine", [rpc.block().timestamp + BLOCK_TIME])
            end = rpc.block().number
        finally:
            await tower.stop()
            await store.close()
    answered = sum(1 for c in tower.challenges.values() if c.outcome == "mined")
    return {
        "hostile": n,
        "hostile_funded_wei_each": 1 if funded else 0,
        "victim_challenge_block_after_close": None if landed is None else landed - close_block,
        "window_blocks": WINDOW // BLOCK_TIME,
        "in_window": landed is not None and rpc.block(landed).timestamp < closed.finalizes_at,
        "wall_s_to_victim_challenge": round(wall, 2),
        "tower_challenges_mined": answered,
        "tower_gas": gas_of(rpc, tower_key.address, close_block, end),
        "attacker_close_gas": gas_of(rpc, x.address, close_block, close_block),
        "attacker_open_gas": setup_gas,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append", help="hostile disputes (repeatable; default 0, 50, 500)")
    ap.add_argument("--block-wall", type=float, default=1.0, help="wall seconds between blocks of 12 s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = args.n or [0, 50, 500]
    anvil = Anvil()
    try:
        runs = []
        for n in sizes:
            for funded in (False, True) if n else (False,):
                runs.append(run(anvil.url, n, funded, args.block_wall, f"{n} {funded}"))
                if not args.json:
                    print(runs[-1], flush=True)
    finally:
        anvil.stop()
    out = {"bench": "tower_flood", "block_time_s": BLOCK_TIME, "window_s": WINDOW, "block_wall_s": args.block_wall}
    print(json.dumps({**out, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

"""Cost of encoding a channel for storage (core.persist.encode_channel) against a plain msgspec encode
of the whole channel (what it did before proposals' JSON was cached), by pipeline depth.

python bench/persist.py [--depths 0,1,8,64] [--payments 4] [--swaps 1] [--rounds 2000]

Times are per encode. Two cases per depth: `same` encodes one channel value again and again (all of
its pieces cached); `pipeline` is the node's steady state, alternating the channel after a propose
(`pending` proposals in flight, one of them new) and after the accept (one fewer, a new latest), the
same Proposal objects carried from value to value as the machine does. At depth 0 it is the receiving
side: a new latest on every encode. The plain figure is what encode_channel cost before the cache."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
from eth_hash.auto import keccak

from statechannel.core.channel import Channel, Kind, Phase, Proposal
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.io import Payment, SignedState
from statechannel.core.persist import clear_cache, decode_channel, encode_channel
from statechannel.core.quotes import Quote, Swap, sign_quote
from statechannel.core.types import ETH, ChannelParams, Domain, State

DOMAIN = Domain(chain_id=31337, adjudicator=b"\xad" * 20)
TOKEN = b"\x70" * 20
KEY_A = PrivateKey(keccak(b"bench persist A"))
KEY_B = PrivateKey(keccak(b"bench persist B"))
_plain = msgspec.json.Encoder()


def _channel() -> Channel:
    params = ChannelParams(KEY_A.address, KEY_B.address, 100, 1)
    ch = Channel(params, DOMAIN, 0, (ETH, TOKEN), ((10**21, 10**21), (10**21, 10**21)), Phase.OPEN, None)
    return dataclasses.replace(ch, latest=_signed(ch, 1), opened=True, funded=ch.deposits)


def _state(ch: Channel, version: int) -> State:
    return State(ch.channel_id, version, ch.assets, (-version * 10**15, version * 3 * 10**12))


def _signed(ch: Channel, version: int) -> SignedState:
    state = _state(ch, version)
    digest = ch.digest(state)
    return SignedState(state, KEY_A.sign_digest(digest), KEY_B.sign_digest(digest))


def _proposal(ch: Channel, version: int, sig: Signature, payments: int, swaps: tuple[Swap, ...]) -> Proposal:
    pays = tuple(Payment(f"pay-{version}-{i}", ETH, 10**15 + i) for i in range(payments))
    kind = Kind.SWAP if swaps else Kind.PAY
    return Proposal(_state(ch, version), sig, kind, version, version - 1, payments=pays, swaps=swaps)


def measure(depth: int, payments: int, swap_count: int, rounds: int) -> dict[str, Any]:
    ch = _channel()
    sig = KEY_A.sign_digest(ch.digest(_state(ch, 2)))  # one signature for all: signing is not measured
    quote = Quote(ch.channel_id, 7, TOKEN, ETH, True, 3, 7, 10**18, 2**40)
    swaps = tuple(Swap(quote, sign_quote(DOMAIN, quote, KEY_B), 3 * (i + 1)) for i in range(swap_count))
    proposals = [_proposal(ch, v, sig, payments, swaps) for v in range(rounds + depth + 2)]
    # one SignedState object per version, shared by every channel value it is the latest of, as in the machine
    latest = [ch.latest] + [SignedState(p.state, p.sig, p.sig) for p in proposals[1:]]

    def at(v: int, in_flight: int) -> Channel:
        """Latest v, versions v+1..v+in_flight in flight (the same Proposal objects throughout)."""
        pending = tuple(proposals[v + 1 : v + 1 + in_flight])
        return dataclasses.replace(ch, latest=latest[v], pending=pending, next_pid=v + in_flight + 1)

    # the node's steady state: each update is a propose (one proposal more) then an accept (one fewer,
    # a new latest), each persisted; at depth 0, the receiving side: a new latest each time
    sequence = [at(v, 0) for v in range(1, rounds + 1)] if depth == 0 else []
    for v in range(1, rounds + 1 if depth else 1):
        sequence += [at(v, depth), at(v + 1, depth - 1)]
    same = sequence[0]

    def per_encode_us(encode: Callable[[Channel], bytes], channels: list[Channel]) -> float:
        best = float("inf")
        for _ in range(5):
            clear_cache()
            encode(channels[0])  # warm: the channel as it stood before the run
            start = time.perf_counter()
            for c in channels[1:]:
                encode(c)
            best = min(best, time.perf_counter() - start)
        return round(best / (len(channels) - 1) * 1e6, 2)

    for c in [*sequence[:100], sequence[-1]]:
        raw = encode_channel(c)
        assert raw == _plain.encode(c), "not byte-identical to the plain encoder"
        assert decode_channel(raw) == c
    return {
        "pending": depth,
        "bytes": len(_plain.encode(same)),
        "same_us": {
            "plain": per_encode_us(_plain.encode, [same] * (rounds + 1)),
            "cached": per_encode_us(encode_channel, [same] * (rounds + 1)),
        },
        "pipeline_us": {
            "plain": per_encode_us(_plain.encode, sequence),
            "cached": per_encode_us(encode_channel, sequence),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="0,1,8,64", help="pending proposals per channel, comma separated")
    parser.add_argument("--payments", type=int, default=4, help="payments per proposal")
    parser.add_argument("--swaps", type=int, default=1, help="swaps per proposal (then it carries no payments)")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    payments = 0 if args.swaps else args.payments
    results = [measure(int(d), payments, args.swaps, args.rounds) for d in args.depths.split(",")]
    report = {
        "what": "encode_channel (proposal JSON cached) vs plain msgspec encode of the whole channel",
        "payments_per_proposal": payments,
        "swaps_per_proposal": args.swaps,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

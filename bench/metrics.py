"""What counting costs the node: NodeMetrics' effect hook per call, for the effects of one update.

python bench/metrics.py [--rounds 200000]

One update on the leader is a SendMessage(Propose) and, once answered, a NotifySent; on the follower a
NotifyReceived. Each figure is the mean time of one hook call; the store's commit hook and the chain
wrapper cost one histogram observation per commit or call, measured as `observe`."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from statechannel.api.metrics import NodeMetrics
from statechannel.core import messages as m
from statechannel.core.io import Effect, NotifyReceived, NotifySent, Payment, SendMessage
from statechannel.core.types import ETH, State

CID = b"\x11" * 32


def per_call(fn: Callable[[int], None], rounds: int) -> float:
    start = time.perf_counter()
    for i in range(rounds):
        fn(i)
    return (time.perf_counter() - start) / rounds * 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200_000)
    rounds = parser.parse_args().rounds
    metrics = NodeMetrics()
    wire = m.WireState.of(State(CID, 1, (ETH,), (1,)))
    propose: Effect = SendMessage(m.Propose(wire, b"\x00" * 65, 1, 0))
    sent: Effect = NotifySent((Payment("p", ETH, 1),), 1)
    received: Effect = NotifyReceived(((ETH, 1),), 1)

    def leader(i: int) -> None:
        metrics.on_effect(CID, propose)
        metrics.on_effect(CID, sent)

    out = {
        "leader_update_ns": round(per_call(leader, rounds)),
        "follower_update_ns": round(per_call(lambda i: metrics.on_effect(CID, received), rounds)),
        "observe_ns": round(per_call(lambda i: metrics.on_commit(0.001, 3, True), rounds) / 2),
        "rounds": rounds,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Issue 13, part 5: a node weighs a challenge against what it wins back, and says why in the log line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statechannel.core.eip712 import state_hash
from statechannel.core.io import ChainDisputeRecorded, SubmitTxChallenge
from statechannel.core.machine import transition
from statechannel.node.onchain import CHALLENGE_GAS, weigh
from tests.core.harness import Pair

GWEI = 10**9


def challenge_after_stale_close(second_payment: int) -> tuple[Pair, SubmitTxChallenge]:
    """A pays B 10, then `second_payment`; A closes with the state before the second payment; B, whose
    latest pays it `second_payment` more, is asked to challenge."""
    pair = Pair(deposit_a=10**18, deposit_b=10**18, seed=f"weigh {second_payment}")
    pair.pay(0, 10)
    pair.deliver_all()
    stale = pair.b.ch.latest.state  # type: ignore[union-attr]
    pair.pay(0, second_payment)
    pair.deliver_all()
    record = ChainDisputeRecorded(stale.version, 10**6, state_hash(stale), False, stale)
    ch, effects = transition(pair.b.ch, record, pair.b.key)
    pair.b.channel = ch
    [challenge] = [e for e in effects if isinstance(e, SubmitTxChallenge)]
    return pair, challenge


@pytest.mark.parametrize(
    ("at_stake", "gas_price", "sent"),
    [
        (1_000, GWEI, False),  # 1,000 wei back for about 55,000 gwei of gas: not worth it
        (CHALLENGE_GAS * GWEI, GWEI, False),  # exactly the gas: nothing gained
        (CHALLENGE_GAS * GWEI + 1, GWEI, True),
        (10**17, 50 * GWEI, True),
        (1, 0, True),  # free gas: any gain is worth it
    ],
)
def test_a_challenge_is_sent_only_where_it_wins_back_more_than_gas(at_stake: int, gas_price: int, sent: bool) -> None:
    pair, challenge = challenge_after_stale_close(at_stake)
    worth, why = weigh(pair.b.ch, challenge, gas_price)
    assert worth is sent
    if sent:
        assert why.startswith(f"challenging version {challenge.recorded_version} with {challenge.signed.state.version}")
        assert f"{at_stake:,} wei at stake" in why
    else:
        assert why == (
            f"challenge not sent: version {challenge.recorded_version} costs me {at_stake:,} wei, "
            f"the challenge about {CHALLENGE_GAS * gas_price:,}"
        )


def test_a_challenge_against_a_close_whose_state_is_unknown_is_always_sent() -> None:
    """Without the recorded state the node cannot tell what the close costs it: it challenges."""
    pair, challenge = challenge_after_stale_close(1_000)
    ch = pair.b.ch
    assert ch.dispute is not None
    blind = replace(ch, dispute=replace(ch.dispute, state=None))
    worth, why = weigh(blind, challenge, 10**12)
    assert worth and "unknown" in why

"""What the node did on chain, told truthfully: a log of every submission's verdict (so a command that
started an on-chain step can fail with the chain's reason, at once), and the wallet checks made before a
channel is proposed (so money the wallet does not hold never leaves a channel stuck in funding)."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict, deque
from dataclasses import dataclass

from statechannel.chain.adjudicator import Token
from statechannel.chain.base import ChainError
from statechannel.core.channel import Channel
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import SubmitTxChallenge, SubmitTxSettle
from statechannel.core.types import ETH, to_checksum
from statechannel.node.chainio import ChainIO, SubmitTx, Verdict

log = logging.getLogger(__name__)
KEPT_PER_CHANNEL = 32
DEFAULT_GAS_PRICE = 2 * 10**9
"""Wei per gas assumed before this node has paid for a transaction of its own (then: what it paid last)."""


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """One submission's verdict: `what` is the step (Open, Deposit, Close, Challenge, Settle, ...)."""

    seq: int
    channel_id: bytes
    what: str
    ok: bool
    reason: str  # why it failed; "" when mined
    gas: int
    tx_hash: str

    def describe(self) -> str:
        if self.ok:
            return f"{self.what} mined (gas {self.gas:,}, tx {self.tx_hash})"
        return f"{self.what} failed: {self.reason}"


class TxLog:
    """The last verdicts per channel, numbered, so a waiter asks only for those after its own step."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.last = 0
        self.gas_price = DEFAULT_GAS_PRICE  # what my last mined transaction paid per gas
        self._by_channel: dict[bytes, deque[TxOutcome]] = defaultdict(lambda: deque(maxlen=KEPT_PER_CHANNEL))

    def record(self, channel_id: bytes, tx: SubmitTx, verdict: Verdict) -> TxOutcome:
        what = type(tx).__name__.removeprefix("SubmitTx")
        r = verdict.receipt
        if r is not None:
            if r.gas_used and r.fee:
                self.gas_price = r.fee // r.gas_used
            outcome = TxOutcome(next(self._seq), channel_id, what, True, "", r.gas_used, "0x" + r.tx_hash.hex())
        else:
            reason = f"reverted: {verdict.reverted}" if verdict.reverted is not None else (verdict.failed or "failed")
            outcome = TxOutcome(next(self._seq), channel_id, what, False, reason, 0, "")
        self.last = outcome.seq
        self._by_channel[channel_id].append(outcome)
        return outcome

    def since(self, channel_id: bytes, seq: int) -> list[TxOutcome]:
        return [o for o in self._by_channel.get(channel_id, ()) if o.seq > seq]

    def forget(self, channel_id: bytes) -> None:
        self._by_channel.pop(channel_id, None)


def check_wallet(chainio: ChainIO, me: bytes, deposits: dict[bytes, int]) -> None:
    """Refuse, before anything is signed, deposits the wallet cannot make: more ether or tokens than it
    holds, or a token address that is no ERC-20. A chain that does not answer is no verdict: the
    submission will say what went wrong."""
    for asset, amount in deposits.items():
        if amount <= 0:
            continue
        try:
            if asset == ETH:
                held = chainio.chain.balance(me)
                what = "wei"
            else:
                try:
                    held = Token(chainio.chain, asset).balance_of(me)
                except ChainError:
                    raise
                except Exception:  # no code there, or an answer no ERC-20 gives
                    raise LocalError(
                        Reason.BAD_ASSETS, f"{to_checksum(asset)} is not an ERC-20 token (balanceOf gives no balance)"
                    ) from None
                what = f"of token {to_checksum(asset)}"
        except ChainError as exc:
            log.info("wallet check skipped, the chain did not answer: %s", exc)
            return
        if held < amount:
            gas = " (and gas)" if asset == ETH else ""
            raise LocalError(
                Reason.INSUFFICIENT_FUNDS,
                f"the wallet {to_checksum(me)} holds {held:,} {what}; the deposit is {amount:,}{gas}",
            )


SETTLE_GAS = 60_000
"""About what a settle costs (bench/gas.py: 50,781 gas for ETH, 54,377 with a token), with a margin."""
CHALLENGE_GAS = 55_000
"""About what a challenge costs (45,676 / 48,146 gas), with a margin."""
SETTLE_GRACE = 600
"""Chain seconds the side owed less leaves the owed side to settle, before it settles itself."""


def weigh(
    ch: Channel, tx: SubmitTxSettle | SubmitTxChallenge, gas_price: int, peer_online: bool = True
) -> tuple[bool, str]:
    """Whether a settle or a challenge is worth its gas, and why (for the log). Token amounts have no
    price here: any token at stake is worth it. A settle pays both sides, so the side the recorded state
    owes more sends it; the other side does only after SETTLE_GRACE, if the owed side has not (at once
    when the owed side is offline: it will not)."""
    me, peer = ch.me, ch.peer
    if isinstance(tx, SubmitTxSettle):
        cost = SETTLE_GAS * gas_price
        pairs = ch.balances(tx.state)
        mine = [(asset, p[me], p[peer]) for asset, p in zip(ch.assets, pairs, strict=True)]
        eth_mine = sum(m for asset, m, _ in mine if asset == ETH)
        eth_peer = sum(o for asset, _, o in mine if asset == ETH)
        tokens = any(m for asset, m, _ in mine if asset != ETH)
        stake = f"{eth_mine:,} wei{' and tokens' if tokens else ''} owed to me, {eth_peer:,} wei to the peer"
        if not tokens and eth_mine <= cost:
            return False, f"settle not sent: it would cost about {cost:,} wei for {stake}"
        owed_more = tokens or eth_mine >= eth_peer
        if not owed_more and peer_online and ch.now < tx.finalizes_at + SETTLE_GRACE:
            return False, f"settle left to the peer, owed more ({stake}) until {SETTLE_GRACE} s after the window"
        return True, f"settling: about {cost:,} wei of gas for {stake}"
    cost = CHALLENGE_GAS * gas_price
    latest = ch.latest
    recorded = tx.recorded_version
    if latest is None:
        return True, "challenging"
    now_pairs = ch.balances(latest.state)
    told = ch.dispute.state if ch.dispute is not None else None
    if told is None:
        return True, f"challenging version {recorded} (its state is unknown here: whatever it pays may be wrong)"
    then_pairs = ch.balances(told)
    gain_eth = sum(n[me] - t[me] for asset, n, t in zip(ch.assets, now_pairs, then_pairs, strict=True) if asset == ETH)
    gain_tokens = any(
        n[me] > t[me] for asset, n, t in zip(ch.assets, now_pairs, then_pairs, strict=True) if asset != ETH
    )
    if not gain_tokens and gain_eth <= cost:
        return False, f"challenge not sent: version {recorded} costs me {gain_eth:,} wei, the challenge about {cost:,}"
    what = f"{gain_eth:,} wei" + (" and tokens" if gain_tokens else "")
    return (
        True,
        f"challenging version {recorded} with {latest.state.version}: {what} at stake, about {cost:,} wei of gas",
    )

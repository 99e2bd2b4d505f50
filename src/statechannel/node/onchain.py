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
from statechannel.core.errors import LocalError, Reason
from statechannel.core.types import ETH, to_checksum
from statechannel.node.chainio import ChainIO, SubmitTx, Verdict

log = logging.getLogger(__name__)
KEPT_PER_CHANNEL = 32


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
        self._by_channel: dict[bytes, deque[TxOutcome]] = defaultdict(lambda: deque(maxlen=KEPT_PER_CHANNEL))

    def record(self, channel_id: bytes, tx: SubmitTx, verdict: Verdict) -> TxOutcome:
        what = type(tx).__name__.removeprefix("SubmitTx")
        r = verdict.receipt
        if r is not None:
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

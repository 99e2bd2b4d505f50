"""Two parties running the pure machine over a two-asset channel (ether and a token), with a clock.

Builds on tests/core/harness.py: the same in-memory link (A leads, B follows: decision 0007), plus quotes
and takes, a wall clock the test moves, and a per-asset ledger of what each party was told (sent,
received, filled), so a test can check that each side's latest state pays it exactly what its own ledger
says.

A take goes one of two ways. The leader A takes B's quotes with a `ProposeSwap` it signs, which B (the
maker) countersigns or refuses with a `Reject` naming the take. The follower B takes A's quotes with a
`TakeRequest` (nothing signed), which A (the maker) carries in a `ProposeFill` (listing the takes it
refuses) or refuses whole with a `Refuse`."""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError
from statechannel.core.io import (
    ActionPay,
    ActionTake,
    ChainFunded,
    ChainOpened,
    ChainTime,
    Effect,
    NotifyFailed,
    NotifyFilled,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    SendMessage,
)
from statechannel.core.machine import accept_open, open_channel
from statechannel.core.quotes import Quote, Swap
from statechannel.core.types import ETH, ChannelParams
from tests.core.harness import CHAIN_START, DOMAIN, TERMS, Pair, Party

TOKEN = b"\x70" * 20
ASSETS = (ETH, TOKEN)
START_MS = 1_700_000_000_000


@dataclass
class Ledger:
    """What one party was told, per asset: + received or bought, - paid or sold."""

    net: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    filled: dict[str, Swap] = field(default_factory=dict)  # take id -> swap, as taker
    refused: dict[str, str] = field(default_factory=dict)  # take id -> reason, as taker
    made: list[Swap] = field(default_factory=list)  # fills of my quotes, as maker
    taken: dict[str, Swap] = field(default_factory=dict)  # take id -> swap, every take requested


class AssetPair(Pair):
    """A and B in an open channel holding ether and TOKEN; `clock` is both parties' wall clock (ms), the
    `now_ms` every delivered message is received with."""

    def __init__(
        self, eth: tuple[int, int] = (1000, 1000), token: tuple[int, int] = (1000, 1000), seed: str = "swap"
    ) -> None:
        self.a = Party(PrivateKey(keccak(f"{seed} A".encode())))
        self.b = Party(PrivateKey(keccak(f"{seed} B".encode())))
        self.funds = {ETH: eth, TOKEN: token}
        self.deposits = (eth[0], eth[1])
        self.links: dict[int, deque[m.Message]] = {0: deque(), 1: deque()}
        self.counter = 0
        self.now_ms = START_MS
        self.tolerant = False
        self.refused = 0
        self.ledgers = (Ledger(), Ledger())
        self._quote_ids = itertools.count(1)
        params = ChannelParams(self.a.key.address, self.b.key.address, 100, 1)
        self.a.channel, effects = open_channel(params, DOMAIN, ASSETS, (eth, token), self.a.key)
        self._run(self.a, effects)
        request = self.links[1].popleft()
        assert isinstance(request, m.OpenRequest)
        self.b.channel, effects = accept_open(request, DOMAIN, self.b.key, TERMS)
        self._run(self.b, effects)
        self.deliver_all()
        for party in (self.a, self.b):
            self.feed(party, ChainTime(CHAIN_START))
            self.feed(party, ChainOpened())
        for asset, pair in self.funds.items():
            for who in (0, 1):
                for party in (self.a, self.b):
                    self.feed(party, ChainFunded(asset, who, pair[who]))
        self.deliver_all()
        assert self.open()

    @property
    def clock(self) -> int:
        return self.now_ms

    @clock.setter
    def clock(self, value: int) -> None:
        self.now_ms = value

    def _run(self, party: Party, effects: tuple[Effect, ...]) -> None:
        super()._run(party, effects)
        ledger = self.ledgers[party.ch.me]
        for e in effects:
            if isinstance(e, NotifySent):
                for p in e.payments:
                    ledger.net[p.asset] -= p.amount
            elif isinstance(e, NotifyReceived):
                for asset, amount in e.amounts:
                    ledger.net[asset] += amount
            elif isinstance(e, NotifyFilled):
                q, swap = e.swap.quote, e.swap
                bought = q.maker_sells != e.maker
                ledger.net[q.base] += swap.base_amount if bought else -swap.base_amount
                ledger.net[q.quote] += -swap.quote_amount if bought else swap.quote_amount
                if e.maker:
                    ledger.made.append(swap)
                else:
                    assert swap.take_id not in ledger.filled and swap.take_id not in ledger.refused, "resolved twice"
                    ledger.filled[swap.take_id] = swap
            elif isinstance(e, NotifyTakeFailed):
                take_id = e.swap.take_id
                assert take_id not in ledger.filled and take_id not in ledger.refused, "resolved twice"
                ledger.refused[take_id] = e.reason

    def pay_asset(self, i: int, asset: bytes, amount: int) -> None:
        self.counter += 1
        payment = Payment(f"{'AB'[i]}{self.counter}", asset, amount)
        self.feed(self.party(i), ActionPay((payment,)))
        self.party(i).requested[payment.payment_id] = amount

    def quote(
        self,
        maker: int,
        *,
        maker_sells: bool = True,
        base: bytes = TOKEN,
        quote: bytes = ETH,
        base_unit: int = 1,
        quote_unit: int = 2,
        size: int = 100,
        ttl_ms: int = 10_000,
    ) -> tuple[Quote, Signature]:
        party = self.party(maker)
        return swaps.make_quote(
            party.ch,
            party.key,
            next(self._quote_ids),
            base,
            quote,
            maker_sells,
            base_unit,
            quote_unit,
            size,
            self.clock + ttl_ms,
        )

    def take(self, taker: int, q: Quote, sig: Signature, base_amount: int) -> Swap:
        """Take one quote: the leader proposes it, the follower asks for it (raises, changing nothing,
        if the taker's own checks refuse it)."""
        self.counter += 1
        swap = Swap(q, sig, base_amount, f"take{self.counter}")
        self.feed(self.party(taker), ActionTake((swap,), self.clock))
        self.ledgers[taker].taken[swap.take_id] = swap
        return swap

    def take_many(self, taker: int, offers: list[tuple[Quote, Signature, int]]) -> list[Swap]:
        """Several takes in one update (or one take request), as the node's swap desk does: a take the
        taker's own checks refuse is left out (it names it by index) and the rest go ahead. Raises if the
        whole batch is refused (a full pipeline); returns the takes sent."""
        batch = []
        for q, sig, amount in offers:
            self.counter += 1
            batch.append(Swap(q, sig, amount, f"take{self.counter}"))
        while batch:
            try:
                self.feed(self.party(taker), ActionTake(tuple(batch), self.clock))
                break
            except LocalError as exc:
                if exc.take is None:
                    raise
                del batch[exc.take]
        for swap in batch:
            self.ledgers[taker].taken[swap.take_id] = swap
        return batch

    def balances(self, i: int) -> dict[bytes, int]:
        ch = self.party(i).ch
        assert ch.latest is not None
        return {asset: pair[ch.me] for asset, pair in zip(ch.assets, ch.balances(ch.latest.state), strict=True)}

    def expected(self, i: int) -> dict[bytes, int]:
        """What party i's ledger says it holds: its deposits plus everything it was told."""
        return {asset: self.funds[asset][i] + self.ledgers[i].net[asset] for asset in ASSETS}

    def sent(self, i: int) -> list[m.Message]:
        """Every message party i sent, in order."""
        return [e.message for e in self.party(i).effects if isinstance(e, SendMessage)]

    def rejects(self, i: int) -> list[m.Reject]:
        """Rejects party i sent (only the follower sends them)."""
        return [msg for msg in self.sent(i) if isinstance(msg, m.Reject)]

    def refuses(self) -> list[m.Refuse]:
        """Refuses the leader sent (requests it will never carry)."""
        return [msg for msg in self.sent(0) if isinstance(msg, m.Refuse)]


def failed_payments(party: Party) -> set[str]:
    return {p.payment_id for e in party.effects if isinstance(e, NotifyFailed) for p in e.payments}

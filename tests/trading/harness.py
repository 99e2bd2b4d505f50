"""Two parties running the pure machine over a two-asset channel (ether and a token), with a clock.

Builds on tests/core/harness.py: the same in-memory link, plus quotes and takes, a wall clock the test
moves, and a per-asset ledger of what each party was told (sent, received, filled), so a test can check
that each side's latest state pays it exactly what its own ledger says."""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from statechannel.core import messages as m
from statechannel.core import swaps
from statechannel.core.channel import Channel
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError
from statechannel.core.io import (
    ActionPay,
    ActionTake,
    ChainFunded,
    ChainOpened,
    Effect,
    NotifyFailed,
    NotifyFilled,
    NotifyReceived,
    NotifySent,
    NotifyTakeFailed,
    Payment,
    SendMessage,
)
from statechannel.core.machine import accept_open, open_channel, receive
from statechannel.core.quotes import Quote, Swap
from statechannel.core.types import ETH, ChannelParams
from tests.core.harness import DOMAIN, Pair, Party

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
    """A and B in an open channel holding ether and TOKEN; `clock` is both parties' wall clock (ms)."""

    def __init__(
        self, eth: tuple[int, int] = (1000, 1000), token: tuple[int, int] = (1000, 1000), seed: str = "swap"
    ) -> None:
        self.a = Party(PrivateKey(keccak(f"{seed} A".encode())))
        self.b = Party(PrivateKey(keccak(f"{seed} B".encode())))
        self.funds = {ETH: eth, TOKEN: token}
        self.deposits = (eth[0], eth[1])
        self.links: dict[int, deque[m.Message]] = {0: deque(), 1: deque()}
        self.counter = 0
        self.clock = START_MS
        self.ledgers = (Ledger(), Ledger())
        self._quote_ids = itertools.count(1)
        params = ChannelParams(self.a.key.address, self.b.key.address, 100, 1)
        self.a.channel, effects = open_channel(params, DOMAIN, ASSETS, (eth, token), self.a.key)
        request = next(e.message for e in effects if isinstance(e, SendMessage))
        assert isinstance(request, m.OpenRequest)
        self.b.channel, effects = accept_open(request, DOMAIN, self.b.key)
        self._run(self.b, effects)
        self.deliver_all()
        for party in (self.a, self.b):
            self.feed(party, ChainOpened())
        for asset, pair in self.funds.items():
            for who in (0, 1):
                for party in (self.a, self.b):
                    self.feed(party, ChainFunded(asset, who, pair[who]))
        self.deliver_all()

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

    def deliver(self, to: int) -> None:
        msg = self.links[to].popleft()
        party = self.party(to)
        party.channel, effects = receive(party.ch, msg, party.key, self.clock)
        self._run(party, effects)

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
        """Propose a take (raises, changing nothing, if the taker's own checks refuse it)."""
        self.counter += 1
        swap = Swap(q, sig, base_amount, f"take{self.counter}")
        self.feed(self.party(taker), ActionTake((swap,), self.clock))
        self.ledgers[taker].taken[swap.take_id] = swap
        return swap

    def take_many(self, taker: int, offers: list[tuple[Quote, Signature, int]]) -> list[Swap]:
        """Propose several takes in one update, as the node's swap desk does: a take the taker's own checks
        refuse is left out (it names it by index) and the rest go ahead. Raises if the whole batch is
        refused (a full pipeline); returns the takes proposed."""
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

    def rejects(self, i: int) -> list[m.Reject]:
        """Rejects party i sent."""
        return [
            e.message for e in self.party(i).effects if isinstance(e, SendMessage) and isinstance(e.message, m.Reject)
        ]


def failed_payments(party: Party) -> set[str]:
    return {p.payment_id for e in party.effects if isinstance(e, NotifyFailed) for p in e.payments}


def held_net(ch: Channel) -> dict[bytes, int]:
    """Per asset, what a side's latest state gives it that it has not been told of yet: receipts and
    fills as maker held while a rolled-back proposal of its own is not superseded."""
    net = {asset: 0 for asset in ASSETS}
    for e in ch.held_received:
        for asset, amount in e.amounts:
            net[asset] += amount
    for f in ch.held_filled:
        q, bought = f.swap.quote, f.swap.quote.maker_sells != f.maker
        net[q.base] += f.swap.base_amount if bought else -f.swap.base_amount
        net[q.quote] += -f.swap.quote_amount if bought else f.swap.quote_amount
    return net

"""Two parties running the pure channel machine over an in-memory link.

No sockets and no chain: messages sit in one FIFO per direction, and the test
decides what is delivered, dropped (a disconnect), duplicated or restarted."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey
from statechannel.core.io import (
    ActionPay,
    ChainFunded,
    ChainOpened,
    Effect,
    Input,
    NotifyFailed,
    NotifyReceived,
    NotifySent,
    Payment,
    PeerConnected,
    SendMessage,
)
from statechannel.core.machine import accept_open, open_channel, receive, transition
from statechannel.core.types import ETH, ChannelParams, Domain

DOMAIN = Domain(chain_id=31337, adjudicator=b"\xad" * 20)


@dataclass
class Party:
    key: PrivateKey
    channel: Channel | None = None
    sent: dict[str, int] = field(default_factory=dict)  # payment id -> amount, confirmed
    failed: set[str] = field(default_factory=set)
    received: int = 0
    requested: dict[str, int] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)
    versions_seen: list[int] = field(default_factory=list)

    @property
    def ch(self) -> Channel:
        assert self.channel is not None
        return self.channel

    def net(self) -> int:
        return self.received - sum(self.sent.values())


class Pair:
    """A and B with a link; A's and B's deposit of ether in a funded, open channel."""

    def __init__(self, deposit_a: int = 1000, deposit_b: int = 1000, seed: str = "pair") -> None:
        self.a = Party(PrivateKey(keccak(f"{seed} A".encode())))
        self.b = Party(PrivateKey(keccak(f"{seed} B".encode())))
        self.deposits = (deposit_a, deposit_b)
        self.links: dict[int, deque[m.Message]] = {0: deque(), 1: deque()}  # messages *to* party i
        self.counter = 0
        params = ChannelParams(self.a.key.address, self.b.key.address, 100, 1)
        self.a.channel, effects = open_channel(params, DOMAIN, (ETH,), ((deposit_a, deposit_b),), self.a.key)
        request = next(e.message for e in effects if isinstance(e, SendMessage))
        assert isinstance(request, m.OpenRequest)
        wire = m.decode(m.encode(request))
        assert isinstance(wire, m.OpenRequest)
        self.b.channel, effects = accept_open(wire, DOMAIN, self.b.key)
        self._run(self.b, effects)
        self.deliver_all()
        for party in (self.a, self.b):
            self.feed(party, ChainOpened())
        self.feed(self.a, ChainFunded(ETH, 0, deposit_a))
        self.feed(self.b, ChainFunded(ETH, 0, deposit_a))
        self.feed(self.a, ChainFunded(ETH, 1, deposit_b))
        self.feed(self.b, ChainFunded(ETH, 1, deposit_b))
        self.deliver_all()

    def party(self, i: int) -> Party:
        return self.a if i == 0 else self.b

    def _run(self, party: Party, effects: tuple[Effect, ...]) -> None:
        me = party.ch.me
        for e in effects:
            party.effects.append(e)
            if isinstance(e, SendMessage):
                # through the real codec, as on the wire
                self.links[1 - me].append(m.decode(m.encode(e.message)))
            elif isinstance(e, NotifySent):
                for p in e.payments:
                    assert p.payment_id not in party.sent and p.payment_id not in party.failed, "resolved twice"
                    party.sent[p.payment_id] = p.amount
            elif isinstance(e, NotifyFailed):
                for p in e.payments:
                    assert p.payment_id not in party.sent and p.payment_id not in party.failed, "resolved twice"
                    party.failed.add(p.payment_id)
            elif isinstance(e, NotifyReceived):
                party.received += sum(amount for _, amount in e.amounts)
        if party.ch.latest is not None:
            party.versions_seen.append(party.ch.latest.state.version)

    def feed(self, party: Party, inp: Input) -> None:
        party.channel, effects = transition(party.ch, inp, party.key)
        self._run(party, effects)

    def pay(self, i: int, amount: int, count: int = 1) -> None:
        party = self.party(i)
        payments = []
        for _ in range(count):
            self.counter += 1
            pid = f"{'AB'[i]}{self.counter}"
            payments.append(Payment(pid, ETH, amount))
        self.feed(party, ActionPay(tuple(payments)))  # raises, changing nothing, if refused
        party.requested.update({p.payment_id: p.amount for p in payments})

    def deliver(self, to: int) -> None:
        msg = self.links[to].popleft()
        party = self.party(to)
        party.channel, effects = receive(party.ch, msg, party.key)
        self._run(party, effects)

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            ready = [i for i in (0, 1) if self.links[i]]
            if not ready:
                return
            self.deliver(ready[0])
        raise AssertionError("the link did not go quiet")

    def disconnect_and_reconnect(self) -> None:
        self.links[0].clear()
        self.links[1].clear()
        for party in (self.a, self.b):
            self.feed(party, PeerConnected())

    def balance(self, party: Party) -> int:
        ch = party.ch
        assert ch.latest is not None
        return ch.balances(ch.latest.state)[0][ch.me]

    def open(self) -> bool:
        return self.a.ch.phase is Phase.OPEN and self.b.ch.phase is Phase.OPEN

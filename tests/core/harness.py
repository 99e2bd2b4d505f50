"""Two parties running the pure channel machine over an in-memory link.

No sockets and no chain: messages sit in one FIFO per direction, and the test
decides what is delivered, dropped (a disconnect), duplicated or restarted.
A (index 0) is the leader, B the follower (decision 0007)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from statechannel.core import messages as m
from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import StatechannelError
from statechannel.core.io import (
    ActionPay,
    ChainFunded,
    ChainOpened,
    ChainTime,
    Effect,
    Input,
    NotifyFailed,
    NotifyReceived,
    NotifySent,
    Payment,
    PeerConnected,
    SendMessage,
)
from statechannel.core.machine import Terms, accept_open, open_channel, receive, transition
from statechannel.core.types import ETH, ChannelParams, Domain, State

DOMAIN = Domain(chain_id=31337, adjudicator=b"\xad" * 20)
TERMS = Terms(1, 10**6)
CHAIN_START = 1_000


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
    signed: list[tuple[State, Signature]] = field(default_factory=list)
    """Every state this party's key signed and let out (proposals, countersignatures)."""

    @property
    def ch(self) -> Channel:
        assert self.channel is not None
        return self.channel

    def net(self) -> int:
        return self.received - sum(self.sent.values())


class Pair:
    """A and B with a link; A's and B's deposit of ether in a funded, open channel."""

    def __init__(self, deposit_a: int = 1000, deposit_b: int = 1000, seed: str = "pair", period: int = 100) -> None:
        self.a = Party(PrivateKey(keccak(f"{seed} A".encode())))
        self.b = Party(PrivateKey(keccak(f"{seed} B".encode())))
        self.deposits = (deposit_a, deposit_b)
        self.links: dict[int, deque[m.Message]] = {0: deque(), 1: deque()}  # messages *to* party i
        self.counter = 0
        self.now_ms = 1_000_000
        self.tolerant = False
        self.refused = 0
        params = ChannelParams(self.a.key.address, self.b.key.address, period, 1)
        self.a.channel, effects = open_channel(params, DOMAIN, (ETH,), ((deposit_a, deposit_b),), self.a.key)
        self._run(self.a, effects)
        request = self.links[1].popleft()
        assert isinstance(request, m.OpenRequest)
        self.b.channel, effects = accept_open(request, DOMAIN, self.b.key, TERMS)
        self._run(self.b, effects)
        self.deliver_all()
        for party in (self.a, self.b):
            self.feed(party, ChainTime(CHAIN_START))
            self.feed(party, ChainOpened())
        for party in (self.a, self.b):
            self.feed(party, ChainFunded(ETH, 0, deposit_a))
            self.feed(party, ChainFunded(ETH, 1, deposit_b))
        self.deliver_all()

    def party(self, i: int) -> Party:
        return self.a if i == 0 else self.b

    def _run(self, party: Party, effects: tuple[Effect, ...]) -> None:
        me = party.ch.me
        for e in effects:
            party.effects.append(e)
            if isinstance(e, SendMessage):
                self._note_signature(party, e.message)
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

    def _note_signature(self, party: Party, msg: m.Message) -> None:
        if isinstance(msg, m.Propose | m.ProposeSwap | m.ProposeFill):
            party.signed.append((msg.state.to_state(), m.signature(msg.sig)))
        elif isinstance(msg, m.Accept) and party.ch.latest is not None:
            latest = party.ch.latest
            if latest.state.version == msg.version:
                party.signed.append((latest.state, m.signature(msg.sig)))

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
        """Feed the next message. With `tolerant` set (a hostile peer), a message the machine refuses
        is dropped as the node drops it, changing nothing; otherwise the error propagates."""
        msg = self.links[to].popleft()
        party = self.party(to)
        try:
            new, effects = receive(party.ch, msg, party.key, self.now_ms)
        except StatechannelError:
            if not self.tolerant:
                raise
            self.refused += 1
            return
        party.channel = new
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


def versions_unique(party: Party) -> bool:
    """Invariant 3: this key never signed two different states of one version."""
    by_version: dict[int, State] = {}
    return all(by_version.setdefault(state.version, state) == state for state, _ in party.signed)

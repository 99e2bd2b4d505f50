from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from statechannel.chain.adjudicator import Adjudicator, DisputeRecord, Token
from statechannel.chain.base import Receipt
from statechannel.chain.embedded import EmbeddedChain
from statechannel.core import ChannelParams, PrivateKey, Signature, State, Withdrawal, state_digest, withdrawal_digest
from statechannel.core.observed import ChainObservedClose
from statechannel.gasreport import parties

PERIOD = 100


@dataclass
class World:
    chain: EmbeddedChain
    adj: Adjudicator
    a: PrivateKey
    b: PrivateKey
    other: PrivateKey
    token: Token
    nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def params(self, period: int = PERIOD) -> ChannelParams:
        return ChannelParams(self.a.address, self.b.address, period, next(self.nonces))

    def sign(self, state: State) -> tuple[Signature, Signature]:
        d = state_digest(self.adj.domain, state)
        return self.a.sign_digest(d), self.b.sign_digest(d)

    def sign_withdrawal(self, w: Withdrawal) -> tuple[Signature, Signature]:
        d = withdrawal_digest(self.adj.domain, w)
        return self.a.sign_digest(d), self.b.sign_digest(d)

    def funded(self, a: int = 1000, b: int = 1000, period: int = PERIOD) -> tuple[ChannelParams, bytes]:
        params = self.params(period)
        cid = self.adj.channel_id(params)
        self.adj.open(self.a, params, a)
        if b:
            self.adj.deposit(self.b, cid, 1, b)
        return params, cid

    def fund_token(self, cid: bytes, who: int, amount: int) -> Receipt:
        key = (self.a, self.b)[who]
        self.token.mint(key, key.address, amount)
        self.token.approve(key, self.adj.address, amount)
        return self.adj.deposit_token(key, cid, who, self.token.address, amount)

    def close(self, params: ChannelParams, state: State) -> DisputeRecord:
        r = self.adj.close(self.a, params, state, *self.sign(state))
        event = next(e for e in self.adj.receipt_events(r) if isinstance(e, ChainObservedClose))
        return DisputeRecord.of(event)


@pytest.fixture(scope="module")
def world() -> World:
    chain = EmbeddedChain()
    p = parties(chain, "contracts")
    other = PrivateKey(b"\x33" * 32)
    chain.fund(other.address, 10**20)
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    token = Token.deploy(chain, p.deployer)
    return World(chain, adj, p.a, p.b, other, token)

"""Gas of every on-chain step, measured on two whole lifecycles per asset kind.

Cooperative: A opens with 1000, B deposits 1000, a final state pays A 1300 and
B 700. Dispute: the same funding; A closes with a stale state that pays A 1500,
B challenges with the latest (A 1300, B 700), settle after the window. Every
payout is checked against the expected amount; a mismatch raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from statechannel.chain.adjudicator import Adjudicator, Token
from statechannel.chain.base import Chain, Receipt
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import state_digest
from statechannel.core.hashing import keccak
from statechannel.core.observed import ChainObservedClose
from statechannel.core.types import ETH, ChannelParams, State

DEPOSIT = 1000
CHALLENGE_PERIOD = 3600
STARTING_ETH = 10**20


class LifecycleMismatch(AssertionError):
    """A payout differed from what the lifecycle expects."""


@dataclass(frozen=True)
class Parties:
    a: PrivateKey
    b: PrivateKey
    deployer: PrivateKey


def parties(chain: Chain, label: str = "gas") -> Parties:
    """Deterministic keys (so calldata, and with it gas, is reproducible), funded with ether."""
    keys = [PrivateKey(keccak(f"statechannel {label} {who}".encode())) for who in ("A", "B", "deployer")]
    for k in keys:
        chain.fund(k.address, STARTING_ETH)
    return Parties(*keys)


def sign_both(adj: Adjudicator, p: Parties, state: State) -> tuple[Signature, Signature]:
    digest = state_digest(adj.domain, state)
    return p.a.sign_digest(digest), p.b.sign_digest(digest)


class _Run:
    def __init__(self, chain: Chain, adj: Adjudicator, p: Parties, token: Token | None) -> None:
        self.chain, self.adj, self.p, self.token = chain, adj, p, token
        self.asset = ETH if token is None else token.address
        self.gas: dict[str, int] = {}

    def holding(self, who: PrivateKey) -> int:
        return self.chain.balance(who.address) if self.token is None else self.token.balance_of(who.address)

    def fund(self, nonce: int) -> tuple[ChannelParams, bytes]:
        p, adj = self.p, self.adj
        params = ChannelParams(p.a.address, p.b.address, CHALLENGE_PERIOD, nonce)
        cid = adj.channel_id(params)
        # the pre-fund state (version 0) is signed by both before anyone deposits
        sign_both(adj, p, State(cid, 0, (self.asset,), (0,)))
        if self.token is None:
            self.gas["open_with_deposit"] = adj.open(p.a, params, DEPOSIT).gas_used
            self.gas["deposit"] = adj.deposit(p.b, cid, 1, DEPOSIT).gas_used
        else:
            self.gas["approve"] = self.token.approve(p.a, adj.address, DEPOSIT).gas_used
            self.gas["open_with_deposit"] = adj.open_token(p.a, params, self.asset, DEPOSIT).gas_used
            self.token.approve(p.b, adj.address, DEPOSIT)
            self.gas["deposit"] = adj.deposit_token(p.b, cid, 1, self.asset, DEPOSIT).gas_used
        return params, cid

    def expect_payout(self, before: dict[str, int], fees: dict[str, int], expected: tuple[int, int]) -> None:
        for who, key, want in (("A", self.p.a, expected[0]), ("B", self.p.b, expected[1])):
            got = self.holding(key) - before[who] + fees[who]
            if got != want:
                raise LifecycleMismatch(f"{who} received {got}, expected {want}")

    def snapshot(self) -> dict[str, int]:
        return {"A": self.holding(self.p.a), "B": self.holding(self.p.b)}

    def fees(self, a: list[Receipt], b: list[Receipt]) -> dict[str, int]:
        if self.token is not None:
            return {"A": 0, "B": 0}
        return {"A": sum(r.fee for r in a), "B": sum(r.fee for r in b)}

    def cooperative(self) -> None:
        params, cid = self.fund(nonce=1)
        final = State(cid, 42, (self.asset,), (-300,), is_final=True)
        before = self.snapshot()
        r = self.adj.close_cooperative(self.p.a, params, final, *sign_both(self.adj, self.p, final))
        self.gas["cooperative_close"] = r.gas_used
        self.expect_payout(before, self.fees([r], []), (1300, 700))

    def dispute(self) -> None:
        params, cid = self.fund(nonce=2)
        stale = State(cid, 7, (self.asset,), (-500,))
        latest = State(cid, 8, (self.asset,), (-300,))
        before = self.snapshot()
        closed = self.adj.close(self.p.a, params, stale, *sign_both(self.adj, self.p, stale))
        event = next(e for e in self.adj.receipt_events(closed) if isinstance(e, ChainObservedClose))
        challenged = self.adj.challenge(self.p.b, params, latest, *sign_both(self.adj, self.p, latest))
        self.chain.advance_time(CHALLENGE_PERIOD + 1)
        settled = self.adj.settle(self.p.b, params, latest, event.finalizes_at)
        self.gas["close_unilateral"] = closed.gas_used
        self.gas["challenge"] = challenged.gas_used
        self.gas["settle"] = settled.gas_used
        self.expect_payout(before, self.fees([closed], [challenged, settled]), (1300, 700))


def measure(chain: Chain, erc20: bool) -> dict[str, int]:
    """Both lifecycles for one asset kind on a chain; the gas of each step and the totals."""
    p = parties(chain, "erc20" if erc20 else "eth")
    adj, _ = Adjudicator.deploy(chain, p.deployer)
    token = None
    if erc20:
        token = Token.deploy(chain, p.deployer)
        for k in (p.a, p.b):
            token.mint(p.deployer, k.address, 10 * DEPOSIT)
    run = _Run(chain, adj, p, token)
    run.cooperative()
    coop = {k: run.gas[k] for k in ("open_with_deposit", "deposit", "cooperative_close")}
    approve = run.gas.get("approve", 0)
    run.dispute()
    g = run.gas
    out = {
        "open_with_deposit": coop["open_with_deposit"],
        "deposit": coop["deposit"],
        "cooperative_close": coop["cooperative_close"],
        "close_unilateral": g["close_unilateral"],
        "challenge": g["challenge"],
        "settle": g["settle"],
    }
    funding = out["open_with_deposit"] + out["deposit"] + 2 * approve
    out["cooperative_total"] = funding + out["cooperative_close"]
    out["dispute_total"] = funding + out["close_unilateral"] + out["challenge"] + out["settle"]
    if erc20:
        out["approve"] = approve
    return out


def gas_report(new_chain: Callable[[], Chain]) -> dict[str, dict[str, int]]:
    return {"eth": measure(new_chain(), erc20=False), "erc20": measure(new_chain(), erc20=True)}

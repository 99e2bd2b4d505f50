"""Request and response bodies of the HTTP API, and the conversions to and from the node's values.

Amounts travel as decimal strings because JSON numbers lose precision past 2**53 in most clients, and
token amounts routinely exceed that. Requests forbid unknown fields so a misspelt field is a 422, not a
silently ignored option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from statechannel.core.channel import Channel, Phase
from statechannel.core.types import ETH, MAX_ASSETS, MAX_CHALLENGE_PERIOD, UINT256_MAX, address_from_hex, to_checksum
from statechannel.node.towerstate import Protection
from statechannel.store.base import PaymentRecord

ETH_NAME = "eth"
MAX_BATCH_AMOUNTS = 10_000
"""Amounts one batch request may list (a body is at most 64 KiB)."""
MAX_BATCH_COUNT = 10**12
"""Equal payments one batch may count: one row and one update entry however many."""
MAX_PER_PAYMENT = 1_000_000
"""Payments one request may make each with its own future and rows (`history: per-payment`)."""
MAX_WAIT = 600.0
CHANNEL_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"


def _decimal_string(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('amounts are decimal strings of the smallest unit, like "1000", never JSON numbers')
    return value


def _amount_in_range(value: str) -> str:
    if int(value) > UINT256_MAX:
        raise ValueError("amount exceeds 2**256 - 1")
    return value


def _checksummed(value: str) -> str:
    """Accept all-lower or all-upper hex as typed by hand, but a mixed-case address must carry a valid
    EIP-55 checksum: a mixed-case typo is exactly what the checksum exists to catch."""
    canonical = to_checksum(address_from_hex(value))
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != canonical:
        raise ValueError("address has a bad EIP-55 checksum")
    return canonical


def _asset(value: str) -> str:
    if value.lower() == ETH_NAME:
        return ETH_NAME
    canonical = _checksummed(value)
    return ETH_NAME if address_from_hex(canonical) == ETH else canonical


Amount = Annotated[
    str,
    BeforeValidator(_decimal_string),
    Field(pattern=r"^(0|[1-9][0-9]{0,77})$", description="Non-negative integer of the smallest unit, in decimal."),
    AfterValidator(_amount_in_range),
]
PositiveAmount = Annotated[
    str,
    BeforeValidator(_decimal_string),
    BeforeValidator(_decimal_string),
    Field(pattern=r"^[1-9][0-9]{0,77}$", description="Positive integer of the smallest unit, in decimal."),
    AfterValidator(_amount_in_range),
]
Address = Annotated[
    str,
    Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="0x-hex address (EIP-55 checksummed if mixed case)."),
    AfterValidator(_checksummed),
]
Asset = Annotated[
    str,
    Field(pattern=r"^(?i:eth|0x[0-9a-f]{40})$", description="'eth' or the 0x address of an ERC-20 token."),
    AfterValidator(_asset),
]
Wait = Annotated[float, Field(ge=0, le=MAX_WAIT, description="Seconds to wait for the outcome before answering.")]


def asset_bytes(name: str) -> bytes:
    return ETH if name == ETH_NAME else address_from_hex(name)


def asset_name(asset: bytes) -> str:
    return ETH_NAME if asset == ETH else to_checksum(asset)


def channel_hex(channel_id: bytes) -> str:
    return "0x" + channel_id.hex()


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# ------------------------------------------------------------------ requests


class OpenChannelRequest(_Request):
    peer: Address
    deposits: dict[Asset, Amount] = Field(min_length=1, max_length=MAX_ASSETS, description="What this node deposits.")
    peer_deposits: dict[Asset, Amount] = Field(
        default_factory=dict,
        description="What the peer is asked to commit. Nodes of this version refuse such requests (the channel "
        "then stays 'opening'): leave it empty and let the peer deposit once the channel is open.",
    )
    challenge_period: int = Field(3600, ge=1, le=MAX_CHALLENGE_PERIOD, strict=True)
    wait: Wait = 0.0

    @model_validator(mode="after")
    def _assets_bounded(self) -> OpenChannelRequest:
        if len(set(self.deposits) | set(self.peer_deposits)) > MAX_ASSETS:
            raise ValueError(f"a channel holds at most {MAX_ASSETS} assets")
        return self

    def deposit_pairs(self) -> dict[bytes, tuple[int, int]]:
        names = set(self.deposits) | set(self.peer_deposits)
        return {asset_bytes(n): (int(self.deposits.get(n, "0")), int(self.peer_deposits.get(n, "0"))) for n in names}


class AssetAmountRequest(_Request):
    asset: Asset = ETH_NAME
    amount: PositiveAmount


class CloseRequest(_Request):
    unilateral: bool = False
    wait: Wait = 0.0


class SettleRequest(_Request):
    wait: Wait = 60.0


class PayRequest(_Request):
    """No caller-chosen payment id: the node checks ids for uniqueness only while a payment is in flight,
    so a retried id would pay twice. The id is chosen here and returned (and appears in the events)."""

    amount: PositiveAmount | None = Field(None, description="One payment of this much (or `count` of them).")
    amounts: list[PositiveAmount] | None = Field(
        None, min_length=1, max_length=MAX_BATCH_AMOUNTS, description="A batch of payments of these amounts."
    )
    asset: Asset = ETH_NAME
    count: int = Field(1, ge=1, le=MAX_BATCH_COUNT, strict=True, description="Pay `amount` this many times.")
    history: Literal["batch", "per-payment"] = Field(
        "batch",
        description="With `count` > 1 or `amounts`: `batch`, one payment of the total (one update entry, one "
        "history row on each side with the count); `per-payment` (with `count` only, at most 1,000,000), "
        "each payment its own, one row each on both sides.",
    )
    timeout: float = Field(30.0, gt=0, le=MAX_WAIT, description="Seconds to wait for the peer's signature.")

    @model_validator(mode="after")
    def _one_form(self) -> PayRequest:
        if (self.amount is None) == (self.amounts is None):
            raise ValueError("give amount (and count), or amounts")
        if self.amounts is not None and self.count != 1:
            raise ValueError("count goes with amount, not with amounts")
        if self.history == "per-payment" and (self.amounts is not None or self.count > MAX_PER_PAYMENT):
            raise ValueError(f"per-payment history takes amount and a count of at most {MAX_PER_PAYMENT}")
        return self

    @property
    def is_batch(self) -> bool:
        return self.amounts is not None or self.count > 1


class ConnectRequest(_Request):
    address: Address
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535, strict=True)
    timeout: float = Field(10.0, gt=0, le=120)


# ------------------------------------------------------------------ responses


class ErrorBody(_Response):
    reason: str = Field(description="A core Reason value or an API code (unauthorized, validation, ...).")
    detail: str


class ErrorResponse(_Response):
    error: ErrorBody


class AssetBalance(_Response):
    asset: str
    my_balance: str
    peer_balance: str
    my_funded: str
    peer_funded: str
    my_deposit: str
    peer_deposit: str


class DisputeView(_Response):
    version: int
    finalizes_at: int
    challenged: bool


class OutcomeView(_Response):
    """How the channel ended, as the chain says."""

    version: int = Field(description="The version the channel concluded with.")
    cooperative: bool
    challenged: bool = Field(description="Whether a challenge was recorded on chain.")
    paid: list[AssetBalance] | None = Field(description="Per asset, what each side was paid; null if unknown.")
    loss: bool = Field(description="Concluded below this node's latest both-signed version.")


class TermsView(_Response):
    """The channel terms this node accepts (and opens with)."""

    min_challenge_period: int
    max_challenge_period: int
    max_unfunded_per_peer: int


class ProtectionView(_Response):
    """A watchtower's EIP-712 receipt, verified by this node: the tower's key signed that it holds exactly the
    state this node pushed and answers a stale close from `from_block` on."""

    tower: str = Field(description="URL of the watchtower.")
    address: str = Field(description="The tower's signing address, as its /info reported it.")
    version: int = Field(description="The channel version the tower signed for.")
    state_hash: str = Field(description="0x-hex EIP-712 struct hash of that state, as pushed.")
    from_block: int = Field(description="The block from which the tower protects it.")
    receipt: str = Field(description="0x-hex 65-byte signature of the tower over the typed TowerReceipt.")


class TowerProblemView(_Response):
    """A tower whose last receipt for this channel did not verify: it counts as no protection."""

    tower: str
    detail: str


class ChannelView(_Response):
    channel_id: str
    peer: str
    role: Literal["a", "b"]
    phase: str
    version: int | None = Field(description="Version of the latest state both signed; null while opening.")
    challenge_period: int
    balances: list[AssetBalance]
    in_flight: int = Field(description="Updates proposed by this node and not yet countersigned.")
    peer_connected: bool
    dispute: DisputeView | None
    outcome: OutcomeView | None = None
    protection: list[ProtectionView] = Field(
        default_factory=list, description="Which watchtower holds which version (empty without towers)."
    )
    tower_errors: list[TowerProblemView] = Field(
        default_factory=list, description="Towers whose receipt did not verify (not counted as protection)."
    )

    @classmethod
    def of(
        cls,
        ch: Channel,
        peer_connected: bool,
        protection: Sequence[Protection] = (),
        tower_errors: Sequence[tuple[str, str]] = (),
    ) -> ChannelView:
        pairs = ch.balances(ch.latest.state) if ch.latest is not None else ch.funded
        me, peer = ch.me, ch.peer
        balances = [
            AssetBalance(
                asset=asset_name(asset),
                my_balance=str(pair[me]),
                peer_balance=str(pair[peer]),
                my_funded=str(funded[me]),
                peer_funded=str(funded[peer]),
                my_deposit=str(deposit[me]),
                peer_deposit=str(deposit[peer]),
            )
            for asset, pair, funded, deposit in zip(ch.assets, pairs, ch.funded, ch.deposits, strict=True)
        ]
        d = ch.dispute
        return cls(
            channel_id=channel_hex(ch.channel_id),
            peer=to_checksum(ch.peer_address),
            role="a" if ch.me == 0 else "b",
            phase=str(ch.phase),
            version=ch.latest.state.version if ch.latest is not None else None,
            challenge_period=ch.params.challenge_period,
            balances=balances,
            in_flight=len(ch.pending) if ch.leader else len(ch.requests),
            peer_connected=peer_connected,
            dispute=DisputeView(version=d.version, finalizes_at=d.finalizes_at, challenged=d.challenged) if d else None,
            outcome=_outcome(ch),
            protection=[
                ProtectionView(
                    tower=p.tower,
                    address=to_checksum(p.address),
                    version=p.version,
                    state_hash="0x" + p.state_hash.hex(),
                    from_block=p.from_block,
                    receipt="0x" + p.receipt.hex(),
                )
                for p in protection
            ],
            tower_errors=[TowerProblemView(tower=t, detail=d) for t, d in tower_errors],
        )


class AbandonView(_Response):
    channel: ChannelView
    action: str = Field(description="What the node did: forgot it, or closes it with the pre-fund state.")


def _outcome(ch: Channel) -> OutcomeView | None:
    o = ch.outcome
    if o is None:
        return None
    paid = None
    if o.paid is not None:
        paid = [
            AssetBalance(
                asset=asset_name(asset),
                my_balance=str(pair[ch.me]),
                peer_balance=str(pair[ch.peer]),
                my_funded=str(funded[ch.me]),
                peer_funded=str(funded[ch.peer]),
                my_deposit=str(deposit[ch.me]),
                peer_deposit=str(deposit[ch.peer]),
            )
            for asset, pair, funded, deposit in zip(ch.assets, o.paid, ch.funded, ch.deposits, strict=True)
        ]
    return OutcomeView(version=o.version, cooperative=o.cooperative, challenged=o.challenged, paid=paid, loss=o.loss)


PaymentStatus = Literal["pending", "sent", "failed", "received"]


class PaymentView(_Response):
    payment_id: str
    channel_id: str
    direction: Literal["out", "in"]
    asset: str
    amount: str
    status: PaymentStatus
    version: int
    reason: str
    created_ms: int
    count: int = Field(1, description="Payments this row is: above 1 a batch, `amount` their total.")

    @classmethod
    def of(cls, r: PaymentRecord) -> PaymentView:
        return cls(
            payment_id=r.payment_id,
            channel_id=channel_hex(r.channel_id),
            direction="in" if r.direction == "in" else "out",
            asset=asset_name(r.asset),
            amount=str(r.amount),
            status=cast(PaymentStatus, r.status),  # the store admits only these; the model re-checks
            version=r.version,
            reason=r.reason,
            created_ms=r.created_ms,
            count=r.count,
        )


class PayBatchView(_Response):
    requested: int
    sent: int
    failed: int
    pending: int = Field(description="Still in flight when the timeout ran out; they may yet succeed.")
    failures: dict[str, int] = Field(description="Failed payments counted by reason.")
    elapsed_ms: int
    batch_id: str | None = Field(
        None, description="History `batch`: the payment id of the batch, its one row in `GET /payments`."
    )
    total: str = Field("0", description="What the payments move together, in the smallest unit.")
    version: int = Field(0, description="History `batch`: the version that carried it (0 until sent).")


class PeerView(_Response):
    address: str
    connected: bool
    host: str | None = Field(None, description="Where the node dials it (null: it dialled us, or was forgotten).")
    port: int | None = None
    channels: int = Field(0, description="Channels with this peer, in any phase.")


class NodeInfo(_Response):
    address: str
    chain_id: int
    adjudicator: str
    chain_head: int = Field(description="The last block the node's chain watcher has read.")
    eth_balance: str | None = Field(description="The node's on-chain ether; null if the chain did not answer.")
    peer_listen: str | None = Field(description="host:port where peers reach this node, if it listens.")
    channels: dict[str, int] = Field(description="Channels counted by phase.")
    terms: TermsView = Field(description="The challenge periods this node accepts.")
    version: str

    @staticmethod
    def count_phases(channels: list[Channel]) -> dict[str, int]:
        counts = {str(p): 0 for p in Phase}
        for ch in channels:
            counts[str(ch.phase)] += 1
        return counts


class EventView(_Response):
    kind: str = Field(description="phase | sent | failed | received | gap")
    channel_id: str
    data: dict[str, object]

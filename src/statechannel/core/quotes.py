"""Quotes for two-asset trading: a maker's signed offer to swap up to `size` of a base asset at one exact
price, and the arithmetic of taking it.

A price is two integers, `quote_unit` quote units for every `base_unit` base units, so a take's amounts are
exact: a take whose quote amount would not be a whole number is refused, never rounded, because rounding
would move value that one side never agreed to. The quote is EIP-712 typed data under the channel's domain,
so a maker's signature on it cannot be replayed on another chain, contract or channel."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from statechannel.core.crypto import PrivateKey, Signature, recover
from statechannel.core.eip712 import typed_digest
from statechannel.core.errors import LocalError, Reason
from statechannel.core.hashing import keccak
from statechannel.core.types import INT256_MAX, Domain, State

QUOTE_TYPE = (
    b"Quote(bytes32 channelId,uint64 quoteId,address base,address quote,bool makerSells,"
    b"uint256 baseUnit,uint256 quoteUnit,uint256 size,uint64 expiresAtMs)"
)
QUOTE_TYPEHASH = keccak(QUOTE_TYPE)
UINT64_MAX = 2**64 - 1
MAX_TAKES = 256
"""Takes in one swap update: a burst of takes shares updates (each still fills whole, at its quote's
exact price), which is how one channel carries thousands of trades a second."""
MAX_QUOTE_AMOUNT = INT256_MAX
"""Units and sizes stay within what a transfer can carry, so no product of them can leave int256 unnoticed."""


def _uint(value: object, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise LocalError(Reason.BAD_AMOUNT, f"{what} must be an int in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Quote:
    """The maker will swap up to `size` base units: it sells them (`maker_sells`) or buys them, paying or
    asking `quote_unit` quote units per `base_unit` base units, until `expires_at_ms` (Unix ms)."""

    channel_id: bytes
    quote_id: int
    base: bytes
    quote: bytes
    maker_sells: bool
    base_unit: int
    quote_unit: int
    size: int
    expires_at_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.channel_id, bytes) or len(self.channel_id) != 32:
            raise LocalError(Reason.BAD_CHANNEL_ID, "channel id must be 32 bytes")
        for asset in (self.base, self.quote):
            if not isinstance(asset, bytes) or len(asset) != 20:
                raise LocalError(Reason.BAD_ADDRESS, f"an asset is 20 bytes, got {asset!r}")
        if self.base == self.quote:
            raise LocalError(Reason.BAD_ASSETS, "base and quote must be different assets")
        if not isinstance(self.maker_sells, bool):
            raise LocalError(Reason.BAD_PARAMS, "maker_sells must be a bool")
        _uint(self.quote_id, "quote id", 0, UINT64_MAX)
        _uint(self.expires_at_ms, "expiry", 0, UINT64_MAX)
        _uint(self.base_unit, "base unit", 1, MAX_QUOTE_AMOUNT)
        _uint(self.quote_unit, "quote unit", 1, MAX_QUOTE_AMOUNT)
        _uint(self.size, "size", 1, MAX_QUOTE_AMOUNT)

    def quote_amount(self, base_amount: int) -> int:
        """The quote units owed for `base_amount` base units, exactly; raises BAD_AMOUNT if not whole."""
        _uint(base_amount, "base amount", 1, MAX_QUOTE_AMOUNT)
        scaled = base_amount * self.quote_unit
        if scaled % self.base_unit:
            raise LocalError(
                Reason.BAD_AMOUNT,
                f"{base_amount} base units at {self.quote_unit}/{self.base_unit} is not a whole quote amount",
            )
        return scaled // self.base_unit

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


def quote_hash(q: Quote) -> bytes:
    """hashStruct(Quote): every field is one 32-byte word."""
    return keccak(
        QUOTE_TYPEHASH
        + q.channel_id
        + q.quote_id.to_bytes(32, "big")
        + bytes(12)
        + q.base
        + bytes(12)
        + q.quote
        + (1 if q.maker_sells else 0).to_bytes(32, "big")
        + q.base_unit.to_bytes(32, "big")
        + q.quote_unit.to_bytes(32, "big")
        + q.size.to_bytes(32, "big")
        + q.expires_at_ms.to_bytes(32, "big")
    )


def quote_digest(domain: Domain, q: Quote) -> bytes:
    """The 32 bytes the maker signs for `q`."""
    return typed_digest(domain, quote_hash(q))


def sign_quote(domain: Domain, q: Quote, key: PrivateKey) -> Signature:
    return key.sign_digest(quote_digest(domain, q))


@lru_cache(maxsize=4096)
def quote_signer(domain: Domain, q: Quote, sig: Signature) -> bytes:
    """Who signed `q`. Cached: a maker checks its own signature on every take of a quote, and a burst of
    takes carries the same quote and signature thousands of times."""
    return recover(quote_digest(domain, q), sig)


@dataclass(frozen=True, slots=True)
class Swap:
    """One take of a quote: what a swap proposal carries besides its state. `take_id` is the taker's own
    handle for its caller; it never travels."""

    quote: Quote
    quote_sig: Signature
    base_amount: int
    take_id: str = ""

    @property
    def quote_amount(self) -> int:
        return self.quote.quote_amount(self.base_amount)


@dataclass(frozen=True, slots=True)
class QuoteFill:
    """How much of one of my quotes the peer has taken; kept only until the quote expires, after which
    every take of it is refused anyway."""

    quote_id: int
    expires_at_ms: int
    filled: int

    def expired_by(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


def swap_transfers(state: State, swap: Swap, maker: int) -> tuple[int, ...]:
    """`state`'s transfers with the swap applied: the base moves from the seller to the buyer and the
    quote the other way. A transfer counts value moved from A (index 0) to B."""
    return apply_swap(state.assets, state.transfers, swap, maker)


def apply_swap(assets: tuple[bytes, ...], transfers: tuple[int, ...], swap: Swap, maker: int) -> tuple[int, ...]:
    """`transfers` (one per asset of `assets`) with the swap applied, as in `swap_transfers`."""
    q = swap.quote
    taker = 1 - maker
    base_from, quote_from = (maker, taker) if q.maker_sells else (taker, maker)
    moves = {
        q.base: swap.base_amount if base_from == 0 else -swap.base_amount,
        q.quote: swap.quote_amount if quote_from == 0 else -swap.quote_amount,
    }
    missing = set(moves) - set(assets)
    if missing:
        raise LocalError(Reason.BAD_ASSETS, f"asset 0x{min(missing).hex()} is not in this channel")
    return tuple(t + moves.get(a, 0) for a, t in zip(assets, transfers, strict=True))

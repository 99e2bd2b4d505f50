"""The rules of a swap over a channel: what a maker may quote, what a taker may propose, and what a maker
countersigns. `machine.py` calls these; they decide, it sequences.

A swap is one update that moves two assets at once, in opposite directions, at exactly the quoted price.
The maker checks a take against its own signed quote rather than against the payment rule (value moves only
away from the proposer), which a swap breaks by design. Everything is checked against the maker's latest
signed state, so the maker never countersigns a state that gives away more than its quote promised."""

from __future__ import annotations

from dataclasses import replace

from statechannel.core.channel import Channel, Phase
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError, Reason, RemoteError
from statechannel.core.quotes import MAX_TAKES, Quote, QuoteFill, Swap, apply_swap, quote_signer, sign_quote
from statechannel.core.types import State

MAX_LIVE_QUOTES = 1024
"""Quotes of mine with fills on record at once; past this a take of a new quote is refused until some
expire, so a channel's stored form stays bounded whatever the peer does."""


def make_quote(
    ch: Channel,
    key: PrivateKey,
    quote_id: int,
    base: bytes,
    quote: bytes,
    maker_sells: bool,
    base_unit: int,
    quote_unit: int,
    size: int,
    expires_at_ms: int,
) -> tuple[Quote, Signature]:
    """A quote by me, the maker, signed; refused if it could never be taken in this channel."""
    if ch.phase is not Phase.OPEN:
        raise LocalError(Reason.WRONG_PHASE, f"quotes need an open channel; this one is {ch.phase}")
    q = Quote(ch.channel_id, quote_id, base, quote, maker_sells, base_unit, quote_unit, size, expires_at_ms)
    for asset in (base, quote):
        if asset not in ch.assets:
            raise LocalError(Reason.BAD_ASSETS, f"asset 0x{asset.hex()} is not in this channel")
    return q, sign_quote(ch.domain, q, key)


def check_offer(ch: Channel, q: Quote, sig: Signature, now_ms: int) -> None:
    """A taker's check of the peer's quote offer, before keeping it."""
    if q.channel_id != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "quote is for another channel")
    if q.base not in ch.assets or q.quote not in ch.assets:
        raise RemoteError(Reason.BAD_ASSETS, "quote names an asset this channel does not hold")
    if quote_signer(ch.domain, q, sig) != ch.peer_address:
        raise RemoteError(Reason.BAD_SIGNATURE, f"quote {q.quote_id} is not signed by the peer")
    if q.expired(now_ms):
        raise RemoteError(Reason.EXPIRED, f"quote {q.quote_id} arrived already expired")


def _balances(ch: Channel, transfers: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """As `Channel.balances`, for transfers not yet in a state."""
    return tuple(
        (fa - ch.withdrawing(0, asset) - t, fb - ch.withdrawing(1, asset) + t)
        for asset, (fa, fb), t in zip(ch.assets, ch.funded, transfers, strict=True)
    )


def build_takes(ch: Channel, takes: tuple[Swap, ...], now_ms: int | None) -> tuple[int, ...]:
    """The transfers of `takes` applied in order on the taker's head. `now_ms` None: takes proposed again
    after a rollback, whose expiry only the maker's clock decides now. Raises LocalError naming the first
    take its own checks refuse (`take` = its index)."""
    if not 0 < len(takes) <= MAX_TAKES:
        raise LocalError(Reason.BAD_PARAMS, f"a swap update carries 1 to {MAX_TAKES} takes, not {len(takes)}")
    base = ch.head
    transfers = base.transfers
    for i, swap in enumerate(takes):
        try:
            transfers = _take_one(ch, transfers, swap, now_ms)
        except LocalError as exc:
            raise LocalError(exc.reason, f"take {i}: {exc.detail}", take=i) from exc
    return transfers


def _take_one(ch: Channel, transfers: tuple[int, ...], swap: Swap, now_ms: int | None) -> tuple[int, ...]:
    q = swap.quote
    if q.channel_id != ch.channel_id:
        raise LocalError(Reason.WRONG_CHANNEL, "quote is for another channel")
    if quote_signer(ch.domain, q, swap.quote_sig) != ch.peer_address:
        raise LocalError(Reason.BAD_SIGNATURE, f"quote {q.quote_id} is not signed by the peer")
    if now_ms is not None and q.expired(now_ms):
        raise LocalError(Reason.EXPIRED, f"quote {q.quote_id} expired at {q.expires_at_ms} ms")
    q.quote_amount(swap.base_amount)  # raises BAD_AMOUNT unless whole at this price
    if swap.base_amount > q.size:
        raise LocalError(Reason.OVERSIZE, f"take of {swap.base_amount} exceeds the quote's size {q.size}")
    after = apply_swap(ch.assets, transfers, swap, ch.peer)
    for asset, pair in zip(ch.assets, _balances(ch, after), strict=True):
        if pair[ch.me] < 0:
            raise LocalError(Reason.INSUFFICIENT_FUNDS, f"not enough of asset 0x{asset.hex()} for this take")
        if pair[ch.peer] < 0:
            raise LocalError(Reason.INSUFFICIENT_FUNDS, f"the maker lacks asset 0x{asset.hex()} for this take")
    return after


def accept_takes(ch: Channel, old: State, new: State, takes: tuple[Swap, ...], now_ms: int) -> Channel:
    """The maker's check of `takes` proposed on `old`, its latest signed state. Returns the channel with
    the fills recorded (and expired fill records dropped); raises RemoteError naming the refusal, with
    `take` the index of the take to blame when one is."""
    if ch.phase is not Phase.OPEN:
        raise RemoteError(Reason.WRONG_PHASE, f"no swaps while {ch.phase}")
    if not 0 < len(takes) <= MAX_TAKES:
        raise RemoteError(Reason.BAD_MESSAGE, f"a swap update carries 1 to {MAX_TAKES} takes")
    fills = {f.quote_id: f for f in ch.fills if not f.expired_by(now_ms)}
    transfers = old.transfers
    for i, swap in enumerate(takes):
        try:
            transfers = accept_one(ch, transfers, swap, now_ms, fills)
        except RemoteError as exc:
            raise RemoteError(exc.reason, f"take {i}: {exc.detail}", take=i) from exc
    if new.is_final or new.assets != old.assets or new.app_data != old.app_data or new.transfers != transfers:
        raise RemoteError(Reason.ALTERED, "the proposed state is not these takes at their quotes")
    return replace(ch, fills=tuple(fills.values()))


def accept_one(
    ch: Channel, transfers: tuple[int, ...], swap: Swap, now_ms: int, fills: dict[int, QuoteFill]
) -> tuple[int, ...]:
    """One take checked against my quote and what is left of it; records the fill in `fills`."""
    q = swap.quote
    if q.channel_id != ch.channel_id:
        raise RemoteError(Reason.WRONG_CHANNEL, "quote is for another channel")
    if quote_signer(ch.domain, q, swap.quote_sig) != ch.address_of(ch.me):
        raise RemoteError(Reason.BAD_SIGNATURE, f"quote {q.quote_id} is not one I signed")
    if q.expired(now_ms):
        raise RemoteError(Reason.EXPIRED, f"quote {q.quote_id} expired at {q.expires_at_ms} ms, now {now_ms}")
    try:
        q.quote_amount(swap.base_amount)
    except LocalError as exc:
        raise RemoteError(exc.reason, exc.detail) from exc
    record = fills.get(q.quote_id)
    filled = record.filled if record is not None else 0
    if swap.base_amount > q.size - filled:
        raise RemoteError(
            Reason.OVERSIZE, f"take of {swap.base_amount} exceeds what is left of quote {q.quote_id}: {q.size - filled}"
        )
    if q.base not in ch.assets or q.quote not in ch.assets:
        raise RemoteError(Reason.BAD_ASSETS, "quote names an asset this channel does not hold")
    after = apply_swap(ch.assets, transfers, swap, ch.me)
    for pair in _balances(ch, after):
        if min(pair) < 0:
            raise RemoteError(Reason.INSUFFICIENT_FUNDS, "the take overdraws a participant")
    if record is None:
        if len(fills) >= MAX_LIVE_QUOTES:
            raise RemoteError(Reason.QUOTE_LIMIT, f"{MAX_LIVE_QUOTES} quotes already partly filled; wait for expiry")
        fills[q.quote_id] = QuoteFill(q.quote_id, q.expires_at_ms, swap.base_amount)
    else:  # a quote id reused (only across a clock step back) shares the record, kept for the longest expiry
        expires = max(record.expires_at_ms, q.expires_at_ms)
        fills[q.quote_id] = replace(record, filled=filled + swap.base_amount, expires_at_ms=expires)
    return after


def filled(ch: Channel, quote_id: int) -> int:
    """How much of my quote `quote_id` the peer has taken (0 once its record expired)."""
    return next((f.filled for f in ch.fills if f.quote_id == quote_id), 0)

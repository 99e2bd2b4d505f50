"""Peer messages and their wire codec (msgpack through msgspec).

Amounts travel as 32-byte big-endian fields because msgpack integers stop at 64
bits. Decoding validates types and sizes; a malformed frame raises RemoteError
and builds nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import msgspec

from statechannel.core.crypto import Signature
from statechannel.core.errors import Reason, RemoteError, StatechannelError
from statechannel.core.quotes import MAX_TAKES, Quote, Swap
from statechannel.core.types import State

MAX_LIST = 256
Text = Annotated[str, msgspec.Meta(max_length=64)]
"""A reason code: every one of ours is a short word. Kept by the receiver, so bounded on the wire."""
Detail = Annotated[str, msgspec.Meta(max_length=512)]
Assets = Annotated[list[bytes], msgspec.Meta(max_length=8)]
Ids = Annotated[list[int], msgspec.Meta(max_length=MAX_LIST)]
MAX_PAID = 512
"""Payments one message may list (the node's batch is at most this many)."""
Paid = Annotated[list[tuple[int, bytes]], msgspec.Meta(max_length=MAX_PAID)]
"""The payments an update or request coalesces, each (index of its asset in the channel's assets,
amount as minimal big-endian bytes). Informational, never money: the money is the signed state. It
lets the payee keep one history row per payment, as the payer does; the receiver checks it adds up."""
MAX_COUNT = 2**63 - 1
"""Payments one listed entry may stand for (a batch); what a history row can count."""
Counts = Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]], msgspec.Meta(max_length=MAX_PAID)]
"""Per entry of a `Paid` list, how many payments it is (a batch whose amount is their total); empty:
one each. Informational like the list: each batch is checked to be at least one unit per payment."""


def u256(value: int) -> bytes:
    return value.to_bytes(32, "big")


def i256(value: int) -> bytes:
    return value.to_bytes(32, "big", signed=True)


def from_u256(raw: bytes) -> int:
    if len(raw) != 32:
        raise RemoteError(Reason.BAD_MESSAGE, "amount must be 32 bytes")
    return int.from_bytes(raw, "big")


def pack_paid(assets: tuple[bytes, ...], payments: Iterable[tuple[bytes, int]]) -> list[tuple[int, bytes]]:
    return [(assets.index(a), v.to_bytes((v.bit_length() + 7) // 8, "big")) for a, v in payments]


def pack_counts(counts: Iterable[int]) -> list[int]:
    """The `counts` field for listed payments: empty when every entry is one payment (the old form)."""
    out = list(counts)
    return out if any(c != 1 for c in out) else []


def unpack_counts(paid: list[tuple[int, bytes]], counts: list[int]) -> tuple[int, ...]:
    """A peer's batch counts for its payment list (already checked by `unpack_paid`), checked: none
    without a list, one per entry, each from 1 up to the entry's amount (every payment is at least one
    unit, so a count above the amount is a lie about what was paid). Empty: one payment each."""
    if not counts:
        return ()
    if len(counts) != len(paid):
        raise RemoteError(Reason.BAD_MESSAGE, f"{len(counts)} batch counts for {len(paid)} listed payments")
    for (_, raw), count in zip(paid, counts, strict=True):
        if type(count) is not int or not 1 <= count <= MAX_COUNT or count > int.from_bytes(raw, "big"):
            raise RemoteError(Reason.BAD_MESSAGE, "a listed batch counts more payments than units it moves")
    return tuple(counts)


def unpack_paid(
    assets: tuple[bytes, ...], paid: list[tuple[int, bytes]], totals: dict[bytes, int]
) -> tuple[tuple[bytes, int], ...]:
    """A peer's payment list, checked: each of a channel asset, a positive amount of at most 32 bytes
    written without leading zeros, and per asset adding up exactly to `totals` (what the state or the
    request moves). An empty list is a peer that did not say (nothing is checked)."""
    out = []
    sums = dict.fromkeys(assets, 0)
    for index, raw in paid:
        if not 0 <= index < len(assets):
            raise RemoteError(Reason.BAD_MESSAGE, f"a listed payment names asset {index} of {len(assets)}")
        if not 0 < len(raw) <= 32 or raw[0] == 0:
            raise RemoteError(Reason.BAD_MESSAGE, "a listed payment's amount must be 1 to 32 bytes, no leading zero")
        amount = int.from_bytes(raw, "big")
        sums[assets[index]] += amount
        out.append((assets[index], amount))
    if paid and any(sums[a] != totals.get(a, 0) for a in assets):
        raise RemoteError(Reason.BAD_MESSAGE, "the listed payments do not add up to what is moved")
    return tuple(out)


def from_i256(raw: bytes) -> int:
    if len(raw) != 32:
        raise RemoteError(Reason.BAD_MESSAGE, "transfer must be 32 bytes")
    return int.from_bytes(raw, "big", signed=True)


class WireState(msgspec.Struct, frozen=True, array_like=True):
    channel_id: bytes
    version: int
    is_final: bool
    assets: Assets
    transfers: Assets
    app_data: bytes

    @classmethod
    def of(cls, s: State) -> WireState:
        return cls(s.channel_id, s.version, s.is_final, list(s.assets), [i256(t) for t in s.transfers], s.app_data)

    def to_state(self) -> State:
        try:
            return State(
                channel_id=self.channel_id,
                version=self.version,
                assets=tuple(self.assets),
                transfers=tuple(from_i256(t) for t in self.transfers),
                is_final=self.is_final,
                app_data=self.app_data,
            )
        except StatechannelError as exc:
            raise RemoteError(exc.reason, f"peer sent a bad state: {exc.detail}") from exc


class OpenRequest(msgspec.Struct, frozen=True, array_like=True, tag="open"):
    """A asks B to open a channel; carries A's signature on the pre-fund state."""

    chain_id: int
    adjudicator: bytes
    a: bytes
    b: bytes
    challenge_period: int
    nonce: bytes
    assets: Assets
    deposits_a: Assets
    deposits_b: Assets
    sig: bytes


class Propose(msgspec.Struct, frozen=True, array_like=True, tag="propose"):
    """Leader to follower: a state built on version `base`, signed by the leader. `requests` are the ids
    of the follower's payment requests it carries, each whole; what else it moves is the leader's own
    payment to the follower. `pid` names the proposal for its Reject."""

    state: WireState
    sig: bytes
    pid: int
    base: int
    requests: Ids = []
    paid: Paid = []
    """The leader's own payments the state moves to the follower, one entry per payment (or batch)."""
    counts: Counts = []
    """Per entry of `paid`, how many payments it is; empty: one each."""


class Accept(msgspec.Struct, frozen=True, array_like=True, tag="accept"):
    channel_id: bytes
    version: int
    sig: bytes


class Reject(msgspec.Struct, frozen=True, array_like=True, tag="reject"):
    """Refuses the proposal `pid`."""

    channel_id: bytes
    version: int
    pid: int
    reason: Text
    detail: Detail
    take: int = -1
    """For a swap proposal: the index of the take to blame, or -1 when the whole proposal is refused."""
    request: int = 0
    """For a proposal carrying requests: the id of the request to blame (0: none)."""


class Sync(msgspec.Struct, frozen=True, array_like=True, tag="sync"):
    """After a (re)connect: my latest fully signed state."""

    state: WireState
    sig_a: bytes
    sig_b: bytes


class PayRequest(msgspec.Struct, frozen=True, array_like=True, tag="payreq"):
    """Follower to leader: please propose a state in which I pay you these totals per asset. Nothing is
    signed: a request the leader refuses, or never proposes, costs the follower nothing."""

    channel_id: bytes
    rid: int
    assets: Assets
    amounts: Assets
    paid: Paid = []
    """The payments these totals coalesce, one entry per payment (or batch)."""
    counts: Counts = []
    """Per entry of `paid`, how many payments it is; empty: one each."""


class TakeRefusal(msgspec.Struct, frozen=True, array_like=True):
    index: int
    reason: Text
    detail: Detail


class Refuse(msgspec.Struct, frozen=True, array_like=True, tag="refuse"):
    """Leader to follower: request `rid` will never be proposed. For a take request `takes` gives each
    take's reason."""

    channel_id: bytes
    rid: int
    reason: Text
    detail: Detail
    takes: Annotated[list[TakeRefusal], msgspec.Meta(max_length=MAX_LIST)] = []


class CloseRequest(msgspec.Struct, frozen=True, array_like=True, tag="closereq"):
    """Follower to leader: please propose the final state."""

    channel_id: bytes


class WithdrawRequest(msgspec.Struct, frozen=True, array_like=True, tag="wreq"):
    channel_id: bytes
    participant: int
    asset: bytes
    amount: bytes
    nonce: bytes
    deadline: int
    sig: bytes


class WithdrawAccept(msgspec.Struct, frozen=True, array_like=True, tag="wacc"):
    channel_id: bytes
    nonce: bytes
    sig: bytes


class WireQuote(msgspec.Struct, frozen=True, array_like=True):
    channel_id: bytes
    quote_id: int
    base: bytes
    quote: bytes
    maker_sells: bool
    base_unit: bytes
    quote_unit: bytes
    size: bytes
    expires_at_ms: int

    @classmethod
    def of(cls, q: Quote) -> WireQuote:
        return cls(
            q.channel_id,
            q.quote_id,
            q.base,
            q.quote,
            q.maker_sells,
            u256(q.base_unit),
            u256(q.quote_unit),
            u256(q.size),
            q.expires_at_ms,
        )

    def to_quote(self) -> Quote:
        try:
            return Quote(
                channel_id=self.channel_id,
                quote_id=self.quote_id,
                base=self.base,
                quote=self.quote,
                maker_sells=self.maker_sells,
                base_unit=from_u256(self.base_unit),
                quote_unit=from_u256(self.quote_unit),
                size=from_u256(self.size),
                expires_at_ms=self.expires_at_ms,
            )
        except StatechannelError as exc:
            raise RemoteError(exc.reason, f"peer sent a bad quote: {exc.detail}") from exc


class QuoteOffer(msgspec.Struct, frozen=True, array_like=True, tag="quote"):
    """Maker to taker: a quote and the maker's signature on it. Not a channel update: nothing is signed
    back, and a taker keeps only the latest offer per quote id until it expires."""

    quote: WireQuote
    sig: bytes

    @property
    def channel_id(self) -> bytes:
        return self.quote.channel_id


class WireTake(msgspec.Struct, frozen=True, array_like=True):
    quote: int
    """Index into the proposal's quotes."""
    base_amount: bytes


def pack_swaps(swaps: tuple[Swap, ...]) -> tuple[list[WireQuote], list[bytes], list[WireTake]]:
    """Takes on the wire: each quote (and its signature) travels once however many takes name it."""
    index: dict[tuple[Quote, Signature], int] = {}
    quotes: list[WireQuote] = []
    sigs: list[bytes] = []
    takes: list[WireTake] = []
    for swap in swaps:
        key = (swap.quote, swap.quote_sig)
        i = index.get(key)
        if i is None:
            i = index[key] = len(quotes)
            quotes.append(WireQuote.of(swap.quote))
            sigs.append(swap.quote_sig.to_bytes())
        takes.append(WireTake(i, u256(swap.base_amount)))
    return quotes, sigs, takes


def unpack_swaps(quotes: list[WireQuote], quote_sigs: list[bytes], takes: list[WireTake]) -> tuple[Swap, ...]:
    if not 0 < len(takes) <= MAX_TAKES:
        raise RemoteError(Reason.BAD_MESSAGE, f"a swap message carries 1 to {MAX_TAKES} takes")
    if not 0 < len(quotes) == len(quote_sigs) <= len(takes):
        raise RemoteError(Reason.BAD_MESSAGE, "one signature per quote, and no quote without a take")
    decoded = [(q.to_quote(), signature(s)) for q, s in zip(quotes, quote_sigs, strict=True)]
    out = []
    for t in takes:
        if not 0 <= t.quote < len(decoded):
            raise RemoteError(Reason.BAD_MESSAGE, f"take names quote {t.quote} of {len(decoded)}")
        q, sig = decoded[t.quote]
        out.append(Swap(q, sig, from_u256(t.base_amount)))
    return tuple(out)


class ProposeSwap(msgspec.Struct, frozen=True, array_like=True, tag="swap"):
    """Leader (taker) to follower (maker): a `Propose` whose state applies `takes`, in order, to the
    follower's signed quotes. The maker checks the state against its quotes, not the payment rules."""

    state: WireState
    sig: bytes
    pid: int
    base: int
    quotes: Annotated[list[WireQuote], msgspec.Meta(max_length=MAX_LIST)]
    quote_sigs: Annotated[list[bytes], msgspec.Meta(max_length=MAX_LIST)]
    takes: Annotated[list[WireTake], msgspec.Meta(max_length=MAX_LIST)]

    @property
    def channel_id(self) -> bytes:
        return self.state.channel_id

    @classmethod
    def of(cls, state: State, sig: Signature, pid: int, base: int, swaps: tuple[Swap, ...]) -> ProposeSwap:
        return cls(WireState.of(state), sig.to_bytes(), pid, base, *pack_swaps(swaps))

    def to_swaps(self) -> tuple[Swap, ...]:
        return unpack_swaps(self.quotes, self.quote_sigs, self.takes)


class TakeRequest(msgspec.Struct, frozen=True, array_like=True, tag="takereq"):
    """Follower (taker) to leader (maker): please propose these takes of your quotes."""

    channel_id: bytes
    rid: int
    quotes: Annotated[list[WireQuote], msgspec.Meta(max_length=MAX_LIST)]
    quote_sigs: Annotated[list[bytes], msgspec.Meta(max_length=MAX_LIST)]
    takes: Annotated[list[WireTake], msgspec.Meta(max_length=MAX_LIST)]

    @classmethod
    def of(cls, channel_id: bytes, rid: int, swaps: tuple[Swap, ...]) -> TakeRequest:
        return cls(channel_id, rid, *pack_swaps(swaps))

    def to_swaps(self) -> tuple[Swap, ...]:
        return unpack_swaps(self.quotes, self.quote_sigs, self.takes)


class ProposeFill(msgspec.Struct, frozen=True, array_like=True, tag="fill"):
    """Leader (maker) to follower: a state applying the takes `taken` (indexes into take request
    `request`, ascending) at the leader's quotes; every other take of the request is in `refused`."""

    state: WireState
    sig: bytes
    pid: int
    base: int
    request: int
    taken: Ids
    refused: Annotated[list[TakeRefusal], msgspec.Meta(max_length=MAX_LIST)] = []


Message = (
    OpenRequest
    | Propose
    | ProposeSwap
    | ProposeFill
    | Accept
    | Reject
    | Sync
    | PayRequest
    | TakeRequest
    | Refuse
    | CloseRequest
    | WithdrawRequest
    | WithdrawAccept
    | QuoteOffer
)
Proposal = Propose | ProposeSwap | ProposeFill
"""The messages that carry a signed state for the follower to countersign."""
_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(frame: bytes) -> Message:
    try:
        return _decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise RemoteError(Reason.BAD_MESSAGE, f"undecodable frame: {exc}") from exc


def signature(raw: bytes) -> Signature:
    return Signature.from_bytes(raw)


def channel_of(msg: Message) -> bytes:
    """The channel a message is about (an OpenRequest names none yet: its id is derived by the receiver)."""
    if isinstance(msg, Propose | ProposeSwap | ProposeFill | Sync):
        return msg.state.channel_id
    if isinstance(msg, OpenRequest):
        raise RemoteError(Reason.BAD_MESSAGE, "an open request names no channel id")
    return msg.channel_id

"""The tower's HTTP API (FastAPI, so the OpenAPI document comes with it).

No bearer token: every registration and push carries a signature by a participant of the channel over (this tower,
the channel, the request, a timestamp), so the tower knows which participant asks and keeps each one's states apart
under its own quotas. Every refusal is `{"error": {"reason", "detail"}}`; amounts are decimal strings."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import statechannel
from statechannel.core.crypto import Signature
from statechannel.core.errors import StatechannelError
from statechannel.core.io import SignedState
from statechannel.core.tower import ClientAuth, check_account
from statechannel.core.types import INT256_MAX, INT256_MIN, UINT256_MAX, ChannelParams, State, to_checksum
from statechannel.httplimits import BodyLimits
from statechannel.watchtower.errors import TowerError, TowerReason, from_core
from statechannel.watchtower.metrics import TowerMetrics
from statechannel.watchtower.page import install as install_page
from statechannel.watchtower.records import WatchedChannel
from statechannel.watchtower.service import Tower

log = logging.getLogger(__name__)
_DECIMAL = re.compile(r"-?[0-9]{1,78}")

MAX_BODY_BYTES = 16 * 1024
"""The largest request body the tower reads, from anyone. A push of one state with all 8 assets a channel
can hold is about 1.5 KB, a registration 0.2 KB: 16 KiB is ten times the largest, pretty-printed or not.
Bigger bodies would fail validation anyway (more assets than a channel holds, overlong strings)."""
MAX_BODY_DEPTH = 16
"""Bodies nest 2 deep (an object holding the assets); 16 leaves room for new fields."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Short = Annotated[str, Field(max_length=200)]
"""Every string field is bounded, so an anonymous push cannot make the tower parse megabytes."""


class _Authed(_Body):
    client: Short
    """The participant asking (0x address); `auth` must be its signature."""
    timestamp: int
    """Unix seconds; the tower refuses a request more than core.tower.MAX_AUTH_SKEW from its clock."""
    auth: Short
    """65-byte signature over core.tower.request_digest(tower, channel, request, timestamp)."""


class AccountBody(_Authed):
    pass


class RegisterBody(_Authed):
    a: Short
    b: Short
    challenge_period: int
    nonce: Short
    """Decimal: a uint256 does not survive JSON numbers."""


class StateBody(_Authed):
    channel_id: Short
    version: int
    is_final: bool
    assets: list[Short] = Field(max_length=64)
    transfers: list[Short] = Field(max_length=64)
    """Decimal signed strings: the net amount moved from A to B per asset."""
    app_data: Short
    sig_a: Short
    sig_b: Short


class QuotaView(BaseModel):
    channels: int = Field(description="Channels one client may register.")
    states: int = Field(description="States kept per channel for each participant (its best ones).")
    bytes: int = Field(description="Bytes of kept states per client.")


class TermsView(BaseModel):
    pay_to: str = Field(description="The tower operator's node: pay through a statechannel channel with it.")
    asset: str
    price_per_state: str = Field(description="Decimal, smallest unit, per state accepted.")
    price_per_period: str
    period: int = Field(description="Seconds; each period is charged when it starts.")
    grace: int = Field(description="Seconds the tower still protects once the balance is negative.")


class StandingView(BaseModel):
    client: str
    paid: str
    owed: str
    balance: str = Field(description="paid - owed; negative: the grace period runs.")
    states: int
    paid_until: int | None = Field(description="Unix seconds the payments cover (per period).")
    protected_until: int | None = Field(description="Unix seconds after which nothing of this client is answered.")
    protected: bool


class Info(BaseModel):
    address: str
    chain_id: int
    adjudicator: str
    channels: int
    head: int
    min_challenge_period: int = Field(description="The shortest challenge period (seconds) this tower protects.")
    quotas: QuotaView
    terms: TermsView | None = Field(None, description="A paid tower's terms (watchtower/billing.py); null: free.")


class Registered(BaseModel):
    channel_id: str
    status: str


class Receipt(BaseModel):
    """The tower's EIP-712 `TowerReceipt` (core.tower.RECEIPT_TYPE) under the adjudicator's domain."""

    channel_id: str
    version: int
    state_hash: str = Field(description="EIP-712 struct hash of the state held (as the contract's events name it).")
    tower: str
    from_block: int = Field(description="The tower answers a stale close from this block on.")
    receipt: str
    """65-byte signature of the tower over the typed receipt's digest."""
    protected_until: int | None = Field(
        None, description="A paid tower: unix seconds after which it answers nothing of this client unless paid."
    )
    billing: StandingView | None = None


class HeldView(BaseModel):
    client: str = Field(description="'a' or 'b': the participant that pushed it.")
    version: int


class Challenge(BaseModel):
    version: int
    against: int
    outcome: str
    tx_hashes: list[str]
    reason: str


class ChannelView(BaseModel):
    channel_id: str
    version: int | None
    held: list[HeldView]
    status: str
    a: str
    b: str
    challenge_period: int
    nonce: str
    recorded_version: int | None
    finalizes_at: int | None
    challenge: Challenge | None


class ErrorDetail(BaseModel):
    reason: str
    detail: str
    billing: StandingView | None = None
    terms: TermsView | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _hex(text: str, size: int, reason: TowerReason, what: str) -> bytes:
    if not (text.startswith(("0x", "0X")) and len(text) == 2 + 2 * size):
        raise TowerError(reason, f"{what} must be 0x and {2 * size} hex digits")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise TowerError(reason, f"{what} is not hex") from None


def _int(text: str, low: int, high: int, reason: TowerReason, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise TowerError(reason, f"{what} must be a decimal integer string, got {text[:80]!r}")
    value = int(text)
    if not low <= value <= high:
        raise TowerError(reason, f"{what} is out of range")
    return value


def _params(body: RegisterBody) -> ChannelParams:
    a = _hex(body.a, 20, TowerReason.BAD_PARAMS, "a")
    b = _hex(body.b, 20, TowerReason.BAD_PARAMS, "b")
    nonce = _int(body.nonce, 0, UINT256_MAX, TowerReason.BAD_PARAMS, "nonce")
    try:
        return ChannelParams(a, b, body.challenge_period, nonce)
    except StatechannelError as exc:
        raise TowerError(TowerReason.BAD_PARAMS, exc.detail) from None


def _auth(body: _Authed) -> ClientAuth:
    client = _hex(body.client, 20, TowerReason.UNAUTHORIZED, "client")
    if not 0 <= body.timestamp < 2**64:
        raise TowerError(TowerReason.UNAUTHORIZED, "timestamp is out of range")
    try:
        sig = Signature.from_bytes(_hex(body.auth, 65, TowerReason.UNAUTHORIZED, "auth"))
    except StatechannelError as exc:
        raise TowerError(TowerReason.UNAUTHORIZED, exc.detail) from None
    return ClientAuth(client, body.timestamp, sig)


def _signed(body: StateBody) -> SignedState:
    cid = _hex(body.channel_id, 32, TowerReason.BAD_STATE, "channel_id")
    assets = tuple(_hex(a, 20, TowerReason.BAD_ASSETS, "an asset") for a in body.assets)
    transfers = tuple(_int(t, INT256_MIN, INT256_MAX, TowerReason.BAD_STATE, "a transfer") for t in body.transfers)
    app_data = _hex(body.app_data, 32, TowerReason.BAD_STATE, "app_data")
    try:
        state = State(cid, body.version, assets, transfers, is_final=body.is_final, app_data=app_data)
    except StatechannelError as exc:
        raise TowerError(from_core(exc.reason), exc.detail) from None
    try:
        sig_a = Signature.from_bytes(_hex(body.sig_a, 65, TowerReason.BAD_SIGNATURE, "sig_a"))
        sig_b = Signature.from_bytes(_hex(body.sig_b, 65, TowerReason.BAD_SIGNATURE, "sig_b"))
    except StatechannelError as exc:
        raise TowerError(TowerReason.BAD_SIGNATURE, exc.detail) from None
    return SignedState(state, sig_a, sig_b)


def _view(tower: Tower, ch: WatchedChannel) -> ChannelView:
    attempt = tower.challenges.get(ch.channel_id)
    return ChannelView(
        channel_id="0x" + ch.channel_id.hex(),
        version=ch.version,
        held=[HeldView(client="ab"[h.client], version=h.version) for h in ch.states],
        status=ch.status.value,
        a=to_checksum(ch.params.a),
        b=to_checksum(ch.params.b),
        challenge_period=ch.params.challenge_period,
        nonce=str(ch.params.nonce),
        recorded_version=None if ch.dispute is None else ch.dispute.version,
        finalizes_at=None if ch.dispute is None else ch.dispute.finalizes_at,
        challenge=None
        if attempt is None
        else Challenge(
            version=attempt.version,
            against=attempt.against,
            outcome=attempt.outcome,
            tx_hashes=["0x" + h.hex() for h in attempt.tx_hashes],
            reason=attempt.reason,
        ),
    )


def _error(status: int, reason: str, detail: str, extra: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail, **(extra or {})}}, status_code=status)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        402: "payment_required: a paid tower whose client has not paid or whose grace period is over; `billing` "
        "names what is owed and until when it protected",
        401: "unauthorized: not signed by a participant of the channel, for this tower, within the allowed skew",
        403: "quota_exceeded: the client holds as many channels or bytes as this tower allows one client",
        404: "unknown_channel: not on chain, or not registered with this tower",
        409: "stale_version: the tower holds higher versions from this client (or another state of this one)",
        413: f"too_large: a request body over {MAX_BODY_BYTES} bytes",
        415: "bad_encoding: a request body that is not UTF-8",
        422: "validation, bad_params, period_too_short, bad_state, bad_assets, bad_signature, wrong_signer, too_deep "
        "(JSON nested "
        f"over {MAX_BODY_DEPTH} levels)",
        503: "chain_unavailable or store_unavailable",
    }.items()
}


def create_tower_app(tower: Tower) -> FastAPI:
    app = FastAPI(
        title="statechannel watchtower",
        version=statechannel.__version__,
        description="Register a channel, then push every state both participants signed, each request signed "
        "by the participant making it. The tower keeps each participant's best few states apart and answers a "
        "close on chain that records a lower version with the best one that passes a dry run; each push is "
        "answered with the tower's EIP-712 receipt. Amounts are decimal strings.",
        responses=_RESPONSES,
    )
    # Anyone may call the tower: every body is bounded and its nesting counted before it is parsed.
    app.add_middleware(BodyLimits, max_bytes=MAX_BODY_BYTES, max_depth=MAX_BODY_DEPTH)

    @app.exception_handler(TowerError)
    async def tower_error(_: Request, exc: TowerError) -> JSONResponse:
        return _error(exc.status, exc.reason.value, exc.detail, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'request'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error(422, TowerReason.VALIDATION, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = TowerReason.NOT_FOUND if exc.status_code == 404 else f"http_{exc.status_code}"
        return _error(exc.status_code, reason, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in a tower request", exc_info=exc)
        return _error(500, TowerReason.INTERNAL, "internal error; see the tower's log")

    @app.get("/info", response_model=Info, response_model_exclude_none=True)  # a free tower: no terms
    async def info() -> Info:
        return Info(
            address=to_checksum(tower.address),
            chain_id=tower.domain.chain_id,
            adjudicator=to_checksum(tower.domain.adjudicator),
            channels=tower.store.count(),
            head=tower.head,
            min_challenge_period=tower.min_challenge_period,
            quotas=QuotaView(channels=tower.quotas.channels, states=tower.quotas.states, bytes=tower.quotas.bytes),
            terms=None if tower.billing is None else TermsView(**tower.billing.terms.as_json()),
        )

    @app.post("/channels", response_model=Registered, status_code=201, responses={200: {"model": Registered}})
    async def register(body: RegisterBody, response: Response) -> Registered:
        """Watch a channel that exists on chain. Registering it again answers 200 and changes nothing."""
        created, ch = await tower.register(_params(body), _auth(body))
        response.status_code = 201 if created else 200
        return Registered(channel_id="0x" + ch.channel_id.hex(), status=ch.status.value)

    @app.post("/states", response_model=Receipt, response_model_exclude_none=True)
    async def push(body: StateBody) -> Receipt:
        """Hand the tower a state both participants signed; it joins the pushing participant's best few."""
        signed = _signed(body)
        auth = _auth(body)
        _, r, sig = await tower.push(signed, auth)
        standing = None if tower.billing is None else StandingView(**tower.billing.standing(auth.client).as_json())
        return Receipt(
            protected_until=None if standing is None else standing.protected_until,
            billing=standing,
            channel_id="0x" + r.channel_id.hex(),
            version=r.version,
            state_hash="0x" + r.state_hash.hex(),
            tower=to_checksum(r.tower),
            from_block=r.from_block,
            receipt="0x" + sig.to_bytes().hex(),
        )

    @app.get("/channels/{channel_id}", response_model=ChannelView)
    async def channel(channel_id: str) -> ChannelView:
        cid = _hex(channel_id, 32, TowerReason.VALIDATION, "channel id")
        ch = tower.row(cid)
        if ch is None:
            raise TowerError(TowerReason.UNKNOWN_CHANNEL, f"channel {channel_id} is not registered with this tower")
        return _view(tower, ch)

    @app.post("/accounts/{address}", response_model=StandingView)
    async def account(address: str, body: AccountBody) -> StandingView:
        """A paid tower: what a client paid and owes, and until when it is protected. Shown to the account's
        holder only: signed like a push, by `address` itself, over core.tower.account_request(address) with
        the all-zero channel id."""
        who = _hex(address, 20, TowerReason.VALIDATION, "address")
        auth = _auth(body)
        try:
            check_account(tower.domain, tower.address, who, auth, int(tower.clock()))
        except StatechannelError as exc:
            raise TowerError(TowerReason.UNAUTHORIZED, exc.detail) from exc
        if tower.billing is None:
            raise TowerError(TowerReason.NOT_FOUND, "this tower is free: it keeps no accounts")
        return StandingView(**tower.billing.standing(who).as_json())

    from statechannel.watchtower.reads import install_reads  # a participant's read (decision 0011)

    install_reads(app, tower)
    install_page(app, TowerMetrics(tower))  # the page at /, /overview and /metrics (watchtower/page.py)
    return app

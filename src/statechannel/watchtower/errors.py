"""The tower's refusals, each with a reason code a client can branch on, and the HTTP status it maps to."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from statechannel.core.errors import Reason


class TowerReason(StrEnum):
    UNKNOWN_CHANNEL = "unknown_channel"
    WRONG_SIGNER = "wrong_signer"
    BAD_SIGNATURE = "bad_signature"
    BAD_STATE = "bad_state"
    BAD_ASSETS = "bad_assets"
    BAD_PARAMS = "bad_params"
    STALE_VERSION = "stale_version"
    UNAUTHORIZED = "unauthorized"
    """The request is not signed by a participant of the channel (or not for this tower, or not recently)."""
    QUOTA_EXCEEDED = "quota_exceeded"
    PERIOD_TOO_SHORT = "period_too_short"
    PAYMENT_REQUIRED = "payment_required"
    """A paid tower: the client has not paid, or its grace period is over (watchtower/billing.py)."""
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    CHAIN_UNAVAILABLE = "chain_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL = "internal"


HTTP_STATUS: dict[TowerReason, int] = {
    TowerReason.UNKNOWN_CHANNEL: 404,
    TowerReason.NOT_FOUND: 404,
    TowerReason.STALE_VERSION: 409,
    TowerReason.UNAUTHORIZED: 401,
    TowerReason.QUOTA_EXCEEDED: 403,
    TowerReason.PAYMENT_REQUIRED: 402,
    TowerReason.CHAIN_UNAVAILABLE: 503,
    TowerReason.STORE_UNAVAILABLE: 503,
    TowerReason.INTERNAL: 500,
}
"""Every other reason is a malformed or unprovable input: 422."""

_FROM_CORE: dict[Reason, TowerReason] = {
    Reason.WRONG_SIGNER: TowerReason.WRONG_SIGNER,
    Reason.WRONG_CHANNEL: TowerReason.WRONG_SIGNER,  # signed for another channel: not signed for this one
    Reason.BAD_SIGNATURE: TowerReason.BAD_SIGNATURE,
    Reason.BAD_ASSETS: TowerReason.BAD_ASSETS,
    Reason.BAD_ADDRESS: TowerReason.BAD_PARAMS,
    Reason.BAD_PARAMS: TowerReason.BAD_PARAMS,
}


class TowerError(Exception):
    """A request the tower refuses; nothing was changed."""

    def __init__(self, reason: TowerReason, detail: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.extra = extra or {}
        """More typed fields of the refusal (a 402 names the account and the terms)."""

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.reason, 422)


def from_core(reason: Reason, default: TowerReason = TowerReason.BAD_STATE) -> TowerReason:
    """The tower's code for a core validation error (a bad version or amount is a bad state)."""
    return _FROM_CORE.get(reason, default)

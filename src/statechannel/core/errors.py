"""Typed errors. Two families, after h11: the caller misused the API (`LocalError`)
or a peer, a signer or the chain sent something invalid (`RemoteError`). Each
carries a machine-readable `reason` so callers branch on codes, not on text."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    BAD_ADDRESS = "bad_address"
    BAD_AMOUNT = "bad_amount"
    BAD_ASSETS = "bad_assets"
    BAD_CHANNEL_ID = "bad_channel_id"
    BAD_PARAMS = "bad_params"
    BAD_SIGNATURE = "bad_signature"
    BAD_VERSION = "bad_version"
    WRONG_SIGNER = "wrong_signer"
    BAD_MESSAGE = "bad_message"
    WRONG_CHANNEL = "wrong_channel"
    WRONG_PHASE = "wrong_phase"
    STALE_VERSION = "stale_version"
    ILLEGAL_MOVE = "illegal_move"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    NOT_FUNDED = "not_funded"
    PIPELINE_FULL = "pipeline_full"
    UNKNOWN_PROPOSAL = "unknown_proposal"
    EXPIRED = "expired"
    ALTERED = "altered"
    OVERSIZE = "oversize"
    UNKNOWN_QUOTE = "unknown_quote"
    QUOTE_LIMIT = "quote_limit"
    BAD_BASE = "bad_base"
    """A proposal is not built on the receiver's latest both-signed state."""
    WRONG_ROLE = "wrong_role"
    """Only the leader (A) proposes states; the follower (B) asks with requests."""
    UNKNOWN_REQUEST = "unknown_request"
    CHALLENGE_PERIOD = "challenge_period"
    """The channel's challenge period is outside what this node accepts."""
    TOO_MANY_UNFUNDED = "too_many_unfunded"
    CLOSING = "closing"
    """The channel is being closed: nothing new is signed."""
    TX_FAILED = "tx_failed"
    """An on-chain step of this node reverted or was refused by the chain (the detail says why)."""
    NOT_INCLUDED = "not_included"
    """The channel concluded on a state that does not carry this payment or take."""


class StatechannelError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, reason: Reason, detail: str, *, take: int | None = None, request: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.take = take
        """In a batch of takes: the index of the one to blame, so the others can go ahead without it."""
        self.request = request
        """In a proposal carrying the follower's requests: the id of the one to blame."""


class LocalError(StatechannelError):
    """The caller asked for something invalid; nothing was changed."""


class RemoteError(StatechannelError):
    """Input from outside (peer, chain, signature) is invalid; nothing was changed."""

"""One error shape for every failure, `{"error": {"reason", "detail"}}`, so clients branch on `reason`
and never parse prose. Reasons are the core's `Reason` values where the node raised the error, else an
API code from `Code`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from statechannel import httplimits
from statechannel.chain.base import ChainError, TransactionReverted
from statechannel.core.errors import Reason, StatechannelError
from statechannel.net.base import HandshakeFailed, PeerUnreachable

log = logging.getLogger(__name__)


class Code(StrEnum):
    """Reasons the API itself gives, beside the core's."""

    UNAUTHORIZED = "unauthorized"
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PEER_UNREACHABLE = "peer_unreachable"
    HANDSHAKE_FAILED = "handshake_failed"
    CHAIN_UNAVAILABLE = "chain_unavailable"
    REVERTED = "reverted"
    UNSUPPORTED = "unsupported"
    INTERNAL = "internal"
    TOO_LARGE = httplimits.TOO_LARGE
    """A request body over the size limit (413), refused by `httplimits.BodyLimits` before parsing."""
    TOO_DEEP = httplimits.TOO_DEEP
    """A request body nested deeper than the limit (422)."""
    BAD_ENCODING = httplimits.BAD_ENCODING
    """A request body that is not UTF-8 (415)."""


STATUS_OF_REASON: dict[Reason, int] = {
    Reason.WRONG_CHANNEL: 404,
    Reason.WRONG_PHASE: 409,
    Reason.PIPELINE_FULL: 503,
    Reason.TX_FAILED: 502,
}
"""Every other core reason is the caller's bad input: 400."""


class ApiError(Exception):
    """An error the API raises itself, with its status and reason decided at the raise site."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def error_response(status: int, reason: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail}}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.reason, exc.detail)

    @app.exception_handler(StatechannelError)
    async def node_error(_: Request, exc: StatechannelError) -> JSONResponse:
        return error_response(STATUS_OF_REASON.get(exc.reason, 400), exc.reason.value, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, Code.VALIDATION, _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED, 401: Code.UNAUTHORIZED}.get(exc.status_code)
        return error_response(exc.status_code, code or f"http_{exc.status_code}", str(exc.detail), exc.headers)

    @app.exception_handler(PeerUnreachable)
    async def peer_unreachable(_: Request, exc: PeerUnreachable) -> JSONResponse:
        return error_response(503, Code.PEER_UNREACHABLE, str(exc))

    @app.exception_handler(HandshakeFailed)
    async def handshake_failed(_: Request, exc: HandshakeFailed) -> JSONResponse:
        return error_response(503, Code.HANDSHAKE_FAILED, str(exc))

    @app.exception_handler(TransactionReverted)
    async def reverted(_: Request, exc: TransactionReverted) -> JSONResponse:
        return error_response(400, Code.REVERTED, exc.reason or "transaction reverted without a reason")

    @app.exception_handler(ChainError)
    async def chain_unavailable(_: Request, exc: ChainError) -> JSONResponse:
        return error_response(503, Code.CHAIN_UNAVAILABLE, str(exc))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        # Details of an unexpected failure stay in the node's log: they may name files or internals.
        log.exception("unhandled error in an API request", exc_info=exc)
        return error_response(500, Code.INTERNAL, "internal error; see the node's log")

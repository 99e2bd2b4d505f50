"""Small builders shared by the store tests and the crash-test child process."""

from __future__ import annotations

from statechannel.store import PaymentRecord

ASSET = bytes(range(1, 21))


def cid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def blob(i: int) -> bytes:
    """Distinct per index and not trivially short, so a torn or misplaced write would show."""
    return f"state-{i}:".encode() * 16


def record(
    payment_id: str,
    channel_id: bytes,
    *,
    status: str = "pending",
    amount: int = 1,
    version: int = 0,
    created_ms: int = 0,
    direction: str = "out",
    reason: str = "",
    count: int = 1,
) -> PaymentRecord:
    return PaymentRecord(payment_id, channel_id, direction, ASSET, amount, status, version, reason, created_ms, count)

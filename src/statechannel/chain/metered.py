"""A `Chain` that reports every call (its name, duration and failure) to a callback, for metrics.

It wraps any backend, so counting calls needs nothing from the backends themselves; the callback decides
where the numbers go (the API's Prometheus registry), and this package stays free of that library."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from statechannel.chain.base import Block, Chain, Log, Receipt, TransactionReverted
from statechannel.core.crypto import PrivateKey

T = TypeVar("T")
CallObserver = Callable[[str, float, str], None]
"""(method, seconds, outcome): outcome is 'ok', 'reverted' (the EVM said no) or 'error' (anything else)."""


class MeteredChain:
    def __init__(self, chain: Chain, observe: CallObserver) -> None:
        self.inner = chain
        self.chain_id = chain.chain_id
        self._observe = observe

    def __getattr__(self, name: str) -> Any:  # backend extras (dev-chain helpers), uncounted
        return getattr(self.inner, name)

    def _timed(self, method: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = fn()
            outcome = "ok"
            return result
        except TransactionReverted:
            outcome = "reverted"
            raise
        finally:
            with contextlib.suppress(Exception):  # a broken metric must never break a chain call
                self._observe(method, time.perf_counter() - started, outcome)

    def send_transaction(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None
    ) -> Receipt:
        return self._timed("send_transaction", lambda: self.inner.send_transaction(key, to, data, value, gas))

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes:
        return self._timed("call", lambda: self.inner.call(to, data, sender))

    def get_logs(self, address: bytes, from_block: int, to_block: int) -> list[Log]:
        return self._timed("get_logs", lambda: self.inner.get_logs(address, from_block, to_block))

    def pending(self, address: bytes) -> int:
        return self._timed("pending", lambda: self.inner.pending(address))

    def transaction(self, tx_hash: bytes) -> tuple[bytes | None, bytes]:
        return self._timed("transaction", lambda: self.inner.transaction(tx_hash))

    def block(self, number: int | None = None) -> Block:
        return self._timed("block", lambda: self.inner.block(number))

    def balance(self, address: bytes) -> int:
        return self._timed("balance", lambda: self.inner.balance(address))

    def fund(self, address: bytes, wei: int) -> None:
        self._timed("fund", lambda: self.inner.fund(address, wei))

    def advance_time(self, seconds: int) -> None:
        self._timed("advance_time", lambda: self.inner.advance_time(seconds))

    def mine(self, blocks: int = 1) -> None:
        self._timed("mine", lambda: self.inner.mine(blocks))

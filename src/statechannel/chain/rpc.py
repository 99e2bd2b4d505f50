"""Any Ethereum JSON-RPC node (anvil, geth, an L2) through web3.py over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.providers.rpc import HTTPProvider

from statechannel.chain.base import Block, ChainError, Log, Receipt, TransactionReverted, decode_revert
from statechannel.chain.outbox import Outbox, RpcUnavailable
from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum

GAS_MARGIN_PERCENT = 25
BATCH_SIZE = 200


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(str(value).removeprefix("0x"))


class RpcChain:
    """Talks JSON-RPC; transactions go out through an `Outbox` (one per client): a retry never
    sends a call twice, and a dropped, stuck or reorged-away transaction is pushed until mined."""

    concurrent = True
    """Safe to call from two threads at once (HTTP requests; the outbox locks per key): a node's sends
    and reads run on their own threads (node/chainio.py)."""

    def __init__(
        self,
        url: str,
        receipt_timeout: float = 60.0,
        bump_after: float = 5.0,
        journal: Path | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        """`journal`: a file where the outbox keeps its transactions across restarts (chain/outbox.py)."""
        self.url = url
        self._w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": request_timeout}))
        self.chain_id: int = int(self._rpc("eth_chainId", []), 16)
        self.outbox = Outbox(self._rpc, self.chain_id, receipt_timeout, bump_after, journal)

    def _rpc(self, method: str, params: list[Any]) -> Any:
        try:
            response = self._w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except Exception as exc:  # connection refused, timeout
            raise RpcUnavailable(f"{method} to {self.url} failed: {exc}") from exc
        return self._result(method, response)

    def rpc_batch(self, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """One JSON-RPC batch per BATCH_SIZE requests; each answer is its result or the ChainError
        (TransactionReverted for a revert) it would have raised alone."""
        out: list[Any] = []
        for at in range(0, len(requests), BATCH_SIZE):
            chunk = list(requests[at : at + BATCH_SIZE])
            try:
                responses = self._w3.provider.make_batch_request(chunk)  # type: ignore[attr-defined]
            except Exception as exc:
                raise RpcUnavailable(f"a batch of {len(chunk)} requests to {self.url} failed: {exc}") from exc
            if not isinstance(responses, list) or len(responses) != len(chunk):
                raise ChainError(f"the node answered a batch of {len(chunk)} requests with {responses!r:.200}")
            ids = {r.get("id") for r in responses if isinstance(r, dict) and type(r.get("id")) is int}
            if len(ids) != len(chunk):  # matched by id (web3 sorts by it): a repeated one answers for another
                raise ChainError(f"the node's answers to a batch of {len(chunk)} requests do not carry distinct ids")
            for (method, _), response in zip(chunk, responses, strict=True):
                try:
                    out.append(self._result(method, response))
                except ChainError as exc:
                    out.append(exc)
        return out

    @staticmethod
    def _result(method: str, response: Any) -> Any:
        if not isinstance(response, dict):
            raise ChainError(f"{method}: the node answered {response!r:.200}")
        error = response.get("error")
        if error:
            message = str(error.get("message", error))
            data = error.get("data")
            if isinstance(data, str) and data.startswith("0x"):
                raise TransactionReverted(decode_revert(_bytes(data)) or message)
            if "revert" in message:
                raise TransactionReverted(message.split("reverted: ", 1)[-1] if "reverted: " in message else "")
            raise ChainError(f"{method}: {message}")
        return response["result"]

    def _tx(self, to: bytes | None, data: bytes, value: int, sender: bytes) -> dict[str, Any]:
        tx: dict[str, Any] = {"from": to_checksum(sender), "data": _hex(data), "value": hex(value)}
        if to is not None:
            tx["to"] = to_checksum(to)
        return tx

    def send_transaction(
        self, key: PrivateKey, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None
    ) -> Receipt:
        def estimate() -> int:
            # a dry run as well: a call that would revert is refused here, costing nothing
            if gas is not None:
                return gas
            used = int(self._rpc("eth_estimateGas", [self._tx(to, data, value, key.address)]), 16)
            return used + used * GAS_MARGIN_PERCENT // 100

        r = self.outbox.send(key, to, data, value, estimate)
        if int(r["status"], 16) != 1:
            raise TransactionReverted(self._replay_reason(to, data, value, key.address, r))
        return Receipt(
            tx_hash=_bytes(r["transactionHash"]),
            gas_used=int(r["gasUsed"], 16),
            fee=int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16),
            block_number=int(r["blockNumber"], 16),
            logs=tuple(self._log(e) for e in r["logs"]),
            contract_address=_bytes(r["contractAddress"]) if r.get("contractAddress") else None,
        )

    def _replay_reason(self, to: bytes | None, data: bytes, value: int, sender: bytes, r: dict[str, Any]) -> str:
        if to is None:
            return ""
        try:
            block = hex(int(r["blockNumber"], 16) - 1)
            self._rpc("eth_call", [self._tx(to, data, value, sender), block])
        except TransactionReverted as exc:
            return exc.reason
        except ChainError:  # the reason is a bonus: a failed replay must not make a mined revert look unsent
            return ""
        return ""

    def nudge(self, key: PrivateKey) -> None:
        self.outbox.nudge(key)

    def resend_lost(self, key: PrivateKey) -> None:
        """Blocks were replaced: transactions of `key` they held go out again (same nonces)."""
        self.outbox.resend_lost(key)

    @staticmethod
    def _log(entry: dict[str, Any]) -> Log:
        return Log(
            address=_bytes(entry["address"]),
            topics=tuple(_bytes(t) for t in entry["topics"]),
            data=_bytes(entry["data"]),
            block_number=int(entry["blockNumber"], 16),
            block_hash=_bytes(entry["blockHash"]),
            log_index=int(entry["logIndex"], 16),
            tx_hash=_bytes(entry["transactionHash"]),
        )

    def call(self, to: bytes, data: bytes, sender: bytes | None = None) -> bytes:
        return _bytes(self._rpc("eth_call", [self._tx(to, data, 0, sender or bytes(20)), "latest"]))

    def call_many(self, calls: Sequence[tuple[bytes, bytes]]) -> list[bytes | TransactionReverted]:
        tag = self._rpc("eth_blockNumber", [])  # one block for all, even if the batch spans two
        answers = self.rpc_batch([("eth_call", [self._tx(to, data, 0, bytes(20)), tag]) for to, data in calls])
        out: list[bytes | TransactionReverted] = []
        for answer in answers:
            if isinstance(answer, TransactionReverted):
                out.append(answer)
            elif isinstance(answer, ChainError):
                raise answer
            else:
                out.append(_bytes(answer))
        return out

    def get_logs(self, address: bytes, from_block: int, to_block: int) -> list[Log]:
        query = {"address": to_checksum(address), "fromBlock": hex(from_block), "toBlock": hex(to_block)}
        return [self._log(e) for e in self._rpc("eth_getLogs", [query])]

    def pending(self, address: bytes) -> int:
        count = [
            int(self._rpc("eth_getTransactionCount", [to_checksum(address), tag]), 16) for tag in ("pending", "latest")
        ]
        return max(0, count[0] - count[1])

    def transaction(self, tx_hash: bytes) -> tuple[bytes | None, bytes]:
        tx = self._rpc("eth_getTransactionByHash", [_hex(tx_hash)])
        if not tx:
            raise ChainError(f"no transaction 0x{tx_hash.hex()}")
        to = tx.get("to")
        return (_bytes(to) if to else None), _bytes(tx["input"])

    def block(self, number: int | None = None) -> Block:
        b = self._rpc("eth_getBlockByNumber", ["latest" if number is None else hex(number), False])
        if b is None:
            raise ChainError(f"no block {number}")
        return Block(number=int(b["number"], 16), hash=_bytes(b["hash"]), timestamp=int(b["timestamp"], 16))

    def balance(self, address: bytes) -> int:
        return int(self._rpc("eth_getBalance", [to_checksum(address), "latest"]), 16)

    def fund(self, address: bytes, wei: int) -> None:
        self._rpc("anvil_setBalance", [to_checksum(address), hex(self.balance(address) + wei)])

    def advance_time(self, seconds: int) -> None:
        self._rpc("evm_increaseTime", [seconds])
        self._rpc("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self._rpc("evm_mine", [])

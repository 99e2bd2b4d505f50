"""Calldata and log coding from a contract's ABI, with eth-abi."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from statechannel.core.hashing import keccak


def _type(entry: dict[str, Any]) -> str:
    t = str(entry["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in entry["components"]) + ")" + t[len("tuple") :]
    return t


class ContractAbi:
    """Selectors, argument types and event topics of one contract."""

    def __init__(self, abi: tuple[dict[str, Any], ...]) -> None:
        self.functions: dict[str, tuple[bytes, list[str], list[str]]] = {}
        self.events: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
        self.event_topics: dict[str, bytes] = {}
        for entry in abi:
            if entry["type"] == "function":
                inputs = [_type(i) for i in entry["inputs"]]
                outputs = [_type(o) for o in entry["outputs"]]
                selector = keccak(f"{entry['name']}({','.join(inputs)})".encode())[:4]
                self.functions[entry["name"]] = (selector, inputs, outputs)
            elif entry["type"] == "event":
                types = [_type(i) for i in entry["inputs"]]
                topic = keccak(f"{entry['name']}({','.join(types)})".encode())
                self.events[topic] = (entry["name"], entry["inputs"])
                self.event_topics[entry["name"]] = topic

    def encode_call(self, name: str, *args: Any) -> bytes:
        selector, inputs, _ = self.functions[name]
        return selector + abi_encode(inputs, list(args))

    def decode_call(self, data: bytes) -> tuple[str, tuple[Any, ...]] | None:
        """(function name, arguments) of calldata to this contract, or None if it is not a known call."""
        for name, (selector, inputs, _) in self.functions.items():
            if data[:4] == selector:
                try:
                    return name, tuple(abi_decode(inputs, data[4:]))
                except Exception:  # malformed calldata (eth-abi raises several types): not decodable
                    return None
        return None

    def decode_result(self, name: str, data: bytes) -> tuple[Any, ...]:
        _, _, outputs = self.functions[name]
        return tuple(abi_decode(outputs, data))

    def decode_log(self, topics: tuple[bytes, ...], data: bytes) -> tuple[str, dict[str, Any]] | None:
        """(event name, fields) for a log of this contract, or None if unknown."""
        if not topics or topics[0] not in self.events:
            return None
        name, inputs = self.events[topics[0]]
        indexed = [i for i in inputs if i["indexed"]]
        plain = [i for i in inputs if not i["indexed"]]
        if len(topics) != 1 + len(indexed):
            return None
        fields: dict[str, Any] = {}
        for entry, topic in zip(indexed, topics[1:], strict=True):
            fields[entry["name"]] = abi_decode([_type(entry)], topic)[0]
        for entry, value in zip(plain, abi_decode([_type(i) for i in plain], data), strict=True):
            fields[entry["name"]] = value
        return name, fields

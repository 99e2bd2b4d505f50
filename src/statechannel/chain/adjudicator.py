"""Typed client of the adjudicator and of ERC-20 tokens, over any `Chain`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from statechannel.chain.abi import ContractAbi
from statechannel.chain.base import Chain, Log, Receipt
from statechannel.contracts import load
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.observed import (
    ChainObserved,
    ChainObservedClose,
    ChainObservedConcluded,
    ChainObservedDeposit,
    ChainObservedOpened,
    ChainObservedPayoutDeferred,
    ChainObservedWithdrawal,
    Origin,
)
from statechannel.core.types import ETH, ChannelParams, Domain, State, Withdrawal, address_from_hex, to_checksum

MASK40 = 2**40 - 1
MASK48 = 2**48 - 1
MASK120 = 2**120 - 1
MASK128 = 2**128 - 1


class Status(IntEnum):
    NONE = 0
    OPEN = 1
    CLOSING = 2
    CONCLUDED = 3


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The decoded storage word of one channel."""

    status: Status
    funded_a: int = 0
    funded_b: int = 0
    finalizes_at: int = 0
    version: int = 0
    record: int = 0

    @classmethod
    def from_word(cls, word: int) -> ChannelInfo:
        status = Status(word & 0xFF)
        if status is Status.OPEN:
            return cls(status, funded_a=(word >> 8) & MASK120, funded_b=word >> 128)
        if status is Status.CLOSING:
            return cls(status, finalizes_at=(word >> 8) & MASK40, version=(word >> 48) & MASK48, record=word >> 96)
        return cls(status)


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    """What a Closed/Challenged event said is recorded; a challenge must quote it."""

    funded_a: int
    funded_b: int
    state_hash: bytes


def _addr(value: Any) -> bytes:
    return address_from_hex(str(value))


class Adjudicator:
    def __init__(self, chain: Chain, address: bytes) -> None:
        self.chain = chain
        self.address = address
        self.abi = ContractAbi(load("Adjudicator").abi)
        self.domain = Domain(chain_id=chain.chain_id, adjudicator=address)

    @classmethod
    def deploy(cls, chain: Chain, key: PrivateKey) -> tuple[Adjudicator, Receipt]:
        receipt = chain.send_transaction(key, None, load("Adjudicator").bytecode)
        assert receipt.contract_address is not None
        return cls(chain, receipt.contract_address), receipt

    def _send(self, key: PrivateKey, fn: str, *args: Any, value: int = 0) -> Receipt:
        return self.chain.send_transaction(key, self.address, self.abi.encode_call(fn, *args), value=value)

    def _call(self, fn: str, *args: Any) -> tuple[Any, ...]:
        return self.abi.decode_result(fn, self.chain.call(self.address, self.abi.encode_call(fn, *args)))

    def channel_id(self, params: ChannelParams) -> bytes:
        return params.channel_id(self.chain.chain_id, self.address)

    # transactions
    def open(self, key: PrivateKey, params: ChannelParams, deposit: int = 0) -> Receipt:
        return self._send(key, "open", *params.as_abi(), value=deposit)

    def open_token(self, key: PrivateKey, params: ChannelParams, token: bytes, amount: int) -> Receipt:
        return self._send(key, "open_token", *params.as_abi(), to_checksum(token), amount)

    def deposit(self, key: PrivateKey, channel_id: bytes, participant: int, amount: int) -> Receipt:
        return self._send(key, "deposit", channel_id, participant, value=amount)

    def deposit_token(self, key: PrivateKey, channel_id: bytes, participant: int, token: bytes, amount: int) -> Receipt:
        return self._send(key, "deposit_token", channel_id, participant, to_checksum(token), amount)

    def withdraw(
        self, key: PrivateKey, params: ChannelParams, w: Withdrawal, sig_a: Signature, sig_b: Signature
    ) -> Receipt:
        return self._send(key, "withdraw", params.as_abi(), w.as_abi(), sig_a.as_abi(), sig_b.as_abi())

    def close_cooperative(
        self, key: PrivateKey, params: ChannelParams, state: State, sig_a: Signature, sig_b: Signature
    ) -> Receipt:
        return self._send(key, "close_cooperative", params.as_abi(), state.as_abi(), sig_a.as_abi(), sig_b.as_abi())

    def close(
        self, key: PrivateKey, params: ChannelParams, state: State, sig_a: Signature, sig_b: Signature
    ) -> Receipt:
        return self._send(key, "close", params.as_abi(), state.as_abi(), sig_a.as_abi(), sig_b.as_abi())

    def challenge(
        self,
        key: PrivateKey,
        params: ChannelParams,
        state: State,
        sig_a: Signature,
        sig_b: Signature,
        recorded: DisputeRecord,
    ) -> Receipt:
        return self._send(
            key,
            "challenge",
            params.as_abi(),
            state.as_abi(),
            sig_a.as_abi(),
            sig_b.as_abi(),
            recorded.funded_a,
            recorded.funded_b,
            recorded.state_hash,
        )

    def settle(self, key: PrivateKey, params: ChannelParams, state: State, funded_a: int, funded_b: int) -> Receipt:
        return self._send(key, "settle", params.as_abi(), state.as_abi(), funded_a, funded_b)

    def reclaim(self, key: PrivateKey, params: ChannelParams, token: bytes) -> Receipt:
        return self._send(key, "reclaim", params.as_abi(), to_checksum(token))

    def claim(self, key: PrivateKey, asset: bytes) -> Receipt:
        return self._send(key, "claim", to_checksum(asset))

    # reads
    def channel(self, channel_id: bytes) -> ChannelInfo:
        return ChannelInfo.from_word(int(self._call("channels", channel_id)[0]))

    def token_funds(self, channel_id: bytes, token: bytes) -> tuple[int, int]:
        word = int(self._call("token_funds", channel_id, to_checksum(token))[0])
        return word & MASK128, word >> 128

    def claimable(self, account: bytes, asset: bytes) -> int:
        return int(self._call("claimable", to_checksum(account), to_checksum(asset))[0])

    def state_digest(self, channel_id: bytes, state: State) -> bytes:
        return bytes(self._call("state_digest", channel_id, state.as_abi())[0])

    def domain_separator(self) -> bytes:
        return bytes(self._call("domain_separator")[0])

    # events
    def decode(self, log: Log) -> ChainObserved | None:
        """The typed record of one log of this contract, or None for a foreign log."""
        if log.address != self.address:
            return None
        decoded = self.abi.decode_log(log.topics, log.data)
        if decoded is None:
            return None
        name, f = decoded
        origin = Origin(log.block_number, log.block_hash, log.log_index, log.tx_hash)
        if name == "Opened":
            return ChainObservedOpened(origin, f["channel_id"])
        if name == "Deposited":
            return ChainObservedDeposit(origin, f["channel_id"], ETH, f["participant"], f["funded"])
        if name == "TokenDeposited":
            return ChainObservedDeposit(origin, f["channel_id"], _addr(f["token"]), f["participant"], f["funded"])
        if name == "Withdrawn":
            return ChainObservedWithdrawal(
                origin, f["channel_id"], _addr(f["asset"]), f["participant"], f["amount"], f["funded"], f["nonce"]
            )
        if name in ("Closed", "Challenged"):
            return ChainObservedClose(
                origin,
                f["channel_id"],
                f["version"],
                f["finalizes_at"],
                f["funded_a"],
                f["funded_b"],
                f["state_hash"],
                challenge=name == "Challenged",
            )
        if name == "Concluded":
            return ChainObservedConcluded(origin, f["channel_id"], f["version"])
        if name == "PayoutDeferred":
            return ChainObservedPayoutDeferred(origin, _addr(f["account"]), _addr(f["asset"]), f["amount"])
        return None

    def events(self, from_block: int, to_block: int | None = None) -> list[ChainObserved]:
        end = self.chain.block().number if to_block is None else to_block
        out = []
        for log in self.chain.get_logs(self.address, from_block, end):
            record = self.decode(log)
            if record is not None:
                out.append(record)
        return out

    def receipt_events(self, receipt: Receipt) -> list[ChainObserved]:
        return [e for e in (self.decode(log) for log in receipt.logs) if e is not None]


class Token:
    """An ERC-20 (the test token can also mint)."""

    def __init__(self, chain: Chain, address: bytes, contract: str = "TestToken") -> None:
        self.chain = chain
        self.address = address
        self.abi = ContractAbi(load(contract).abi)

    @classmethod
    def deploy(
        cls, chain: Chain, key: PrivateKey, name: str = "Test Token", symbol: str = "TST", decimals: int = 18
    ) -> Token:
        from eth_abi.abi import encode as abi_encode

        code = load("TestToken").bytecode + abi_encode(["string", "string", "uint8"], [name, symbol, decimals])
        receipt = chain.send_transaction(key, None, code)
        assert receipt.contract_address is not None
        return cls(chain, receipt.contract_address)

    def send(self, key: PrivateKey, fn: str, *args: Any) -> Receipt:
        return self.chain.send_transaction(key, self.address, self.abi.encode_call(fn, *args))

    def mint(self, key: PrivateKey, to: bytes, amount: int) -> Receipt:
        return self.send(key, "mint", to_checksum(to), amount)

    def approve(self, key: PrivateKey, spender: bytes, amount: int) -> Receipt:
        return self.send(key, "approve", to_checksum(spender), amount)

    def balance_of(self, account: bytes) -> int:
        data = self.chain.call(self.address, self.abi.encode_call("balanceOf", to_checksum(account)))
        return int(self.abi.decode_result("balanceOf", data)[0])

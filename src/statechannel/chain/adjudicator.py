"""Typed client of the adjudicator and of ERC-20 tokens, over any `Chain`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from statechannel.chain.abi import ContractAbi
from statechannel.chain.base import Chain, ChainError, Log, Receipt, TransactionReverted
from statechannel.contracts import load
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.eip712 import dispute_commitment
from statechannel.core.errors import StatechannelError
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

MASK120 = 2**120 - 1
MASK128 = 2**128 - 1


class Status(IntEnum):
    NONE = 0
    OPEN = 1
    CLOSING = 2
    CONCLUDED = 3


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The decoded storage word of one channel. OPEN and CLOSING share a layout (a close changes only
    the status), so the ether funded amounts are known through a dispute; CONCLUDED keeps none."""

    status: Status
    funded_a: int = 0
    funded_b: int = 0

    @classmethod
    def from_word(cls, word: int) -> ChannelInfo:
        status = Status(word & 0xFF)
        if status in (Status.OPEN, Status.CLOSING):
            return cls(status, funded_a=(word >> 8) & MASK120, funded_b=word >> 128)
        return cls(status)


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    """What the last Closed/Challenged event said is recorded; it matches the stored word
    (`dispute_commitment`) and settle quotes its window end."""

    version: int
    finalizes_at: int
    state_hash: bytes

    @property
    def commitment(self) -> bytes:
        return dispute_commitment(self.state_hash, self.version, self.finalizes_at)

    def as_abi(self) -> tuple[int, int, bytes]:
        return (self.version, self.finalizes_at, self.state_hash)

    @classmethod
    def of(cls, event: ChainObservedClose) -> DisputeRecord:
        return cls(event.version, event.finalizes_at, event.state_hash)


@dataclass(frozen=True, slots=True)
class ChannelView:
    """One channel as a batched read saw it: its word, its dispute commitment, and per listed token
    what both parties funded in it."""

    info: ChannelInfo
    commitment: bytes
    token_funded: tuple[int, ...] = ()

    @property
    def holds_anything(self) -> bool:
        """Whether any close could pay anyone anything: a channel holding nothing has nothing to protect."""
        return self.info.funded_a + self.info.funded_b > 0 or any(self.token_funded)


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
    ) -> Receipt:
        """The contract reads the recorded version itself: nothing about the record is quoted."""
        return self._send(key, "challenge", params.as_abi(), state.as_abi(), sig_a.as_abi(), sig_b.as_abi())

    def settle(self, key: PrivateKey, params: ChannelParams, state: State, finalizes_at: int) -> Receipt:
        """`finalizes_at` is the window's end as the Closed event said (challenges keep it)."""
        return self._send(key, "settle", params.as_abi(), state.as_abi(), finalizes_at)

    def reclaim(self, key: PrivateKey, params: ChannelParams, token: bytes) -> Receipt:
        return self._send(key, "reclaim", params.as_abi(), to_checksum(token))

    def claim(self, key: PrivateKey, asset: bytes) -> Receipt:
        return self._send(key, "claim", to_checksum(asset))

    # reads
    def channel(self, channel_id: bytes) -> ChannelInfo:
        return ChannelInfo.from_word(int(self._call("channels", channel_id)[0]))

    def dispute(self, channel_id: bytes) -> bytes:
        """The stored commitment to the recorded state while CLOSING (32 zero bytes otherwise)."""
        return bytes(self._call("disputes", channel_id)[0])

    def views(self, channels: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[ChannelView]:
        """Word, commitment and token funds of many channels (channel id, assets) in one batched read."""
        calls, shape = [], []
        for cid, assets in channels:
            tokens = [a for a in assets if a != ETH]
            calls.append(self.abi.encode_call("channels", cid))
            calls.append(self.abi.encode_call("disputes", cid))
            calls.extend(self.abi.encode_call("token_funds", cid, to_checksum(t)) for t in tokens)
            shape.append(len(tokens))
        answers = self.chain.call_many([(self.address, data) for data in calls])
        for answer in answers:
            if isinstance(answer, TransactionReverted):  # these getters never revert: the node misbehaves
                raise ChainError(f"a read of the adjudicator reverted: {answer.reason}")
        words = [bytes(a) for a in answers if isinstance(a, bytes)]
        out, at = [], 0
        for n in shape:
            word, commitment = int.from_bytes(words[at][:32], "big"), words[at + 1][:32]
            funds = tuple(
                (w & MASK128) + (w >> 128) for w in (int.from_bytes(x[:32], "big") for x in words[at + 2 : at + 2 + n])
            )
            out.append(ChannelView(ChannelInfo.from_word(word), commitment, funds))
            at += 2 + n
        return out

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
                f["state_hash"],
                challenge=name == "Challenged",
            )
        if name == "Concluded":
            return ChainObservedConcluded(origin, f["channel_id"], f["version"])
        if name == "PayoutDeferred":
            return ChainObservedPayoutDeferred(origin, _addr(f["account"]), _addr(f["asset"]), f["amount"])
        return None

    def recorded_state(self, event: ChainObservedClose) -> State | None:
        """The state a Closed/Challenged event recorded, read from its transaction's calldata (the event
        carries only its hash). None when the transaction did not call this contract directly."""
        to, data = self.chain.transaction(event.origin.tx_hash)
        if to != self.address:
            return None
        call = self.abi.decode_call(data)
        if call is None or call[0] not in ("close", "challenge"):
            return None
        version, is_final, assets, transfers, app_data = call[1][1]
        try:
            return State(
                event.channel_id,
                int(version),
                tuple(_addr(a) for a in assets),
                tuple(int(t) for t in transfers),
                bool(is_final),
                bytes(app_data),
            )
        except StatechannelError:
            return None

    def events(self, from_block: int, to_block: int | None = None) -> list[ChainObserved]:
        end = self.chain.block().number if to_block is None else to_block
        out = []
        for log in self.chain.get_logs(self.address, from_block, end):
            record = self.decode(log)
            if record is not None:
                out.append(record)
        return out

    def recorded(
        self, channel_id: bytes, from_block: int = 0, to_block: int | None = None
    ) -> ChainObservedClose | None:
        """The Closed/Challenged event in [from_block, to_block] whose values hash to the stored commitment:
        what a challenge must quote, and the recorded version (the channel word no longer holds it).
        None when the channel is not closing or that event is outside the range."""
        commitment = self.dispute(channel_id)
        if commitment == bytes(32):
            return None
        found = None
        for ev in self.events(from_block, to_block):
            if (
                isinstance(ev, ChainObservedClose)
                and ev.channel_id == channel_id
                and DisputeRecord.of(ev).commitment == commitment
            ):
                found = ev
        return found

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

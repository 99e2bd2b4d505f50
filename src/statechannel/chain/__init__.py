"""Chain adapters: one `Chain` interface, an embedded and a JSON-RPC backend."""

from statechannel.chain.adjudicator import Adjudicator, ChannelInfo, DisputeRecord, Status, Token
from statechannel.chain.base import Block, Chain, ChainError, Log, Receipt, TransactionReverted

__all__ = [
    "Adjudicator",
    "Block",
    "Chain",
    "ChainError",
    "ChannelInfo",
    "DisputeRecord",
    "Log",
    "Receipt",
    "Status",
    "Token",
    "TransactionReverted",
]

"""Pure protocol: typed values, EIP-712 hashing, signatures. No I/O here."""

from statechannel.core.crypto import PrivateKey, Signature, recover, verify_signer
from statechannel.core.eip712 import dispute_commitment, state_digest, state_hash, withdrawal_digest
from statechannel.core.errors import LocalError, Reason, RemoteError, StatechannelError
from statechannel.core.types import ETH, ChannelParams, Domain, State, Withdrawal, payout

__all__ = [
    "ETH",
    "ChannelParams",
    "Domain",
    "LocalError",
    "PrivateKey",
    "Reason",
    "RemoteError",
    "Signature",
    "State",
    "StatechannelError",
    "Withdrawal",
    "dispute_commitment",
    "payout",
    "recover",
    "state_digest",
    "state_hash",
    "verify_signer",
    "withdrawal_digest",
]

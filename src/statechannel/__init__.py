"""statechannel: two-party state channels on Ethereum-style chains.

Layers (see docs/architecture.md): `core` is the pure protocol; `chain`, `store`
and `net` are adapters; `node` is the shell; `apps`, `watchtower`, `api` and the
CLI sit on top."""

__version__ = "0.1.0"

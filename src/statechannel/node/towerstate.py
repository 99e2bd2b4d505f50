"""What the tower client decides with, sends and keeps: its policy, the request bodies of the tower's HTTP
contract, and the client's journal (its own SQLite file: the node's store belongs to the node)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statechannel.core.channel import Channel
from statechannel.core.crypto import Signature
from statechannel.core.errors import LocalError, Reason
from statechannel.core.io import SignedState
from statechannel.core.types import ChannelParams, State, address_from_hex, to_checksum

JOURNAL_VERSION = 2
"""2: receipts are EIP-712 `TowerReceipt`s (state hash, block); version-1 acknowledgements are dropped and re-pushed."""


@dataclass(frozen=True, slots=True)
class TowerPolicy:
    """When a channel's newest state goes to the towers. Every update costs one request per tower per update;
    pushing every N updates or every T ms leaves the towers a little behind in exchange for fewer requests.
    Whatever the policy, the node flushes before it stops: going offline is when protection matters."""

    every_updates: int = 1
    every_ms: int = 0
    """If positive, push on this timer (coalesced) instead of counting updates."""
    flush_timeout: float = 5.0
    request_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.every_updates < 1 or self.every_ms < 0 or self.flush_timeout <= 0 or self.request_timeout <= 0:
            raise LocalError(Reason.BAD_PARAMS, f"invalid tower policy {self!r}")

    @classmethod
    def parse(cls, text: str) -> TowerPolicy:
        """'every-update', 'every:N' (every N updates of a channel) or 'every:Tms' / 'every:Ts' (on a timer)."""
        if text == "every-update":
            return cls()
        match = re.fullmatch(r"every:([1-9][0-9]{0,8})(ms|s)?", text)
        if match is None:
            raise LocalError(Reason.BAD_PARAMS, f"tower policy must be every-update, every:N or every:Tms: {text!r}")
        n, unit = int(match.group(1)), match.group(2)
        if unit is None:
            return cls(every_updates=n)
        return cls(every_ms=n if unit == "ms" else n * 1000)

    def describe(self) -> str:
        if self.every_ms:
            return f"every {self.every_ms} ms"
        return "every update" if self.every_updates == 1 else f"every {self.every_updates} updates"


def tower_url(raw: str) -> str:
    """A tower's base URL, without the trailing slash (so the same tower is one journal key however typed)."""
    url = raw.rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise LocalError(Reason.BAD_PARAMS, f"a tower is an http(s) URL, got {raw!r}")
    return url


@dataclass(frozen=True, slots=True)
class Protection:
    """A tower's signed receipt (core.tower.Receipt) that it holds this state of a channel and answers a stale
    close from `from_block` on; its signature recovered to the key the tower's /info gave."""

    tower: str
    address: bytes
    version: int
    receipt: bytes
    """The tower's 65-byte signature over the typed receipt."""
    state_hash: bytes = bytes(32)
    from_block: int = 0


@dataclass(frozen=True, slots=True)
class Push:
    """One channel's newest state as the two request bodies a tower takes (kept as text: journalled as is)."""

    channel_id: bytes
    version: int
    register: str
    state: str
    """Unsigned bodies: the client's signature (fresh, for one tower) is added as each request leaves."""

    def params(self) -> ChannelParams:
        body = json.loads(self.register)
        a, b = address_from_hex(body["a"]), address_from_hex(body["b"])
        return ChannelParams(a, b, int(body["challenge_period"]), int(body["nonce"]))

    def signed_state(self) -> SignedState:
        body = json.loads(self.state)
        state = State(
            bytes.fromhex(body["channel_id"][2:]),
            int(body["version"]),
            tuple(address_from_hex(a) for a in body["assets"]),
            tuple(int(t) for t in body["transfers"]),
            bool(body["is_final"]),
            bytes.fromhex(body["app_data"][2:]),
        )
        sig_a, sig_b = (Signature.from_bytes(bytes.fromhex(body[k][2:])) for k in ("sig_a", "sig_b"))
        return SignedState(state, sig_a, sig_b)

    @classmethod
    def of(cls, ch: Channel) -> Push:
        assert ch.latest is not None
        p, s = ch.params, ch.latest
        register = {"a": to_checksum(p.a), "b": to_checksum(p.b), "challenge_period": p.challenge_period}
        state = {
            "channel_id": "0x" + ch.channel_id.hex(),
            "version": s.state.version,
            "is_final": s.state.is_final,
            "assets": [to_checksum(a) for a in s.state.assets],
            "transfers": [str(t) for t in s.state.transfers],
            "app_data": "0x" + s.state.app_data.hex(),
            "sig_a": "0x" + s.sig_a.to_bytes().hex(),
            "sig_b": "0x" + s.sig_b.to_bytes().hex(),
        }
        body = json.dumps({**register, "nonce": str(p.nonce)})
        return cls(ch.channel_id, s.state.version, body, json.dumps(state))


class Journal:
    """The client's own SQLite file (the node's store belongs to the node). Written with synchronous=NORMAL:
    a lost write only means a state is pushed again, which a tower answers idempotently."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        found = self.db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, 1, JOURNAL_VERSION):
            raise LocalError(Reason.BAD_PARAMS, f"{path} has tower journal version {found}, not {JOURNAL_VERSION}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS pending (channel_id BLOB PRIMARY KEY, version INTEGER NOT NULL, "
            "register TEXT NOT NULL, state TEXT NOT NULL)"
        )
        if found == 1:  # receipts of the old form prove less: forget them, so every state is pushed again
            self.db.execute("DROP TABLE IF EXISTS acked")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS acked (tower TEXT NOT NULL, channel_id BLOB NOT NULL, version INTEGER NOT NULL,"
            " registered INTEGER NOT NULL, receipt_version INTEGER, address BLOB, receipt BLOB, state_hash BLOB, "
            "from_block INTEGER, PRIMARY KEY (tower, channel_id))"
        )
        self.db.execute(f"PRAGMA user_version={JOURNAL_VERSION}")

    def load(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return (
            self.db.execute("SELECT channel_id, version, register, state FROM pending").fetchall(),
            self.db.execute(
                "SELECT tower, channel_id, version, registered, receipt_version, address, receipt, state_hash, "
                "from_block FROM acked"
            ).fetchall(),
        )

    def write(self, pending: list[Push], acked: list[tuple[Any, ...]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                [(p.channel_id, p.version, p.register, p.state) for p in pending],
            )
            self.db.executemany("INSERT OR REPLACE INTO acked VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", acked)

    def close(self) -> None:
        self.db.close()

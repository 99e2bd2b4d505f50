"""Encrypted channel backups, like Lightning's static channel backups (issue 12).

`export` writes every channel of a node's data directory, and its peer book, into one file encrypted to
the node's own key (AES-256-GCM, the key derived from the node's private key with HKDF-SHA256): only the
holder of the keystore can read it, and a file for another key is refused. `restore` writes a fresh data
directory from it, every live channel put to recover (core/recovery.py): the backup may be older than what
the node last signed, so a restored channel signs nothing again; the node learns the highest state it
can prove (the peer's Sync) and closes with it. What the backup held and what was proven is reported."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from statechannel.core.channel import Channel
from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason
from statechannel.core.persist import decode_channel, encode_channel
from statechannel.core.recovery import restore as recover
from statechannel.store.sqlite import SqliteStore

MAGIC = b"SCBACKUP1"
DB_FILE, PEERS_FILE = "node.db", "peers.json"


class BackupError(LocalError):
    """A backup that cannot be written, read or restored; the reason says why."""


@dataclass(frozen=True, slots=True)
class Restored:
    channel_id: bytes
    phase: str
    version: int | None


def _key(key: PrivateKey) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"statechannel backup v1").derive(key.secret)


def export(data_dir: Path, key: PrivateKey, out: Path) -> int:
    """Write the backup of `data_dir` to `out` (mode 0600); the number of channels in it. Reads the store
    read-only, so a running node is not disturbed (SQLite WAL)."""
    db = data_dir / DB_FILE
    if not db.is_file():
        raise BackupError(Reason.BAD_PARAMS, f"no node store at {db}")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT blob FROM channels").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(Reason.BAD_PARAMS, f"cannot read {db}: {exc}") from None
    channels = [decode_channel(bytes(blob)) for (blob,) in rows]
    if any(ch.address_of(ch.me) != key.address for ch in channels):
        raise BackupError(Reason.BAD_PARAMS, "the store holds channels of another key than this keystore's")
    peers = json.loads((data_dir / PEERS_FILE).read_text()) if (data_dir / PEERS_FILE).is_file() else {}
    doc = {
        "version": 1,
        "address": key.address.hex(),
        "created_ms": int(time.time() * 1000),
        "channels": [base64.b64encode(encode_channel(ch)).decode() for ch in channels],
        "peers": peers,
    }
    nonce = os.urandom(12)
    sealed = AESGCM(_key(key)).encrypt(nonce, json.dumps(doc).encode(), MAGIC + key.address)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(MAGIC + key.address + nonce + sealed)
    os.replace(tmp, out)
    return len(channels)


def read(path: Path, key: PrivateKey) -> tuple[list[Channel], dict[str, list[object]]]:
    raw = path.read_bytes()
    head = len(MAGIC) + 20
    if len(raw) < head + 12 + 16 or raw[: len(MAGIC)] != MAGIC:
        raise BackupError(Reason.BAD_MESSAGE, f"{path} is not a statechannel backup")
    if raw[len(MAGIC) : head] != key.address:
        raise BackupError(
            Reason.WRONG_SIGNER, f"{path} is the backup of 0x{raw[len(MAGIC) : head].hex()}, not this key's"
        )
    try:
        plain = AESGCM(_key(key)).decrypt(raw[head : head + 12], raw[head + 12 :], raw[:head])
    except InvalidTag:
        raise BackupError(Reason.BAD_SIGNATURE, f"{path} does not decrypt with this key: altered or not ours") from None
    doc = json.loads(plain)
    channels = [decode_channel(base64.b64decode(c)) for c in doc["channels"]]
    return channels, doc.get("peers", {})


def restore(path: Path, key: PrivateKey, data_dir: Path) -> list[Restored]:
    """A fresh data directory from the backup: every live channel set to recover. Refuses a directory
    that already holds a store (restoring over a live node would undo what it knows)."""
    channels, peers = read(path, key)
    if (data_dir / DB_FILE).exists():
        raise BackupError(Reason.BAD_PARAMS, f"{data_dir} already holds a node store: restore into a new directory")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    restored = [recover(ch) for ch in channels]

    async def write() -> None:
        store = SqliteStore(data_dir / DB_FILE)
        try:
            for ch in restored:
                await store.save(ch.channel_id, encode_channel(ch))
        finally:
            await store.close()

    asyncio.run(write())
    (data_dir / PEERS_FILE).write_text(json.dumps(peers))
    return [
        Restored(ch.channel_id, str(ch.phase), ch.latest.state.version if ch.latest is not None else None)
        for ch in restored
    ]

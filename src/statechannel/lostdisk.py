"""Recovery without a backup (issue 12, decision 0011): a node whose data directory is gone rebuilds every
channel from its key, the chain, its towers and (once started) its peer.

1. The chain: every `Opened` log of the adjudicator, and the `open` call of its transaction, whose parameters
   must hash to the logged id; the channels that name this key as A or B are mine. A channel opened by a
   call we cannot decode (through another contract) is listed as unproven: its parameters must be told.
2. Each tower: its signed read (`POST /channels/{id}/read`) of the parameters (which must hash to the id)
   and every both-signed state it holds, either side's. Each state is checked (channel, chain, contract,
   both signatures); one that is not proof is refused with its reason.
3. The highest state proven becomes the channel's latest, in phase RECOVERING: the node signs nothing more
   on it, takes a higher both-signed state from the peer's Sync when it connects, and closes with the
   highest it can prove (a channel already closing on chain is answered and settled instead). What it may
   have signed above that is stated, never guessed: the peer may hold it, and the chain then pays it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from statechannel.chain.adjudicator import Adjudicator, Status
from statechannel.core.channel import Channel, Dispute, Phase
from statechannel.core.crypto import PrivateKey, Signature
from statechannel.core.errors import LocalError, Reason, StatechannelError
from statechannel.core.io import SignedState
from statechannel.core.observed import ChainObservedOpened
from statechannel.core.persist import encode_channel
from statechannel.core.tower import authorize
from statechannel.core.towerread import Refused, check_params, prove, read_request
from statechannel.core.types import ETH, ChannelParams, State, address_from_hex, to_checksum
from statechannel.store.sqlite import SqliteStore

DB_FILE, PEERS_FILE = "node.db", "peers.json"


class RecoveryError(LocalError):
    """Recovery cannot start (a bad option, a data directory in use, a tower on another chain)."""


@dataclass(frozen=True, slots=True)
class Found:
    channel_id: bytes
    params: ChannelParams | None
    """None: the open call could not be decoded, so the parameters must be told."""


@dataclass
class Recovered:
    channel_id: bytes
    status: str
    """The chain's: open, closing, concluded; or unknown when the parameters were not found."""
    phase: str | None = None
    """What the node will do: recovering (close with the highest proven), dispute (answer/settle), or None."""
    version: int | None = None
    source: str = ""
    refused: list[Refused] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "channel_id": "0x" + self.channel_id.hex(),
            "status": self.status,
            "phase": self.phase,
            "version": self.version,
            "source": self.source,
            "refused": [
                {"source": r.source, "version": r.version, "reason": r.reason, "detail": r.detail} for r in self.refused
            ],
            "unproven": self.unproven,
        }


def find_channels(adj: Adjudicator, me: bytes, from_block: int = 0) -> list[Found]:
    """My channels on chain: each Opened log whose `open` call names me (its parameters hash to the id)."""
    out: list[Found] = []
    for ev in adj.events(from_block):
        if not isinstance(ev, ChainObservedOpened):
            continue
        to, data = adj.chain.transaction(ev.origin.tx_hash)
        call = adj.abi.decode_call(data) if to == adj.address else None
        if call is None or call[0] not in ("open", "open_token"):
            out.append(Found(ev.channel_id, None))
            continue
        a, b, period, nonce = call[1][:4]
        try:
            params = ChannelParams(address_from_hex(str(a)), address_from_hex(str(b)), int(period), int(nonce))
            check_params(adj.domain, params, ev.channel_id)
        except StatechannelError:
            out.append(Found(ev.channel_id, None))
            continue
        if me in (params.a, params.b):
            out.append(Found(ev.channel_id, params))
    return out


def _hexbytes(text: Any, size: int) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 2 + 2 * size:
        raise ValueError(f"expected 0x and {2 * size} hex digits")
    return bytes.fromhex(text[2:])


def _signed(x: dict[str, Any]) -> SignedState:
    state = State(
        _hexbytes(x["channel_id"], 32),
        int(x["version"]),
        tuple(_hexbytes(a, 20) for a in x["assets"]),
        tuple(int(t) for t in x["transfers"]),
        is_final=bool(x["is_final"]),
        app_data=_hexbytes(x["app_data"], 32),
    )
    return SignedState(
        state, Signature.from_bytes(_hexbytes(x["sig_a"], 65)), Signature.from_bytes(_hexbytes(x["sig_b"], 65))
    )


_JUNK = (ValueError, KeyError, TypeError, OverflowError, StatechannelError)
"""What parsing a hostile tower's JSON can raise (Infinity and NaN are JSON to Python: int() of them raises
OverflowError or ValueError): each costs only that tower's answer, never the recovery of every channel."""


def _shown_version(x: Any) -> int:
    v = x.get("version") if isinstance(x, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def tower_states(
    http: httpx.Client, url: str, key: PrivateKey, adj: Adjudicator, found: Found
) -> tuple[ChannelParams | None, list[tuple[str, SignedState]], list[Refused], str | None]:
    """(parameters the tower told, checked; the states it shows; what it showed that does not parse; why
    the tower could not be read, or None)."""
    src = f"tower {url}"
    try:
        info = http.get(f"{url}/info").json()
        if int(info["chain_id"]) != adj.domain.chain_id or address_from_hex(info["adjudicator"]) != adj.address:
            return None, [], [], f"{src} watches another chain or adjudicator"
        tower = address_from_hex(info["address"])
        now = int(time.time())
        auth = authorize(key, adj.domain, tower, found.channel_id, read_request(found.channel_id), now)
        body = {"client": to_checksum(key.address), "timestamp": now, "auth": "0x" + auth.signature.to_bytes().hex()}
        r = http.post(f"{url}/channels/0x{found.channel_id.hex()}/read", json=body)
        if r.status_code != 200:
            try:
                err = r.json()["error"]
                return None, [], [], f"{src} refused the read: {err['reason']}: {err['detail']}"
            except (ValueError, KeyError, TypeError):
                return None, [], [], f"{src} answered HTTP {r.status_code}"
        got = r.json()
        if not isinstance(got, dict):
            raise TypeError("the read answered is not a JSON object")
    except (httpx.HTTPError, *_JUNK) as exc:
        return None, [], [], f"{src} could not be read: {exc}"
    params: ChannelParams | None = None
    try:
        told = ChannelParams(
            address_from_hex(got["a"]), address_from_hex(got["b"]), int(got["challenge_period"]), int(got["nonce"])
        )
        check_params(adj.domain, told, found.channel_id)
        params = told
    except _JUNK as exc:
        return None, [], [Refused(src, -1, "wrong_channel", f"its parameters are not this channel's: {exc}")], None
    shown: list[tuple[str, SignedState]] = []
    bad: list[Refused] = []
    states = got.get("states", [])
    if not isinstance(states, list):
        return params, [], [Refused(src, -1, "bad_state", "the states shown are not a list")], None
    for x in states[:64]:
        try:
            if not isinstance(x, dict):
                raise TypeError("a state shown is not a JSON object")
            shown.append((src, _signed(x)))
        except _JUNK as exc:
            bad.append(Refused(src, _shown_version(x), "bad_state", str(exc)))
    return params, shown, bad, None


def rebuild(adj: Adjudicator, params: ChannelParams, me: int, best: SignedState) -> tuple[Channel | None, str]:
    """The channel as the node will resume it, from the chain's funds and the highest state proven."""
    cid = best.state.channel_id
    info = adj.channel(cid)
    if info.status is Status.CONCLUDED:
        return None, "concluded"
    assets = best.state.assets
    funded = tuple((info.funded_a, info.funded_b) if asset == ETH else adj.token_funds(cid, asset) for asset in assets)
    ch = Channel(
        params=params,
        domain=adj.domain,
        me=me,
        assets=assets,
        deposits=funded,
        phase=Phase.RECOVERING,
        signs_nothing=True,
        latest=best,
        funded=funded,
        opened=True,
        open_submitted=True,
        deposits_sent=assets,
        signed_upto=best.state.version,
        final_signed=best.state.is_final,
    )
    if info.status is Status.CLOSING:
        ev = adj.recorded(cid)
        if ev is not None:
            d = Dispute(ev.version, ev.finalizes_at, ev.state_hash, challenged=ev.challenge)
            return replace(ch, phase=Phase.DISPUTE, dispute=d), "closing"
    return ch, "open" if info.status is Status.OPEN else info.status.name.lower()


def recover_one(
    adj: Adjudicator, key: PrivateKey, towers: list[str], client: httpx.Client, found: Found
) -> tuple[Recovered | None, Channel | None]:
    """What can be proven of one channel found on chain, and the channel to write (None: nothing proven)."""
    shown: list[tuple[str, SignedState]] = []
    rec = Recovered(found.channel_id, "unknown")
    params = found.params
    for url in towers:
        told, states, bad, why = tower_states(client, url.rstrip("/"), key, adj, found)
        rec.refused.extend(bad)
        if why is not None:
            rec.unproven.append(why)
        if params is None and told is not None and key.address in (told.a, told.b):
            params = told  # checked: they hash to the id on chain
        shown.extend(states)
    if params is None:
        if found.params is None and not shown:
            return None, None  # not decodable and no tower knows it for this key: someone else's, most likely
        rec.unproven.append("the parameters could not be read from the open call: tell them")
        return rec, None
    proven = prove(adj.domain, params, shown)
    rec.refused.extend(proven.refused)
    rec.status = adj.channel(found.channel_id).status.name.lower()
    if proven.best is None:
        rec.unproven.append(
            "no both-signed state proven: the node cannot close this channel itself; the peer's close "
            "(or a tower's challenge) pays what it proves"
        )
        return rec, None
    ch, status = rebuild(adj, params, 0 if key.address == params.a else 1, proven.best)
    rec.status, rec.version, rec.source = status, proven.best.state.version, proven.source
    rec.unproven.append(
        f"any state above version {proven.best.state.version} this key may have signed: the node signs nothing "
        "more on this channel; a higher both-signed state the peer proves (its Sync, or a challenge on chain) is "
        "taken, and the chain pays it"
    )
    if ch is not None:
        rec.phase = str(ch.phase)
    return rec, ch


def recover(
    adj: Adjudicator,
    key: PrivateKey,
    towers: list[str],
    data_dir: Path,
    peers: dict[bytes, tuple[str, int]],
    *,
    from_block: int = 0,
    http: httpx.Client | None = None,
) -> list[Recovered]:
    """Write a fresh data directory holding every channel of this key that can be proven (nothing is
    written for a channel with no proof); the report says, per channel, what was proven, from where, what
    was refused and why, and what stays unproven."""
    if (data_dir / DB_FILE).exists():
        raise RecoveryError(Reason.BAD_PARAMS, f"{data_dir} already holds a node store: recover into a new directory")
    client = http or httpx.Client(timeout=10)
    report: list[Recovered] = []
    channels: list[Channel] = []
    try:
        for found in find_channels(adj, key.address, from_block):
            rec, ch = recover_one(adj, key, towers, client, found)
            if rec is not None:
                report.append(rec)
            if ch is not None:
                channels.append(ch)
    finally:
        if http is None:
            client.close()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def write() -> None:
        store = SqliteStore(data_dir / DB_FILE)
        try:
            for ch in channels:
                await store.save(ch.channel_id, encode_channel(ch))
        finally:
            await store.close()

    asyncio.run(write())
    book = {a.hex(): [h, p] for a, (h, p) in peers.items()}
    (data_dir / PEERS_FILE).write_text(json.dumps(book))
    return report

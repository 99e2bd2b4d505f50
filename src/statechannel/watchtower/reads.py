"""The tower's read API for a participant that lost its disk (issue 12, decision 0011).

`POST /channels/{id}/read`, signed like a push (over this tower, the channel, `core.towerread.read_request`
and a time), answers the channel's parameters, its status as the tower sees it, and every both-signed state
the tower holds for it, from either participant: each was signed by the reader itself, so showing it to
the reader tells it nothing it did not sign, and the counterparty's copy is exactly what a node that lost
its own needs. Anyone else, or a request for another tower or out of the allowed skew, is refused (401):
the states say how much each side holds."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from statechannel.core.errors import StatechannelError
from statechannel.core.io import SignedState
from statechannel.core.tower import check_client
from statechannel.core.towerread import read_request
from statechannel.core.types import to_checksum
from statechannel.watchtower.errors import TowerError, TowerReason
from statechannel.watchtower.http import _auth, _Authed, _hex
from statechannel.watchtower.service import Tower


class ReadBody(_Authed):
    pass


class HeldStateView(BaseModel):
    pushed_by: str = Field(description="'a' or 'b': the participant that pushed it.")
    channel_id: str
    version: int
    is_final: bool
    assets: list[str]
    transfers: list[str] = Field(description="Decimal: the net amount moved from A to B per asset.")
    app_data: str
    sig_a: str
    sig_b: str


class ChannelRead(BaseModel):
    channel_id: str
    a: str
    b: str
    challenge_period: int
    nonce: str
    status: str
    recorded_version: int | None
    finalizes_at: int | None
    states: list[HeldStateView] = Field(description="Every state held, highest version first.")


def state_view(pushed_by: int, signed: SignedState) -> HeldStateView:
    s = signed.state
    return HeldStateView(
        pushed_by="ab"[pushed_by],
        channel_id="0x" + s.channel_id.hex(),
        version=s.version,
        is_final=s.is_final,
        assets=[to_checksum(x) for x in s.assets],
        transfers=[str(t) for t in s.transfers],
        app_data="0x" + s.app_data.hex(),
        sig_a="0x" + signed.sig_a.to_bytes().hex(),
        sig_b="0x" + signed.sig_b.to_bytes().hex(),
    )


def install_reads(app: FastAPI, tower: Tower) -> None:
    @app.post("/channels/{channel_id}/read", response_model=ChannelRead)
    async def read(channel_id: str, body: ReadBody) -> ChannelRead:
        """What the tower holds for a channel, for one of its participants only (a request signed like a
        push over `read_request(channel_id)`): its parameters and every both-signed state, either side's."""
        cid = _hex(channel_id, 32, TowerReason.VALIDATION, "channel id")
        auth = _auth(body)
        ch = tower.row(cid)
        if ch is None:
            raise TowerError(TowerReason.UNKNOWN_CHANNEL, f"channel {channel_id} is not registered with this tower")
        try:
            check_client(tower.domain, tower.address, ch.params, read_request(cid), auth, int(tower.clock()))
        except StatechannelError as exc:
            raise TowerError(TowerReason.UNAUTHORIZED, exc.detail) from exc
        return ChannelRead(
            channel_id="0x" + cid.hex(),
            a=to_checksum(ch.params.a),
            b=to_checksum(ch.params.b),
            challenge_period=ch.params.challenge_period,
            nonce=str(ch.params.nonce),
            status=ch.status.value,
            recorded_version=None if ch.dispute is None else ch.dispute.version,
            finalizes_at=None if ch.dispute is None else ch.dispute.finalizes_at,
            states=[state_view(h.client, h.signed) for h in ch.states],
        )

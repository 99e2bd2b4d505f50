"""The tower's page at `/`, its `GET /overview` (what the page shows) and `GET /metrics`.

Added to the tower's API by `install`, with no change to the tower: everything shown is read from what
the tower already exposes, through `TowerMetrics`. Like the rest of the tower's API these need no token:
they show channel ids, versions and challenge outcomes, which are public on chain anyway."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from statechannel.core.types import to_checksum
from statechannel.staticfiles import static_router
from statechannel.watchtower.metrics import CountResponses, TowerMetrics
from statechannel.watchtower.storage import TowerStoreError

FILES = {"/": "tower.html", "/tower/app.js": "tower.js", "/tower/style.css": "tower.css"}


class DisputeRow(BaseModel):
    channel_id: str
    version: int
    closed_at: int
    finalizes_at: int
    seen_head: int


class ChallengeRow(BaseModel):
    channel_id: str
    version: int
    against: int
    outcome: str
    reason: str
    tx_hashes: list[str]
    gas_used: int | None
    fee: str | None


class Overview(BaseModel):
    address: str
    chain_id: int
    head: int
    chain_time: int
    watched: int | None
    open_disputes: int
    disputes_seen: int
    receipts_issued: int
    challenges: list[ChallengeRow]
    disputes: list[DisputeRow]


def overview(m: TowerMetrics) -> Overview:
    tower = m.tower
    m.sample()
    rows = []
    for cid, a in list(tower.challenges.items()):
        mined = next((m.gas[h] for h in a.tx_hashes if h in m.gas), None)
        rows.append(
            ChallengeRow(
                channel_id="0x" + cid.hex(),
                version=a.version,
                against=a.against,
                outcome=a.outcome,
                reason=a.reason,
                tx_hashes=["0x" + h.hex() for h in a.tx_hashes],
                gas_used=None if mined is None else mined.gas_used,
                fee=None if mined is None else str(mined.fee),
            )
        )
    try:
        watched: int | None = tower.store.count()
    except TowerStoreError:
        watched = None
    return Overview(
        address=to_checksum(tower.address),
        chain_id=tower.domain.chain_id,
        head=tower.head,
        chain_time=tower.now,
        watched=watched,
        open_disputes=m.open_disputes,
        disputes_seen=m.disputes_seen,
        receipts_issued=m.receipts_issued,
        challenges=rows[-200:],
        disputes=[
            DisputeRow(
                channel_id="0x" + d.channel_id.hex(),
                version=d.version,
                closed_at=d.closed_at,
                finalizes_at=d.finalizes_at,
                seen_head=d.seen_head,
            )
            for d in reversed(m.recent_disputes)
        ],
    )


def install(app: FastAPI, metrics: TowerMetrics) -> None:
    """Serve the page, the overview and the metrics on `app`; count its responses."""
    app.state.metrics = metrics
    metrics.watch_receipts()  # the gas of each challenge, from its receipt
    with contextlib.suppress(RuntimeError):  # no loop yet: the first request starts the sampler
        metrics.start()
    app.add_middleware(CountResponses, metrics=metrics)
    app.include_router(static_router("statechannel.watchtower", FILES, "tower"))

    @app.get("/overview", response_model=Overview, tags=["page"])
    async def get_overview() -> Overview:
        """What the tower's page shows: counts, the latest disputes and every challenge with its gas."""
        return overview(metrics)

    @app.get("/metrics", response_class=Response, tags=["page"])
    async def get_metrics(request: Request) -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

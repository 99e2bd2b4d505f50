"""Audit of recovery without a backup (decision 0011): a hostile tower or counterparty feeding a node that lost
its disk. What a tower answers is parsed and checked; a tower answering junk must cost only its own answer,
never the whole recovery (the other towers' proof of every channel)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from statechannel.chain.base import Chain
from statechannel.core.errors import StatechannelError
from statechannel.core.tower import authorize, check_client
from statechannel.core.towerread import prove, read_request
from statechannel.core.types import ChannelParams, Domain, to_checksum
from statechannel.lostdisk import recover
from statechannel.watchtower.reads import state_view
from tests.watchtower.helpers import Setup, deploy, eth_state, key, open_channel, sign


def _towers(s: Setup, params: ChannelParams, answers: dict[str, Any]) -> httpx.Client:
    """Towers by host: each read answers the parameters of `params` and its own `states` (or raw `body`)."""
    cid = s.adj.channel_id(params)
    info = {"address": to_checksum(s.tower_key.address), "chain_id": s.chain.chain_id,
            "adjudicator": to_checksum(s.adj.address)}  # fmt: skip
    good = {"a": to_checksum(params.a), "b": to_checksum(params.b), "challenge_period": params.challenge_period,
            "nonce": str(params.nonce), "channel_id": "0x" + cid.hex(), "status": "watching",
            "recorded_version": None, "finalizes_at": None}  # fmt: skip

    def answer(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/info":
            return httpx.Response(200, json=info)
        got = answers[req.url.host]
        if isinstance(got, str):  # raw JSON text, as a hostile tower may write it (Infinity, NaN)
            return httpx.Response(200, content=got.encode(), headers={"content-type": "application/json"})
        return httpx.Response(200, json={**good, **got})

    return httpx.Client(transport=httpx.MockTransport(answer))


HOSTILE: list[tuple[str, Any]] = [
    ("version null", {"states": [{"version": None}]}),
    ("version not a number", {"states": [{"version": "lots"}]}),
    (
        "version infinite",
        '{"a": "%(a)s", "b": "%(b)s", "challenge_period": %(p)d, "nonce": "%(n)d", "states": [{"version": Infinity}]}',
    ),
    ("states not a list", {"states": 7}),
    ("challenge period infinite", '{"a": "%(a)s", "b": "%(b)s", "challenge_period": Infinity, "nonce": "1"}'),
    ("answer not an object", "[1, 2, 3]"),
    ("state not an object", {"states": [5, None, "x"]}),
]


@pytest.mark.parametrize("label,hostile", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_audit_recovery_a_tower_answering_junk_costs_only_its_own_answer(
    tmp_path: Path, chain: Chain, label: str, hostile: Any
) -> None:
    s = deploy(chain, "audit recovery junk")
    mine = open_channel(s, 1)
    cid = s.adj.channel_id(mine)
    v5 = sign(s.adj.domain, eth_state(cid, 5, 500), s.a, s.b)
    if isinstance(hostile, str) and "%(" in hostile:
        hostile = hostile % {"a": to_checksum(mine.a), "b": to_checksum(mine.b), "p": mine.challenge_period,
                             "n": mine.nonce}  # fmt: skip
    answers = {"evil": hostile, "honest": {"states": [json.loads(state_view(1, v5).model_dump_json())]}}
    with _towers(s, mine, answers) as http:
        report = recover(s.adj, s.a, ["http://evil", "http://honest"], tmp_path / "a", {}, http=http)
    [r] = report
    assert r.version == 5 and r.source == "tower http://honest", label


def test_audit_recovery_states_of_another_domain_or_swapped_roles_or_other_params_are_not_proof(
    chain: Chain,
) -> None:
    s = deploy(chain, "audit recovery domain")
    mine = open_channel(s, 1)
    cid = s.adj.channel_id(mine)
    d = s.adj.domain
    good = sign(d, eth_state(cid, 2, 200), s.a, s.b)
    other_chain = sign(Domain(d.chain_id + 1, d.adjudicator), eth_state(cid, 9, 900), s.a, s.b)
    other_adj = sign(Domain(d.chain_id, bytes(19) + b"\x01"), eth_state(cid, 10, 900), s.a, s.b)
    swapped = sign(d, eth_state(cid, 11, 900), s.b, s.a)  # sig_a by B, sig_b by A: a valid pair, wrong roles
    same_key = sign(d, eth_state(cid, 12, 900), s.b, s.b)
    shown = [("t", x) for x in (other_chain, other_adj, swapped, same_key, good)]
    proven = prove(d, mine, shown)
    assert proven.best == good
    assert sorted(r.version for r in proven.refused) == [9, 10, 11, 12]
    assert {r.reason for r in proven.refused} == {"wrong_signer"}
    # parameters with the roles swapped hash to another id: the same states prove nothing for it
    flipped = replace(mine, a=mine.b, b=mine.a)
    assert prove(d, flipped, shown).best is None


def test_audit_recovery_a_read_request_replayed_for_another_channel_or_tower_is_refused(chain: Chain) -> None:
    s = deploy(chain, "audit recovery replay")
    mine, other = open_channel(s, 1), open_channel(s, 2)
    cid, oid = s.adj.channel_id(mine), s.adj.channel_id(other)
    now = int(time.time())
    auth = authorize(s.a, s.adj.domain, s.tower_key.address, cid, read_request(cid), now)
    assert check_client(s.adj.domain, s.tower_key.address, mine, read_request(cid), auth, now) == 0
    with pytest.raises(StatechannelError):  # the same signed read, for another channel of the same key
        check_client(s.adj.domain, s.tower_key.address, other, read_request(oid), auth, now)
    with pytest.raises(StatechannelError):  # for another tower
        check_client(s.adj.domain, key("audit other tower").address, mine, read_request(cid), auth, now)

"""The Python hash is the contract's hash, and a Python signature verifies on chain."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statechannel.chain.adjudicator import Status
from statechannel.core import ETH, State, state_digest
from statechannel.core.eip712 import dispute_commitment, domain_separator, state_hash
from tests.contracts.conftest import World
from tests.core.test_eip712 import states


def test_domain_separator_matches(world: World) -> None:
    assert world.adj.domain_separator() == domain_separator(world.adj.domain)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states())
def test_digest_matches_contract(world: World, state: State) -> None:
    assert world.adj.state_digest(state.channel_id, state) == state_digest(world.adj.domain, state)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    funded_a=st.integers(0, 10**6),
    funded_b=st.integers(1, 10**6),
    data=st.data(),
    version=st.integers(0, 2**48 - 1),
    app_data=st.binary(min_size=32, max_size=32),
)
def test_python_signatures_close_on_chain(
    world: World, funded_a: int, funded_b: int, data: st.DataObject, version: int, app_data: bytes
) -> None:
    params, cid = world.funded(funded_a, funded_b)
    transfer = data.draw(st.integers(-funded_b, funded_a))
    state = State(cid, version, (ETH,), (transfer,), app_data=app_data)
    record = world.close(params, state)
    info = world.adj.channel(cid)
    assert (info.status, info.funded_a, info.funded_b) == (Status.CLOSING, funded_a, funded_b)
    assert record.version == version and record.state_hash == state_hash(state)
    assert world.adj.dispute(cid) == dispute_commitment(state_hash(state), version, record.finalizes_at)

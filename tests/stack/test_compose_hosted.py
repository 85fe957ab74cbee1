"""docker compose with hosted partitions (``NEUKONFIG_HOSTED_PARTITIONS=true``): one edge
container hosts every pipeline's edge partition as a session, one cloud container every
tail; a bandwidth drop loads the new cut into the running containers, with no failed
request, and starts no partition container of its own.

Its own stack, brought up after test_compose.py's is down (two at once would share this
machine's two cores). Needs an engine and root, as test_compose.py does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.stack.compose_stack import (
    HIGH,
    LOW_CUTS,
    MODEL,
    Stack,
    settled_near,
    start_stack,
    traffic_through_drop,
    wait_for,
    wait_for_stack_state,
)
from tests.stack.helpers import probe, volume_cases

pytestmark = [pytest.mark.docker, pytest.mark.root]


@pytest.fixture(scope="module")
def hosted_stack(engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose-hosted")
    yield from start_stack(engine, work, NEUKONFIG_HOSTED_PARTITIONS="true")


def _containers_by_role(engine, project: str) -> dict[str, int]:
    found = engine.containers.list(filters={"label": f"neukonfig.instance={project}"})
    roles: dict[str, int] = {}
    for container in found:
        role = container.labels.get("neukonfig.role", "?")
        roles[role] = roles.get(role, 0) + 1
    return roles


def test_a_drop_loads_the_new_cut_into_the_running_containers(hosted_stack, engine) -> None:
    stack = hosted_stack
    cases = volume_cases(stack.data, MODEL)
    wait_for_stack_state(stack, settled_near(HIGH), "a settled split cut at 50 mbit")
    state = stack.state()
    assert all("/hosted/" in p["edge_url"] for p in state["pipelines"]), state["pipelines"]
    hosts_before = _containers_by_role(engine, stack.project)
    assert hosts_before == {"edge-host": 1, "cloud-host": 1}, hosts_before

    client = probe(stack.gateway, MODEL, cases, rate=4)
    before = len(stack.switches())
    try:
        records = asyncio.run(traffic_through_drop(stack, client, stack.link))
    finally:
        stack.link.set_rate(HIGH)
    after = stack.switches()[before:]
    assert not stack.link.errors[:1], stack.link.errors

    failed = [r for r in records if not (r.status == 200 and r.correct)]
    assert not failed, f"{len(failed)} of {len(records)} failed: {failed[:3]}; switches: {after}"
    assert any(s["outcome"] == "switched" and s["to_cut"] in LOW_CUTS for s in after), after
    assert {r.cut for r in records} & LOW_CUTS, "a low cut served after the drop"
    final = wait_for(stack, lambda cut: cut in LOW_CUTS, "a settled low cut")
    state = stack.state()
    active = [p for p in state["pipelines"] if p["state"] == "active"]
    assert [p["cut"] for p in active] == [final]
    assert "/hosted/" in active[0]["edge_url"], active
    hosts_after = _containers_by_role(engine, stack.project)
    assert hosts_after == {"edge-host": 1, "cloud-host": 1}, "no partition container started"

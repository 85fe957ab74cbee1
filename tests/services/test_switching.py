"""Flipping the routing pointer under concurrent load loses nothing and mixes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

CLIENTS = 16
FLIPS = 300
INPUTS = 24


@pytest.fixture(scope="module")
def stack(services, tiny_parts: Path, admin_token: str) -> Stack:
    stack = start_stack(services, tiny_parts, "tiny", admin_token, [1, 4, 7])
    assert stack.switch("p1").status_code == 200
    return stack


@pytest.fixture(scope="module")
def cases(tiny_parts: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2026)
    batches = [rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(INPUTS)]
    return [(batch, expected_logits(tiny_parts, batch)) for batch in batches]


async def client_loop(client, stack: Stack, cases, stop: asyncio.Event, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    problems, sent = [], 0
    while not stop.is_set() or sent == 0:
        index = int(rng.integers(len(cases)))
        body, headers = binary_request("input", cases[index][0])
        response = await client.post(stack.infer_url, content=body, headers=headers)
        sent += 1
        if response.status_code != 200:
            problems.append(f"status {response.status_code}: {response.text}")
        elif not np.allclose(outputs_of(response)["logits"], cases[index][1], rtol=1e-4, atol=1e-5):
            problems.append(f"answer for input {index} does not match its own input")
    return problems


async def flip(client, stack: Stack, times: int) -> int:
    headers = {"authorization": f"Bearer {stack.token}"}
    done = 0
    for number in range(times):
        target = ("p1", "p4", "p7")[number % 3]
        response = await client.post(
            f"{stack.gateway.url}/admin/switch",
            json={"pipeline_id": target, "strategy": "switch_standby"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["unavailable_seconds"] == 0.0  # never pointed at nothing
        done += 1
    return done


def test_flipping_hundreds_of_times_under_load_loses_and_mixes_nothing(stack: Stack, cases):
    served_before = {
        p["id"]: p["served"] for p in stack.admin("GET", "/pipelines").json()["pipelines"]
    }

    async def scenario() -> tuple[list[str], int]:
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=CLIENTS + 2)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            clients = [
                asyncio.create_task(client_loop(client, stack, cases, stop, seed))
                for seed in range(CLIENTS)
            ]
            flips = await flip(client, stack, FLIPS)
            stop.set()
            problems = [p for task in await asyncio.gather(*clients) for p in task]
        return problems, flips

    problems, flips = asyncio.run(scenario())
    assert problems == []
    assert flips == FLIPS
    routing = stack.admin("GET", "/pipelines").json()
    served = {p["id"]: p["served"] - served_before[p["id"]] for p in routing["pipelines"]}
    assert all(count > 0 for count in served.values()), served
    assert all(p["in_flight"] == 0 for p in routing["pipelines"])


def test_retiring_drains_in_flight_requests_before_closing(
    services, tiny_parts: Path, admin_token: str, cases
):
    """Edges slowed to tens of ms a run, so requests really are in flight when p4 is
    retired; the retirement waits for every one of them, and each is answered right.
    (The edges' queue bound is lifted: ten runs at once on a loaded machine can queue
    more than the default 2 s, and a fast 503 then is admission, not this test's subject.)"""
    edge_env = {"slowdown": "300", "max_queue_wait_s": "60"}
    slow = start_stack(services, tiny_parts, "tiny", admin_token, [4, 7], edge_env)
    assert slow.switch("p4").status_code == 200

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(index: int) -> tuple[int, str]:
                body, headers = binary_request("input", cases[index][0])
                response = await client.post(slow.infer_url, content=body, headers=headers)
                if response.status_code != 200:
                    return response.status_code, response.text[:200]
                right = np.allclose(
                    outputs_of(response)["logits"], cases[index][1], rtol=1e-4, atol=1e-5
                )
                return 200, "right" if right else "wrong answer"

            requests = [asyncio.create_task(one(i % len(cases))) for i in range(10)]
            await asyncio.sleep(0.05)
            switched = await client.post(
                f"{slow.gateway.url}/admin/switch",
                json={"pipeline_id": "p7"},
                headers={"authorization": f"Bearer {slow.token}"},
            )
            retired = await client.post(
                f"{slow.gateway.url}/admin/pipelines/p4/retire",
                json={"drain_timeout_s": 30},
                headers={"authorization": f"Bearer {slow.token}"},
            )
            return switched, retired, await asyncio.gather(*requests)

    switched, retired, results = asyncio.run(scenario())
    assert switched.status_code == 200
    assert retired.status_code == 200, retired.text
    assert retired.json()["in_flight_at_start"] > 0, "nothing was in flight: nothing drained"
    assert retired.json()["outcome"] == "drained"
    assert retired.json()["in_flight_left"] == 0
    assert all(result == (200, "right") for result in results), results
    ids = {p["id"] for p in slow.admin("GET", "/pipelines").json()["pipelines"]}
    assert "p4" not in ids


def test_pause_makes_requests_wait_and_resume_releases_them(stack: Stack, cases):
    assert stack.switch(None, strategy="pause_resume").status_code == 200
    assert httpx.get(f"{stack.gateway.url}/v2/health/ready").status_code == 503

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as client:
            body, headers = binary_request("input", cases[0][0])
            waiting = asyncio.create_task(
                client.post(stack.infer_url, content=body, headers=headers)
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            resumed = await client.post(
                f"{stack.gateway.url}/admin/switch",
                json={"pipeline_id": "p1", "strategy": "pause_resume"},
                headers={"authorization": f"Bearer {stack.token}"},
            )
            return resumed, await waiting

    resumed, answer = asyncio.run(scenario())
    assert answer.status_code == 200
    np.testing.assert_allclose(outputs_of(answer)["logits"], cases[0][1], rtol=1e-4, atol=1e-5)
    assert resumed.json()["unavailable_seconds"] >= 0.3

"""Overload gets a fast 503 with a reason and Retry-After, never a long wait or a timeout.

An edge partition slowed down 300 times (sleep-based, so the test needs no root: tens of
ms a run), with at most 0.3 s of compute allowed to queue, meets 30 requests at once: the
few that fit are answered, the rest are refused at once, by reason.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.controller.helpers import metric_samples
from tests.services.oip_client import binary_request
from tests.services.stack import start_stack

BURST = 30


@pytest.fixture(scope="module")
def slow_stack(services, tiny_parts: Path, admin_token: str):
    stack = start_stack(
        services,
        tiny_parts,
        "tiny",
        admin_token,
        [13],  # all-edge: only the edge's compute
        edge_env={"slowdown": "300", "max_queue_wait_s": "0.3"},
        max_in_flight="20",
    )
    assert stack.switch("p13").status_code == 200
    return stack


def burst(stack, count: int) -> list[tuple[httpx.Response, float]]:
    body, headers = binary_request("input", np.zeros((1, 3, 32, 32), np.float32))

    async def scenario() -> list[tuple[httpx.Response, float]]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one() -> tuple[httpx.Response, float]:
                started = time.monotonic()
                answer = await client.post(stack.infer_url, content=body, headers=headers)
                return answer, time.monotonic() - started

            return await asyncio.gather(*(one() for _ in range(count)))

    return asyncio.run(scenario())


def test_a_burst_past_the_queue_bound_is_refused_fast_with_a_reason(slow_stack) -> None:
    # Warm the running average of a run first: the bound is in seconds of compute.
    warm = burst(slow_stack, 1) + burst(slow_stack, 1)
    assert all(answer.status_code == 200 for answer, _ in warm), [a.text for a, _ in warm]
    computed_before = edge_compute_seconds(slow_stack)
    results = burst(slow_stack, BURST)
    computed = edge_compute_seconds(slow_stack) - computed_before
    answered = [(a, s) for a, s in results if a.status_code == 200]
    refused = [(a, s) for a, s in results if a.status_code == 503]
    assert len(answered) + len(refused) == BURST, [a.status_code for a, _ in results]
    assert answered, "the requests that fit the bound were served"
    assert len(refused) >= BURST // 2, "most of the burst did not fit 0.3 s of compute"
    for answer, seconds in refused:
        assert seconds < 1.0, f"a refusal took {seconds:.2f} s"
        assert int(answer.headers["retry-after"]) >= 1
        reason = answer.json()["error"]
        assert "overloaded" in reason, reason
    # Served ones waited for the served ones ahead of them, not for the whole burst: no
    # longer than the edge's compute for the burst (what it answered) and a margin. A run
    # is the slowed edge's sleep, 300x the real run, so a few ms of jitter on a busy
    # machine is a second: the bound is the compute the edge reports, not a guess of it.
    slowest_served = max(seconds for _, seconds in answered)
    assert slowest_served < computed + 1.5, (
        f"a served request waited {slowest_served:.2f} s; {len(answered)} served in "
        f"{computed:.2f} s of edge compute"
    )


def edge_compute_seconds(stack) -> float:
    """The edge partition's compute so far, from its own /metrics."""
    edge, _ = stack.pipelines[13]
    exposition = httpx.get(f"{edge.url}/metrics", timeout=10).text
    sums = metric_samples(exposition, "neukonfig_stage_latency_seconds_sum")
    return sum(v for labels, v in sums.items() if ("stage", "edge_compute") in labels)

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
    results = burst(slow_stack, BURST)
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
    # Served ones waited for the served ones ahead of them, not for the whole burst. A
    # run's time is the slowed edge's sleep, 300x the real run: on a busy machine a few ms
    # of jitter is a second, so the bound scales with the runs the warm-up saw.
    slowest_served = max(seconds for _, seconds in answered)
    one_run = max(seconds for _, seconds in warm)
    bound = max(3.0, 3 * len(answered) * one_run)
    assert slowest_served < bound, (
        f"a served request waited {slowest_served:.2f} s; {len(answered)} served, "
        f"a lone run took {one_run:.2f} s"
    )

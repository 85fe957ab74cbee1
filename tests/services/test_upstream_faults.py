"""A partition service that hangs or dies behind a serving gateway: 504 or 502 naming what
failed, within the gateway's bound, and serving resumes once the service is back. With
the edge's local fallback (the default), a dead cloud is answered by the edge instead."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.backends.local import LocalService
from neukonfig.protocol import (
    FALLBACK_HEADER,
    PARTITION_INFO_PATH,
    PIPELINE_HEADER,
    TRANSFERS_PATH,
)
from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

REQUEST_TIMEOUT_S = 1.0
BATCH = np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def stack(services, tiny_parts: Path, admin_token: str) -> Stack:
    return start_stack(
        services,
        tiny_parts,
        "tiny",
        admin_token,
        [2, 5],
        edge_env={"fallback_local_tail": "false"},  # the failures themselves, unmasked
        request_timeout_s=str(REQUEST_TIMEOUT_S),
    )


def infer(stack: Stack) -> httpx.Response:
    body, headers = binary_request("input", BATCH)
    return httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)


def assert_serves(stack: Stack, parts: Path) -> None:
    response = infer(stack)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(parts, BATCH), rtol=1e-4, atol=1e-5
    )


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_frozen_edge_gives_504_within_the_bound_and_serving_resumes(
    stack: Stack, tiny_parts: Path
) -> None:
    assert stack.switch("p2").status_code == 200
    assert_serves(stack, tiny_parts)  # leaves an idle keep-alive connection to the edge
    edge, _ = stack.pipelines[2]
    assert edge.process is not None
    edge.process.send_signal(signal.SIGSTOP)  # accepts bytes in its socket, never answers
    try:
        started = time.monotonic()
        response = infer(stack)
        elapsed = time.monotonic() - started
    finally:
        edge.process.send_signal(signal.SIGCONT)
    assert "pipeline p2 timed out" in error_of(response, 504)
    assert REQUEST_TIMEOUT_S * 0.9 < elapsed < REQUEST_TIMEOUT_S + 3
    assert_serves(stack, tiny_parts)


def test_dead_partition_services_give_502_naming_the_one_that_failed(
    stack: Stack, tiny_parts: Path
) -> None:
    """A dead cloud (this stack's edges have no local tail): the edge's 502 names it. A
    dead edge: the gateway asks the ready standby p2 once, which answers (the 502 naming
    the dead pipeline, when there is no other, is tests/services/test_edge_failure.py's)."""
    assert stack.switch("p5").status_code == 200
    assert_serves(stack, tiny_parts)
    edge, cloud = stack.pipelines[5]
    assert cloud is not None
    cloud.kill()
    message = error_of(infer(stack), 502)
    assert "cloud partition unreachable" in message
    assert cloud.url in message
    edge.kill()
    response = infer(stack)
    assert response.status_code == 200, response.text
    assert response.headers[PIPELINE_HEADER] == "p2"


def test_a_dead_cloud_is_answered_by_the_edges_local_tail(
    services, tiny_parts: Path, admin_token: str
) -> None:
    fallback_stack = start_stack(services, tiny_parts, "tiny", admin_token, [5])
    edge, cloud = fallback_stack.pipelines[5]
    assert fallback_stack.switch("p5").status_code == 200
    assert infer(fallback_stack).headers.get(FALLBACK_HEADER) is None
    assert cloud is not None
    cloud.kill()
    for _ in range(3):  # the first loads the tail; the breaker sends the next ones local
        response = infer(fallback_stack)
        assert response.status_code == 200, response.text
        assert response.headers[FALLBACK_HEADER] == "local-tail; reason=cloud-down"
        np.testing.assert_allclose(
            outputs_of(response)["logits"],
            expected_logits(tiny_parts, BATCH),
            rtol=1e-4,
            atol=1e-5,
        )
    metrics = httpx.get(f"{edge.url}/metrics").text
    assert 'neukonfig_fallbacks_total{reason="cloud-down"} 3.0' in metrics


def test_a_new_pipelines_hung_cloud_is_raced_by_the_local_tail(
    services, tiny_parts: Path, admin_token: str
) -> None:
    """Before a pipeline has had one normal crossing (just started, on a collapsed link
    or toward a hung cloud) there is no "usual" to call a cloud call late against: once
    the call outlasts the local tail's own time, the edge runs the tail beside it and
    answers first, rather than waiting out its cloud timeout (5 s)."""
    fresh, edge, cloud = _fresh_pipeline(services, tiny_parts, admin_token)
    assert_serves(fresh, tiny_parts)  # its first request: the tail loads after it
    deadline = time.monotonic() + 30
    while _local_tail(edge.url).get("state") != "ready":
        assert time.monotonic() < deadline, _local_tail(edge.url)
        time.sleep(0.05)
    # That one crossing opened the connection: a cold transfer, which teaches no normal.
    transfers = httpx.get(f"{edge.url}{TRANSFERS_PATH}", timeout=5).json()["transfers"]
    assert [t["warm"] for t in transfers] == [False]
    _assert_answered_here_while_hung(fresh, cloud, tiny_parts)
    # The raced call was left to finish: once the cloud answers, it closes the breaker
    # and the next request crosses the link again.
    while (response := infer(fresh)).headers.get(FALLBACK_HEADER) is not None:
        assert time.monotonic() < deadline + 30, response.headers[FALLBACK_HEADER]
        time.sleep(0.05)
    assert response.status_code == 200, response.text


def test_a_new_pipelines_first_request_toward_a_hung_cloud_is_answered_here(
    services, tiny_parts: Path, admin_token: str
) -> None:
    """The very first request of a pipeline (a collapse moved the service to it, or its
    cloud hangs), before its local tail is loaded: the race still runs, finishing here
    waits for the tail's load, and the answer does not wait out the cloud timeout."""
    fresh, _, cloud = _fresh_pipeline(services, tiny_parts, admin_token)
    _assert_answered_here_while_hung(fresh, cloud, tiny_parts)


def _fresh_pipeline(
    services, tiny_parts: Path, admin_token: str
) -> tuple[Stack, LocalService, LocalService]:
    """A new stack serving cut 5, whose head has served nothing (so no local tail yet)."""
    fresh = start_stack(services, tiny_parts, "tiny", admin_token, [5])
    edge, cloud = fresh.pipelines[5]
    assert cloud is not None
    assert fresh.switch("p5").status_code == 200
    assert _local_tail(edge.url)["state"] == "unloaded", "a head that served nothing: no tail"
    return fresh, edge, cloud


def _assert_answered_here_while_hung(fresh: Stack, cloud: LocalService, parts: Path) -> None:
    """With the cloud stopped (it accepts, never answers): the edge's own right answer,
    marked late, not a wait for the cloud timeout."""
    assert cloud.process is not None
    cloud.process.send_signal(signal.SIGSTOP)
    try:
        response = infer(fresh)
    finally:
        cloud.process.send_signal(signal.SIGCONT)
    assert response.status_code == 200, response.text
    assert response.headers[FALLBACK_HEADER] == "local-tail; reason=cloud-late"
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(parts, BATCH), rtol=1e-4, atol=1e-5
    )


def _local_tail(edge_url: str) -> dict[str, object]:
    info = httpx.get(f"{edge_url}{PARTITION_INFO_PATH}", timeout=5).json()
    return info["local_tail"] or {}

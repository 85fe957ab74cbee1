"""Partition services with the internal token answer only the gateway, their edge peer
and the controller; health and /metrics stay open for probes and Prometheus."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import numpy as np
import pytest

from neukonfig import wire
from neukonfig.protocol import INTERNAL_TOKEN_HEADER, TRANSFERS_PATH
from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

INTERNAL = secrets.token_urlsafe(24)
BATCH = np.random.default_rng(9).standard_normal((1, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def stack(services, tiny_parts: Path, admin_token: str) -> Stack:
    env = {"internal_token": INTERNAL}
    stack = start_stack(
        services, tiny_parts, "tiny", admin_token, [4], edge_env=env, cloud_env=env, **env
    )
    assert stack.switch("p4").status_code == 200
    return stack


def test_requests_through_the_gateway_carry_the_token(stack: Stack, tiny_parts: Path) -> None:
    body, headers = binary_request("input", BATCH)
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(tiny_parts, BATCH), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("given", [None, "wrong-token", INTERNAL[:-1]])
def test_partition_services_refuse_requests_without_the_token(
    stack: Stack, given: str | None
) -> None:
    edge, cloud = stack.pipelines[4]
    assert cloud is not None
    headers = {INTERNAL_TOKEN_HEADER: given} if given else {}
    frame = wire.encode({"input": BATCH})
    for url, method, path in (
        (edge.url, "POST", "/v1/infer"),
        (cloud.url, "POST", "/v1/infer"),
        (cloud.url, "POST", "/v1/probe"),
        (edge.url, "GET", TRANSFERS_PATH),
        (edge.url, "GET", "/v1/partition"),
    ):
        response = httpx.request(method, url + path, content=frame, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert INTERNAL_TOKEN_HEADER in response.json()["error"]


def test_health_and_metrics_stay_open(stack: Stack) -> None:
    edge, cloud = stack.pipelines[4]
    assert cloud is not None
    for url in (edge.url, cloud.url):
        for path in ("/health/live", "/health/ready", "/metrics"):
            assert httpx.get(url + path).status_code == 200, (url, path)
    with_token = httpx.get(edge.url + TRANSFERS_PATH, headers={INTERNAL_TOKEN_HEADER: INTERNAL})
    assert with_token.status_code == 200

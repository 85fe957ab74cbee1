"""Partition hosts (serving.hosting): one edge process hosting several heads and one cloud
process hosting their tails, each mounted under /hosted/{name}, served through a real
gateway exactly as separate partition processes would be."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.backends.local import ServiceKind
from neukonfig.protocol import HOSTED_PATH, INTERNAL_TOKEN_HEADER
from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits

BATCH = np.random.default_rng(11).standard_normal((1, 3, 32, 32), dtype=np.float32)
INTERNAL = "hosting-test-internal-token"
HEADERS = {INTERNAL_TOKEN_HEADER: INTERNAL}


@pytest.fixture(scope="module")
def hosts(services, tiny_parts: Path):
    common = {"partition_dir": str(tiny_parts), "hosting": "true", "internal_token": INTERNAL}
    cloud = services.start(ServiceKind.CLOUD_PARTITION, **common)
    edge = services.start(ServiceKind.EDGE_PARTITION, **common)
    return edge.wait_ready(), cloud.wait_ready()


def host_partition(host_url: str, name: str, **settings: str) -> httpx.Response:
    body = {"name": name, "settings": {"threads": "1", **settings}, "labels": {"cut": "x"}}
    return httpx.post(f"{host_url}{HOSTED_PATH}", json=body, headers=HEADERS, timeout=30)


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/health/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/health/ready").text
        time.sleep(0.05)


def pipeline_in_hosts(hosts, tiny_parts: Path, cut: int) -> str:
    """Host cut ``cut``'s tail and head; the head's base URL."""
    edge, cloud = hosts
    assert host_partition(cloud.url, f"tail{cut}", cut=str(cut)).status_code == 201
    tail_url = f"{cloud.url}/hosted/tail{cut}"
    head = host_partition(
        edge.url, f"head{cut}", cut=str(cut), cloud_url=tail_url, internal_token=INTERNAL
    )
    assert head.status_code == 201, head.text
    head_url = f"{edge.url}/hosted/head{cut}"
    wait_ready(head_url)
    wait_ready(tail_url)
    return head_url


def test_two_cuts_served_from_one_edge_process_and_one_cloud_process(
    services, hosts, tiny_parts: Path, admin_token: str
) -> None:
    edge, _ = hosts
    gateway = services.gateway(
        tiny_parts, "tiny", admin_token, internal_token=INTERNAL
    ).wait_ready()
    stack = Stack(gateway, {}, None, admin_token, "tiny")  # type: ignore[arg-type]
    for cut in (2, 5):
        head_url = pipeline_in_hosts(hosts, tiny_parts, cut)
        assert stack.register(cut, head_url, None, f"p{cut}").status_code == 201
        assert stack.switch(f"p{cut}").status_code == 200
        body, headers = binary_request("input", BATCH)
        response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            outputs_of(response)["logits"],
            expected_logits(tiny_parts, BATCH),
            rtol=1e-4,
            atol=1e-5,
        )
    listed = httpx.get(f"{edge.url}{HOSTED_PATH}", headers=HEADERS).json()
    assert sorted(h["name"] for h in listed) == ["head2", "head5"]
    # Hosted partitions take activations from their process's one arena.
    for url in (f"{edge.url}/hosted/head2", f"{hosts[1].url}/hosted/tail5"):
        info = httpx.get(f"{url}/v1/partition", headers=HEADERS, timeout=10).json()
        assert info["shared_arena"] is True, (url, info)
    assert all("internal_token" not in h["settings"] for h in listed), "a secret shown"
    # Dropping a head is a call: its paths go, the other head keeps serving.
    assert stack.switch("p2").status_code == 200
    dropped = httpx.delete(f"{edge.url}{HOSTED_PATH}/head5", headers=HEADERS)
    assert dropped.status_code == 204, dropped.text
    assert httpx.get(f"{edge.url}/hosted/head5/health/ready").status_code == 404
    body, headers = binary_request("input", BATCH)
    assert httpx.post(stack.infer_url, content=body, headers=headers).status_code == 200


def test_the_host_refuses_bad_requests_clearly(hosts) -> None:
    edge, _ = hosts
    unauthorised = httpx.post(f"{edge.url}{HOSTED_PATH}", json={"name": "x", "settings": {}})
    assert unauthorised.status_code == 401
    bad = host_partition(edge.url, "bad", cut="not-a-number")
    assert bad.status_code == 422
    assert "cut" in bad.json()["error"]
    assert host_partition(edge.url, "../escape", cut="1").status_code == 400
    assert host_partition(edge.url, "twice", cut="11").status_code == 201
    twice = host_partition(edge.url, "twice", cut="11")
    assert twice.status_code == 409
    assert "already hosted" in twice.json()["error"]
    missing = httpx.delete(f"{edge.url}{HOSTED_PATH}/nothing", headers=HEADERS)
    assert missing.status_code == 404
    assert "nothing" in missing.json()["error"]

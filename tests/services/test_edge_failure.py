"""A dead edge partition: the gateway asks another ready pipeline once, or says clearly
that the pipeline is unreachable. Real processes; the edge is killed with SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from neukonfig.protocol import PIPELINE_HEADER
from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import expected_logits, start_stack


def test_a_request_its_dead_edge_never_answered_is_retried_once_on_a_standby(
    services, tiny_parts: Path, admin_token: str
) -> None:
    stack = start_stack(services, tiny_parts, "tiny", admin_token, [1, 4])
    assert stack.switch("p1").status_code == 200
    batch = np.random.default_rng(11).standard_normal((2, 3, 32, 32), dtype=np.float32)
    body, headers = binary_request("input", batch)
    assert httpx.post(stack.infer_url, content=body, headers=headers).status_code == 200

    edge, _ = stack.pipelines[1]
    edge.kill()
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers[PIPELINE_HEADER] == "p4", "the standby answered"
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(tiny_parts, batch), rtol=1e-4, atol=1e-5
    )

    # With no other ready pipeline: a fast, clear 502 naming the dead one.
    assert stack.admin("POST", "/pipelines/p4/retire", json={}).status_code == 200
    started = time.monotonic()
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 502, response.text
    assert "p1 unreachable" in response.json()["error"]
    assert time.monotonic() - started < 5.0, "refused connections are not waited out"

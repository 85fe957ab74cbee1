"""The controller with certificates: every pipeline it starts, as processes or as sessions
in hosts, sends its tensors to the cloud over mutual TLS, and the answers stay right."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.embedded import embedded_stack
from models.prepare import Prepared
from models.runtime import Role, load_partition
from neukonfig.protocol import FALLBACK_HEADER
from neukonfig.tls import Certificates
from testbed.probe_client import binary_infer_body
from tests.services.oip_client import outputs_of

BATCH = np.random.default_rng(5).standard_normal((1, 3, 32, 32), dtype=np.float32)
START_TIMEOUT_S = 90.0


@pytest.mark.parametrize("hosted", [False, True], ids=["process", "hosted"])
def test_pipelines_cross_the_link_over_mutual_tls(
    slow_edge_tiny: Prepared, tmp_path: Path, hosted: bool
) -> None:
    certificates = Certificates.ensure(tmp_path / "certs")
    expected = load_partition(slow_edge_tiny.partitions, 0, Role.CLOUD).run({"input": BATCH})
    settings = {
        "hosted_partitions": hosted,
        "auto": False,
        "start_timeout_s": START_TIMEOUT_S,
        # A middle cut: both partitions serve, and the tensor crosses the link.
        "initial_bandwidth": "50mbit",
    }

    async def run() -> tuple[dict[str, object], httpx.Response]:
        with embedded_stack(
            slow_edge_tiny,
            state_dir=tmp_path / "state",
            settings=settings,
            certificates=certificates,
        ) as stack:
            async with stack.controller.running() as controller:
                body, headers = binary_infer_body("input", BATCH)
                async with httpx.AsyncClient(timeout=60) as client:
                    answer = await client.post(stack.infer_url, content=body, headers=headers)
                return controller.state(), answer

    state, answer = asyncio.run(run())
    pipelines: list[dict[str, str]] = state["pipelines"]  # type: ignore[assignment]
    (active,) = [p for p in pipelines if p["id"] == state["active"]]
    assert str(active["cloud_url"]).startswith("https://"), active
    assert answer.status_code == 200, answer.text
    assert FALLBACK_HEADER not in answer.headers, answer.headers[FALLBACK_HEADER]
    np.testing.assert_allclose(
        outputs_of(answer)["logits"], expected["logits"], rtol=1e-4, atol=1e-5
    )

"""Edge partitions that code the tensor they send (``NEUKONFIG_EDGE_CODEC``), and cloud
partitions that decode whatever codec a frame names: real processes on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.services.oip_client import binary_request, json_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

CUTS = [0, 3]  # the input itself, and a ReLU feature map (64 KiB uncoded)


def _answers_and_sent_bytes(stack: Stack, parts: Path) -> dict[int, tuple[float, int]]:
    """Per cut: the largest error of the logits against the full model, and the bytes
    the edge last sent to the cloud."""
    batch = np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)
    expected = expected_logits(parts, batch)
    seen = {}
    for cut in CUTS:
        assert stack.switch(f"p{cut}").status_code == 200
        edge, _ = stack.pipelines[cut]
        for make in (json_request, binary_request):
            body, headers = make("input", batch)
            response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
            assert response.status_code == 200, (cut, response.text)
            error = float(np.abs(outputs_of(response)["logits"] - expected).max())
        transfers = httpx.get(f"{edge.url}/v1/transfers").json()["transfers"]
        seen[cut] = (error, transfers[-1]["bytes"])
    return seen


@pytest.mark.parametrize("codec", ["zstd", "int8"])
def test_a_coded_link_answers_from_fewer_bytes(services, tiny_parts: Path, admin_token, codec):
    stack = start_stack(services, tiny_parts, "tiny", admin_token, CUTS, edge_env={"codec": codec})
    seen = _answers_and_sent_bytes(stack, tiny_parts)
    relu_bytes = seen[3][1]
    uncoded = stack.manifest.cut(3).bytes
    if codec == "zstd":
        assert all(error < 1e-4 for error, _ in seen.values()), seen
        assert relu_bytes < 0.7 * uncoded, "about half of this ReLU map is zeros"
    else:
        # 8 bits over each tensor's range: the logits move, by a small share of their spread.
        assert all(error < 0.05 for error, _ in seen.values()), seen
        assert relu_bytes < uncoded / 3.5
        assert seen[0][1] < stack.manifest.cut(0).bytes / 3.5


def test_an_unknown_codec_is_refused_at_start_with_the_known_ones(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from edge_service.settings import EdgePartitionSettings

    with pytest.raises(ValidationError, match="known: none, fp16"):
        EdgePartitionSettings(partition_dir=tmp_path, cut=1, codec="int4")

"""schemathesis against the gateway's OpenAPI document (infer routes included): every
operation fuzzed with valid and invalid input must answer without a 5xx, the gateway
must keep serving, and its memory must not grow with the garbage.

The document names the one model the gateway serves, so the infer operations are
fuzzed with the real model name (and, in negative mode, with others). Without the
admin token, so the admin operations answer 401 and nothing the fuzzer
invents (a pipeline URL on some other host) is ever contacted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.services.oip_client import binary_request, outputs_of
from tests.services.stack import Stack, expected_logits, start_stack

SCHEMATHESIS = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def stack(services, tiny_parts: Path, admin_token: str) -> Stack:
    stack = start_stack(services, tiny_parts, "tiny", admin_token, [5])
    assert stack.switch("p5").status_code == 200
    return stack


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is in the dev extra")
def test_no_operation_answers_5xx_to_fuzzed_input(stack: Stack, tiny_parts: Path) -> None:
    assert stack.gateway.process is not None
    gateway = psutil.Process(stack.gateway.process.pid)
    before = gateway.memory_info().rss
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{stack.gateway.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--mode",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Tested: 11" in result.stdout, result.stdout[-3000:]  # infer routes included
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-3000:]
    growth_mb = (gateway.memory_info().rss - before) / 2**20
    assert growth_mb < 50, f"the gateway grew {growth_mb:.0f} MB under fuzzing"
    batch = np.random.default_rng(2).standard_normal((1, 3, 32, 32), dtype=np.float32)
    body, headers = binary_request("input", batch)
    response = httpx.post(stack.infer_url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        outputs_of(response)["logits"], expected_logits(tiny_parts, batch), rtol=1e-4, atol=1e-5
    )

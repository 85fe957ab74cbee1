"""What the probe client counts as a correct answer, and its requests (binary and JSON)
through a real loopback stack."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from neukonfig.manifest import read_manifest
from testbed.loopback_stack import loopback_stack
from testbed.probe_client import (
    ProbeClient,
    RequestRecord,
    answers_match,
    first_output,
    reference_cases,
)


def test_fusion_rounding_is_correct_but_a_wrong_answer_is_not() -> None:
    expected = np.linspace(-11.7, 11.7, 1000, dtype=np.float32)
    # What a cut that splits Conv+BN fusion does to MobileNetV2's logits: about 4e-5.
    assert answers_match(expected + 3.6e-5, expected)
    assert not answers_match(expected + 1e-3, expected)
    assert not answers_match(expected[::-1], expected)
    small = np.full(10, 1e-3, np.float32)  # outputs near zero keep an absolute floor
    assert answers_match(small + 5e-6, small)
    assert not answers_match(small + 1e-4, small)


@pytest.mark.parametrize("json_requests", [False, True], ids=["binary", "json"])
def test_json_and_binary_requests_through_a_loopback_stack_are_checked(
    zoo_file, tiny_parts, tmp_path, json_requests
) -> None:
    manifest = read_manifest(tiny_parts)
    cases = reference_cases(zoo_file("tiny"), manifest.model.inputs[0], count=3)
    with loopback_stack(tiny_parts, manifest.num_cuts // 2, "tiny", tmp_path) as url:
        client = ProbeClient(
            url=url, input_name="input", cases=cases, rate_per_s=20, json_requests=json_requests
        )

        async def half_a_second() -> list[RequestRecord]:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, stop.set)
            return await client.run(stop)

        records = asyncio.run(half_a_second())
    assert len(records) >= 5
    assert all(r.ok for r in records), records[:3]
    assert {r.cut for r in records} == {manifest.num_cuts // 2}


def test_an_answer_for_another_input_is_wrong_in_either_encoding() -> None:
    outputs = np.arange(10, dtype=np.float32).reshape(1, 10)
    header = b'{"outputs": [{"name": "logits", "shape": [1, 10], "datatype": "FP32"}]}'
    binary = httpx.Response(
        200,
        content=header + outputs.tobytes(),
        headers={"inference-header-content-length": str(len(header))},
    )
    as_json = httpx.Response(
        200,
        json={"outputs": [{"name": "logits", "shape": [1, 10], "data": outputs.ravel().tolist()}]},
    )
    for response in (binary, as_json):
        assert answers_match(first_output(response), outputs)
        assert not answers_match(first_output(response), outputs[:, ::-1])

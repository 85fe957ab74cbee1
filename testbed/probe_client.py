"""An open-loop probe client: requests at a fixed rate, whatever the system does.

Each request is sent on schedule (a slow answer never delays the next send), so an
outage shows up as failures, waits and gaps instead of silently lowering the rate.
Requests rotate through several seeded inputs, each checked against its own reference
answer computed from the original model file, so a cached, stale or crossed answer
shows as wrong. Every request is recorded: when it was sent and completed, its status,
whether its answer matched, which cut answered it, and why it failed if it did.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from models.runtime import sample_input
from neukonfig.manifest import TensorSpec
from neukonfig.protocol import CODEC_HEADER, CUT_HEADER, FALLBACK_HEADER

# onnxruntime fuses Conv+BN inside a head or tail but not across the cut, so a split
# model's sums differ from the full model's by a few 1e-6 of the output's scale
# (3.6e-5 on MobileNetV2 logits of magnitude 12 at cut 15): absolute tolerance scales.
RTOL, ATOL_OF_SCALE = 1e-4, 1e-5
DEFAULT_CASES = 8
WRONG_ANSWER = "wrong answer"


def answers_match(
    actual: np.ndarray, expected: np.ndarray, *, atol_of_scale: float = ATOL_OF_SCALE
) -> bool:
    """Within the split's rounding of the fp32 answer; a lossy codec on the wire needs a
    wider ``atol_of_scale`` (a share of the answer's largest magnitude)."""
    if actual.shape != expected.shape:
        return False
    scale = float(np.max(np.abs(expected), initial=1.0))
    return bool(np.allclose(actual, expected, rtol=RTOL, atol=atol_of_scale * scale))


@dataclass(frozen=True)
class ProbeCase:
    """One input and the answer the original model gives for it."""

    batch: np.ndarray
    expected: np.ndarray


def reference_cases(
    model_file: Path, spec: TensorSpec, *, count: int = DEFAULT_CASES, seed: int = 0
) -> list[ProbeCase]:
    """``count`` seeded inputs and their answers from the original ONNX file, run whole
    (not the partitioner's ``full.onnx``), so the partitioner cannot grade itself."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    cases = []
    for number in range(count):
        batch = sample_input(spec, batch=1, seed=seed + number)
        expected = session.run(None, {spec.name: batch})[0]
        cases.append(ProbeCase(batch, expected))
    return cases


def served_option(cut: int | None, codec: str | None) -> int | str | None:
    """A plain cut as itself; a coded one as ``CUT/CODEC`` (the planner's label)."""
    return cut if cut is None or codec in (None, "none") else f"{cut}/{codec}"


@dataclass(frozen=True)
class RequestRecord:
    sent_s: float  # seconds since the client started
    done_s: float
    status: int  # 0: no HTTP answer at all
    correct: bool
    cut: int | None
    # The edge finished it on its own copy of the tail, and why (the fallback mark).
    local: str | None = None
    reason: str | None = None  # why it failed: "503 <error>", "ReadTimeout", "wrong answer"
    codec: str | None = None  # what the answering pipeline coded its tensor with, if any

    @property
    def option(self) -> int | str | None:
        """What served it: the cut, or ``CUT/CODEC`` when a codec crossed (so that two
        codecs of one cut count as two options, as the controller counts them)."""
        return served_option(self.cut, self.codec)

    @property
    def fallback(self) -> bool:
        return self.local is not None

    @property
    def latency_s(self) -> float:
        return self.done_s - self.sent_s

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.correct


def binary_infer_body(name: str, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(batch.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": batch.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + batch.tobytes(), {"inference-header-content-length": str(len(header))}


def json_infer_body(name: str, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The same request as a REST user's JSON: flat row-major data as numpy's tolist() writes
    it, and JSON outputs."""
    document = {
        "inputs": [
            {
                "name": name,
                "shape": list(batch.shape),
                "datatype": "FP32",
                "data": batch.reshape(-1).tolist(),
            }
        ]
    }
    return json.dumps(document).encode(), {"content-type": "application/json"}


def first_output(response: httpx.Response) -> np.ndarray:
    """The first output of an OIP answer, binary (the tensor extension) or JSON."""
    length = response.headers.get("inference-header-content-length")
    if length is None:
        output = response.json()["outputs"][0]
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    header = json.loads(response.content[: int(length)])
    output = header["outputs"][0]
    data = np.frombuffer(response.content[int(length) :], dtype="<f4")
    return data.reshape(output["shape"])


def _failure_reason(response: httpx.Response) -> str:
    try:
        detail = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        detail = response.text
    return f"{response.status_code} {detail[:200]}".strip()


class ProbeClient:
    def __init__(
        self,
        *,
        url: str,
        input_name: str,
        cases: Sequence[ProbeCase],
        rate_per_s: float,
        timeout_s: float = 60.0,
        json_requests: bool = False,
        atol_of_scale: float = ATOL_OF_SCALE,
    ) -> None:
        """``atol_of_scale``: how far an answer may be from the original model's, as a
        share of its largest magnitude (wider where a lossy codec may be planned)."""
        if not cases:
            raise ValueError("a probe client needs at least one case")
        self.url = url
        encode = json_infer_body if json_requests else binary_infer_body
        self.cases = [(encode(input_name, c.batch), c.expected) for c in cases]
        self.interval = 1 / rate_per_s
        self.timeout_s = timeout_s
        self.atol_of_scale = atol_of_scale
        self.records: list[RequestRecord] = []
        self.started = time.perf_counter()
        self._sent = 0

    async def run(self, stop: asyncio.Event) -> list[RequestRecord]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            pending: set[asyncio.Task[None]] = set()
            next_send = time.perf_counter()
            while not stop.is_set():
                task = asyncio.create_task(self._one(client))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_send += self.interval
                await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
            await asyncio.gather(*pending, return_exceptions=True)
        self.records.sort(key=lambda r: r.sent_s)
        return self.records

    async def _one(self, client: httpx.AsyncClient) -> None:
        (body, headers), expected = self.cases[self._sent % len(self.cases)]
        self._sent += 1
        sent = time.perf_counter() - self.started
        status, correct, cut, local, reason, codec = 0, False, None, None, None, None
        try:
            response = await client.post(self.url, content=body, headers=headers)
            status = response.status_code
            if status == 200:
                cut = int(response.headers.get(CUT_HEADER, -1))
                local = response.headers.get(FALLBACK_HEADER)
                codec = response.headers.get(CODEC_HEADER)
                answer = first_output(response)
                correct = answers_match(answer, expected, atol_of_scale=self.atol_of_scale)
                reason = None if correct else WRONG_ANSWER
            else:
                reason = _failure_reason(response)
        except (httpx.HTTPError, ValueError, KeyError) as error:
            reason = type(error).__name__
        done = time.perf_counter() - self.started
        record = RequestRecord(sent, done, status, correct, cut, local, reason, codec)
        self.records.append(record)


def failure_reasons(records: Sequence[RequestRecord]) -> dict[str, int]:
    """How many requests failed, by reason (measured figures and pipeline ids blanked
    out, so that one cause is one line), most common first."""
    counts = Counter(_reason_kind(r.reason or f"status {r.status}") for r in records if not r.ok)
    return dict(counts.most_common())


def _reason_kind(reason: str) -> str:
    reason = re.sub(r"-cut\d+-[0-9a-f]{8}", "", reason)
    return re.sub(r"\b\d+\.\d+\b", "N", reason)


def records_as_json(records: list[RequestRecord]) -> list[dict[str, object]]:
    return [asdict(record) for record in records]

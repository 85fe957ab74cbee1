"""An open-loop probe client: requests at a fixed rate, whatever the system does.

Each request is sent on schedule (a slow answer never delays the next send), so an
outage shows up as failures, waits and gaps instead of silently lowering the rate.
Every request is recorded: when it was sent and completed, its status, whether its
answer matched the expected output, and which cut answered it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from neukonfig.protocol import CUT_HEADER, FALLBACK_HEADER

# onnxruntime fuses Conv+BN inside a head or tail but not across the cut, so a split
# model's sums differ from the full model's by a few 1e-6 of the output's scale
# (3.6e-5 on MobileNetV2 logits of magnitude 12 at cut 15): absolute tolerance scales.
RTOL, ATOL_OF_SCALE = 1e-4, 1e-5


def answers_match(actual: np.ndarray, expected: np.ndarray) -> bool:
    scale = float(np.max(np.abs(expected), initial=1.0))
    return bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL_OF_SCALE * scale))


@dataclass(frozen=True)
class RequestRecord:
    sent_s: float  # seconds since the client started
    done_s: float
    status: int  # 0: no HTTP answer at all
    correct: bool
    cut: int | None
    fallback: bool = False  # answered by the edge's local tail: the cloud had failed

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


def first_output(response: httpx.Response) -> np.ndarray:
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    output = header["outputs"][0]
    data = np.frombuffer(response.content[length:], dtype="<f4")
    return data.reshape(output["shape"])


class ProbeClient:
    def __init__(
        self,
        *,
        url: str,
        input_name: str,
        batch: np.ndarray,
        expected: np.ndarray,
        rate_per_s: float,
        timeout_s: float = 60.0,
    ) -> None:
        self.url = url
        self.body, self.headers = binary_infer_body(input_name, batch)
        self.expected = expected
        self.interval = 1 / rate_per_s
        self.timeout_s = timeout_s
        self.records: list[RequestRecord] = []
        self.started = time.perf_counter()

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
        sent = time.perf_counter() - self.started
        status, correct, cut, fallback = 0, False, None, False
        try:
            response = await client.post(self.url, content=self.body, headers=self.headers)
            status = response.status_code
            if status == 200:
                cut = int(response.headers.get(CUT_HEADER, -1))
                fallback = FALLBACK_HEADER in response.headers
                correct = answers_match(first_output(response), self.expected)
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        done = time.perf_counter() - self.started
        self.records.append(RequestRecord(sent, done, status, correct, cut, fallback))


def records_as_json(records: list[RequestRecord]) -> list[dict[str, object]]:
    return [asdict(record) for record in records]

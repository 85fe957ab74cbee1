"""Noticing that a partition of the active pipeline died or hung.

The edge answers with its local copy of the tail while the cloud is down
(edge_service/partition_app.py), so requests keep succeeding, but slowly and without
the cloud. A dead edge partition fails every request routed to it (the gateway retries
each once on another ready pipeline, if there is one). The controller checks the
active pipeline's ready paths, edge and cloud, on a short period with a short timeout;
after a few failures in a row it replaces the pipeline (fresh partitions, started on
demand), and waits a while before trying again if that fails.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from controller.backends.base import ServiceHandle
from controller.pipelines import ManagedPipeline


class PartitionWatch:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        period_s: float,
        failures_to_replace: int,
        retry_s: float,
    ) -> None:
        self.http = http
        self.period_s = period_s
        self.failures_to_replace = failures_to_replace
        self.retry_s = retry_s
        self.failures = 0
        self._next_check = 0.0
        self._next_replacement = 0.0

    async def replacement_reason(self, pipeline: ManagedPipeline | None) -> str | None:
        """Why ``pipeline`` should be replaced now, or None (also between checks)."""
        now = time.monotonic()
        if pipeline is None or now < self._next_check:
            return None
        self._next_check = now + self.period_s
        watched = [s for s in (pipeline.edge, pipeline.cloud) if s is not None]
        problems = await asyncio.gather(*(self._problem(service) for service in watched))
        problem = "; ".join(p for p in problems if p)
        self.failures = self.failures + 1 if problem else 0
        if self.failures < self.failures_to_replace or now < self._next_replacement:
            return None
        self._next_replacement = now + self.retry_s
        return f"{pipeline.id} failed {self.failures} health checks in a row ({problem})"

    def replaced(self) -> None:
        self.failures = 0

    async def _problem(self, service: ServiceHandle) -> str | None:
        role = f"{service.spec.kind.value} partition"
        try:
            url = service.url + service.spec.kind.ready_path
            response = await self.http.get(url, timeout=self.period_s * 2)
        except httpx.TimeoutException:
            return f"{role}: no answer"
        except httpx.HTTPError as error:
            return f"{role}: unreachable, {type(error).__name__}"
        return None if response.status_code == 200 else f"{role}: status {response.status_code}"

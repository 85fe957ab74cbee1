"""Noticing that the active pipeline's cloud partition died or hung.

The edge answers with its local copy of the tail while the cloud is down
(edge_service/partition_app.py), so requests keep succeeding, but slowly and without
the cloud. The controller checks the active cloud's ready path on a short period with a
short timeout; after a few failures in a row it replaces the pipeline (a fresh cloud
partition, started on demand), and waits a while before trying again if that fails.
"""

from __future__ import annotations

import time

import httpx

from controller.pipelines import ManagedPipeline


class CloudWatch:
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
        if pipeline is None or pipeline.cloud is None or now < self._next_check:
            return None
        self._next_check = now + self.period_s
        problem = await self._problem(pipeline.cloud.url + pipeline.cloud.spec.kind.ready_path)
        self.failures = self.failures + 1 if problem else 0
        if self.failures < self.failures_to_replace or now < self._next_replacement:
            return None
        self._next_replacement = now + self.retry_s
        return f"cloud partition of {pipeline.id} failed {self.failures} checks ({problem})"

    def replaced(self) -> None:
        self.failures = 0

    async def _problem(self, url: str) -> str | None:
        try:
            response = await self.http.get(url, timeout=self.period_s * 2)
        except httpx.TimeoutException:
            return "no answer"
        except httpx.HTTPError as error:
            return f"unreachable: {type(error).__name__}"
        return None if response.status_code == 200 else f"status {response.status_code}"

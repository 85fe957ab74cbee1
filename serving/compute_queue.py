"""One run at a time per partition process, and a bound on the work waiting for it.

A process's onnxruntime threads are its share of the device's cores, so runs take turns
(``slot``) rather than thread-pile on cores the device does not have; this also makes
the queue visible. A request that would wait longer than ``max_wait_s`` behind the runs
ahead of it is refused at once (``OverloadedError``: a 503 with Retry-After), instead of
being queued into a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from neukonfig.errors import OverloadedError

# Weight of the newest run in the running average of run time.
SMOOTHING = 0.2


class ComputeQueue:
    def __init__(self, *, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._turn = asyncio.Lock()
        self.waiting = 0
        self.run_s: float | None = None  # running average of one run
        self.refused = 0

    def expected_wait_s(self) -> float:
        """Work ahead of a request arriving now: the runs waiting and the one running."""
        ahead = self.waiting + (1 if self._turn.locked() else 0)
        return ahead * (self.run_s or 0.0)

    def admit(self, what: str) -> None:
        """Refuse at once when the work ahead is over the bound."""
        wait = self.expected_wait_s()
        if wait > self.max_wait_s:
            self.refused += 1
            raise OverloadedError(
                f"{what} is overloaded: about {wait:.2f} s of compute is queued, over the "
                f"{self.max_wait_s:g} s bound",
                retry_after_s=wait,
            )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._turn.release()

    def record(self, seconds: float) -> None:
        self.run_s = (
            seconds if self.run_s is None else self.run_s + SMOOTHING * (seconds - self.run_s)
        )

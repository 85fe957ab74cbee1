"""A server in its own process, ready when its URL answers 200: what the benchmarks start
beside the project's services (peer servers, the data path's do-nothing floor)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from controller.backends.local import log_tail, poll_ready


@dataclass
class PeerProcess:
    """A peer server in its own process group (MLServer forks its workers)."""

    name: str
    command: list[str]
    ready_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 180.0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> PeerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self) -> None:
        process = self.process
        assert process is not None
        problem = poll_ready(
            self.ready_url, lambda: process.poll() is None, self.start_timeout_s, poll_s=0.2
        )
        if problem is not None:
            raise RuntimeError(f"{self.name} {problem}:\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

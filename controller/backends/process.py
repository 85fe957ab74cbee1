"""The ``process`` backend: partition services as local uvicorn processes.

The default and the embedded one. Each service it starts is recorded in a state
directory (one JSON file: pid, process start time, url, spec, written whole or not at
all), and carries that record's path in its environment (``MARKER_VARIABLE``). So a
restarted controller finds exactly the processes this backend started, never a stranger
that reused a pid, and also those whose start a crash cut short before their pid was
recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import psutil

from controller.backends.base import (
    Backend,
    ServiceHandle,
    ServiceSpec,
    ServiceState,
    poll_until_ready,
    spec_from_record,
    spec_record,
)
from controller.backends.local import MARKER_VARIABLE, LocalService, ServiceKind
from neukonfig.files import TEMPORARY_PREFIX, write_atomically
from neukonfig.tls import tls_http_client

POLL_S = 0.05
log = logging.getLogger("neukonfig.backend.process")

# Given a service's onnxruntime threads, the command prefix that starts it on the edge
# device (e.g. inside an emulated device's cgroup: testbed.edge_device).
EdgePlacement = Callable[[int], list[str]]


class ProcessBackend(Backend):
    name = "process"

    def __init__(
        self,
        *,
        state_dir: Path,
        host: str = "127.0.0.1",
        cloud_host: str | None = None,
        cloud_command_prefix: list[str] | None = None,
        edge_placement: EdgePlacement | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        """``cloud_host`` and ``cloud_command_prefix`` place cloud partitions on another
        host of this machine, e.g. a network namespace behind a shaped veth;
        ``edge_placement`` starts edge partitions on an emulated edge device; ``tls_dir``:
        the edge's certificates, to check cloud partitions that serve mutual TLS."""
        # Resolved: the marker a service carries is its record's path, and a controller
        # restarted from another directory must spell that path the same way.
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.cloud_host = cloud_host or host
        self.cloud_command_prefix = cloud_command_prefix or []
        self.edge_placement = edge_placement
        self._services: dict[str, LocalService] = {}
        self._http = tls_http_client(tls_dir, timeout=2.0)

    async def start(self, spec: ServiceSpec) -> ServiceHandle:
        log = self.state_dir / f"{spec.name}.log"
        on_cloud = spec.kind is ServiceKind.CLOUD_PARTITION
        prefix = self.cloud_command_prefix if on_cloud else []
        if spec.kind is ServiceKind.EDGE_PARTITION and self.edge_placement is not None:
            prefix = self.edge_placement(int(spec.settings.get("threads", "1")))
        record = self._record_path(spec.name)
        service = LocalService(
            spec.kind,
            dict(spec.settings),
            log,
            host=self.cloud_host if on_cloud else self.host,
            command_prefix=prefix,
            other_network=on_cloud and bool(self.cloud_command_prefix),
            marker=str(record),
        )
        # The intent first: a controller killed between the process's start and its
        # record would otherwise leave a process nobody finds (``discover``).
        _write_record(record, {"pid": None, **spec_record(spec)})
        try:
            await asyncio.to_thread(service.start)
        except BaseException:
            record.unlink(missing_ok=True)
            raise
        assert service.process is not None
        self._services[spec.name] = service
        handle = ServiceHandle(spec, service.url, str(service.process.pid))
        self._record(handle)
        return handle

    async def wait_ready(self, handle: ServiceHandle, *, timeout: float) -> None:
        await poll_until_ready(
            self._http,
            handle,
            timeout=timeout,
            problem=lambda: None if self._alive(handle) else "exited",
            log_tail=lambda: self._log_tail(handle),
            poll_s=POLL_S,
        )

    async def stop(self, handle: ServiceHandle) -> None:
        service = self._services.pop(handle.spec.name, None)
        if service is not None:
            await asyncio.to_thread(service.stop)
        else:
            await asyncio.to_thread(self._stop_adopted, handle)
        handle.state = ServiceState.STOPPED
        self._record_path(handle.spec.name).unlink(missing_ok=True)

    async def discover(self) -> list[ServiceHandle]:
        found = []
        for path in sorted(self.state_dir.glob("*.json")):
            handle = await asyncio.to_thread(self._adopt_or_clear, path)
            if handle is not None:
                found.append(handle)
        for leftover in self.state_dir.glob(f"{TEMPORARY_PREFIX}*"):
            leftover.unlink(missing_ok=True)  # a record write cut short by a crash
        return found

    async def memory_bytes(self, handle: ServiceHandle) -> int | None:
        process = self._process(handle)
        if process is None:
            return None
        # PSS splits pages shared between processes (memory-mapped weights.bin, libraries),
        # so summing it over edge services does not count shared weights twice.
        return (await asyncio.to_thread(process.memory_full_info)).pss

    async def close(self) -> None:
        await self._http.aclose()

    def _record(self, handle: ServiceHandle) -> None:
        process = psutil.Process(int(handle.backend_id))
        record = {
            "pid": process.pid,
            "create_time": process.create_time(),
            "url": handle.url,
            **spec_record(handle.spec),
        }
        _write_record(self._record_path(handle.spec.name), record)

    def _record_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _read_record(self, path: Path) -> ServiceHandle | None:
        """A handle for the recorded process, or None if the record names no live process
        of ours (unreadable, a start cut short before its pid, or a pid now someone else's)."""
        try:
            record = json.loads(path.read_text())
            if not isinstance(record["pid"], int):
                return None  # intent only: psutil.Process(None) would be this process
            process = psutil.Process(record["pid"])
            if not _started_for(process, path, record["create_time"]):
                return None
        except (OSError, ValueError, TypeError, KeyError, psutil.Error):
            return None
        return ServiceHandle(spec_from_record(record), record["url"], str(record["pid"]))

    def _process(self, handle: ServiceHandle) -> psutil.Process | None:
        recorded = self._read_record(self._record_path(handle.spec.name))
        if recorded is None:
            return None
        try:
            return psutil.Process(int(recorded.backend_id))
        except psutil.Error:
            return None

    def _alive(self, handle: ServiceHandle) -> bool:
        service = self._services.get(handle.spec.name)
        if service is not None:
            return service.alive()
        return self._process(handle) is not None

    def _adopt_or_clear(self, path: Path) -> ServiceHandle | None:
        """The recorded service, ready to adopt; or, when the record names no live process
        of ours, None, after stopping any process started for it (found by the marker in
        its environment: a crash between its start and its record) and dropping the record."""
        handle = self._read_record(path)
        if handle is not None:
            handle.state = ServiceState.READY
            return handle
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER_VARIABLE) == str(path):
                    log.warning("stopping pid %d: started for %s, not recorded", process.pid, path)
                    _terminate(process)
            except psutil.Error:
                continue
        path.unlink(missing_ok=True)
        return None

    def _stop_adopted(self, handle: ServiceHandle) -> None:
        process = self._process(handle)
        if process is not None:
            _terminate(process)

    def _log_tail(self, handle: ServiceHandle) -> str:
        log = self.state_dir / f"{handle.spec.name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-20:])


def _write_record(path: Path, record: dict) -> None:
    write_atomically(path, json.dumps(record, indent=2).encode())


def _started_for(process: psutil.Process, record_path: Path, create_time: float) -> bool:
    """Whether ``process`` is the one started for this record: it carries the record's
    path in its environment. Where that cannot be read, its start time must match (to a
    second: psutil derives it from the boot time, which clock adjustments move)."""
    try:
        return process.environ().get(MARKER_VARIABLE) == str(record_path)
    except psutil.AccessDenied:
        return abs(process.create_time() - create_time) < 1.0


def _terminate(process: psutil.Process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)

"""Partitions as sessions in running hosts, over any backend (``hosted_partitions``).

The wrapped backend starts one host per side, an ordinary edge or cloud partition
service with ``hosting`` set (``serving.hosting``), the first time that side is needed;
so the process backend, docker and kubernetes place, label and stop it as they would
any partition of its kind (the edge host inside the edge device's cgroup or on the
edge engine). Every partition after that is a ``POST /v1/hosted`` to the host: a new
onnxruntime session in a warm process, not a new process. A host is stopped when the
last partition it hosts is.

The handle of a hosted partition has the base URL ``{host}/hosted/{name}``, on which it
answers every path a partition process would: the launcher, the gateway and the
controller use it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from controller.backends.base import (
    Backend,
    ServiceHandle,
    ServiceKind,
    ServiceSpec,
    ServiceStartError,
    ServiceState,
    poll_until_ready,
)
from neukonfig.protocol import (
    HOST_MEMORY_PATH,
    HOSTED_PATH,
    HOSTED_PREFIX,
    INTERNAL_TOKEN_HEADER,
    LIVE_PATH,
)
from neukonfig.tls import tls_http_client

HOST_ROLES = {ServiceKind.EDGE_PARTITION: "edge-host", ServiceKind.CLOUD_PARTITION: "cloud-host"}
# Host-wide settings: what every hosted partition of a side shares (the process's own).
HOST_SETTINGS = ("partition_dir", "internal_token", "threads", "tls_dir")


class HostedBackend(Backend):
    def __init__(
        self,
        inner: Backend,
        *,
        model: str,
        start_timeout_s: float,
        internal_token: str | None = None,
        edge_host_threads: int = 4,
        tls_dir: Path | None = None,
    ) -> None:
        self.inner = inner
        # The cores the edge host may use. Each head still runs on its own ``threads``;
        # the host runs several at once (the active head, a load, a local tail), as a
        # device's one process may on all its cores. (An emulated device caps each
        # process at its ``threads`` of the device's cores: ``testbed.edge_device``.)
        self.edge_host_threads = edge_host_threads
        self.name = f"{inner.name}+hosted"
        self.model = model
        self.start_timeout_s = start_timeout_s
        self._hosts: dict[ServiceKind, ServiceHandle] = {}
        self._hosted: dict[ServiceKind, set[str]] = {kind: set() for kind in HOST_ROLES}
        self._starting = asyncio.Lock()
        # The hosts' own routes need the internal token (health stays open).
        headers = {INTERNAL_TOKEN_HEADER: internal_token} if internal_token else {}
        self._http = tls_http_client(tls_dir, timeout=30.0, headers=headers)

    async def start(self, spec: ServiceSpec) -> ServiceHandle:
        host = await self._host_for(spec)
        body = {"name": spec.name, "settings": spec.settings, "labels": spec.labels}
        try:
            response = await self._http.post(host.url + HOSTED_PATH, json=body)
        except httpx.HTTPError as error:
            await self._stop_if_idle(host)
            raise ServiceStartError(f"{host.spec.name} unreachable: {error!r}") from error
        if response.status_code != 201:
            await self._stop_if_idle(host)
            raise ServiceStartError(
                f"{host.spec.name} would not host {spec.name}: "
                f"{response.status_code} {response.text[:500]}"
            )
        self._hosted[spec.kind].add(spec.name)
        return self._handle(host, spec)

    async def wait_ready(self, handle: ServiceHandle, *, timeout: float) -> None:
        host = self._hosts.get(handle.spec.kind)
        if host is None:
            raise ServiceStartError(f"{handle.spec.name}: its host is gone")
        await poll_until_ready(
            self._http,
            handle,
            timeout=timeout,
            problem=lambda: None,  # a failed load shows in the ready answer itself
            log_tail=lambda: f"(hosted in {host.spec.name}; its log has the details)",
        )

    async def stop(self, handle: ServiceHandle) -> None:
        kind = handle.spec.kind
        host = self._hosts.get(kind)
        if not _is_hosted(handle):
            await self.inner.stop(handle)  # started before hosting, or a host itself
            return
        if host is None or not handle.url.startswith(host.url + HOSTED_PREFIX):
            handle.state = ServiceState.STOPPED  # its host is gone, and it with it
            return
        with contextlib.suppress(httpx.HTTPError):  # a dead host hosts nothing any more
            await self._http.delete(f"{host.url}{HOSTED_PATH}/{handle.spec.name}")
        handle.state = ServiceState.STOPPED
        self._hosted[kind].discard(handle.spec.name)
        await self._stop_if_idle(host)

    async def discover(self) -> list[ServiceHandle]:
        """The wrapped backend's services, with each host replaced by what it hosts."""
        found = []
        for handle in await self.inner.discover():
            kind = handle.spec.kind
            if handle.spec.labels.get("neukonfig.role") != HOST_ROLES.get(kind):
                found.append(handle)
                continue
            try:
                response = await self._http.get(handle.url + HOSTED_PATH)
                listing = response.json()
            except (httpx.HTTPError, ValueError):
                await self.inner.stop(handle)  # a host that cannot say what it hosts
                continue
            self._hosts[kind] = handle
            for entry in listing:
                spec = ServiceSpec(kind, entry["name"], entry["settings"], entry["labels"])
                self._hosted[kind].add(spec.name)
                found.append(self._handle(handle, spec))
        return found

    async def memory_bytes(self, handle: ServiceHandle) -> int | None:
        """A hosted partition's even share of its host's memory (the sum over them is
        the host's)."""
        host = self._hosts.get(handle.spec.kind)
        if not _is_hosted(handle):
            return await self.inner.memory_bytes(handle)
        if host is None or not handle.url.startswith(host.url + HOSTED_PREFIX):
            return None
        total = await self.inner.memory_bytes(host)
        return None if total is None else total // max(len(self._hosted[handle.spec.kind]), 1)

    async def added_bytes(self, kind: ServiceKind) -> int | None:
        """A new hosted partition maps the weights its host's sessions already map (one
        ``weights.bin``, the rewritten ones too: ``models.optimized``), so what it adds
        is its own session: reckoned as the anonymous memory the host's partitions hold
        beyond the host's floor, shared out over them. The mapped weights are clean file
        pages the kernel can reclaim, not what runs a device out of memory. None when
        the host cannot say."""
        host = self._hosts.get(kind)
        if host is None:
            return None
        try:
            response = await self._http.get(host.url + HOST_MEMORY_PATH)
            memory = response.raise_for_status().json()
            held = memory["anonymous_bytes"] - memory["anonymous_floor_bytes"]
            return max(int(held), 0) // max(int(memory["hosted"]), 1)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None  # an older host, or a kernel without Pss_Anon (None - None)

    async def close(self) -> None:
        await self._http.aclose()
        await self.inner.close()

    # -- hosts ---------------------------------------------------------------------------

    async def _stop_if_idle(self, host: ServiceHandle) -> None:
        """Stop ``host`` once it hosts nothing (a host lives while it hosts something)."""
        kind = host.spec.kind
        async with self._starting:
            if not self._hosted[kind] and self._hosts.get(kind) is host:
                del self._hosts[kind]
                await self.inner.stop(host)

    async def _alive(self, host: ServiceHandle) -> bool:
        try:
            return (await self._http.get(host.url + LIVE_PATH, timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _host_for(self, spec: ServiceSpec) -> ServiceHandle:
        async with self._starting:
            host = self._hosts.get(spec.kind)
            if host is not None and await self._alive(host):
                return host
            if host is not None:  # dead (killed, or hung): what it hosted went with it
                del self._hosts[spec.kind]
                self._hosted[spec.kind].clear()
                await self.inner.stop(host)
            role = HOST_ROLES[spec.kind]
            settings = {k: v for k, v in spec.settings.items() if k in HOST_SETTINGS}
            if spec.kind is ServiceKind.EDGE_PARTITION:
                settings["threads"] = str(self.edge_host_threads)
            host_spec = ServiceSpec(
                spec.kind,
                f"{self.model}-{role}",
                {**settings, "hosting": "true"},
                {"neukonfig.model": self.model, "neukonfig.role": role},
            )
            host = await self.inner.start(host_spec)
            try:
                await self.inner.wait_ready(host, timeout=self.start_timeout_s)
            except BaseException:
                await self.inner.stop(host)
                raise
            self._hosts[spec.kind] = host
            return host

    @staticmethod
    def _handle(host: ServiceHandle, spec: ServiceSpec) -> ServiceHandle:
        return ServiceHandle(
            spec, f"{host.url}{HOSTED_PREFIX}/{spec.name}", f"{host.backend_id}/{spec.name}"
        )


def _is_hosted(handle: ServiceHandle) -> bool:
    return urlsplit(handle.url).path.startswith(HOSTED_PREFIX + "/")

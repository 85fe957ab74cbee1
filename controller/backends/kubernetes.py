"""The ``kubernetes`` backend: each partition service is one Deployment plus one ClusterIP
Service, built by ``kubernetes_objects`` and sent with the official client.

The client is blocking, so every call runs in a thread, and it is imported lazily: the
rest of the controller does not need it. Not verified against a live cluster: none can
run where this was written; see docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from controller.backends.base import (
    Backend,
    ServiceHandle,
    ServiceSpec,
    ServiceStartError,
    ServiceState,
)
from controller.backends.kubernetes_objects import (
    CONTAINER,
    INSTANCE_LABEL,
    LOG_TAIL_LINES,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PORTS,
    TRANSIENT_STATUSES,
    KubernetesBackendSettings,
    KubernetesError,
    container_states,
    deployment_manifest,
    describe,
    fatal_problem,
    handle_from_deployment,
    log,
    ready_replicas,
    service_manifest,
    service_url,
)
from neukonfig.tls import tls_http_client


def _import_kubernetes() -> Any:
    try:
        import kubernetes
        import kubernetes.client.exceptions
        import kubernetes.config
    except ImportError as error:
        raise KubernetesError(
            "the kubernetes backend needs the `kubernetes` package: "
            "pip install 'neukonfig[kubernetes]'"
        ) from error
    return kubernetes


def _load_api_client(k8s: Any, settings: KubernetesBackendSettings) -> Any:
    """In a pod: its ServiceAccount. Elsewhere: a kubeconfig file."""
    try:
        k8s.config.load_incluster_config()
    except k8s.config.ConfigException:
        try:
            k8s.config.load_kube_config(config_file=settings.kubeconfig)
        except (k8s.config.ConfigException, OSError, TypeError, ValueError) as error:
            raise KubernetesError(
                "no Kubernetes credentials: not in a pod with a ServiceAccount, and no "
                f"usable kubeconfig ({error}); set NEUKONFIG_K8S_KUBECONFIG"
            ) from error
    return k8s.client.ApiClient()


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesBackendSettings,
        *,
        api_client: Any = None,
        tls_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._k8s = _import_kubernetes()
        self._api_client = api_client or _load_api_client(self._k8s, settings)
        self._apps = self._k8s.client.AppsV1Api(self._api_client)
        self._core = self._k8s.client.CoreV1Api(self._api_client)
        self._http = tls_http_client(tls_dir, timeout=2.0)
        import urllib3  # the client's transport: its errors mean "API server unreachable"

        self._unreachable = (urllib3.exceptions.HTTPError, OSError)

    @classmethod
    def from_env(cls, *, tls_dir: Path | None = None) -> KubernetesBackend:
        """Settings from ``NEUKONFIG_K8S_*``; credentials from the pod or a kubeconfig.
        ``tls_dir``: the edge's certificates, to check cloud partitions that serve TLS."""
        return cls(KubernetesBackendSettings(), tls_dir=tls_dir)

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    async def start(self, spec: ServiceSpec) -> ServiceHandle:
        deployment = deployment_manifest(spec, self.settings)
        name = deployment["metadata"]["name"]
        created = await self._call(
            self._apps.create_namespaced_deployment,
            self.namespace,
            self._body("V1Deployment", deployment),
        )
        try:
            service = service_manifest(spec, self.settings, owner_uid=created.metadata.uid)
            await self._call(
                self._core.create_namespaced_service,
                self.namespace,
                self._body("V1Service", service),
            )
        except BaseException:
            with contextlib.suppress(KubernetesError):  # the first error is the one to report
                await self._delete(name)  # leave nothing behind a failed start
            raise
        url = service_url(name, self.namespace, PORTS[spec.kind], spec.kind.scheme(spec.settings))
        return ServiceHandle(spec, url, name)

    async def wait_ready(self, handle: ServiceHandle, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                state, reason = await self._poll(handle)
            except KubernetesError as error:
                if error.api_status not in TRANSIENT_STATUSES:
                    raise await self._failed(handle, error.message) from error
                # A busy or briefly unreachable API server: wait on, up to the deadline.
                state, reason = ServiceState.STARTING, error.message
            if state is ServiceState.READY:
                handle.state = state
                return
            if state is ServiceState.FAILED:
                raise await self._failed(handle, reason)
            if time.monotonic() >= deadline:
                raise await self._failed(handle, f"not ready after {timeout:g} s ({reason})")
            await asyncio.sleep(self.settings.poll_s)

    async def stop(self, handle: ServiceHandle) -> None:
        await self._delete(handle.backend_id)
        await self._wait_gone(handle.backend_id)
        handle.state = ServiceState.STOPPED

    async def discover(self) -> list[ServiceHandle]:
        listed = await self._call(
            self._apps.list_namespaced_deployment,
            self.namespace,
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        )
        handles = []
        for item in self._plain(listed).get("items", []):
            handle = handle_from_deployment(item)
            if handle is None:
                log.warning("skipping deployment %s: deleting or no spec", item["metadata"]["name"])
                continue
            handles.append(handle)
        return handles

    async def memory_bytes(self, handle: ServiceHandle) -> int | None:
        # Would need metrics-server (metrics.k8s.io), which a cluster need not have; the
        # memory budget then treats partition memory as unknown.
        return None

    async def close(self) -> None:
        await self._http.aclose()
        await asyncio.to_thread(self._api_client.close)

    async def _poll(self, handle: ServiceHandle) -> tuple[ServiceState, str]:
        """READY; FAILED with the reason it never will be; or STARTING while it still may."""
        name = handle.backend_id
        deployment = await self._read_deployment(name)
        if deployment is None:
            return ServiceState.FAILED, "its deployment is gone"
        if ready_replicas(deployment) >= 1:
            if await self._answers(handle):
                return ServiceState.READY, ""
            return ServiceState.STARTING, f"its pod is ready but {handle.url} does not answer"
        problem = fatal_problem(deployment, await self._pods(name))
        if problem is not None:
            return ServiceState.FAILED, problem
        return ServiceState.STARTING, "no ready pod yet"

    async def _answers(self, handle: ServiceHandle) -> bool:
        """Whether the Service routes to it yet: endpoints lag pod readiness a little, and
        the gateway checks a pipeline through the same name before it registers it."""
        if not self.settings.check_service_url:
            return True
        try:
            response = await self._http.get(handle.url + handle.spec.kind.ready_path)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _failed(self, handle: ServiceHandle, reason: str) -> ServiceStartError:
        handle.state = ServiceState.FAILED
        details = "\n".join(await self._diagnostics(handle.backend_id))
        return ServiceStartError(f"{handle.spec.name} ({handle.backend_id}): {reason}\n{details}")

    async def _diagnostics(self, name: str) -> list[str]:
        try:
            deployment, pods = await self._read_deployment(name), await self._pods(name)
        except KubernetesError as error:
            return [f"(no diagnostics: {error.message})"]
        lines = describe(deployment, pods)
        for pod in pods[:2]:
            lines += await self._log_tail(pod)
        return lines

    async def _log_tail(self, pod: dict[str, Any]) -> list[str]:
        name = pod["metadata"]["name"]
        states = [c for c in container_states(pod) if c.get("name") == CONTAINER]
        # After a crash the current container has no output yet; the previous one has it.
        restarted = bool(states) and states[0].get("restartCount", 0) > 0
        previous = restarted and "running" not in (states[0].get("state") or {})
        try:
            text = await self._call(
                self._core.read_namespaced_pod_log,
                name,
                self.namespace,
                container=CONTAINER,
                tail_lines=LOG_TAIL_LINES,
                previous=previous,
            )
        except KubernetesError as error:
            return [f"(no log of {name}: {error.message})"]
        return [f"log of {name}{' (previous)' if previous else ''}:", *str(text).splitlines()]

    async def _read_deployment(self, name: str) -> dict[str, Any] | None:
        found = await self._call(
            self._apps.read_namespaced_deployment, name, self.namespace, missing_ok=True
        )
        return None if found is None else self._plain(found)

    async def _pods(self, name: str) -> list[dict[str, Any]]:
        listed = await self._call(
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{INSTANCE_LABEL}={name}",
        )
        return list(self._plain(listed).get("items", []))

    async def _delete(self, name: str) -> None:
        """Delete both objects; a missing one is fine (stop is idempotent). Foreground: the
        Deployment goes only once its pods are gone, which ``_wait_gone`` waits for."""
        await self._call(
            self._apps.delete_namespaced_deployment,
            name,
            self.namespace,
            propagation_policy="Foreground",
            missing_ok=True,
        )
        await self._call(
            self._core.delete_namespaced_service, name, self.namespace, missing_ok=True
        )

    async def _wait_gone(self, name: str) -> None:
        deadline = time.monotonic() + self.settings.stop_timeout_s
        while await self._read_deployment(name) is not None:
            if time.monotonic() >= deadline:
                log.warning("%s still terminating after %g s", name, self.settings.stop_timeout_s)
                return
            await asyncio.sleep(self.settings.poll_s)

    def _body(self, model: str, manifest: dict[str, Any]) -> Any:
        # Newer clients type request bodies as pydantic models; older ones take dicts.
        cls = getattr(self._k8s.client, model)
        return cls.from_dict(manifest) if hasattr(cls, "from_dict") else manifest

    def _plain(self, obj: Any) -> dict[str, Any]:
        """An API object as the API's own JSON (camelCase), for the pure functions above."""
        return self._api_client.sanitize_for_serialization(obj)

    async def _call(
        self, call: Callable[..., Any], *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """Run a blocking client call in a thread; map its errors to ``KubernetesError``
        (404 to None with ``missing_ok``)."""
        api_error = self._k8s.client.exceptions.ApiException
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except api_error as error:
            if missing_ok and error.status == 404:
                return None
            raise KubernetesError(
                f"{call.__name__}: {error.status} {_api_message(error)}", api_status=error.status
            ) from error
        except self._unreachable as error:
            raise KubernetesError(f"{call.__name__}: API server unreachable: {error}") from error

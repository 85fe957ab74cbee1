"""The ``docker`` backend: partition services as containers, through the Docker SDK.

Used by ``docker compose up`` (docker-compose.yml): the controller runs in a container
with the engine's socket and starts one container per partition service, from the
edge and cloud images, on the controller's own network and with its ``/data`` volume
(found by inspecting the controller's container, or given in settings).

- Every container carries labels: the spec's (``neukonfig.model``, ``.cut``, ``.role``,
  ``.pipeline``), ``neukonfig.managed-by``, the instance (the compose project), and the
  spec itself as JSON, so a restarted controller finds and adopts them (``discover``).
- Readiness is the service's own health endpoint, polled over HTTP as the image's
  HEALTHCHECK does, but every 50 ms instead of every 5 s: a switch waits on it.
- A container that exits, or whose engine health check turns unhealthy, fails the start
  with its last log lines; ``stop`` stops and removes it (idempotent).
- URLs are container IP addresses on the network, reachable from the gateway, the
  controller and Prometheus alike. With ``cloud_docker_host`` (the server's engine,
  ``tcp://server:2376`` over TLS, or ``ssh://user@server``) cloud containers run on the
  server's engine, with its volume ``cloud_data_volume``, publish their port and are
  reached at ``cloud_public_host``.
- With certificates (a spec's ``tls_dir``, ``neukonfig.tls``) the side's files are
  copied into each container through the engine's API, and cloud URLs are https.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.backends.base import (
    Backend,
    ServiceHandle,
    ServiceSpec,
    ServiceStartError,
    ServiceState,
    poll_until_ready,
    spec_from_record,
    spec_record,
)
from controller.backends.local import ServiceKind
from neukonfig.errors import NeukonfigError
from neukonfig.tls import CA_FILE, CERT_FILE, KEY_FILE, tls_http_client

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

MANAGED_BY = "neukonfig.managed-by"
MANAGER = "neukonfig-controller"
INSTANCE = "neukonfig.instance"
SPEC = "neukonfig.spec"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_LABELS = "com.docker.compose."
POLL_S = 0.05
# Where a container finds its side's certificates, and the user the images run as.
TLS_MOUNT = "/run/neukonfig/tls"
IMAGE_UID = 10001
PORTS = {ServiceKind.EDGE_PARTITION: 8100, ServiceKind.CLOUD_PARTITION: 8200}
COMMANDS = {
    ServiceKind.EDGE_PARTITION: ["python", "-m", "edge_service", "partition"],
    ServiceKind.CLOUD_PARTITION: ["python", "-m", "cloud_service"],
}


class DockerBackendSettings(BaseSettings):
    """``NEUKONFIG_DOCKER_*``. Unset network, volume and instance are taken from the
    controller's own container (docker compose), so the compose file names them once."""

    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_DOCKER_")

    edge_image: str = "neukonfig-edge:latest"
    cloud_image: str = "neukonfig-cloud:latest"
    network: str | None = Field(default=None, description="Network the partitions join")
    data_volume: str | None = Field(default=None, description="Volume with the partitions")
    data_mount: str = Field(default="/data", description="Where partition_dir paths live")
    cloud_data_volume: str | None = Field(
        default=None,
        description="With cloud_docker_host: the volume on the cloud engine that holds the "
        "same partitions (`neukonfig prepare --side cloud` there); unset: data_volume's name",
    )
    instance: str | None = Field(default=None, description="Label scoping discovery")
    cloud_docker_host: str | None = Field(
        default=None,
        description="Engine for cloud partitions: tcp://server:2376 (with cloud_docker_cert_path) "
        "or ssh://user@server",
    )
    cloud_docker_cert_path: Path | None = Field(
        default=None,
        description="For a tcp:// cloud engine, its DOCKER_CERT_PATH: ca.pem, cert.pem and key.pem "
        "(the edge's directory from `neukonfig certs`, when the server's engine runs with "
        "the cloud's). Its API is never used over plain TCP",
    )
    cloud_public_host: str | None = Field(
        default=None, description="Address of the cloud engine's host, as the edge reaches it"
    )
    stop_timeout_s: int = Field(default=10, ge=0)


class DockerBackend(Backend):
    name = "docker"

    def __init__(
        self,
        settings: DockerBackendSettings,
        *,
        edge_client: DockerClient | None = None,
        cloud_client: DockerClient | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        """``tls_dir``: the edge's certificates, to check cloud partitions that serve
        mutual TLS (the directory a spec's ``tls_dir`` names is copied into its container)."""
        docker = _import_docker()
        try:
            self.edge_engine = edge_client or docker.from_env()
            self.cloud_engine = cloud_client or (
                _remote_engine(settings.cloud_docker_host, settings.cloud_docker_cert_path)
                if settings.cloud_docker_host
                else self.edge_engine
            )
            self.edge_engine.ping()
            if self.remote_cloud:
                self.cloud_engine.ping()
        except docker.errors.DockerException as error:
            raise NeukonfigError(_unreachable_engine(error)) from None
        if settings.cloud_docker_host and not settings.cloud_public_host:
            raise NeukonfigError(
                "NEUKONFIG_DOCKER_CLOUD_PUBLIC_HOST is required with CLOUD_DOCKER_HOST: "
                "the address at which edge partitions reach the cloud host"
            )
        self.settings = _fill_from_own_container(settings, self.edge_engine)
        self._http = tls_http_client(tls_dir, timeout=2.0)

    @property
    def remote_cloud(self) -> bool:
        return self.cloud_engine is not self.edge_engine

    async def start(self, spec: ServiceSpec) -> ServiceHandle:
        container = await asyncio.to_thread(self._run, spec)
        url = await asyncio.to_thread(self._url, container, spec)
        return ServiceHandle(spec, url, container.id)

    async def wait_ready(self, handle: ServiceHandle, *, timeout: float) -> None:
        await poll_until_ready(
            self._http,
            handle,
            timeout=timeout,
            problem=lambda: self._problem(handle),
            log_tail=lambda: self._logs(handle),
            poll_s=POLL_S,
        )

    async def stop(self, handle: ServiceHandle) -> None:
        await asyncio.to_thread(self._remove, handle)
        handle.state = ServiceState.STOPPED

    async def discover(self) -> list[ServiceHandle]:
        return await asyncio.to_thread(self._discover)

    async def memory_bytes(self, handle: ServiceHandle) -> int | None:
        return await asyncio.to_thread(self._memory, handle)

    async def close(self) -> None:
        await self._http.aclose()

    def _engine(self, kind: ServiceKind) -> DockerClient:
        return self.cloud_engine if kind is ServiceKind.CLOUD_PARTITION else self.edge_engine

    def _run(self, spec: ServiceSpec) -> Container:
        settings = self.settings
        port = PORTS[spec.kind]
        # In a container the service listens on all interfaces, on the port it exposes,
        # and finds its certificates where _copy_tls_dir puts them.
        tls_dir = spec.settings.get("tls_dir")
        service_settings = {**spec.settings, **({"tls_dir": TLS_MOUNT} if tls_dir else {})}
        environment = spec.kind.environment(service_settings, host="0.0.0.0", port=port)
        on_cloud = spec.kind is ServiceKind.CLOUD_PARTITION
        image = settings.cloud_image if on_cloud else settings.edge_image
        labels = {
            **self._compose_labels_blanked(spec.kind, image),
            **spec.labels,
            MANAGED_BY: MANAGER,
            SPEC: json.dumps(spec_record(spec)),
        }
        if settings.instance:
            labels[INSTANCE] = settings.instance
        options: dict[str, Any] = {"network": settings.network}
        volume = settings.data_volume
        if on_cloud and self.remote_cloud:
            # The edge's network is not on the cloud's engine: the engine's default one,
            # with the port published on the cloud host (read back in _url).
            options = {"ports": {f"{port}/tcp": None}}
            volume = settings.cloud_data_volume or volume
        if volume:
            options["volumes"] = {volume: {"bind": settings.data_mount, "mode": "ro"}}
        try:
            container = self._engine(spec.kind).containers.create(
                image,
                COMMANDS[spec.kind],
                name=spec.name,
                environment=environment,
                labels=labels,
                **options,
            )
            if tls_dir:
                _copy_tls_dir(container, Path(tls_dir))
            container.start()
            return container
        except (_import_docker().errors.DockerException, OSError) as error:
            raise ServiceStartError(f"cannot start container {spec.name}: {error}") from None

    def _compose_labels_blanked(self, kind: ServiceKind, image: str) -> dict[str, str]:
        """The image's ``com.docker.compose.*`` labels, emptied. Images that compose built
        carry them (``com.docker.compose.service=gateway`` on the edge image), a container
        inherits its image's labels, and compose would take a partition container for one
        of its own services. A container cannot drop an inherited label, only override it."""
        try:
            inherited = self._engine(kind).images.get(image).labels or {}
        except _import_docker().errors.DockerException:
            return {}  # the start itself will say what is wrong with the image
        return {key: "" for key in inherited if key.startswith(COMPOSE_LABELS)}

    def _url(self, container: Container, spec: ServiceSpec) -> str:
        kind, spec_settings = spec.kind, spec.settings
        container.reload()
        network = container.attrs["NetworkSettings"]
        scheme = kind.scheme(spec_settings)
        if kind is ServiceKind.CLOUD_PARTITION and self.remote_cloud:
            published = network["Ports"][f"{PORTS[kind]}/tcp"][0]["HostPort"]
            return f"{scheme}://{self.settings.cloud_public_host}:{published}"
        address = network["Networks"][self.settings.network]["IPAddress"]
        return f"{scheme}://{address}:{PORTS[kind]}"

    def _container(self, handle: ServiceHandle) -> Container | None:
        errors = _import_docker().errors
        try:
            return self._engine(handle.spec.kind).containers.get(handle.backend_id)
        except errors.NotFound:
            return None

    def _problem(self, handle: ServiceHandle) -> str | None:
        """Why a starting container will never be ready, or None while it still may be."""
        container = self._container(handle)
        if container is None:
            return "was removed"
        state = container.attrs["State"]
        if state["Status"] in ("exited", "dead"):
            return f"exited with status {state.get('ExitCode')}"
        if state.get("Health", {}).get("Status") == "unhealthy":
            return "is unhealthy"
        return None

    def _logs(self, handle: ServiceHandle) -> str:
        container = self._container(handle)
        if container is None:
            return "(no container)"
        return container.logs(tail=20).decode(errors="replace")

    def _remove(self, handle: ServiceHandle) -> None:
        errors = _import_docker().errors
        container = self._container(handle)
        if container is None:
            return
        try:
            container.stop(timeout=self.settings.stop_timeout_s)
            container.remove(force=True)
        except errors.NotFound:
            pass

    def _discover(self) -> list[ServiceHandle]:
        engines = [self.edge_engine] + ([self.cloud_engine] if self.remote_cloud else [])
        found = []
        for engine in engines:
            for container in engine.containers.list(all=True, filters={"label": self._scope()}):
                spec = spec_from_record(json.loads(container.labels[SPEC]))
                if container.status != "running":  # left over from a crash: clean it up
                    container.remove(force=True)
                    continue
                handle = ServiceHandle(spec, self._url(container, spec), container.id)
                handle.state = ServiceState.READY
                found.append(handle)
        return found

    def _scope(self) -> list[str]:
        scope = [f"{MANAGED_BY}={MANAGER}"]
        if self.settings.instance:
            scope.append(f"{INSTANCE}={self.settings.instance}")
        return scope

    def _memory(self, handle: ServiceHandle) -> int | None:
        container = self._container(handle)
        if container is None:
            return None
        stats = container.stats(stream=False, one_shot=True).get("memory_stats", {})
        if "usage" not in stats:
            return None
        # Page cache (the memory-mapped weights.bin among it) is reclaimable and shared:
        # leave it out, as ``docker stats`` does.
        details = stats.get("stats", {})
        cache = details.get("inactive_file", details.get("total_inactive_file", 0))
        return int(stats["usage"]) - int(cache)


def _copy_tls_dir(container: Container, source: Path) -> None:
    """Put a side's certificates (``neukonfig.tls``) into a created container, owned by the
    user the images run as, the key readable by that user only. Copied through the engine's
    API rather than bind-mounted, so the files need not exist on the engine's host (a
    remote cloud engine reached over TLS)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for directory in ("neukonfig", "neukonfig/tls"):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        for name in (CA_FILE, CERT_FILE, KEY_FILE):
            content = (source / name).read_bytes()
            entry = tarfile.TarInfo(f"neukonfig/tls/{name}")
            entry.size, entry.uid, entry.gid = len(content), IMAGE_UID, IMAGE_UID
            entry.mode = 0o400 if name == KEY_FILE else 0o444
            tar.addfile(entry, io.BytesIO(content))
    container.put_archive(str(Path(TLS_MOUNT).parent.parent), archive.getvalue())


# The oldest Engine API the backend needs (Docker 20.10), so no version query is made
# before the client is set up (below).
API_VERSION = "1.41"


def tls_engine(host: str, cert_path: Path) -> DockerClient:
    """A client of the engine at ``tcp://host:port`` over TLS with the client certificate
    in ``cert_path`` (Docker's DOCKER_CERT_PATH layout: ca.pem, cert.pem, key.pem)."""
    docker = _import_docker()
    tls = docker.tls.TLSConfig(
        client_cert=(str(cert_path / CERT_FILE), str(cert_path / KEY_FILE)),
        ca_cert=str(cert_path / CA_FILE),
        verify=True,
    )
    client = docker.DockerClient(base_url=host, tls=tls, version=API_VERSION)
    # requests puts REQUESTS_CA_BUNDLE from the environment before the CA the client was
    # given (psf/requests#3829), and that bundle never holds a deployment's own CA.
    client.api.trust_env = False
    return client


def _remote_engine(host: str, cert_path: Path | None) -> DockerClient:
    if host.startswith("tcp://"):
        if cert_path is None:
            raise NeukonfigError(
                f"the cloud engine {host} is reached over TLS only: set "
                "NEUKONFIG_DOCKER_CLOUD_DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
            )
        return tls_engine(host, cert_path)
    return _import_docker().DockerClient(base_url=host)


def _import_docker() -> Any:
    try:
        import docker
    except ImportError:
        raise NeukonfigError(
            "the docker backend needs the Docker SDK: pip install 'neukonfig[docker]'"
        ) from None
    return docker


def _fill_from_own_container(
    settings: DockerBackendSettings, engine: DockerClient
) -> DockerBackendSettings:
    """Network, data volume and instance from the controller's own container, when unset."""
    if settings.network and settings.data_volume and settings.instance:
        return settings
    try:
        own = engine.containers.get(socket.gethostname())
    except _import_docker().errors.DockerException:
        own = None  # not in a container (tests, a controller on the host)
    if own is None:
        if not settings.network:
            raise NeukonfigError(
                "NEUKONFIG_DOCKER_NETWORK is required when the controller is not itself a "
                "container on that network"
            )
        return settings
    mounts = {m["Destination"]: m.get("Name") for m in own.attrs.get("Mounts", [])}
    networks = list(own.attrs["NetworkSettings"]["Networks"])
    return settings.model_copy(
        update={
            "network": settings.network or networks[0],
            "data_volume": settings.data_volume or mounts.get(settings.data_mount),
            "instance": settings.instance or own.labels.get(COMPOSE_PROJECT),
        }
    )


def _unreachable_engine(error: Exception) -> str:
    """Why the engine is out of reach, and for the usual cause in compose (the socket's
    group is not the controller's) what to do about it."""
    message = f"cannot reach the Docker engine: {error}"
    if "Permission denied" not in str(error):
        return message
    socket_path = "/var/run/docker.sock"
    try:
        group = os.stat(socket_path).st_gid
    except OSError:
        return message
    return (
        f"{message}. The controller runs as uid {os.getuid()} in groups "
        f"{sorted(os.getgroups())}, and {socket_path} belongs to group {group}: set "
        f"DOCKER_GID={group} in .env (./dev compose-env does, with the engine running) "
        "and recreate the controller (docker compose up -d controller)"
    )

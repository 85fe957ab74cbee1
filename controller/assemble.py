"""Build a Controller from settings: backend by name, planner from profiles, clients."""

from __future__ import annotations

from controller.backends.base import Backend
from controller.backends.hosted import HostedBackend
from controller.backends.process import ProcessBackend
from controller.core import Controller
from controller.gateway_client import GatewayClient
from controller.pipelines import DirectLink, Link, PipelineLauncher
from controller.settings import ControllerSettings
from models.planner import CodecBudget, load_planner
from neukonfig.errors import UnsupportedModelError
from neukonfig.manifest import read_manifest

BACKENDS = ("process", "docker", "kubernetes")


def make_backend(settings: ControllerSettings) -> Backend:
    """The backend by name; docker and kubernetes take their own NEUKONFIG_DOCKER_* and
    NEUKONFIG_K8S_* settings, and their SDKs are imported only when chosen."""
    if settings.backend == "process":
        return ProcessBackend(state_dir=settings.state_dir, tls_dir=settings.tls_dir)
    if settings.backend == "docker":
        from controller.backends.docker import DockerBackend, DockerBackendSettings

        return DockerBackend(DockerBackendSettings(), tls_dir=settings.tls_dir)
    if settings.backend == "kubernetes":
        from controller.backends.kubernetes import KubernetesBackend

        return KubernetesBackend.from_env(tls_dir=settings.tls_dir)
    raise UnsupportedModelError(
        f"unknown backend {settings.backend!r}; available: {', '.join(BACKENDS)}"
    )


def build_controller(
    settings: ControllerSettings, *, link: Link | None = None, backend: Backend | None = None
) -> Controller:
    manifest = read_manifest(settings.partition_dir)
    planner = load_planner(
        settings.partition_dir,
        edge_profile=settings.edge_profile,
        cloud_profile=settings.cloud_profile,
        budget=CodecBudget(settings.max_top1_disagreement),
    )
    token = settings.internal_token.get_secret_value() if settings.internal_token else None
    backend = backend or make_backend(settings)
    if settings.hosted_partitions:
        backend = HostedBackend(
            backend,
            model=settings.model_name,
            start_timeout_s=settings.start_timeout_s,
            internal_token=token,
            edge_host_threads=settings.edge_host_threads,
            tls_dir=settings.tls_dir,
        )
    launcher = PipelineLauncher(
        backend=backend,
        link=link or DirectLink(),
        partition_dir=settings.partition_dir,
        model=settings.model_name,
        last_cut=manifest.num_cuts - 1,
        edge_threads=settings.edge_threads,
        cloud_threads=settings.cloud_threads,
        start_timeout_s=settings.start_timeout_s,
        edge_slowdown=settings.edge_slowdown,
        edge_max_queue_wait_s=settings.edge_max_queue_wait_s,
        internal_token=token,
        edge_tls_dir=settings.tls_dir,
        cloud_tls_dir=settings.cloud_tls_dir,
    )
    gateway = GatewayClient(settings.gateway_url, token=settings.token)
    return Controller(settings, launcher=launcher, planner=planner, gateway=gateway)

"""What the ``kubernetes`` backend sends: one Deployment plus one ClusterIP Service per
partition service, built as plain dicts by pure functions (no client needed).

Objects are built by pure functions (``deployment_manifest``, ``service_manifest``) that
return plain dicts in the API's own (camelCase) form, so tests validate them against the
Kubernetes schemas without a cluster. ``KubernetesBackend`` only sends them and reads
status back. The official ``kubernetes`` client is blocking, so every call runs in a
thread, and it is imported lazily: the rest of the controller does not need it.

Edge partitions are pinned to edge nodes and cloud partitions (the probe included) to
cloud nodes by node selectors from ``KubernetesBackendSettings``. Every object carries
``app.kubernetes.io/managed-by: neukonfig-controller``, and the Deployment stores the
spec as a JSON annotation, so a restarted controller rebuilds its handles (``discover``).

Not verified against a live cluster: none can run where this was written. The manifests
were validated offline (tests/k8s/test_manifests.py); see docs/kubernetes.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controller.backends.base import (
    ServiceHandle,
    ServiceKind,
    ServiceSpec,
    ServiceStartError,
    ServiceState,
    spec_from_record,
    spec_record,
)

log = logging.getLogger("neukonfig.controller.kubernetes")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "neukonfig-controller"
INSTANCE_LABEL = "app.kubernetes.io/instance"  # one service's objects: the selector
SPEC_ANNOTATION = "neukonfig.io/spec"
CONTAINER = "partition"
PORTS = {ServiceKind.EDGE_PARTITION: 8100, ServiceKind.CLOUD_PARTITION: 8200}
LIVE_PATH = "/health/live"
DNS_LABEL_MAX = 63
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
# A pod waiting for one of these will not recover by itself: fail now, not at the timeout.
# (ImagePullBackOff is left out: a registry hiccup is often transient.)
FATAL_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)
# Answers worth retrying while waiting: the API server is busy or briefly unreachable.
TRANSIENT_STATUSES = frozenset({None, 429, 500, 502, 503, 504})
LOG_TAIL_LINES = 20


class KubernetesError(ServiceStartError):
    """The Kubernetes API refused a call or could not be reached."""

    def __init__(self, message: str, *, api_status: int | None = None) -> None:
        super().__init__(message)
        self.api_status = api_status


def _parse_selector(value: object) -> object:
    """``"key=value,key2=value2"`` (env form), a JSON object, or a dict; ``""`` is none."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    pairs = [item.strip() for item in text.split(",") if item.strip()]
    if any("=" not in pair for pair in pairs):
        raise ValueError(f"node selector must be key=value[,key=value...], got {value!r}")
    return dict(pair.split("=", 1) for pair in pairs)


Selector = Annotated[dict[str, str], NoDecode]
EDGE_TAINT = {"key": "neukonfig.io/role", "operator": "Equal", "value": "edge"}


class KubernetesBackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEUKONFIG_K8S_")

    namespace: str = Field(default="neukonfig", description="Where partition services run")
    kubeconfig: str | None = Field(
        default=None, description="Outside a cluster: kubeconfig file (default ~/.kube/config)"
    )
    edge_image: str = "neukonfig-edge:latest"
    cloud_image: str = "neukonfig-cloud:latest"
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    data_claim: str = Field(default="neukonfig-data", description="PVC holding partitions")
    data_mount: str = Field(default="/data", description="Where the PVC is mounted")
    edge_node_selector: Selector = {"neukonfig.io/role": "edge"}
    cloud_node_selector: Selector = {"neukonfig.io/role": "cloud"}
    edge_tolerations: list[dict[str, str]] = [{**EDGE_TAINT, "effect": "NoSchedule"}]
    edge_resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "2Gi"},
    }
    cloud_resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "4Gi"},
    }
    run_as_user: int = Field(default=10001, ge=1, description="Partition pods never run as root")
    check_service_url: bool = Field(
        default=True,
        description="wait_ready also fetches the readiness path through the Service (needs "
        "cluster DNS: turn off when the controller runs outside the cluster)",
    )
    edge_tls_secret: str = Field(
        default="neukonfig-tls-edge",
        description="Secret with the edge's ca.pem, cert.pem and key.pem (`neukonfig certs`), "
        "mounted into edge partitions when the controller has a tls_dir",
    )
    cloud_tls_secret: str = Field(
        default="neukonfig-tls-cloud", description="The same for cloud partitions"
    )
    poll_s: float = Field(default=1.0, gt=0, description="Status polling period")
    stop_timeout_s: float = Field(default=60.0, ge=0, description="Bound on waiting for a delete")

    @field_validator("edge_node_selector", "cloud_node_selector", mode="before")
    @classmethod
    def _selector(cls, value: object) -> object:
        return _parse_selector(value)


# -- names and labels -------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def k8s_name(name: str) -> str:
    """A DNS-1035 label for ``name`` (Service names must be one): ``name`` itself when valid,
    else a cleaned, shortened form plus a hash of the original, so names never collide."""
    if len(name) <= DNS_LABEL_MAX and _DNS_1035.fullmatch(name):
        return name
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"n-{cleaned}"
    return f"{cleaned[: DNS_LABEL_MAX - 9].rstrip('-')}-{_digest(name)}"


def label_value(value: str) -> str:
    """A valid label value: ``value`` itself when valid, else cleaned plus a hash."""
    if len(value) <= DNS_LABEL_MAX and _LABEL_VALUE.fullmatch(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    return f"{cleaned[: DNS_LABEL_MAX - 9].rstrip('-_.')}-{_digest(value)}".lstrip("-")


def label_key(key: str) -> str:
    """A valid label key ``[prefix/]name``: a DNS subdomain prefix and a label-value name."""
    prefix, _, name = key.rpartition("/")
    name = label_value(name) or f"x-{_digest(key)}"
    parts = re.sub(r"[^a-z0-9.-]+", "-", prefix.lower()).split(".")
    parts = [part[:DNS_LABEL_MAX].strip("-") for part in parts]
    prefix = ".".join(part for part in parts if part)[:253].rstrip(".-")
    return f"{prefix}/{name}" if prefix else name


def service_url(name: str, namespace: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{name}.{namespace}.svc:{port}"


def _role(kind: ServiceKind) -> str:
    if kind not in PORTS:
        raise ValueError(f"the kubernetes backend runs partition services only, not {kind.value}")
    return "edge" if kind is ServiceKind.EDGE_PARTITION else "cloud"


def object_labels(spec: ServiceSpec) -> dict[str, str]:
    """The spec's labels made valid, plus the labels that find and select these objects."""
    labels = {label_key(key): label_value(value) for key, value in spec.labels.items()}
    return {
        **labels,
        "app.kubernetes.io/name": f"neukonfig-{_role(spec.kind)}-partition",
        "app.kubernetes.io/part-of": "neukonfig",
        INSTANCE_LABEL: k8s_name(spec.name),
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def selector(spec: ServiceSpec) -> dict[str, str]:
    return {INSTANCE_LABEL: k8s_name(spec.name), MANAGED_BY_LABEL: MANAGED_BY}


# -- the spec annotation, for discover -------------------------------------------------


def spec_annotation(spec: ServiceSpec) -> str:
    return json.dumps(spec_record(spec), sort_keys=True)


def spec_from_annotation(text: str) -> ServiceSpec:
    return spec_from_record(json.loads(text))


def handle_from_deployment(deployment: dict[str, Any]) -> ServiceHandle | None:
    """The handle of a Deployment this backend made (API dict form); None if it is being
    deleted or carries no readable spec."""
    metadata = deployment.get("metadata", {})
    if metadata.get("deletionTimestamp"):
        return None
    try:
        spec = spec_from_annotation(metadata["annotations"][SPEC_ANNOTATION])
        scheme = spec.kind.scheme(spec.settings)
        url = service_url(metadata["name"], metadata["namespace"], PORTS[spec.kind], scheme)
    except (KeyError, TypeError, ValueError):
        return None
    ready = ready_replicas(deployment) >= 1
    state = ServiceState.READY if ready else ServiceState.STARTING
    return ServiceHandle(spec, url, metadata["name"], state)


# -- manifests (pure) ------------------------------------------------------------------


# Where a pod finds its side's certificates (the Secret's files), when it has any.
TLS_MOUNT = "/run/neukonfig/tls"


def _env(spec: ServiceSpec, port: int) -> list[dict[str, str]]:
    # In a pod the service must listen on all interfaces, on the port its Service targets.
    settings = dict(spec.settings)
    if "tls_dir" in settings:
        settings["tls_dir"] = TLS_MOUNT
    names = spec.kind.environment(settings, host="0.0.0.0", port=port)
    return [{"name": name, "value": value} for name, value in sorted(names.items())]


def _tls_secret(spec: ServiceSpec, settings: KubernetesBackendSettings) -> str | None:
    if "tls_dir" not in spec.settings:
        return None
    edge = spec.kind is ServiceKind.EDGE_PARTITION
    return settings.edge_tls_secret if edge else settings.cloud_tls_secret


def _container(spec: ServiceSpec, settings: KubernetesBackendSettings) -> dict[str, Any]:
    edge = spec.kind is ServiceKind.EDGE_PARTITION
    port = PORTS[spec.kind]
    tls = spec.kind.scheme(spec.settings) == "https"
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": settings.data_mount, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if _tls_secret(spec, settings):
        mounts.append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
    return {
        "name": CONTAINER,
        "image": settings.edge_image if edge else settings.cloud_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", *spec.kind.module],
        "env": _env(spec, port),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Polled every second: a pipeline start waits on this, and so does a switch. Five
        # misses before "unready", so a busy one-core edge box is not taken out of service.
        # A service that demands client certificates cannot be asked by the kubelet, which
        # has none: its port is checked, and the controller reads its ready path itself.
        "readinessProbe": _probe(spec.kind.ready_path, period=1, failures=5, tls=tls),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=6, tls=tls),
        "resources": settings.edge_resources if edge else settings.cloud_resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def _probe(path: str, *, period: int, failures: int, tls: bool = False) -> dict[str, Any]:
    check = {"tcpSocket": {"port": "http"}} if tls else {"httpGet": {"path": path, "port": "http"}}
    return {
        **check,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _pod_spec(spec: ServiceSpec, settings: KubernetesBackendSettings) -> dict[str, Any]:
    edge = spec.kind is ServiceKind.EDGE_PARTITION
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # partitions never call the API
        # Service links would put e.g. NEUKONFIG_EDGE_PORT=tcp://... into the environment,
        # which the services' settings would read as their own port.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,  # the gateway drained it before the stop
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, settings)],
        "volumes": [
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": settings.data_claim, "readOnly": True},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    secret = _tls_secret(spec, settings)
    if secret:
        # Readable by the pod's group only (fsGroup): the key must not be world-readable.
        pod["volumes"].append(
            {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}}
        )
        pod["securityContext"]["fsGroup"] = settings.run_as_user
    node_selector = settings.edge_node_selector if edge else settings.cloud_node_selector
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if edge and settings.edge_tolerations:
        pod["tolerations"] = [dict(t) for t in settings.edge_tolerations]
    return pod


def deployment_manifest(spec: ServiceSpec, settings: KubernetesBackendSettings) -> dict[str, Any]:
    """The Deployment (one replica) that runs ``spec``'s service, in API dict form."""
    name = k8s_name(spec.name)
    labels = object_labels(spec)
    metrics = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORTS[spec.kind]),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {SPEC_ANNOTATION: spec_annotation(spec)},
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 0,  # never rolled: a new cut is a new Deployment
            "selector": {"matchLabels": selector(spec)},
            "template": {
                "metadata": {"labels": labels, "annotations": metrics},
                "spec": _pod_spec(spec, settings),
            },
        },
    }


def service_manifest(
    spec: ServiceSpec, settings: KubernetesBackendSettings, *, owner_uid: str | None = None
) -> dict[str, Any]:
    """The ClusterIP Service in front of ``spec``'s Deployment. With ``owner_uid`` (the
    Deployment's) it is garbage-collected with the Deployment even if a stop is cut short."""
    name = k8s_name(spec.name)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": settings.namespace,
        "labels": object_labels(spec),
    }
    if owner_uid:
        owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": owner_uid}
        metadata["ownerReferences"] = [owner]
    port = PORTS[spec.kind]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# -- status and diagnostics (pure, on API dicts) ---------------------------------------


def ready_replicas(deployment: dict[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def container_states(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]


def fatal_problem(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Why this Deployment will not become ready by itself, or None while it still may."""
    for condition in (deployment.get("status") or {}).get("conditions", []):
        stuck = condition.get("reason") == "ProgressDeadlineExceeded"
        failed = condition.get("type") == "ReplicaFailure" and condition.get("status") == "True"
        if stuck or failed:
            return f"{condition.get('reason')}: {condition.get('message', '')}"
    for pod in pods:
        for container in container_states(pod):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FATAL_WAITING_REASONS:
                name = pod.get("metadata", {}).get("name")
                return f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}"
    return None


def describe(deployment: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[str]:
    """A few lines in the spirit of ``kubectl describe``: conditions and container states."""
    lines = []
    if deployment is not None:
        for c in (deployment.get("status") or {}).get("conditions", []):
            lines.append(f"deployment {c.get('type')}={c.get('status')} {c.get('reason', '')}")
    if not pods:
        lines.append("no pods (not created yet, or refused: see the deployment's conditions)")
    for pod in pods:
        status = pod.get("status") or {}
        lines.append(f"pod {pod.get('metadata', {}).get('name')}: {status.get('phase')}")
        for c in status.get("conditions", []):
            if c.get("status") != "True":
                lines.append(f"  {c.get('type')}={c.get('status')} {c.get('reason', '')}")
                lines.append(f"    {c.get('message', '')}".rstrip())
        for container in container_states(pod):
            for state, detail in (container.get("state") or {}).items():
                why = detail.get("reason", "") if isinstance(detail, dict) else ""
                message = detail.get("message", "") if isinstance(detail, dict) else ""
                restarts = container.get("restartCount", 0)
                lines.append(f"  container {container.get('name')}: {state} {why} {message}")
                lines.append(f"    restarts: {restarts}")
    return lines

"""Kubernetes manifests and the kubernetes backend's objects, checked offline.

What is checked: every YAML document in k8s/ and everything ``kubectl kustomize`` renders
from it validates against the Kubernetes JSON schemas in strict mode (kubernetes-validate,
unknown fields rejected), for the oldest and newest versions listed below; so do the
Deployments and Services that ``deployment_manifest``/``service_manifest`` build for edge,
cloud and probe specs, and they survive the official client's model classes unchanged.
RBAC, node pinning, non-root pods, scrape annotations, settings and names are checked too.

What is NOT checked: no Kubernetes API server runs here (no cluster can be started on
this machine), so ``KubernetesBackend``'s calls (create, wait for readiness, delete,
discover) were never run against a cluster. Nothing here fakes one: the only calls made
go to a closed loopback port, to show that an unreachable API server is reported as a
``KubernetesError``. An end-to-end run on a real cluster is still owed (docs/kubernetes.md).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controller.backends import kubernetes as k8s_backend
from controller.backends.base import (
    ServiceHandle,
    ServiceKind,
    ServiceSpec,
    ServiceStartError,
    ServiceState,
)
from controller.backends.kubernetes import KubernetesBackend
from controller.backends.kubernetes_objects import (
    KubernetesBackendSettings,
    KubernetesError,
    deployment_manifest,
    describe,
    fatal_problem,
    handle_from_deployment,
    k8s_name,
    label_key,
    label_value,
    service_manifest,
    spec_annotation,
    spec_from_annotation,
)
from controller.pipelines import PipelineLauncher
from controller.settings import ControllerSettings
from edge_service.settings import GatewaySettings
from tests.controller.helpers import spec_launcher

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# The oldest release still commonly run (k3s on edge boxes lags) and the newest schemas.
VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "neukonfig"
EDGE_ROLE = {"neukonfig.io/role": "edge"}
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SETTINGS_CLASSES = {
    "NEUKONFIG_GATEWAY_": GatewaySettings,
    "NEUKONFIG_CONTROLLER_": ControllerSettings,
    "NEUKONFIG_K8S_": KubernetesBackendSettings,
}


# -- helpers ---------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def static_objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in static_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not on PATH")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {error.message}")


def pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    }


def settings() -> KubernetesBackendSettings:
    return KubernetesBackendSettings()


def launcher() -> PipelineLauncher:
    return spec_launcher(edge_slowdown=8.0)


def pipeline_specs() -> dict[str, ServiceSpec]:
    """What the controller asks the backend for: pipelines.py builds these."""
    labels = {
        "neukonfig.pipeline": "mobilenetv2-cut12-3fa9c0de",
        "neukonfig.cut": "12",
        "neukonfig.model": "mobilenetv2",
    }
    build = launcher()._spec
    cloud = build(ServiceKind.CLOUD_PARTITION, "mobilenetv2-cut12-3fa9c0de", 12, labels)
    edge = build(
        ServiceKind.EDGE_PARTITION,
        "mobilenetv2-cut12-3fa9c0de",
        12,
        labels,
        cloud_url="http://mobilenetv2-cut12-3fa9c0de-cloud.neukonfig.svc:8200",
    )
    probe = ServiceSpec(  # as PipelineLauncher.start_probe builds it
        ServiceKind.CLOUD_PARTITION,
        "mobilenetv2-probe",
        {"partition_dir": "/data/partitions"},
        {"neukonfig.model": "mobilenetv2", "neukonfig.role": "probe"},
    )
    return {"edge": edge, "cloud": cloud, "probe": probe}


def generated_deployments() -> dict[str, dict[str, Any]]:
    return {role: deployment_manifest(s, settings()) for role, s in pipeline_specs().items()}


def all_pod_templates() -> dict[str, dict[str, Any]]:
    generated = {
        f"partition-{r}": d["spec"]["template"] for r, d in generated_deployments().items()
    }
    return {**pod_templates(static_objects()), **generated}


# -- schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_document_validates_strictly(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no objects"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("directory", ["", "single-node", "tls"])
def test_kustomize_renders_valid_namespaced_objects(directory: str) -> None:
    objects = render(K8S / directory)
    for obj in objects:
        for version in VERSIONS:
            validate(obj, version)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    kinds = sorted(o["kind"] for o in objects)
    assert "Secret" not in kinds  # the token is created by hand, never shipped
    assert kinds.count("Deployment") == 2  # gateway and controller: partitions are dynamic


def test_single_node_variant_only_relaxes_storage_and_cloud_placement() -> None:
    default, single = render(K8S), render(K8S / "single-node")
    changed = [
        (a["kind"], a["metadata"]["name"]) for a, b in zip(default, single, strict=True) if a != b
    ]
    assert changed == [
        ("ConfigMap", "neukonfig-settings"),
        ("PersistentVolumeClaim", "neukonfig-data"),
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ["edge", "cloud", "probe"])
def test_generated_objects_validate_strictly(role: str, version: str) -> None:
    spec = pipeline_specs()[role]
    validate(deployment_manifest(spec, settings()), version)
    validate(service_manifest(spec, settings(), owner_uid="0b5c-uid"), version)


@pytest.mark.parametrize("role", ["edge", "cloud", "probe"])
def test_request_bodies_survive_the_client_models(role: str) -> None:
    """The backend sends its dicts through the client's typed models: nothing may be lost."""
    client = pytest.importorskip("kubernetes.client")
    api = client.ApiClient()
    spec = pipeline_specs()[role]
    for model, body in [
        (client.V1Deployment, deployment_manifest(spec, settings())),
        (client.V1Service, service_manifest(spec, settings(), owner_uid="0b5c-uid")),
    ]:
        typed = model.from_dict(body) if hasattr(model, "from_dict") else body
        assert api.sanitize_for_serialization(typed) == body


# -- RBAC ------------------------------------------------------------------------------


def verbs_the_backend_uses() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs, read from the client calls in the backend's source."""
    verbs = {"create": "create", "read": "get", "list": "list", "delete": "delete"}
    groups = {"_apps": "apps", "_core": ""}
    tree = ast.parse(Path(k8s_backend.__file__).read_text())
    used: dict[tuple[str, str], set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        if node.value.attr not in groups:
            continue
        match = re.fullmatch(
            r"(create|read|list|delete)_namespaced_([a-z]+)(?:_([a-z]+))?", node.attr
        )
        assert match, f"{node.attr}: only namespaced create/read/list/delete calls are expected"
        verb, resource, sub = match.groups()
        key = (groups[node.value.attr], f"{resource}s" + (f"/{sub}" if sub else ""))
        used.setdefault(key, set()).add(verbs[verb])
    return used


def test_the_backends_calls_are_the_expected_ones() -> None:
    assert verbs_the_backend_uses() == {
        ("apps", "deployments"): {"create", "get", "list", "delete"},
        ("", "services"): {"create", "delete"},
        ("", "pods"): {"list"},
        ("", "pods/log"): {"get"},
    }


def test_rbac_is_namespaced_and_grants_exactly_what_the_backend_uses() -> None:
    objects = static_objects()
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = find("Role", "neukonfig-controller")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames tricks
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == verbs_the_backend_uses()
    binding = find("RoleBinding", "neukonfig-controller")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "neukonfig-controller",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "neukonfig-controller", "namespace": NAMESPACE}
    ]


def test_only_the_controller_holds_an_api_token() -> None:
    for name, template in all_pod_templates().items():
        pod = template["spec"]
        if name == "neukonfig-controller":
            assert pod["serviceAccountName"] == "neukonfig-controller"
            assert pod.get("automountServiceAccountToken", True)
        else:
            assert pod["automountServiceAccountToken"] is False, name
            assert "serviceAccountName" not in pod, name


# -- placement, security, metrics ------------------------------------------------------


def test_gateway_is_pinned_to_edge_nodes() -> None:
    gateway = find("Deployment", "neukonfig-gateway")
    pod = gateway["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == EDGE_ROLE
    assert {"key": "neukonfig.io/role", "operator": "Equal", "value": "edge"}.items() <= pod[
        "tolerations"
    ][0].items()
    assert gateway["spec"]["replicas"] == 1  # one routing pointer
    assert gateway["spec"]["strategy"] == {"type": "Recreate"}


def test_partitions_are_pinned_by_role() -> None:
    made = generated_deployments()
    assert made["edge"]["spec"]["template"]["spec"]["nodeSelector"] == EDGE_ROLE
    for role in ("cloud", "probe"):
        pod = made[role]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"neukonfig.io/role": "cloud"}
        assert "tolerations" not in pod
    assert made["edge"]["spec"]["template"]["spec"]["tolerations"] == settings().edge_tolerations


@pytest.mark.parametrize("name", sorted(all_pod_templates()))
def test_pods_run_as_non_root_under_the_restricted_profile(name: str) -> None:
    pod = all_pod_templates()[name]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["enableServiceLinks"] is False  # else NEUKONFIG_*_PORT=tcp://... appears
    for container in pod.get("initContainers", []) + pod["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
    allowed = {"persistentVolumeClaim", "emptyDir", "secret", "configMap"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed, volume["name"]


def test_namespace_enforces_the_restricted_profile() -> None:
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", sorted(set(all_pod_templates()) - {"neukonfig-prepare"}))
def test_every_service_pod_is_scraped_by_prometheus(name: str) -> None:
    template = all_pod_templates()[name]
    annotations = template["metadata"]["annotations"]
    ports = [p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) in ports
    assert annotations["prometheus.io/path"] == "/metrics"


# -- the token -------------------------------------------------------------------------


def test_no_manifest_carries_a_real_token() -> None:
    for obj in static_objects():
        if obj["kind"] == "Secret":
            for value in obj.get("stringData", {}).values():
                assert value == "REPLACE_ME"  # under 16 characters: the gateway refuses it
            assert "data" not in obj
    data = find("ConfigMap", "neukonfig-settings")["data"]
    assert not [k for k in data if "TOKEN" in k and not k.endswith("_TOKEN_FILE")]
    for template in all_pod_templates().values():
        for container in template["spec"]["containers"]:
            assert not [e for e in container.get("env", []) if e["name"].endswith("_TOKEN")]
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        assert "secretGenerator" not in spec, kustomization
        assert not [r for r in spec.get("resources", []) if "secret" in r.lower()], kustomization


def test_placeholder_token_is_refused_by_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = find("Secret", "neukonfig-admin")
    monkeypatch.setenv("NEUKONFIG_GATEWAY_ADMIN_TOKEN", secret["stringData"]["token"])
    with pytest.raises(ValueError, match="at least 16 characters"):
        GatewaySettings(model_name="m", partition_dir=Path("/data/partitions"))


# -- settings and names agree ----------------------------------------------------------


def test_configmap_holds_only_known_settings_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    data = find("ConfigMap", "neukonfig-settings")["data"]
    for key, value in data.items():
        prefix = next(p for p in SETTINGS_CLASSES if key.startswith(p))
        field = key.removeprefix(prefix).lower()
        assert field in SETTINGS_CLASSES[prefix].model_fields, f"{key} is no setting"
        monkeypatch.setenv(key, value)
    # The real token is a file from the Secret; an inline one stands in for it here.
    monkeypatch.setenv("NEUKONFIG_GATEWAY_ADMIN_TOKEN", "x" * 32)
    monkeypatch.setenv("NEUKONFIG_CONTROLLER_ADMIN_TOKEN", "x" * 32)
    controller = ControllerSettings()  # type: ignore[call-arg]
    gateway = GatewaySettings()  # type: ignore[call-arg]
    backend = KubernetesBackendSettings()
    assert controller.backend == "kubernetes"
    assert controller.model_name == gateway.model_name
    assert controller.partition_dir == gateway.partition_dir
    assert backend.edge_node_selector == EDGE_ROLE
    assert backend.cloud_node_selector == {"neukonfig.io/role": "cloud"}


def test_names_and_paths_agree_across_objects() -> None:
    data = find("ConfigMap", "neukonfig-settings")["data"]
    backend = settings()
    assert (
        data["NEUKONFIG_K8S_DATA_CLAIM"]
        == find("PersistentVolumeClaim", backend.data_claim)["metadata"]["name"]
    )
    for key in ("PARTITION_DIR", "EDGE_PROFILE", "CLOUD_PROFILE"):
        assert data[f"NEUKONFIG_CONTROLLER_{key}"].startswith(
            data["NEUKONFIG_K8S_DATA_MOUNT"] + "/"
        )
    gateway_port = find("Service", "neukonfig-gateway")["spec"]["ports"][0]["port"]
    assert data["NEUKONFIG_CONTROLLER_GATEWAY_URL"] == f"http://neukonfig-gateway:{gateway_port}"
    for name, template in pod_templates(static_objects()).items():
        for container in (
            template["spec"].get("initContainers", []) + template["spec"]["containers"]
        ):
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["data"] == backend.data_mount, name
            if "admin-token" in mounts:
                token_file = data["NEUKONFIG_CONTROLLER_ADMIN_TOKEN_FILE"]
                assert token_file == f"{mounts['admin-token']}/token"
                assert data["NEUKONFIG_GATEWAY_ADMIN_TOKEN_FILE"] == token_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("neukonfig.io/role=edge", EDGE_ROLE),
        ("a=1, kubernetes.io/arch=arm64", {"a": "1", "kubernetes.io/arch": "arm64"}),
        ("", {}),
        ('{"x": "y"}', {"x": "y"}),
    ],
)
def test_node_selectors_parse_from_env(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: dict[str, str]
) -> None:
    monkeypatch.setenv("NEUKONFIG_K8S_EDGE_NODE_SELECTOR", text)
    assert KubernetesBackendSettings().edge_node_selector == expected


def test_a_malformed_node_selector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUKONFIG_K8S_CLOUD_NODE_SELECTOR", "cloud")
    with pytest.raises(ValueError, match="key=value"):
        KubernetesBackendSettings()


# -- what the generated objects run ----------------------------------------------------


def test_edge_deployment_runs_the_spec() -> None:
    spec = pipeline_specs()["edge"]
    made = deployment_manifest(spec, settings())
    pod = made["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "NEUKONFIG_EDGE_PARTITION_DIR": "/data/partitions",
        "NEUKONFIG_EDGE_CUT": "12",
        "NEUKONFIG_EDGE_THREADS": "1",
        "NEUKONFIG_EDGE_CLOUD_URL": "http://mobilenetv2-cut12-3fa9c0de-cloud.neukonfig.svc:8200",
        "NEUKONFIG_EDGE_SLOWDOWN": "8.0",
        "NEUKONFIG_EDGE_HOST": "0.0.0.0",
        "NEUKONFIG_EDGE_PORT": "8100",
    }
    assert container["command"] == ["python", "-m", "edge_service", "partition"]
    assert container["image"] == "neukonfig-edge:latest"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8100, "protocol": "TCP"}]
    claim = pod["volumes"][0]["persistentVolumeClaim"]
    assert claim == {"claimName": "neukonfig-data", "readOnly": True}
    assert made["spec"]["replicas"] == 1


@pytest.mark.parametrize("role", ["edge", "cloud", "probe"])
def test_selectors_pick_exactly_this_services_pods(role: str) -> None:
    spec = pipeline_specs()[role]
    deployment = deployment_manifest(spec, settings())
    service = service_manifest(spec, settings(), owner_uid="0b5c-uid")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/instance"] == deployment["metadata"]["name"]
    assert pod_labels["app.kubernetes.io/managed-by"] == "neukonfig-controller"
    assert service["metadata"]["name"] == deployment["metadata"]["name"]
    assert service["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    for key, value in pod_labels.items():
        assert LABEL_NAME.fullmatch(key.rpartition("/")[2])
        assert len(value) <= 63


def test_cloud_deployment_uses_the_cloud_image_and_prefix() -> None:
    made = deployment_manifest(pipeline_specs()["probe"], settings())
    (container,) = made["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "neukonfig-cloud:latest"
    assert container["command"] == ["python", "-m", "cloud_service"]
    assert {e["name"] for e in container["env"]} == {
        "NEUKONFIG_CLOUD_PARTITION_DIR",
        "NEUKONFIG_CLOUD_HOST",
        "NEUKONFIG_CLOUD_PORT",
    }


def test_only_partition_services_are_accepted() -> None:
    with pytest.raises(ValueError, match="partition services only"):
        deployment_manifest(ServiceSpec(ServiceKind.GATEWAY, "gw", {}), settings())


# -- names and labels ------------------------------------------------------------------


def test_valid_names_are_kept() -> None:
    assert k8s_name("mobilenetv2-cut12-3fa9c0de-edge") == "mobilenetv2-cut12-3fa9c0de-edge"


@pytest.mark.parametrize(
    "name",
    [
        "MobileNet_V2-cut12-3fa9c0de-edge",
        "resnet50.v1.5-cut3-00000000-cloud",
        "3d-unet-cut1-abcdef01-edge",
        "a" * 64,
        "efficientnet-b7-noisy-student-imagenet21k-finetuned-cut117-3fa9c0de-cloud",
        "---",
        "",
    ],
)
def test_names_become_valid_dns_labels(name: str) -> None:
    made = k8s_name(name)
    assert DNS_1035.fullmatch(made), made
    assert len(made) <= 63
    assert k8s_name(name) == made  # stable: a restarted controller derives the same name


def test_names_that_clean_up_alike_stay_distinct() -> None:
    long = "x" * 70
    variants = ["model_a-cut1-edge", "model.a-cut1-edge", "Model-A-cut1-edge", long, long + "y"]
    assert len({k8s_name(v) for v in variants}) == len(variants)


def test_a_long_odd_name_still_yields_valid_objects() -> None:
    spec = ServiceSpec(
        ServiceKind.EDGE_PARTITION,
        "Inception_V3.tf-" + "x" * 80 + "-cut7-0123abcd-edge",
        {"partition_dir": "/data/partitions", "cut": "7"},
        {"neukonfig.model": "Inception_V3.tf-" + "x" * 80, "My Label!": "a b"},
    )
    for version in VERSIONS:
        validate(deployment_manifest(spec, settings()), version)
        validate(service_manifest(spec, settings()), version)


@pytest.mark.parametrize(
    ("value", "kept"),
    [("mobilenetv2-cut12-3fa9c0de", True), ("12", True), ("", True), ("a b", False)],
)
def test_label_values(value: str, kept: bool) -> None:
    made = label_value(value)
    assert (made == value) is kept
    assert len(made) <= 63
    assert made == "" or LABEL_NAME.fullmatch(made)


@pytest.mark.parametrize(
    "key", ["neukonfig.pipeline", "neukonfig.io/role", "My Label!", "Bad_Prefix!/x", "/", "a/"]
)
def test_label_keys(key: str) -> None:
    prefix, _, name = label_key(key).rpartition("/")
    assert LABEL_NAME.fullmatch(name)
    assert len(name) <= 63
    assert prefix == "" or SUBDOMAIN.fullmatch(prefix)


# -- discover's annotation -------------------------------------------------------------


@pytest.mark.parametrize("role", ["edge", "cloud", "probe"])
def test_discover_rebuilds_the_handle_from_the_deployment(role: str) -> None:
    spec = pipeline_specs()[role]
    deployment = deployment_manifest(spec, settings())
    assert spec_from_annotation(spec_annotation(spec)) == spec
    deployment["status"] = {"readyReplicas": 1}
    handle = handle_from_deployment(json.loads(json.dumps(deployment)))  # as the API returns it
    assert handle is not None
    assert handle.spec == spec
    port = 8100 if role == "edge" else 8200
    assert handle.url == f"http://{deployment['metadata']['name']}.neukonfig.svc:{port}"
    assert handle.backend_id == deployment["metadata"]["name"]
    assert handle.state is ServiceState.READY


def test_discover_skips_what_it_cannot_adopt() -> None:
    deployment = deployment_manifest(pipeline_specs()["edge"], settings())
    assert handle_from_deployment(deployment).state is ServiceState.STARTING  # type: ignore[union-attr]
    deployment["metadata"]["deletionTimestamp"] = "2026-11-26T10:00:00Z"
    assert handle_from_deployment(deployment) is None
    del deployment["metadata"]["deletionTimestamp"]
    deployment["metadata"]["annotations"] = {}
    assert handle_from_deployment(deployment) is None


# -- readiness diagnostics, on API objects as `kubectl get -o json` prints them ----------


def pod(name: str, waiting: str | None = None, restarts: int = 0) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": "back-off 10s"}} if waiting else {}
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 node(s) didn't match node selector."}
            ],
            "containerStatuses": [
                {"name": "partition", "state": state, "restartCount": restarts}
            ],
        },
    }  # fmt: skip


def test_a_crash_loop_is_fatal_at_once() -> None:
    problem = fatal_problem({"status": {}}, [pod("p-1", "CrashLoopBackOff", restarts=3)])
    assert problem is not None
    assert "CrashLoopBackOff" in problem


def test_an_unschedulable_or_pulling_pod_may_still_start() -> None:
    assert fatal_problem({"status": {}}, [pod("p-1")]) is None
    assert fatal_problem({"status": {}}, [pod("p-1", "ImagePullBackOff")]) is None


def test_a_failed_replica_set_is_fatal() -> None:
    deployment = {
        "status": {
            "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods is forbidden: violates PodSecurity"}
            ]
        }
    }  # fmt: skip
    assert "FailedCreate" in (fatal_problem(deployment, []) or "")


def test_diagnostics_name_the_reason() -> None:
    text = "\n".join(describe({"status": {}}, [pod("p-1", "ImagePullBackOff", restarts=1)]))
    assert "Unschedulable" in text
    assert "didn't match node selector" in text
    assert "ImagePullBackOff" in text
    assert "restarts: 1" in text
    assert "no pods" in "\n".join(describe(None, []))


# -- the client boundary, with no cluster ----------------------------------------------


def test_without_credentials_the_error_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("kubernetes")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    monkeypatch.setenv("NEUKONFIG_K8S_KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubernetesError, match="NEUKONFIG_K8S_KUBECONFIG"):
        KubernetesBackend.from_env()


def test_without_the_client_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in [m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    with pytest.raises(KubernetesError, match=r"neukonfig\[kubernetes\]"):
        KubernetesBackend(settings())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on exit: nothing listens there


def test_an_unreachable_api_server_is_a_kubernetes_error(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    backend = KubernetesBackend(
        KubernetesBackendSettings(kubeconfig=str(kubeconfig), poll_s=0.01, stop_timeout_s=0)
    )
    spec = pipeline_specs()["edge"]
    handle = ServiceHandle(spec, "http://unused", k8s_name(spec.name))

    async def attempt() -> list[str]:
        calls = [
            backend.discover(),
            backend.start(spec),
            backend.stop(handle),
            backend.wait_ready(handle, timeout=0.05),
        ]
        errors = []
        for call in calls:
            try:
                await call
            except ServiceStartError as error:  # KubernetesError is one
                errors.append(error.message)
        await backend.close()
        return errors

    errors = asyncio.run(attempt())
    assert len(errors) == 4
    assert all("API server unreachable" in e for e in errors), errors
    assert errors[3].startswith(f"{spec.name} ({handle.backend_id}): not ready after 0.05 s")
    assert handle.state is ServiceState.FAILED


@pytest.mark.parametrize("version", VERSIONS)
def test_with_certificates_each_side_mounts_its_secret_and_the_cloud_serves_https(
    version: str,
) -> None:
    """The launcher hands each side its certificates' directory; in a pod that is the
    side's Secret, the cloud's Service URL is https, and the kubelet, which has no client
    certificate, checks the cloud's port instead of asking its ready path."""
    build = spec_launcher(
        edge_tls_dir=Path("/run/secrets/edge"), cloud_tls_dir=Path("/run/secrets/cloud")
    )._spec
    labels = {"neukonfig.pipeline": "m-cut3-aa", "neukonfig.cut": "3", "neukonfig.model": "m"}
    specs = {
        "edge": build(ServiceKind.EDGE_PARTITION, "m-cut3-aa", 3, labels),
        "cloud": build(ServiceKind.CLOUD_PARTITION, "m-cut3-aa", 3, labels),
    }
    made = {role: deployment_manifest(spec, settings()) for role, spec in specs.items()}
    for role, deployment in made.items():
        validate(deployment, version)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        prefix = "NEUKONFIG_EDGE_" if role == "edge" else "NEUKONFIG_CLOUD_"
        assert env[prefix + "TLS_DIR"] == "/run/neukonfig/tls"
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == f"neukonfig-tls-{role}"
        assert volume["secret"]["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == 10001
        assert {"name": "tls", "mountPath": "/run/neukonfig/tls", "readOnly": True} in container[
            "volumeMounts"
        ]
    cloud = made["cloud"]["spec"]["template"]["spec"]["containers"][0]
    assert cloud["readinessProbe"]["tcpSocket"] == {"port": "http"}
    edge = made["edge"]["spec"]["template"]["spec"]["containers"][0]
    assert edge["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    cloud_handle = handle_from_deployment({**made["cloud"], "status": {}})
    assert cloud_handle is not None
    assert cloud_handle.url.startswith("https://")


def test_tls_variant_gives_each_process_its_sides_certificates() -> None:
    """k8s/tls: the controller gets both sides' Secrets (it hands the cloud's to cloud
    pods) and the gateway the edge's, at the directories their settings name."""
    rendered = {o["metadata"]["name"]: o for o in render(K8S / "tls") if o["kind"] == "Deployment"}
    expected = {
        "neukonfig-controller": {
            "NEUKONFIG_CONTROLLER_TLS_DIR": ("neukonfig-tls-edge", "/run/neukonfig/certs/edge"),
            "NEUKONFIG_CONTROLLER_CLOUD_TLS_DIR": (
                "neukonfig-tls-cloud",
                "/run/neukonfig/certs/cloud",
            ),
        },
        "neukonfig-gateway": {
            "NEUKONFIG_GATEWAY_TLS_DIR": ("neukonfig-tls-edge", "/run/neukonfig/certs/edge"),
        },
    }
    for name, settings in expected.items():
        pod = rendered[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for variable, (secret, path) in settings.items():
            assert env[variable] == path, (name, variable)
            assert secrets[mounts[path]] == secret, (name, path)

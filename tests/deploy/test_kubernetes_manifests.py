"""The Kubernetes manifests: both overlays render, every object is valid, and they say what the
service says (ports, probes, settings, metric names, the image's user).

``kubectl kustomize`` renders them (kubectl is on this machine; without it these tests skip and
say so) and ``kubernetes-validate`` checks each object against the Kubernetes API's own schemas,
offline and strict (an unknown field is an error). What only a real cluster with GPUs can show
is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.settings import Settings, declarations
from tests.gateway.service.test_app import Catalog, TritonHealth

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["cpu", "gpu"]
VERSION = "1.30.0"
"""The oldest Kubernetes release the manifests are checked against (autoscaling/v2 and
policy/v1 are GA well before it)."""


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: it renders the kustomize overlays")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert isinstance(found, dict)
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_kubernetes(overlay: str) -> None:
    objects = render(overlay)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "StatefulSet",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_gpu_overlay_asks_for_a_gpu_and_cpu_does_not() -> None:
    gpu = container(find(render("gpu"), "Deployment", "triton"), "triton")
    cpu = container(find(render("cpu"), "Deployment", "triton"), "triton")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(cpu["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifests_say_what_the_service_says(overlay: str) -> None:
    objects = render(overlay)
    gateway = find(objects, "Deployment", "gateway")
    pod = gateway["spec"]["template"]
    spec = container(gateway, "gateway")
    config = find(objects, "ConfigMap", "gateway-config")["data"]
    secret = find(objects, "Secret", "gateway-secrets")["stringData"]
    # Every variable is a declared setting, and the values parse as the gateway parses them.
    variables = {d.variable for d in declarations()}
    assert set(config) | set(secret) <= variables
    settings = Settings.from_env({**config, **secret})
    # The port, on the container, the probes and the Service.
    assert spec["ports"][0]["containerPort"] == settings.port
    service = find(objects, "Service", "gateway")
    assert service["spec"]["ports"][0]["port"] == settings.port
    # The probes are routes of the app, and liveness never needs a key.
    app = create_app(settings, triton=TritonHealth(), catalog=Catalog({}))
    paths = {getattr(route, "path", None): route for route in app.routes}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert path in paths, path
        assert not getattr(getattr(paths[path], "endpoint", None), "protected", False)
    # TRITON_URL is the headless Service, on Triton's gRPC port.
    host, port = settings.triton_url.split(":")
    triton_service = find(objects, "Service", host)
    assert triton_service["spec"]["clusterIP"] == "None"
    grpc = next(p for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    triton = container(find(objects, "Deployment", "triton"), "triton")
    triton_ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert grpc["port"] == int(port) == triton_ports["grpc"]
    # The autoscaler's metric is one the gateway publishes; Triton's is documented.
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert re.search(rf"^# TYPE {metric} gauge$", Metrics().render().decode(), re.MULTILINE)
    guide = (ROOT / "docs" / "kubernetes.md").read_text()
    triton_metric = find(objects, "HorizontalPodAutoscaler", "triton")["spec"]["metrics"][0]
    for name in (metric, triton_metric["pods"]["metric"]["name"]):
        assert name in guide
    assert "nv_inference_queue_duration_us" in guide
    # The pod runs as the image's user, on a read-only root with /tmp in memory.
    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None
    context = pod["spec"]["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user.groups()
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert str(settings.upload_dir) in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_runs_on_jemalloc_as_compose_and_the_soak(overlay: str) -> None:
    from benchmarks.soak import TRITON_MALLOC_CONF

    triton = container(find(render(overlay), "Deployment", "triton"), "triton")
    environment = {item["name"]: item["value"] for item in triton["env"]}
    assert environment["LD_PRELOAD"].endswith("/libjemalloc.so")
    assert environment["MALLOC_CONF"] == TRITON_MALLOC_CONF


def test_the_replicas_share_the_jobs_store_and_files() -> None:
    """Two gateway replicas: the jobs' state is in the shared store the manifests run, reached at
    the Service's port, by the gateway only; their files on a volume every replica mounts."""
    objects = render("gpu")
    gateway = find(objects, "Deployment", "gateway")
    assert gateway["spec"]["replicas"] > 1
    config = find(objects, "ConfigMap", "gateway-config")["data"]
    secret = find(objects, "Secret", "gateway-secrets")["stringData"]
    settings = Settings.from_env({**config, **secret})
    url = urlsplit(settings.jobs_database_url)
    service = find(objects, "Service", str(url.hostname))
    assert service["spec"]["ports"][0]["port"] == url.port
    postgres = find(objects, "StatefulSet", service["spec"]["selector"]["app.kubernetes.io/name"])
    database = container(postgres, "postgres")
    environment = {item["name"]: item.get("value") for item in database["env"]}
    assert (environment["POSTGRES_USER"], environment["POSTGRES_DB"]) == (
        url.username,
        url.path.lstrip("/"),
    )
    policy = find(objects, "NetworkPolicy", "jobs-postgres-only-from-gateway")
    (rule,) = policy["spec"]["ingress"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    mounts = {m["mountPath"]: m["name"] for m in container(gateway, "gateway")["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[str(settings.jobs_dir)]]["persistentVolumeClaim"]["claimName"]
    assert find(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_only_the_gateway_reaches_triton_grpc() -> None:
    objects = render("gpu")
    policy = find(objects, "NetworkPolicy", "triton-only-from-gateway")
    triton = find(objects, "Deployment", "triton")
    gateway = find(objects, "Deployment", "gateway")
    labels = triton["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8001)
    (source,) = grpc_rule["from"]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert all(rule["ports"][0]["port"] != 8000 for rule in policy["spec"]["ingress"])

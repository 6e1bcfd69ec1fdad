"""The Kubernetes manifests in deploy/k8s, parsed and checked against the real server.

No cluster here, so the checks are on what the manifests promise: probes that speak gRPC
health to the port the server listens on, a headless Service whose selector and target port
reach the pods, an HPA on the Deployment's CPU, container args and env that the server's own
parser accepts, CPU that matches the configured sessions and threads, memory above the
measured peaks in the docs, and a termination grace longer than the server's drain.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
import yaml  # a dev dependency: the standard library has no YAML parser

from ocr_client.client import SERVICE_NAME
from ocr_server.config import ServerConfig, parse_config
from tests.conftest import REPO_ROOT
from tests.test_container import _server_env_names

K8S = REPO_ROOT / "deploy" / "k8s"
PORT = 50051


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """Every object of every manifest, by kind (one of each kind here)."""
    by_kind: dict[str, dict[str, Any]] = {}
    files = sorted(K8S.glob("*.yaml"))
    assert [f.name for f in files] == ["deployment.yaml", "hpa.yaml", "service.yaml"]
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["kind"] not in by_kind, f"a second {doc['kind']} in {path.name}"
            assert "namespace" not in doc["metadata"], "the namespace is chosen at apply time"
            by_kind[doc["kind"]] = doc
    assert set(by_kind) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    return by_kind


@pytest.fixture(scope="module")
def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def config(container: dict[str, Any]) -> ServerConfig:
    """The server configuration the pod runs with: the image's entrypoint flag, the args,
    the env, through the server's real parser (an unknown flag or bad value fails here)."""
    env = {e["name"]: e["value"] for e in container["env"]}
    return parse_config(["--no-fetch", *container.get("args", [])], env=env)


def _cpu(quantity: str | int) -> Decimal:
    text = str(quantity)
    return Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)


def _mib(quantity: str) -> Decimal:
    units = {"Mi": 1, "Gi": 1024, "M": Decimal(10**6) / 2**20, "G": Decimal(10**9) / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return Decimal(quantity[: -len(suffix)]) * factor
    raise AssertionError(f"memory quantity without a unit: {quantity}")


def test_env_and_args_are_server_settings(container: dict[str, Any], config: ServerConfig) -> None:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "a variable is set twice"
    unknown = set(names) - _server_env_names()
    assert not unknown, f"the server reads no such variables: {sorted(unknown)}"
    assert "command" not in container, "keep the image's ENTRYPOINT (ocr-server --no-fetch)"
    assert config.port == PORT
    assert config.fetch_missing is False
    assert config.log_format == "json"


def test_metrics_port_is_exposed_and_announced(
    objects: dict[str, dict[str, Any]], container: dict[str, Any], config: ServerConfig
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config.metrics_port not in (0, PORT)
    assert ports == {"grpc": PORT, "metrics": config.metrics_port}
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_probes_are_native_grpc_on_the_server_port(container: dict[str, Any]) -> None:
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports["grpc"] == (PORT, "TCP")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container[probe]
        assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert spec["grpc"]["port"] == PORT, probe
        # The server sets health for "" and for the OCR service, nothing else.
        assert spec["grpc"].get("service", "") in ("", SERVICE_NAME), probe
    # Readiness asks about the OCR service itself: that is what clients call.
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "time to warm up"


def test_cpu_matches_sessions_times_threads(
    container: dict[str, Any], config: ServerConfig
) -> None:
    resources = container["resources"]
    cores = config.workers * config.threads
    assert _cpu(resources["requests"]["cpu"]) == cores
    assert _cpu(resources["limits"]["cpu"]) == cores


def _measured_peaks_mib() -> dict[str, int]:
    """Peak RSS figures the docs report: serving lines, and reading pages."""
    lines = (REPO_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    pages = (REPO_ROOT / "docs" / "pages.md").read_text(encoding="utf-8")
    line_peak = re.search(r"Server peak RSS \(VmHWM\): (\d+) MiB", lines)
    page_peak = re.search(r"the server peaked at (\d+) MiB RSS", pages)
    assert line_peak and page_peak, "the docs no longer state the peaks; update this test"
    return {"lines": int(line_peak[1]), "pages": int(page_peak[1])}


def test_memory_covers_the_measured_peaks_with_headroom(
    container: dict[str, Any], config: ServerConfig
) -> None:
    peaks = _measured_peaks_mib()
    request = _mib(container["resources"]["requests"]["memory"])
    limit = _mib(container["resources"]["limits"]["memory"])
    # The page peak was measured with 4 pages in flight; more would need more memory.
    assert config.max_pages_in_flight <= 4
    assert request >= Decimal("1.1") * max(peaks.values()), (request, peaks)
    assert limit >= Decimal("1.5") * peaks["pages"], (limit, peaks)


def test_termination_grace_outlasts_the_servers_drain(
    objects: dict[str, dict[str, Any]], config: ServerConfig
) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= config.grace_s + 5


def test_pod_runs_as_the_images_non_root_user(objects: dict[str, dict[str, Any]]) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert uid is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid[1])


def test_headless_service_reaches_the_pods(objects: dict[str, dict[str, Any]]) -> None:
    service, deployment = objects["Service"], objects["Deployment"]
    assert service["metadata"]["name"] == "ocr-headless"
    assert service["spec"]["clusterIP"] == "None"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT
    container_ports = {
        p["name"]: p["containerPort"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    assert container_ports[port["targetPort"]] == PORT


def test_hpa_scales_the_deployment_on_cpu(objects: dict[str, dict[str, Any]]) -> None:
    hpa, deployment = objects["HorizontalPodAutoscaler"], objects["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def test_guide_shows_how_clients_connect() -> None:
    guide = (K8S / "README.md").read_text(encoding="utf-8")
    assert "dns:///ocr-headless." in guide and ".svc.cluster.local:50051" in guide
    assert "round_robin" in guide
    assert "kubectl apply -n ocr -f deploy/k8s/" in guide
    # Every manifest named in the guide exists, and every manifest is named.
    named = set(re.findall(r"`(\w+\.yaml)`", guide))
    assert named == {p.name for p in K8S.glob("*.yaml")}

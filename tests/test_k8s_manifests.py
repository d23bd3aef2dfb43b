"""deploy/k8s validated offline: core kinds against the Kubernetes OpenAPI schemas that ship
with kubernetes-validate (strict: unknown fields fail), the Knative Service structurally and
its pod spec as a core PodSpec, and the values that must agree with the agent and the image."""

from __future__ import annotations

import copy
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.settings import AgentSettings
from tests.settings_env import setting_env_names

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
PORT = AgentSettings.model_fields["port"].default
CORE_FILES = ("models-pvc.yaml", "redis.yaml", "deployment.yaml", "service.yaml")

Doc = dict[str, Any]


def load(name: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def one(name: str, kind: str) -> Doc:
    found = [doc for doc in load(name) if doc["kind"] == kind]
    assert len(found) == 1, (name, kind)
    return found[0]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any connection attempt fails the test: the validation must be offline."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def validate(doc: Doc) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", CORE_FILES)
def test_core_manifests_match_the_kubernetes_schemas(name: str, no_network: None) -> None:
    for doc in load(name):
        validate(doc)


def test_the_validator_catches_a_misspelt_field(no_network: None) -> None:
    deployment = copy.deepcopy(one("deployment.yaml", "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["paht"] = container["livenessProbe"]["httpGet"].pop(
        "path"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_kustomization_lists_the_core_set() -> None:
    kustomization = one("kustomization.yaml", "Kustomization")
    assert tuple(kustomization["resources"]) == CORE_FILES


def container_of(pod_spec: Doc) -> Doc:
    containers = pod_spec["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def env_of(container: Doc) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container["env"]}


def check_agent_pod(pod_spec: Doc) -> None:
    """What the Deployment and the Knative Service must both get right."""
    container = container_of(pod_spec)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert [p["containerPort"] for p in container["ports"]] == [PORT]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = env_of(container)
    unknown = {name for name in env if name.startswith("AGENT_")} - setting_env_names()
    assert not unknown, f"not settings of the agent: {unknown}"
    # The store is the Redis of redis.yaml, by its Service name and port.
    redis = one("redis.yaml", "Service")
    store = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", env["AGENT_STORE"])
    assert store is not None
    assert store.group(1) == redis["metadata"]["name"]
    assert int(store.group(2)) == redis["spec"]["ports"][0]["port"]
    # The models volume is the PVC of models-pvc.yaml, mounted where the entrypoint looks.
    claim = one("models-pvc.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/mnt/auto"]]["persistentVolumeClaim"]["claimName"] == claim
    # The image's unprivileged user, which owns ComfyUI's writable folders.
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"ARG APP_UID=(\d+)", dockerfile)
    assert uid is not None
    security = pod_spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == int(uid.group(1))


def test_deployment_probes_gpu_drain_and_grace() -> None:
    deployment = one("deployment.yaml", "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    check_agent_pod(pod_spec)
    container = container_of(pod_spec)
    assert container["lifecycle"]["preStop"]["httpGet"]["path"] == "/pre-stop"
    grace = float(env_of(container)["AGENT_SHUTDOWN_GRACE"])
    # preStop drains up to `grace`, SIGTERM gives `grace` again, ComfyUI gets 10 s to stop.
    assert pod_spec["terminationGracePeriodSeconds"] >= 2 * grace + 10
    service = one("service.yaml", "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def test_knative_service_scales_to_zero(no_network: None) -> None:
    service = one("knative-service.yaml", "Service")
    assert service["apiVersion"] == "serving.knative.dev/v1"
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
    assert all(isinstance(value, str) for value in annotations.values())
    revision = template["spec"]
    assert isinstance(revision["containerConcurrency"], int)
    assert revision["containerConcurrency"] >= 1
    check_agent_pod(revision)
    container = container_of(revision)
    env = env_of(container)
    # A sync /api/run holds its request for the whole run.
    assert revision["timeoutSeconds"] >= float(env["AGENT_RUN_TIMEOUT"])
    # Knative refuses lifecycle hooks and probe ports other than the serving port.
    assert "lifecycle" not in container
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"].get("port", PORT) == PORT
    # The rest of a revision spec is a core PodSpec: validate it as one.
    pod_spec = {
        k: v for k, v in revision.items() if k not in ("containerConcurrency", "timeoutSeconds")
    }
    pod_spec = copy.deepcopy(pod_spec)
    for probe in ("livenessProbe", "readinessProbe"):
        container_of(pod_spec)[probe]["httpGet"].setdefault("port", PORT)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod_spec}
    validate(pod)

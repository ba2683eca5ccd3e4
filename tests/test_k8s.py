"""deploy/k8s: every manifest valid against the Kubernetes schemas, and the pieces agree.

No cluster runs here: `kubernetes-validate` holds the API's schemas. The kustomization is
rendered by the real `kubectl kustomize` (what `kubectl apply -k` applies: the generated
ConfigMap's hashed name, the labels, the namespace), and the gateway's config in that ConfigMap
is parsed by the gateway itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config.file import DnsUpstream, parse_config
from tests.test_deploy import SHUTDOWN_AFTER_DRAIN

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
VERSION = "1.33.0"  # a Kubernetes release whose schemas the validator ships


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


@cache
def kustomized() -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, (
        "kubectl is needed to render deploy/k8s (https://kubernetes.io/docs/tasks/tools/)"
    )
    return subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def rendered() -> list[dict[str, Any]]:
    """The kustomization's objects, as `kubectl kustomize` renders them (a fresh copy)."""
    return [doc for doc in yaml.safe_load_all(kustomized()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    """The object `name`; a generated ConfigMap by its generator's name (kustomize adds a hash)."""
    return next(
        o
        for o in rendered()
        if o["kind"] == kind and o["metadata"]["name"] in (name, *_generated(kind, name))
    )


def _generated(kind: str, name: str) -> list[str]:
    names = [o["metadata"]["name"] for o in rendered() if o["kind"] == kind]
    return [n for n in names if n.rsplit("-", 1)[0] == name] if kind == "ConfigMap" else []


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    plan = kustomization()
    listed = set(plan["resources"]) | {f for g in plan["configMapGenerator"] for f in g["files"]}
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("index", range(len(rendered())))
def test_every_object_is_valid_against_the_kubernetes_schemas(index: int) -> None:
    obj = rendered()[index]
    try:
        kubernetes_validate.validate(json.loads(json.dumps(obj)), VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}") from exc


def gateway_config(monkeypatch: pytest.MonkeyPatch) -> Any:
    secret = find("Secret", "llm-gateway-keys")["stringData"]
    for name, value in secret.items():  # the gateway pods get the Secret as environment
        monkeypatch.setenv(name, value)
    text = find("ConfigMap", "llm-gateway-config")["data"]["config.yaml"]
    return parse_config(yaml.safe_load(text), base_dir=Path("/etc/llm-gateway"))


def test_the_gateway_finds_the_worker_pods_through_their_headless_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (model,) = gateway_config(monkeypatch).models
    (entry,) = model.upstreams
    assert isinstance(entry, DnsUpstream) and model.replicas == 0
    service = find("Service", "llm-worker-smollm2")
    assert service["spec"]["clusterIP"] == "None"
    assert entry.host == f"llm-worker-smollm2.{service['metadata']['namespace']}.svc.cluster.local"
    assert entry.port == service["spec"]["ports"][0]["port"]
    worker = find("Deployment", "llm-worker-smollm2")["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    command = container["command"]
    assert command[command.index("--model-name") + 1] == model.name
    assert int(command[command.index("--concurrency") + 1]) == entry.template.capacity
    assert int(command[command.index("--port") + 1]) == entry.port
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    secret = container["env"][0]
    assert secret["name"] == "LLM_GATEWAY_WORKER_SECRET"
    assert secret["valueFrom"]["secretKeyRef"]["key"] == entry.template.api_key_env


def test_the_gateway_pods_probe_health_and_ready_and_are_scraped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = gateway_config(monkeypatch)
    assert config.redis.url == "redis://redis:6379/0" and find("Service", "redis")
    template = find("Deployment", "llm-gateway")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(config.server.port)
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["command"][container["command"].index("--config") + 1].startswith(mount)


def test_a_gateway_pod_s_grace_period_outlasts_its_drain_and_the_shutdown_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = find("Deployment", "llm-gateway")["spec"]["template"]["spec"]
    drain = gateway_config(monkeypatch).server.drain_timeout
    assert spec["terminationGracePeriodSeconds"] >= drain + SHUTDOWN_AFTER_DRAIN

"""deploy/k8s: what `kubectl apply` would refuse (schema, unknown fields), and what would
apply but not work (a probe on a path or port nobody serves, a Service selecting no pod,
an autoscaler on a workload that must not scale, a consumer reading the wrong shard)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.files import (
    K8S,
    app_statuses,
    argv,
    collector_config,
    k8s_manifests,
    k8s_object,
    load_yaml,
    option,
    setting_env_names,
)

KUBERNETES = "1.33"  # a version kubernetes-validate ships schemas for
WORKLOADS = ("Deployment", "StatefulSet")


def workloads() -> list[dict[str, Any]]:
    return [o for _, o in k8s_manifests() if o["kind"] in WORKLOADS]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize(
    "name, manifest",
    k8s_manifests(),
    ids=[f"{n}:{o['kind']}/{o['metadata']['name']}" for n, o in k8s_manifests()],
)
def test_each_manifest_validates_against_the_kubernetes_schema(
    name: str, manifest: dict[str, Any]
) -> None:
    """Strict: a field the API does not have (a typo kubectl would reject) fails too."""
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert {
        o["metadata"].get("namespace") for _, o in k8s_manifests() if o["kind"] != "Namespace"
    } == {"whyslow"}


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in by_name, f"{container['name']}: no port named {port}"
    return by_name[port]


def http_probes(container: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {
        kind: (probe["httpGet"]["path"], named_port(container, probe["httpGet"]["port"]))
        for kind in ("readinessProbe", "livenessProbe", "startupProbe")
        if "httpGet" in (probe := container.get(kind, {}))
    }


def test_the_service_probes_readiness_and_liveness_on_paths_the_app_serves() -> None:
    """/readyz is 503 until the model is loaded (no traffic before), /healthz 200 as soon
    as the process answers (no restart while the model loads), on the port --port names."""
    container = containers(k8s_object("Deployment", "whyslow-service"))[0]
    port = int(option(container["command"], "--port") or 0)
    probes = http_probes(container)
    assert probes["readinessProbe"] == ("/readyz", port)
    assert probes["livenessProbe"] == ("/healthz", port)
    assert app_statuses("/readyz", "/healthz") == {"/readyz": 503, "/healthz": 200}


def test_consumer_and_collector_probes_ask_the_ports_they_serve() -> None:
    """The consumer's only endpoint is /metrics on WHYSLOW_METRICS_PORT; the Collector's
    health is its health_check extension's port."""
    config = k8s_object("ConfigMap", "whyslow-config")["data"]
    consumer = containers(k8s_object("StatefulSet", "whyslow-consumer"))[0]
    for path, port in http_probes(consumer).values():
        assert (path, port) == ("/metrics", int(config["WHYSLOW_METRICS_PORT"]))
    collector = containers(k8s_object("Deployment", "otel-collector"))[0]
    health = int(collector_config()["extensions"]["health_check"]["endpoint"].rsplit(":")[-1])
    assert {port for _, port in http_probes(collector).values()} == {health}


def test_every_service_selects_pods_and_targets_their_ports() -> None:
    for _, service in k8s_manifests():
        if service["kind"] != "Service":
            continue
        selector = service["spec"]["selector"].items()
        selected = [
            w
            for w in workloads()
            if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"
        for port in service["spec"]["ports"]:
            assert any(named_port(c, port["targetPort"]) for c in containers(selected[0])), port


def test_the_autoscaler_scales_only_the_analysis_service_on_cpu_it_requests() -> None:
    """Utilization is relative to the CPU request: without one the HPA does nothing. The
    consumers and the router must not be autoscaled: their queues have a single active
    consumer, so extra replicas are standbys, not throughput."""
    hpas = [o for _, o in k8s_manifests() if o["kind"] == "HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["whyslow-service"]
    target = k8s_object("Deployment", "whyslow-service")
    assert hpas[0]["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert all(c["resources"]["requests"]["cpu"] for c in containers(target))
    assert hpas[0]["spec"]["minReplicas"] >= target["spec"]["replicas"] >= 1


def test_every_container_requests_memory_and_cpu() -> None:
    for workload in workloads():
        for container in containers(workload):
            requests = container["resources"]["requests"]
            assert requests.get("cpu") and requests.get("memory"), workload["metadata"]["name"]
            assert container["resources"]["limits"].get("memory"), workload["metadata"]["name"]


def test_each_consumer_pod_reads_the_shard_of_its_ordinal(tmp_path: Path) -> None:
    """Pod whyslow-consumer-K must run `whyslow consume --shard K`: the command is run with
    a stand-in `whyslow` that prints its arguments, as the pod's shell would run it."""
    consumers = k8s_object("StatefulSet", "whyslow-consumer")
    container = containers(consumers)[0]
    fake = tmp_path / "whyslow"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    name = consumers["metadata"]["name"]
    for ordinal in range(consumers["spec"]["replicas"]):
        result = subprocess.run(
            container["command"],
            env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOSTNAME": f"{name}-{ordinal}"},
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert result.stdout.split() == ["consume", "--shard", str(ordinal)]


def test_the_router_splits_into_as_many_shards_as_there_are_consumers() -> None:
    router = containers(k8s_object("Deployment", "whyslow-router"))[0]
    shards = int(option(argv(router["command"]), "--shards") or 0)
    assert shards == k8s_object("StatefulSet", "whyslow-consumer")["spec"]["replicas"]


def test_the_configuration_is_read_by_the_code_and_referenced_objects_exist() -> None:
    config = k8s_object("ConfigMap", "whyslow-config")
    known = setting_env_names()
    for variable in config["data"]:
        assert variable in known or variable.startswith("OTEL_"), variable
    for workload in workloads():
        for container in containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    k8s_object("ConfigMap", source["configMapRef"]["name"])
                else:  # the Secret is created by hand (deploy/README.md)
                    assert source["secretRef"]["name"] == "whyslow-secrets"


def test_the_collector_configmap_is_the_collector_config() -> None:
    """The ConfigMap embeds deploy/otel/collector.yaml; they must not drift apart."""
    data = k8s_object("ConfigMap", "otel-collector")["data"]
    ((key, text),) = data.items()
    assert yaml.safe_load(text) == collector_config()
    container = containers(k8s_object("Deployment", "otel-collector"))[0]
    mount = container["volumeMounts"][0]["mountPath"]
    assert option(container["args"], "--config") == f"{mount}/{key}"

"""deploy/otel/collector.yaml: the Collector refuses to start on an undefined or unknown
component or an unknown key, and publishes where and how its rabbitmq exporter is told:
what it publishes must be what the consumer reads."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from baselines.consumer import parse_message
from baselines.settings import Settings
from tests.deploy.files import DEPLOY, collector_config, compose, definitions, k8s_object

IMAGE = "otel/opentelemetry-collector-contrib:0.136.0"
CONTRIB = {
    # component types of otelcol-contrib 0.136.0 (opentelemetry-collector-releases,
    # distributions/otelcol-contrib/manifest.yaml), the ones a whyslow pipeline may use
    "receivers": {"otlp", "rabbitmq", "prometheus", "hostmetrics", "jaeger", "zipkin"},
    "processors": {
        "batch",
        "memory_limiter",
        "resource",
        "resourcedetection",
        "attributes",
        "filter",
        "transform",
        "k8sattributes",
    },
    "exporters": {"otlp", "otlphttp", "rabbitmq", "debug", "prometheus", "file"},
    "extensions": {"health_check", "pprof", "zpages", "otlp_encoding", "basicauth"},
}
RABBITMQ_KEYS = {
    # rabbitmqexporter's Config (exporter/rabbitmqexporter/config.go, mapstructure tags)
    "": {"connection", "routing", "encoding_extension", "durable", "retry_on_failure"},
    "connection": {
        "endpoint",
        "vhost",
        "tls",
        "auth",
        "connection_timeout",
        "heartbeat",
        "publish_confirmation_timeout",
        "name",
    },
    "routing": {"exchange", "routing_key"},
}
DEFAULT_ROUTING_KEYS = {"traces": "otlp_spans", "metrics": "otlp_metrics", "logs": "otlp_logs"}


def component_type(name: str) -> str:
    return name.split("/")[0]


def test_every_pipeline_component_is_defined_and_every_defined_one_is_used() -> None:
    config = collector_config()
    service = config["service"]
    used: dict[str, set[str]] = {kind: set() for kind in CONTRIB}
    used["extensions"] = set(service.get("extensions", []))
    for name, pipeline in service["pipelines"].items():
        assert component_type(name) in DEFAULT_ROUTING_KEYS, name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config.get(kind, {}), f"{name}: {component} is not defined"
                used[kind].add(component)
    for kind, types in CONTRIB.items():
        for component in config.get(kind, {}):
            assert component in used[kind], f"{kind}: {component} is defined but unused"
            assert component_type(component) in types, f"{component} is not in otelcol-contrib"


def test_compose_and_kubernetes_run_the_distribution_the_components_come_from() -> None:
    assert compose()["services"]["otel-collector"]["image"] == IMAGE
    pod = k8s_object("Deployment", "otel-collector")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == IMAGE


def keys_known(config: dict[str, Any], section: str = "") -> None:
    allowed = RABBITMQ_KEYS[section]
    for key, value in config.items():
        assert key in allowed, f"rabbitmq exporter: unknown key {section}.{key}".replace("..", ".")
        if key in RABBITMQ_KEYS and section == "" and isinstance(value, dict):
            keys_known(value, key)


def rabbitmq_exporters() -> dict[str, dict[str, Any]]:
    return {
        name: settings or {}
        for name, settings in collector_config()["exporters"].items()
        if component_type(name) == "rabbitmq"
    }


def test_the_rabbitmq_exporter_has_only_keys_it_knows_and_the_ones_it_requires() -> None:
    for exporter in rabbitmq_exporters().values():
        keys_known(exporter)
        connection = exporter["connection"]
        assert connection["endpoint"] and connection["auth"]["plain"]["username"]


def trace_request() -> bytes:
    """One server span of `checkout`, as an instrumented app sends it through the Collector."""
    now = time.time_ns()
    span = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name="POST /checkout",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now - 180_000_000,
        end_time_unix_nano=now,
    )
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(resource())
    resource_spans.scope_spans.add().spans.append(span)
    return request.SerializeToString()


def metrics_request() -> bytes:
    point = NumberDataPoint(time_unix_nano=time.time_ns(), as_double=12.0)
    metric = Metric(name="messaging.queue.depth", gauge=Gauge(data_points=[point]))
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.CopyFrom(resource())
    resource_metrics.scope_metrics.add().metrics.append(metric)
    return request.SerializeToString()


def logs_request() -> bytes:
    """One error line of `checkout`, as the Collector's filelog or OTLP receiver sends it."""
    record = LogRecord(
        time_unix_nano=time.time_ns(),
        severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
        body=AnyValue(string_value="payment declined: card expired"),
    )
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(resource())
    resource_logs.scope_logs.add().log_records.append(record)
    return request.SerializeToString()


def resource() -> Resource:
    return Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]
    )


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, enough for the definitions' bindings (# and exact words)."""
    regex = re.escape(pattern).replace(r"\#", ".*").replace(r"\*", r"[^.]+")
    return re.fullmatch(regex, key) is not None


def test_what_each_pipeline_publishes_reaches_the_consumer_and_parses() -> None:
    """Per pipeline: the exporter publishes to the consumers' exchange, a binding of the
    definitions carries its routing key to the consumers' queue, and a body in the
    exporter's encoding (protobuf, no content type) parses into events there."""
    settings = Settings()
    bodies = {"traces": trace_request(), "metrics": metrics_request(), "logs": logs_request()}
    exchanges = {x["name"]: x for x in definitions()["exchanges"]}
    routed: set[str] = set()
    for name, pipeline in collector_config()["service"]["pipelines"].items():
        signal = component_type(name)
        for exporter in pipeline["exporters"]:
            if component_type(exporter) != "rabbitmq":
                continue
            config = rabbitmq_exporters()[exporter]
            assert "encoding_extension" not in config, "the test builds protobuf bodies only"
            routing = config.get("routing", {})
            key = routing.get("routing_key", DEFAULT_ROUTING_KEYS[signal])
            assert routing.get("exchange") == settings.exchange
            assert exchanges[settings.exchange]["type"] == "topic"
            assert any(
                b["source"] == settings.exchange
                and b["destination"] == settings.queue
                and topic_matches(b["routing_key"], key)
                for b in definitions()["bindings"]
            ), f"nothing routes {key} from {settings.exchange} to {settings.queue}"
            batch = parse_message(bodies[signal], key, "")
            assert batch.events and not batch.rejected, (name, batch.rejected)
            routed.add(signal)
    assert routed >= {"traces", "metrics"}  # both go to the consumers; logs may too


def env_references() -> set[str]:
    text = (DEPLOY / "otel" / "collector.yaml").read_text()
    return set(re.findall(r"\$\{env:(\w+)", text))


def test_every_variable_the_config_reads_is_set_by_compose_and_kubernetes() -> None:
    """An unset ${env:X} becomes an empty string: an exporter without an endpoint."""
    needed = env_references()
    assert needed
    assert needed <= set(compose()["services"]["otel-collector"]["environment"])
    container = k8s_object("Deployment", "otel-collector")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert needed <= {e["name"] for e in container["env"]}


def test_the_otlp_ports_are_the_ones_published_and_the_apps_export_to() -> None:
    """Apps send to 4317/4318; the whyslow processes export their own spans over OTLP/HTTP
    to the collector's HTTP receiver."""
    protocols = collector_config()["receivers"]["otlp"]["protocols"]
    ports = {p: int(protocols[p]["endpoint"].rsplit(":", 1)[1]) for p in ("grpc", "http")}
    service = compose()["services"]["otel-collector"]
    assert set(ports.values()) <= {int(p.split(":")[-1]) for p in service["ports"]}
    container = k8s_object("Deployment", "otel-collector")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert set(ports.values()) <= {p["containerPort"] for p in container["ports"]}
    endpoints = [
        s["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        for s in compose()["services"].values()
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in s.get("environment", {})
    ]
    endpoints.append(
        k8s_object("ConfigMap", "whyslow-config")["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    )
    for endpoint in endpoints:
        url = urlsplit(endpoint)
        assert (url.hostname, url.port) == ("otel-collector", ports["http"]), endpoint

"""deploy/otel/collector-spanmetrics.yaml: the gateway tier that summarises spans with the
spanmetrics connector; what it publishes must be what the consumer reads."""

from __future__ import annotations

import re

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from baselines.consumer import parse_message
from service.contract import SpanHistogram
from tests.deploy.files import DEPLOY, load_yaml
from tests.deploy.test_collector import CONTRIB, component_type, keys_known

CONFIG = load_yaml(DEPLOY / "otel" / "collector-spanmetrics.yaml")
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def test_spans_reach_rabbitmq_only_as_spanmetrics() -> None:
    pipelines = CONFIG["service"]["pipelines"]
    assert "rabbitmq" not in pipelines["traces"]["exporters"]
    assert "spanmetrics" in pipelines["traces"]["exporters"]
    fed = [p for p in pipelines.values() if "spanmetrics" in p["receivers"]]
    assert fed and all("rabbitmq" in p["exporters"] for p in fed)
    assert "rabbitmq" in pipelines["logs"]["exporters"]


def test_every_component_is_defined_used_and_in_the_distribution() -> None:
    kinds = {**CONTRIB, "connectors": {"spanmetrics"}}
    used: dict[str, set[str]] = {kind: set() for kind in kinds}
    used["extensions"] = set(CONFIG["service"].get("extensions", []))
    for pipeline in CONFIG["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                section = "connectors" if component in CONFIG["connectors"] else kind
                assert component in CONFIG[section], component
                used[section].add(component)
    for kind, types in kinds.items():
        for component in CONFIG.get(kind, {}):
            assert component in used[kind], f"{kind}: {component} is defined but unused"
            assert component_type(component) in types, component
    keys_known(CONFIG["exporters"]["rabbitmq"])


def test_the_connectors_histogram_is_read_as_span_histograms_with_its_buckets() -> None:
    buckets = CONFIG["connectors"]["spanmetrics"]["histogram"]["explicit"]["buckets"]
    bounds_ms = [
        float(m[1]) * UNITS_MS[m[2]]
        for m in (re.fullmatch(r"([\d.]+)(us|ms|s)", b) for b in buckets)
        if m
    ]
    assert len(bounds_ms) == len(buckets)
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    metric = resource.scope_metrics.add().metrics.add()
    metric.name, metric.unit = "traces.span.metrics.duration", "ms"
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    dims = {"service.name": "checkout", "span.name": "POST /checkout"}
    dims |= {"span.kind": "SPAN_KIND_SERVER", "status.code": "STATUS_CODE_UNSET"}
    counts = [0] * (len(bounds_ms) + 1)
    counts[5] = 40
    metric.histogram.data_points.add(
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in dims.items()],
        time_unix_nano=1_800_000_000 * 10**9,
        bucket_counts=counts,
        explicit_bounds=bounds_ms,
    )
    batch = parse_message(request.SerializeToString(), "otlp_metrics", "")
    assert not batch.rejected
    (point,) = batch.events
    assert isinstance(point, SpanHistogram)
    assert (point.service, point.operation, point.kind) == ("checkout", "POST /checkout", "server")
    assert point.bounds_ms == bounds_ms and point.bucket_counts == counts and not point.stream

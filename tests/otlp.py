"""Building OTLP messages with the OpenTelemetry SDK's own types, as an instrumented app and
the Collector would."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def record_spans(build: Callable[[Any], None], resource: dict[str, Any]) -> list[ReadableSpan]:
    """Spans recorded through the SDK, as an instrumented app would finish them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider.get_tracer("test.otlp"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def to_otlp_json(request: Message) -> bytes:
    """OTLP/JSON as the Collector writes it: the protobuf JSON mapping (camelCase names,
    64-bit integers as strings) but enums as integers and trace/span ids as hex, not the
    base64 ``json_format`` would write."""
    payload = MessageToDict(request, use_integers_for_enums=True)

    def hex_ids(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for item in node:
                hex_ids(item)

    hex_ids(payload)
    return json.dumps(payload).encode()


KINDS = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT}


def otlp_requests(events: list[dict]) -> list:
    """The same spans as each service's SDK would record them and the Collector export
    them: one request per minute, holding each service's spans under its resource."""
    minutes: dict[int, dict[str, list[dict]]] = {}
    for event in events:
        minute = minutes.setdefault(int(event["timestamp"] // 60), {})
        minute.setdefault(event["service"], []).append(event)

    def build(batch: list[dict]):
        def record(tracer) -> None:
            for e in batch:
                end = round(e["timestamp"] * 1e9)
                attributes = {"peer.service": e["peer_service"]} if "peer_service" in e else None
                span = tracer.start_span(
                    e["operation"],
                    kind=KINDS[e["kind"]],
                    attributes=attributes,
                    start_time=end - round(e["duration_ms"] * 1e6),
                )
                span.end(end_time=end)

        return record

    return [
        encode_spans(
            [
                span
                for service, batch in services.items()
                for span in record_spans(build(batch), {"service.name": service})
            ]
        )
        for _, services in sorted(minutes.items())
    ]


def attributes(values: dict[str, str]) -> list[KeyValue]:
    """OTLP string attributes."""
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


def spanmetrics_request(points: Iterable[tuple[str, HistogramDataPoint]]) -> bytes:
    """What the spanmetrics connector exports: per service, one cumulative duration histogram
    (ms) holding the (service, point) pairs' points, as serialized protobuf."""
    by_service: dict[str, list[HistogramDataPoint]] = {}
    for service, point in points:
        by_service.setdefault(service, []).append(point)
    request = ExportMetricsServiceRequest()
    for service, service_points in by_service.items():
        resource = request.resource_metrics.add()
        resource.resource.attributes.extend(attributes({"service.name": service}))
        metric = resource.scope_metrics.add().metrics.add()
        metric.name, metric.unit = "traces.span.metrics.duration", "ms"
        metric.histogram.aggregation_temporality = (
            AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        )
        metric.histogram.data_points.extend(service_points)
    return request.SerializeToString()

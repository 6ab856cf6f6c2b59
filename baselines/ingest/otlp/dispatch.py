"""Which parser a message of the rabbitmqexporter goes to (by routing key and content
type), and splitting a message by service for the router.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from baselines.ingest.json_events import MAX_REASON_CHARS, MalformedMessage
from baselines.ingest.otlp.common import (
    MALFORMED,
    RESOURCE_KEYS,
    Encoding,
    OtlpBatch,
    decode_failure,
    json_attributes,
    json_object,
    proto_request,
    proto_resource,
    resource_of,
)
from baselines.ingest.otlp.logs import parse_otlp_logs
from baselines.ingest.otlp.metrics import parse_otlp_metrics
from baselines.ingest.otlp.traces import parse_otlp_traces

TRACES_ROUTING_KEY = "otlp_spans"
METRICS_ROUTING_KEY = "otlp_metrics"
LOGS_ROUTING_KEY = "otlp_logs"
OTLP_ROUTING_KEYS = frozenset({TRACES_ROUTING_KEY, METRICS_ROUTING_KEY, LOGS_ROUTING_KEY})
"""The rabbitmqexporter's default routing keys (its README): a consumer can route a message
here when its routing key is one of these, and to ``parse_json_events`` otherwise."""

PROTO_CONTENT_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_CONTENT_TYPES = frozenset({"application/json"})


def parse_otlp(body: bytes, routing_key: str, content_type: str) -> OtlpBatch:
    """Parse one message of the rabbitmqexporter, choosing the signal by routing key and
    the encoding by content type (sniffed from the body when the content type is empty,
    which is what the exporter sends). Raises ``MalformedMessage`` for an unknown routing
    key or content type and an undecodable body."""
    encoding = _encoding(body, content_type)
    return _signal(routing_key).parse(body, encoding)


class _Signal(NamedTuple):
    request: (
        type[ExportTraceServiceRequest]
        | type[ExportMetricsServiceRequest]
        | type[ExportLogsServiceRequest]
    )
    field: str
    json_field: str
    parse: Callable[[bytes, Encoding], OtlpBatch]


_SIGNALS: Mapping[str, _Signal] = MappingProxyType(
    {
        TRACES_ROUTING_KEY: _Signal(
            ExportTraceServiceRequest, "resource_spans", "resourceSpans", parse_otlp_traces
        ),
        METRICS_ROUTING_KEY: _Signal(
            ExportMetricsServiceRequest, "resource_metrics", "resourceMetrics", parse_otlp_metrics
        ),
        LOGS_ROUTING_KEY: _Signal(
            ExportLogsServiceRequest, "resource_logs", "resourceLogs", parse_otlp_logs
        ),
    }
)
"""Routing key -> its request type, the name of its list of resources in protobuf and in
OTLP/JSON, and its parser."""


def _signal(routing_key: str) -> _Signal:
    """The request type the exporter's routing key names."""
    signal = _SIGNALS.get(routing_key)
    if signal is None:
        raise MalformedMessage(
            f"unknown OTLP routing key {routing_key!r}; expected one of "
            f"{', '.join(map(repr, _SIGNALS))}"[:MAX_REASON_CHARS]
        )
    return signal


def _encoding(body: bytes, content_type: str) -> Encoding:
    kind = content_type.split(";")[0].strip().lower()
    if kind in PROTO_CONTENT_TYPES:
        return "proto"
    if kind in JSON_CONTENT_TYPES:
        return "json"
    if not kind:
        return "json" if body.lstrip()[:1] == b"{" else "proto"
    raise MalformedMessage(f"unsupported OTLP content type {kind!r}"[:MAX_REASON_CHARS])


PROTO_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"


def split_otlp(
    body: bytes, routing_key: str, content_type: str, shard_of: Callable[[str], int]
) -> dict[int, tuple[bytes, str]]:
    """Split one message of the rabbitmqexporter by service: shard -> (a request holding
    the resources whose ``service.name`` maps to that shard, its content type).

    It reads resources, never a span or a data point: a Collector batch mixes services,
    so a router must split it, and doing so costs one decode and one encode of the
    message, not the per-span work of ``parse_otlp``, which the shard's consumer does.
    A message whose resources all map to one shard is passed on unchanged. Raises
    ``MalformedMessage`` where ``parse_otlp`` would refuse the whole message."""
    encoding = _encoding(body, content_type)
    signal = _signal(routing_key)
    if encoding == "proto":
        request = proto_request(signal.request, body, signal.field)
        groups: dict[int, list[Any]] = {}
        for resource in getattr(request, signal.field):
            service = proto_resource(resource.resource.attributes).service
            groups.setdefault(shard_of(service), []).append(resource)
        if len(groups) == 1:
            return {shard: (body, PROTO_CONTENT_TYPE) for shard in groups}
        parts = {}
        for shard, resources in groups.items():
            part = signal.request()
            getattr(part, signal.field).extend(resources)
            parts[shard] = (part.SerializeToString(), PROTO_CONTENT_TYPE)
        return parts
    payload = json_object(body, signal.json_field, signal.request.__name__)
    try:
        groups = {}
        for resource in payload.get(signal.json_field) or ():
            values = json_attributes(
                (resource.get("resource") or {}).get("attributes"), RESOURCE_KEYS
            )
            groups.setdefault(shard_of(resource_of(values).service), []).append(resource)
    except MALFORMED as exc:
        raise decode_failure(signal.request.__name__, exc) from exc
    if len(groups) == 1:
        return {shard: (body, JSON_CONTENT_TYPE) for shard in groups}
    return {
        shard: (json.dumps({signal.json_field: resources}).encode(), JSON_CONTENT_TYPE)
        for shard, resources in groups.items()
    }

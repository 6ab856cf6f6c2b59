"""The OpenTelemetry Collector's ``spanmetrics`` connector output as ``SpanHistogram``s.

A Collector fleet can summarise spans before they reach whyslow: the connector writes, per
(``service.name``, ``span.name``, ``span.kind``, ``status.code``) and interval, a latency
histogram (``traces.span.metrics.duration``; ``duration`` or ``latency`` in older releases
and other namespaces) and a ``calls`` counter. The histogram alone says everything the
detector reads (its count is the calls, its error points the errors), so the counter is
skipped. Each histogram point becomes one ``SpanHistogram`` whose series is the span
series the same spans would have fed; cumulative points carry a ``stream`` key, and the
detector differences consecutive points of one stream.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from baselines.ingest.otlp.common import (
    MAX_NAME_CHARS,
    OtlpBatch,
    construct,
    json_value,
    proto_value,
    reject,
    timestamp,
)
from service.contract import SpanHistogram

DURATION_NAMES = frozenset(
    {
        "traces.span.metrics.duration",
        "duration",
        "latency",
        "traces.spanmetrics.duration",
        "traces.spanmetrics.latency",
    }
)
CALLS_NAMES = frozenset(
    {"traces.span.metrics.calls", "calls", "calls_total", "traces.spanmetrics.calls"}
)
UNIT_TO_MS: Mapping[str, float] = MappingProxyType(
    {"ms": 1.0, "": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001, "ns": 1e-6}
)
"""The connector writes ``ms`` by default (``s`` behind a feature gate)."""
_KINDS: Mapping[object, str] = MappingProxyType(
    {
        "SPAN_KIND_SERVER": "server",
        "SPAN_KIND_CLIENT": "client",
        "SPAN_KIND_PRODUCER": "producer",
        "SPAN_KIND_CONSUMER": "consumer",
        "SERVER": "server",
        "CLIENT": "client",
        "PRODUCER": "producer",
        "CONSUMER": "consumer",
    }
)
_ERRORS = frozenset({"STATUS_CODE_ERROR", "Error", "ERROR", 2})
_PEERS = ("peer.service", "server.address", "db.system", "messaging.destination.name")
_CUMULATIVE = 2
"""``AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE``."""
_NO_RECORDED_VALUE = 1


def is_spanmetrics(name: str) -> bool:
    return name in DURATION_NAMES or name in CALLS_NAMES


def proto_spanmetrics(batch: OtlpBatch, service: str, metric: Metric) -> None:
    """The points of one spanmetrics instrument (protobuf)."""
    if metric.name in CALLS_NAMES or metric.WhichOneof("data") != "histogram":
        batch.skipped += len(getattr(metric, metric.WhichOneof("data") or "gauge").data_points)
        return
    scale = UNIT_TO_MS.get(metric.unit)
    cumulative = metric.histogram.aggregation_temporality == _CUMULATIVE
    for point in metric.histogram.data_points:
        if point.flags & _NO_RECORDED_VALUE:
            batch.skipped += 1
            continue
        attributes = {kv.key: proto_value(kv.value) for kv in point.attributes}
        _add_point(
            batch,
            service,
            metric.name,
            metric.unit,
            scale,
            attributes,
            list(point.explicit_bounds),
            list(point.bucket_counts),
            point.time_unix_nano,
            point.start_time_unix_nano if cumulative else None,
        )


def json_spanmetrics(batch: OtlpBatch, service: str, metric: dict[str, Any]) -> None:
    """The points of one spanmetrics instrument (OTLP/JSON)."""
    name = str(metric.get("name") or "")
    histogram = metric.get("histogram")
    if name in CALLS_NAMES or not isinstance(histogram, dict):
        for body in metric.values():
            if isinstance(body, dict):
                batch.skipped += len(body.get("dataPoints") or ())
        return
    unit = str(metric.get("unit") or "")
    temporality = histogram.get("aggregationTemporality")
    cumulative = temporality in (_CUMULATIVE, "AGGREGATION_TEMPORALITY_CUMULATIVE")
    for point in histogram.get("dataPoints") or ():
        if int(point.get("flags", 0)) & _NO_RECORDED_VALUE:
            batch.skipped += 1
            continue
        attributes = {
            kv["key"]: json_value(kv.get("value")) for kv in point.get("attributes") or ()
        }
        _add_point(
            batch,
            service,
            name,
            unit,
            UNIT_TO_MS.get(unit),
            attributes,
            [float(b) for b in point.get("explicitBounds") or ()],
            [int(c) for c in point.get("bucketCounts") or ()],
            int(point.get("timeUnixNano") or 0),
            int(point.get("startTimeUnixNano") or 0) if cumulative else None,
        )


def _add_point(
    batch: OtlpBatch,
    resource_service: str,
    name: str,
    unit: str,
    scale: float | None,
    attributes: dict[str, object],
    bounds: list[float],
    counts: list[int],
    time_unix_nano: int,
    start_unix_nano: int | None,
) -> None:
    span_name = attributes.get("span.name")
    service = str(attributes.get("service.name") or resource_service)
    kind = _KINDS.get(attributes.get("span.kind", "SPAN_KIND_SERVER"))
    problem = None
    if scale is None:
        problem = f"unit {unit!r} is not a time unit (ms, s, us, ns)"
    elif not isinstance(span_name, str) or not span_name:
        problem = "span.name attribute is missing"
    elif len(span_name) > MAX_NAME_CHARS or len(service) > MAX_NAME_CHARS:
        problem = f"span.name or service.name is longer than {MAX_NAME_CHARS} characters"
    elif len(counts) != len(bounds) + 1:
        problem = f"{len(counts)} bucket counts for {len(bounds)} bounds"
    elif any(b <= a for a, b in itertools.pairwise(bounds)):
        problem = "explicit bounds are not ascending"
    elif min(counts, default=0) < 0:
        problem = "a bucket count is negative"
    elif time_unix_nano <= 0:
        problem = "time_unix_nano is unset"
    if problem is not None:
        item: dict[str, object] = {
            "metric": name,
            "service": service,
            "span.name": str(span_name)[:200],
        }
        reject(batch, item, f"spanmetrics {name!r} point: {problem}")
        return
    if kind is None:  # internal or unspecified spans: not a request or a call
        batch.skipped += 1
        return
    assert scale is not None and isinstance(span_name, str)
    peer = None
    if kind in ("client", "producer"):
        peer = next((str(attributes[k]) for k in _PEERS if attributes.get(k)), None)
    stream = ""
    if start_unix_nano is not None:
        identity = repr(
            (service, sorted((k, str(v)) for k, v in attributes.items()), start_unix_nano)
        )
        stream = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    batch.events.append(
        construct(
            SpanHistogram,
            {
                "service": service,
                "operation": span_name,
                "kind": kind,
                "peer_service": peer[:MAX_NAME_CHARS] if peer else None,
                "timestamp": timestamp(time_unix_nano),
                "error": attributes.get("status.code") in _ERRORS,
                "bounds_ms": [b * scale for b in bounds],
                "bucket_counts": counts,
                "stream": stream,
            },
        )
    )

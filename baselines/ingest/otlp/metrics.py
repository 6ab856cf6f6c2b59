"""Gauge and sum points of an OTLP ``ExportMetricsServiceRequest`` as ``MetricSample``s.

See ``METRIC_RULES``: well-known instruments become whyslow's metrics; gauges and
non-monotonic sums of other instruments pass through under their own name; the
``spanmetrics`` connector's instruments become span histograms (``spanmetrics.py``); other
monotonic sums (a cumulative counter's level is not a sample of anything a baseline could
learn), histograms, exponential histograms and summaries are skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from baselines.ingest.otlp.common import (
    MALFORMED,
    MAX_NAME_CHARS,
    RESOURCE_KEYS,
    Encoding,
    OtlpBatch,
    construct,
    json_attributes,
    parse_request,
    proto_resource,
    proto_value,
    reject,
    resource_of,
    timestamp,
)
from baselines.ingest.otlp.spanmetrics import is_spanmetrics, json_spanmetrics, proto_spanmetrics
from service.contract import MetricSample

MAX_METRIC_CHARS = 100
PCT_OVERSHOOT = 110.0
"""A utilisation a little above 100% is a saturated resource sampled over a slightly
different interval than its limit (kubelet reports 100.1% for a pinned pod): read as 100.
Above this it is a unit mistake, and refused."""


@dataclass(frozen=True)
class MetricRule:
    """How a well-known instrument becomes one of whyslow's metrics.

    ``combine`` folds the data points of one resource and timestamp into one value:
    ``cpu`` (per-state CPU utilisation: busy = 1 - mean idle, or the sum of the non-idle
    states per CPU), ``used`` (the ``state=used`` point of memory utilisation), ``sum``
    (queue depth over states) or ``mean``. ``scale`` turns the instrument's unit into the
    target's (fraction -> percent is 100); a unit of ``%`` means it already is a percent.
    ``percent_scopes``: instrumentation scopes known to send a percent despite unit "1"
    (the docker_stats receiver's ``container.cpu.utilization``)."""

    target: str
    combine: Literal["cpu", "used", "sum", "mean"]
    scale: float = 1.0
    percent_scopes: tuple[str, ...] = ()


METRIC_RULES: Mapping[str, MetricRule] = MappingProxyType(
    {
        "system.cpu.utilization": MetricRule("cpu_pct", "cpu", 100.0),
        "process.cpu.utilization": MetricRule("cpu_pct", "cpu", 100.0),
        "container.cpu.utilization": MetricRule("cpu_pct", "mean", 100.0, ("dockerstatsreceiver",)),
        "system.memory.utilization": MetricRule("memory_pct", "used", 100.0),
        "process.memory.utilization": MetricRule("memory_pct", "mean", 100.0),
        "container.memory.utilization": MetricRule("memory_pct", "mean", 100.0),
        "container.memory.percent": MetricRule("memory_pct", "mean", 1.0),
        "messaging.queue.depth": MetricRule("queue_depth", "sum"),
        "rabbitmq.message.current": MetricRule("queue_depth", "sum"),
        "queue_depth": MetricRule("queue_depth", "sum"),
    }
)
"""Instrument name -> whyslow metric. Other gauges pass through under their own name with
the mean of their points per timestamp, other non-monotonic sums with the total."""

_GAUGE_RULE: Final = "mean"
_SUM_RULE: Final = "sum"
_STATE_KEYS = ("state", "cpu.mode", "system.cpu.state", "system.memory.state")
_CPU_KEYS = ("cpu", "cpu.logical_number", "system.cpu.logical_number")
_POINT_KEYS = frozenset({*_STATE_KEYS, *_CPU_KEYS})
_NO_RECORDED_VALUE = 1

Point = tuple[int, float, object, object]
"""(time_unix_nano, value, state attribute, cpu attribute) of one number data point."""


def parse_otlp_metrics(body: bytes, encoding: Encoding) -> OtlpBatch:
    """Gauge and sum points of an ``ExportMetricsServiceRequest`` as ``MetricSample``s;
    see ``METRIC_RULES``."""
    return parse_request(
        body,
        encoding,
        ExportMetricsServiceRequest,
        ("resource_metrics", "resourceMetrics"),
        _metrics_from_proto,
        _metrics_from_json,
    )


def _rule(name: str, unit: str, scope: str, data: str, monotonic: bool) -> MetricRule | None:
    rule = METRIC_RULES.get(name)
    if rule is None:
        if data == "gauge":
            return MetricRule(name, _GAUGE_RULE)
        if data == "sum" and not monotonic:
            return MetricRule(name, _SUM_RULE)
        return None
    if rule.scale != 1.0 and (
        unit == "%" or any(marker in scope for marker in rule.percent_scopes)
    ):
        return MetricRule(rule.target, rule.combine)
    return rule


def _add_metric(
    batch: OtlpBatch, service: str, name: str, rule: MetricRule, points: list[Point]
) -> None:
    """One sample per timestamp of the metric, its points folded by the rule, checked
    against the contract (finite, non-negative, a percentage within 0..100)."""
    groups: dict[int, list[Point]] = {}
    for point in points:
        groups.setdefault(point[0], []).append(point)
    for time_unix_nano, group in groups.items():
        value = _combine(rule.combine, group)
        if value is None:
            batch.skipped += len(group)
            continue
        value *= rule.scale
        problem = None
        if not rule.target:
            problem = "name is empty"
        elif len(rule.target) > MAX_METRIC_CHARS:
            problem = f"name is longer than {MAX_METRIC_CHARS} characters"
        elif len(service) > MAX_NAME_CHARS:
            problem = f"service.name is longer than {MAX_NAME_CHARS} characters"
        elif time_unix_nano <= 0:
            problem = "time_unix_nano is unset"
        elif not math.isfinite(value):
            problem = f"value is {value}"
        elif value < 0:
            problem = f"value {value:g} is negative"
        elif rule.target.endswith("_pct") and value > PCT_OVERSHOOT:
            problem = f"{rule.target} {value:g} is outside 0..100"
        if problem is not None:
            item = {
                "service": service[:MAX_NAME_CHARS],
                "metric": name[:MAX_METRIC_CHARS],
                "time_unix_nano": time_unix_nano,
                "value": value if math.isfinite(value) else str(value),
            }
            label = name if name == rule.target else f"{name} -> {rule.target}"
            reject(batch, item, f"metric {label[:120]!r}: {problem}")
            continue
        if rule.target.endswith("_pct"):
            value = min(value, 100.0)
        batch.events.append(
            construct(
                MetricSample,
                {
                    "service": service,
                    "metric": rule.target,
                    "value": float(value),
                    "timestamp": timestamp(time_unix_nano),
                },
            )
        )


def _combine(how: str, points: list[Point]) -> float | None:
    values = [p[1] for p in points]
    if how == "sum":
        return math.fsum(values)
    if how == "mean" or all(p[2] is None for p in points):
        return math.fsum(values) / len(values)
    states = [str(p[2]) for p in points]
    if how == "used":
        used = [v for v, s in zip(values, states, strict=True) if s == "used"]
        return math.fsum(used) if used else None
    idle = [v for v, s in zip(values, states, strict=True) if s == "idle"]
    if idle:  # one idle point per CPU: busy is what the average CPU was not idle
        return 1.0 - math.fsum(idle) / len(idle)
    cpus = {p[3] for p in points}
    return math.fsum(values) / max(len(cpus), 1)


def _state_and_cpu(values: Mapping[str, object]) -> tuple[object, object]:
    state = next((values[k] for k in _STATE_KEYS if k in values), None)
    cpu = next((values[k] for k in _CPU_KEYS if k in values), None)
    return state, cpu


# ----------------------------------------------------------------- metrics: protobuf


def _metrics_from_proto(request: ExportMetricsServiceRequest, batch: OtlpBatch) -> None:
    for resource_metrics in request.resource_metrics:
        service = proto_resource(resource_metrics.resource.attributes).service
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                _proto_metric(batch, service, scope, metric)


def _proto_metric(batch: OtlpBatch, service: str, scope: str, metric: Metric) -> None:
    if is_spanmetrics(metric.name):
        proto_spanmetrics(batch, service, metric)
        return
    data = metric.WhichOneof("data")
    if data == "gauge":
        data_points, monotonic = metric.gauge.data_points, False
    elif data == "sum":
        data_points, monotonic = metric.sum.data_points, metric.sum.is_monotonic
    else:
        batch.skipped += _proto_point_count(metric, data)
        return
    rule = _rule(metric.name, metric.unit, scope, data, monotonic)
    if rule is None:
        batch.skipped += len(data_points)
        return
    need_attributes = rule.combine in ("cpu", "used")
    points: list[Point] = []
    for point in data_points:
        if point.flags & _NO_RECORDED_VALUE:
            batch.skipped += 1
            continue
        which = point.WhichOneof("value")
        value = point.as_int if which == "as_int" else point.as_double
        state = cpu = None
        if need_attributes:
            state, cpu = _state_and_cpu(
                {kv.key: proto_value(kv.value) for kv in point.attributes if kv.key in _POINT_KEYS}
            )
        points.append((point.time_unix_nano, float(value), state, cpu))
    _add_metric(batch, service, metric.name, rule, points)


def _proto_point_count(metric: Metric, data: str | None) -> int:
    return len(getattr(metric, data).data_points) if data else 0


# ----------------------------------------------------------------- metrics: OTLP/JSON

_JSON_UNINGESTED = ("histogram", "exponentialHistogram", "summary")


def _metrics_from_json(payload: dict[str, Any], batch: OtlpBatch) -> None:
    for resource_metrics in payload.get("resourceMetrics") or ():
        service = resource_of(
            json_attributes(
                (resource_metrics.get("resource") or {}).get("attributes"), RESOURCE_KEYS
            )
        ).service
        for scope_metrics in resource_metrics.get("scopeMetrics") or ():
            scope = str((scope_metrics.get("scope") or {}).get("name") or "")
            for metric in scope_metrics.get("metrics") or ():
                try:
                    _json_metric(batch, service, scope, metric)
                except MALFORMED as exc:
                    name = metric.get("name") if isinstance(metric, dict) else None
                    item = metric if isinstance(metric, dict) else {"metric": repr(metric)[:200]}
                    reject(batch, item, f"metric {name!r}: malformed: {exc}")


def _json_metric(batch: OtlpBatch, service: str, scope: str, metric: dict[str, Any]) -> None:
    name = str(metric.get("name") or "")
    if is_spanmetrics(name):
        json_spanmetrics(batch, service, metric)
        return
    if "gauge" in metric:
        data, body, monotonic = "gauge", metric["gauge"], False
    elif "sum" in metric:
        data, body = "sum", metric["sum"]
        monotonic = bool(body.get("isMonotonic", False))
    else:
        for key in _JSON_UNINGESTED:
            if key in metric:
                batch.skipped += len(metric[key].get("dataPoints") or ())
        return
    data_points = body.get("dataPoints") or ()
    rule = _rule(name, str(metric.get("unit") or ""), scope, data, monotonic)
    if rule is None:
        batch.skipped += len(data_points)
        return
    need_attributes = rule.combine in ("cpu", "used")
    points: list[Point] = []
    for point in data_points:
        if int(point.get("flags", 0)) & _NO_RECORDED_VALUE:
            batch.skipped += 1
            continue
        if "asInt" in point:
            value = float(int(point["asInt"]))
        else:
            value = float(point.get("asDouble", 0.0))
        state = cpu = None
        if need_attributes:
            state, cpu = _state_and_cpu(json_attributes(point.get("attributes"), _POINT_KEYS))
        points.append((int(point.get("timeUnixNano") or 0), value, state, cpu))
    _add_metric(batch, service, name, rule, points)

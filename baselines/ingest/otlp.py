"""OTLP traces and metrics, as the OpenTelemetry Collector's ``rabbitmqexporter`` publishes
them (DESIGN.md, "Telemetry in"), turned into the same ``ParsedBatch`` the JSON path returns,
so the detector consumes them unchanged.

The exporter publishes one ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``
per message, protobuf by default or OTLP/JSON with an ``otlp_encoding`` extension, to the
routing keys ``otlp_spans`` / ``otlp_metrics`` / ``otlp_logs``, and it sets **no content
type**: ``parse_otlp`` therefore sniffs the body when the content type is empty (OTLP/JSON
is an object, so it starts with ``{``; a protobuf request starts with the tag of field 1,
``0x0a``, never with ``{``).

Protobuf is decoded with ``opentelemetry.proto`` (upb backend); OTLP/JSON is read with
``json.loads`` and walked directly, because ``json_format`` would read the hex trace and
span ids of OTLP/JSON as base64, and because walking plain dicts is several times faster.

Mapping decisions (the "why" is next to each helper):

* A span's ``service`` is its resource's ``service.name``; a resource without one is read as
  ``unknown_service``, the fallback the OTel SDK specification prescribes, so its spans still
  count rather than vanish; a ``service.name`` longer than 200 characters rejects the
  resource's spans as one rejected item.
* ``SPAN_KIND_INTERNAL`` and ``SPAN_KIND_UNSPECIFIED`` spans are not latency of a request
  or call, so they are neither events nor rejected: they are counted in
  ``OtlpBatch.skipped``.
* Evidence (``exception.type``, ``exception.message`` of the last ``exception`` span event,
  ``status.description`` from the span status) and the resource's ``service.version`` and
  ``deployment.environment`` go into ``SpanEvent.attributes``; spans without evidence share
  one read-only dict per resource (or ``None`` when the resource has neither), so a batch
  of 1000 spans does not carry 1000 copies of the same two strings.
* Metrics: see ``METRIC_RULES``; gauges and non-monotonic sums of other instruments pass
  through under their own name; monotonic sums (a cumulative counter's level is not a
  sample of anything a baseline could learn), histograms, exponential histograms and
  summaries are skipped and counted.

Events are built with ``model_construct`` for speed, after this module has checked every
field the contract constrains (names, duration range, finite values, percentages, UTC
timestamps); anything that fails goes to ``rejected`` with a reason that names the span or
metric and the field. Rejected items are small JSON-serialisable dicts (the consumer
dead-letters them with ``json.dumps``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from baselines.ingest.json_events import MAX_REASON_CHARS, MalformedMessage, ParsedBatch, load_json
from service.contract import MAX_DURATION_MS, MetricSample, SpanEvent

Encoding = Literal["proto", "json"]

TRACES_ROUTING_KEY = "otlp_spans"
METRICS_ROUTING_KEY = "otlp_metrics"
LOGS_ROUTING_KEY = "otlp_logs"
OTLP_ROUTING_KEYS = frozenset({TRACES_ROUTING_KEY, METRICS_ROUTING_KEY, LOGS_ROUTING_KEY})
"""The rabbitmqexporter's default routing keys (its README): a consumer can route a message
here when its routing key is one of these, and to ``parse_json_events`` otherwise."""

PROTO_CONTENT_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_CONTENT_TYPES = frozenset({"application/json"})

UNKNOWN_SERVICE = "unknown_service"
MAX_NAME_CHARS = 200
MAX_METRIC_CHARS = 100
MAX_EVIDENCE_CHARS = 300
MAX_TRACE_ID_CHARS = 64
MAX_SPAN_ID_CHARS = 32

_Event = TypeVar("_Event", SpanEvent, MetricSample)
_new = object.__new__
_set = object.__setattr__

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")

_KINDS: tuple[str | None, ...] = (None, None, "server", "client", "producer", "consumer")
"""Indexed by the protobuf ``Span.SpanKind`` number: UNSPECIFIED, INTERNAL are skipped."""
_JSON_KINDS: Mapping[int | str, str] = MappingProxyType(
    {
        2: "server",
        3: "client",
        4: "producer",
        5: "consumer",
        "SPAN_KIND_SERVER": "server",
        "SPAN_KIND_CLIENT": "client",
        "SPAN_KIND_PRODUCER": "producer",
        "SPAN_KIND_CONSUMER": "consumer",
    }
)
"""OTLP/JSON writes enums as integers; the protobuf JSON mapping also allows their names."""
_STATUS_ERROR = 2
_JSON_STATUS_ERROR = frozenset({2, "STATUS_CODE_ERROR"})

PEER_ATTRIBUTES = (
    "peer.service",
    "server.address",
    "db.system",
    "db.system.name",
    "messaging.destination.name",
    "rpc.service",
    "http.host",
    "net.peer.name",
)
"""Where a client/producer span names what it called, most explicit first: the
instrumentation's own ``peer.service``, then the stable semantic conventions, then the
legacy (pre-1.21) HTTP/net attributes. The first one present wins."""
_PEER_RANK: Mapping[str, int] = MappingProxyType({k: i for i, k in enumerate(PEER_ATTRIBUTES)})

_ENVIRONMENT_KEYS = ("deployment.environment.name", "deployment.environment")
"""The newer semantic conventions renamed the key; both are reported as
``deployment.environment``, the newer one winning."""
_RESOURCE_KEYS = frozenset({"service.name", "service.version", *_ENVIRONMENT_KEYS})
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.message"})


@dataclass
class OtlpBatch(ParsedBatch):
    """A ``ParsedBatch`` (so the consumer and detector take it unchanged) that also counts
    ``skipped``: spans of kind INTERNAL/UNSPECIFIED and metric data points this module does
    not ingest by design (histograms, summaries, monotonic counters, points flagged
    NO_RECORDED_VALUE, memory utilisation without a ``used`` state). They are neither events
    nor rejected: nothing is wrong with them, so they must not be dead-lettered."""

    skipped: int = 0


# --------------------------------------------------------------------------- dispatch


def parse_otlp(body: bytes, routing_key: str, content_type: str) -> OtlpBatch:
    """Parse one message of the rabbitmqexporter, choosing the signal by routing key and
    the encoding by content type (sniffed from the body when the content type is empty,
    which is what the exporter sends). Raises ``MalformedMessage`` for logs, an unknown
    routing key or content type, and an undecodable body."""
    encoding = _encoding(body, content_type)
    if _signal(routing_key) is _TRACES:
        return parse_otlp_traces(body, encoding)
    return parse_otlp_metrics(body, encoding)


class _Signal(NamedTuple):
    request: type[ExportTraceServiceRequest] | type[ExportMetricsServiceRequest]
    field: str
    json_field: str


_TRACES = _Signal(ExportTraceServiceRequest, "resource_spans", "resourceSpans")
_METRICS = _Signal(ExportMetricsServiceRequest, "resource_metrics", "resourceMetrics")


def _signal(routing_key: str) -> _Signal:
    """The request type the exporter's routing key names."""
    if routing_key == TRACES_ROUTING_KEY:
        return _TRACES
    if routing_key == METRICS_ROUTING_KEY:
        return _METRICS
    if routing_key == LOGS_ROUTING_KEY:
        raise MalformedMessage("logs are not ingested (routing key 'otlp_logs')")
    raise MalformedMessage(
        f"unknown OTLP routing key {routing_key!r}; expected "
        f"{TRACES_ROUTING_KEY!r} or {METRICS_ROUTING_KEY!r}"[:MAX_REASON_CHARS]
    )


def _encoding(body: bytes, content_type: str) -> Encoding:
    kind = content_type.split(";")[0].strip().lower()
    if kind in PROTO_CONTENT_TYPES:
        return "proto"
    if kind in JSON_CONTENT_TYPES:
        return "json"
    if not kind:
        return "json" if body.lstrip()[:1] == b"{" else "proto"
    raise MalformedMessage(f"unsupported OTLP content type {kind!r}"[:MAX_REASON_CHARS])


_MALFORMED = (TypeError, ValueError, AttributeError, KeyError, OverflowError)
"""What walking a hostile OTLP/JSON tree raises: a list where an object belongs, a text
that is not a number, ``Infinity`` or a 10**30 nanoseconds timestamp (OverflowError from
``int`` and ``timedelta``)."""


def _check_encoding(encoding: str) -> None:
    if encoding not in ("proto", "json"):
        raise MalformedMessage(f"unknown OTLP encoding {encoding!r}; expected 'proto' or 'json'")


def _json_object(body: bytes, field: str, message: str) -> dict[str, Any]:
    """The decoded OTLP/JSON request; a non-empty object without ``field`` is refused,
    since it is almost surely a message routed to the wrong queue, not an empty request."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise MalformedMessage(f"not an OTLP/JSON {message}: a {type(payload).__name__}")
    if any(marker in body for marker in _SURROGATE_MARKERS) and not _valid_unicode(payload):
        raise MalformedMessage(
            f"not an OTLP/JSON {message}: a string holds a lone surrogate (\\ud800-\\udfff), "
            "which is not Unicode text (protobuf refuses such a message too)"
        )
    if payload and field not in payload:
        keys = ", ".join(sorted(payload)[:5])
        raise MalformedMessage(f"not an OTLP/JSON {message}: no {field!r} (keys: {keys})")
    return payload


_SURROGATE_MARKERS = (b"\\ud", b"\\uD", b"\xed", b"\x00")
"""A body without these cannot decode to a lone surrogate: no escape of one, no CESU-8 lead
byte, and not UTF-16/32 (which ``json`` also reads, and which always holds a zero byte)."""


def _valid_unicode(payload: dict[str, Any]) -> bool:
    """No lone surrogate anywhere (an escape such as ``"\\ud800"``, or its CESU-8 bytes,
    which ``json`` decodes too): events must hold text pydantic accepts and that can be
    encoded again. Checked only when the body holds one of ``_SURROGATE_MARKERS``."""
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


_Request = TypeVar("_Request", ExportTraceServiceRequest, ExportMetricsServiceRequest)


def _proto_request(cls: type[_Request], body: bytes, field: str) -> _Request:
    """Decode; a non-empty body that decodes to an empty request carried only unknown
    fields, so it is not this message type either."""
    try:
        request = cls.FromString(body)
    except DecodeError as exc:
        raise MalformedMessage(
            f"not an OTLP protobuf {cls.__name__}: {exc}"[:MAX_REASON_CHARS]
        ) from exc
    if body and not getattr(request, field):
        raise MalformedMessage(f"not an OTLP protobuf {cls.__name__}: no {field}")
    return request


def _decode_failure(message: str, exc: Exception) -> MalformedMessage:
    return MalformedMessage(f"malformed OTLP/JSON {message}: {exc!r}"[:MAX_REASON_CHARS])


# --------------------------------------------------------------------------- shared helpers


class _Resource(NamedTuple):
    service: str
    attributes: dict[str, str | int | float | bool] | None
    """Shared by the resource's spans without evidence: read-only by convention."""


def _resource(values: Mapping[str, object]) -> _Resource:
    """The service and the resource attributes worth carrying as evidence."""
    raw = values.get("service.name")
    service = str(raw) if raw not in (None, "") else UNKNOWN_SERVICE
    attributes: dict[str, str | int | float | bool] = {}
    if (version := values.get("service.version")) not in (None, ""):
        attributes["service.version"] = _clean(str(version))
    for key in _ENVIRONMENT_KEYS:
        if (environment := values.get(key)) not in (None, ""):
            attributes["deployment.environment"] = _clean(str(environment))
            break
    return _Resource(service, attributes or None)


def _clean(text: str) -> str:
    """Untrusted text for the evidence list: control characters (newlines of a stack
    trace, terminal escapes) collapsed to a space, and bounded in length."""
    return _CONTROL.sub(" ", text).strip()[:MAX_EVIDENCE_CHARS]


def _timestamp(unix_nano: int) -> datetime:
    """Exact to the microsecond (a float of seconds would lose it), always UTC."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


def _construct(cls: type[_Event], fields: dict[str, Any]) -> _Event:
    """An instance of a pydantic model from fields this module has already checked, without
    validation: what ``model_construct`` does, minus its per-field alias and default
    handling, which costs 2.7 us of the 6.7 us a span may take at 150,000 spans/s.
    ``fields`` must hold every field of the model; the tests compare the result with a
    validated instance so that a pydantic upgrade that changes this cannot pass silently."""
    event = _new(cls)
    _set(event, "__dict__", fields)
    _set(event, "__pydantic_fields_set__", set(fields))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def _reject(batch: ParsedBatch, item: dict[str, object], reason: str) -> None:
    batch.rejected.append((item, reason[:MAX_REASON_CHARS]))


# --------------------------------------------------------------------------- spans


def parse_otlp_traces(body: bytes, encoding: Encoding) -> OtlpBatch:
    """Spans of an ``ExportTraceServiceRequest`` as ``SpanEvent``s; see the module doc."""
    _check_encoding(encoding)
    batch = OtlpBatch()
    if encoding == "proto":
        request = _proto_request(ExportTraceServiceRequest, body, "resource_spans")
        _spans_from_proto(request, batch)
        return batch
    payload = _json_object(body, "resourceSpans", "ExportTraceServiceRequest")
    try:
        _spans_from_json(payload, batch)
    except _MALFORMED as exc:
        raise _decode_failure("ExportTraceServiceRequest", exc) from exc
    return batch


def _add_span(
    batch: OtlpBatch,
    resource: _Resource,
    name: str,
    kind: str,
    start: int,
    end: int,
    trace_id: str | None,
    span_id: str | None,
    error: bool,
    peer: str | None,
    evidence: dict[str, str | int | float | bool] | None,
) -> None:
    """Check every constrained field, then build the event without pydantic validation
    (about 4x cheaper, and the checks below are the contract's)."""
    problem = None
    if not name:
        problem = "name is empty"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"name is longer than {MAX_NAME_CHARS} characters"
    elif start <= 0:
        problem = "start_time_unix_nano is unset"
    elif end <= 0:
        problem = "end_time_unix_nano is unset"
    elif end < start:
        problem = f"end_time_unix_nano is {start - end} ns before start_time_unix_nano"
    elif (end - start) / 1e6 > MAX_DURATION_MS:
        problem = f"duration_ms {(end - start) / 1e6:.0f} exceeds {MAX_DURATION_MS:.0f}"
    elif trace_id is not None and len(trace_id) > MAX_TRACE_ID_CHARS:
        problem = f"trace_id is longer than {MAX_TRACE_ID_CHARS} hex characters"
    elif span_id is not None and len(span_id) > MAX_SPAN_ID_CHARS:
        problem = f"span_id is longer than {MAX_SPAN_ID_CHARS} hex characters"
    if problem is not None:
        label = name[:80] if name else "<unnamed>"
        item = {
            "service": resource.service,
            "name": name[:MAX_NAME_CHARS],
            "trace_id": trace_id,
            "span_id": span_id,
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
        }
        _reject(batch, item, f"span {label!r} (span_id {span_id}): {problem}")
        return
    if evidence is None:
        attributes = resource.attributes
    elif resource.attributes:
        attributes = {**resource.attributes, **evidence}
    else:
        attributes = evidence
    batch.events.append(
        _construct(
            SpanEvent,
            {
                "service": resource.service,
                "operation": name,
                "duration_ms": (end - start) / 1e6,
                "timestamp": _EPOCH + timedelta(microseconds=end // 1000),
                "status": "error" if error else "ok",
                "kind": kind,
                "peer_service": peer[:MAX_NAME_CHARS] if peer else None,
                "trace_id": trace_id,
                "span_id": span_id,
                "attributes": attributes,
            },
        )
    )


def _exception_evidence(
    exception_type: object, exception_message: object, status_message: str
) -> dict[str, str | int | float | bool] | None:
    evidence: dict[str, str | int | float | bool] = {}
    if exception_type:
        evidence["exception.type"] = _clean(str(exception_type))
    if exception_message:
        evidence["exception.message"] = _clean(str(exception_message))
    if status_message:
        evidence["status.description"] = _clean(status_message)
    return {k: v for k, v in evidence.items() if v} or None


# ----------------------------------------------------------------- spans: protobuf


def _proto_value(value: AnyValue) -> object:
    """A scalar AnyValue as a Python value; arrays, key-value lists and bytes as None
    (nothing read here is one)."""
    which = value.WhichOneof("value")
    if which in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, which)
    return None


def _proto_resource(attributes: Iterable[KeyValue]) -> _Resource:
    values = {kv.key: _proto_value(kv.value) for kv in attributes if kv.key in _RESOURCE_KEYS}
    return _resource(values)


def _proto_peer(attributes: Iterable[KeyValue]) -> str | None:
    best, best_rank = None, len(PEER_ATTRIBUTES)
    for kv in attributes:
        rank = _PEER_RANK.get(kv.key)
        if rank is not None and rank < best_rank:
            value = _proto_value(kv.value)
            if value not in (None, ""):
                best, best_rank = str(value), rank
                if rank == 0:
                    break
    return best


def _spans_from_proto(request: ExportTraceServiceRequest, batch: OtlpBatch) -> None:
    kinds, n_kinds = _KINDS, len(_KINDS)
    for resource_spans in request.resource_spans:
        resource = _proto_resource(resource_spans.resource.attributes)
        if len(resource.service) > MAX_NAME_CHARS:
            n = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            _reject_resource(batch, resource, n)
            continue
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                number = span.kind
                kind = kinds[number] if 0 <= number < n_kinds else None
                if kind is None:
                    batch.skipped += 1
                    continue
                peer = _proto_peer(span.attributes) if kind in ("client", "producer") else None
                status = span.status
                evidence = None
                if span.events or status.message:
                    evidence = _proto_evidence(span, status.message)
                trace_id = span.trace_id.hex() or None
                span_id = span.span_id.hex() or None
                _add_span(
                    batch,
                    resource,
                    span.name,
                    kind,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    trace_id,
                    span_id,
                    status.code == _STATUS_ERROR,
                    peer,
                    evidence,
                )


def _proto_evidence(span: Span, status_message: str) -> dict[str, str | int | float | bool] | None:
    """The last ``exception`` event (the one that ended the span) and the status text."""
    exception_type: object = None
    exception_message: object = None
    for event in span.events:
        if event.name == "exception":
            values = {kv.key: _proto_value(kv.value) for kv in event.attributes}
            exception_type = values.get("exception.type")
            exception_message = values.get("exception.message")
    return _exception_evidence(exception_type, exception_message, status_message)


def _reject_resource(batch: OtlpBatch, resource: _Resource, n_spans: int) -> None:
    """A service name the contract refuses rejects the resource's spans as one item: the
    reason is the same for all of them, and one item keeps the dead-letter header short."""
    item = {"service.name": resource.service[:MAX_NAME_CHARS] + "...", "spans": n_spans}
    _reject(
        batch,
        item,
        f"resource service.name is longer than {MAX_NAME_CHARS} characters: "
        f"its {n_spans} spans are refused",
    )


# ----------------------------------------------------------------- spans: OTLP/JSON


def _json_value(value: Any) -> object:
    """A scalar OTLP/JSON AnyValue (``{"stringValue": ...}``; 64-bit ints are strings)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    return None


def _json_attributes(
    attributes: Any, wanted: frozenset[str] | Mapping[str, int]
) -> dict[str, object]:
    return {
        kv["key"]: _json_value(kv.get("value"))
        for kv in attributes or ()
        if kv.get("key") in wanted
    }


def _json_id(value: Any, n_bytes: int, field: str) -> str | None:
    """OTLP/JSON ids are hex (the OTLP spec, unlike the protobuf JSON mapping's base64);
    base64 is still accepted, since some older exporters wrote it, and its length (24 or
    12 characters) can never be taken for a hex id (32 or 16)."""
    if not value:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a string")
    if len(value) == 2 * n_bytes:
        try:
            if len(bytes.fromhex(value)) == n_bytes:
                return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == n_bytes:
        return raw.hex()
    raise ValueError(f"{field} {value[:40]!r} is neither {2 * n_bytes} hex digits nor base64")


def _spans_from_json(payload: dict[str, Any], batch: OtlpBatch) -> None:
    kinds = _JSON_KINDS
    for resource_spans in payload.get("resourceSpans") or ():
        resource = _resource(
            _json_attributes(
                (resource_spans.get("resource") or {}).get("attributes"), _RESOURCE_KEYS
            )
        )
        scopes = resource_spans.get("scopeSpans") or ()
        if len(resource.service) > MAX_NAME_CHARS:
            n = sum(len(scope.get("spans") or ()) for scope in scopes)
            _reject_resource(batch, resource, n)
            continue
        for scope_spans in scopes:
            for span in scope_spans.get("spans") or ():
                try:
                    kind = kinds.get(span.get("kind", 0))
                    if kind is None:
                        batch.skipped += 1
                        continue
                    peer = None
                    if kind in ("client", "producer"):
                        peer = _json_peer(span.get("attributes"))
                    status = span.get("status") or {}
                    status_message = status.get("message") or ""
                    events = span.get("events")
                    evidence = None
                    if events or status_message:
                        evidence = _json_evidence(events, status_message)
                    name = span.get("name") or ""
                    if not isinstance(name, str):
                        raise TypeError(f"name is a {type(name).__name__}, not a string")
                    _add_span(
                        batch,
                        resource,
                        name,
                        kind,
                        int(span.get("startTimeUnixNano") or 0),
                        int(span.get("endTimeUnixNano") or 0),
                        _json_id(span.get("traceId"), 16, "traceId"),
                        _json_id(span.get("spanId"), 8, "spanId"),
                        status.get("code", 0) in _JSON_STATUS_ERROR,
                        peer,
                        evidence,
                    )
                except _MALFORMED as exc:
                    name = span.get("name") if isinstance(span, dict) else None
                    item = span if isinstance(span, dict) else {"span": repr(span)[:200]}
                    _reject(batch, item, f"span {name!r}: malformed: {exc}")


def _json_peer(attributes: Any) -> str | None:
    values = _json_attributes(attributes, _PEER_RANK)
    for key in PEER_ATTRIBUTES:
        value = values.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _json_evidence(events: Any, status_message: str) -> dict[str, str | int | float | bool] | None:
    exception_type: object = None
    exception_message: object = None
    for event in events or ():
        if event.get("name") == "exception":
            values = _json_attributes(event.get("attributes"), _EXCEPTION_KEYS)
            exception_type = values.get("exception.type")
            exception_message = values.get("exception.message")
    return _exception_evidence(exception_type, exception_message, str(status_message))


# --------------------------------------------------------------------------- metrics


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

_GAUGE_RULE = "mean"
_SUM_RULE = "sum"
_STATE_KEYS = ("state", "cpu.mode", "system.cpu.state", "system.memory.state")
_CPU_KEYS = ("cpu", "cpu.logical_number", "system.cpu.logical_number")
_POINT_KEYS = frozenset({*_STATE_KEYS, *_CPU_KEYS})
_NO_RECORDED_VALUE = 1

Point = tuple[int, float, object, object]
"""(time_unix_nano, value, state attribute, cpu attribute) of one number data point."""


def parse_otlp_metrics(body: bytes, encoding: Encoding) -> OtlpBatch:
    """Gauge and sum points of an ``ExportMetricsServiceRequest`` as ``MetricSample``s;
    see ``METRIC_RULES``."""
    _check_encoding(encoding)
    batch = OtlpBatch()
    if encoding == "proto":
        request = _proto_request(ExportMetricsServiceRequest, body, "resource_metrics")
        _metrics_from_proto(request, batch)
        return batch
    payload = _json_object(body, "resourceMetrics", "ExportMetricsServiceRequest")
    try:
        _metrics_from_json(payload, batch)
    except _MALFORMED as exc:
        raise _decode_failure("ExportMetricsServiceRequest", exc) from exc
    return batch


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
        elif rule.target.endswith("_pct") and value > 100:
            problem = f"{rule.target} {value:g} is outside 0..100"
        if problem is not None:
            item = {
                "service": service[:MAX_NAME_CHARS],
                "metric": name[:MAX_METRIC_CHARS],
                "time_unix_nano": time_unix_nano,
                "value": value if math.isfinite(value) else str(value),
            }
            label = name if name == rule.target else f"{name} -> {rule.target}"
            _reject(batch, item, f"metric {label[:120]!r}: {problem}")
            continue
        batch.events.append(
            _construct(
                MetricSample,
                {
                    "service": service,
                    "metric": rule.target,
                    "value": float(value),
                    "timestamp": _timestamp(time_unix_nano),
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
        service = _proto_resource(resource_metrics.resource.attributes).service
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                _proto_metric(batch, service, scope, metric)


def _proto_metric(batch: OtlpBatch, service: str, scope: str, metric: Metric) -> None:
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
                {kv.key: _proto_value(kv.value) for kv in point.attributes if kv.key in _POINT_KEYS}
            )
        points.append((point.time_unix_nano, float(value), state, cpu))
    _add_metric(batch, service, metric.name, rule, points)


def _proto_point_count(metric: Metric, data: str | None) -> int:
    return len(getattr(metric, data).data_points) if data else 0


# ----------------------------------------------------------------- metrics: OTLP/JSON

_JSON_UNINGESTED = ("histogram", "exponentialHistogram", "summary")


def _metrics_from_json(payload: dict[str, Any], batch: OtlpBatch) -> None:
    for resource_metrics in payload.get("resourceMetrics") or ():
        service = _resource(
            _json_attributes(
                (resource_metrics.get("resource") or {}).get("attributes"), _RESOURCE_KEYS
            )
        ).service
        for scope_metrics in resource_metrics.get("scopeMetrics") or ():
            scope = str((scope_metrics.get("scope") or {}).get("name") or "")
            for metric in scope_metrics.get("metrics") or ():
                try:
                    _json_metric(batch, service, scope, metric)
                except _MALFORMED as exc:
                    name = metric.get("name") if isinstance(metric, dict) else None
                    item = metric if isinstance(metric, dict) else {"metric": repr(metric)[:200]}
                    _reject(batch, item, f"metric {name!r}: malformed: {exc}")


def _json_metric(batch: OtlpBatch, service: str, scope: str, metric: dict[str, Any]) -> None:
    name = str(metric.get("name") or "")
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
            state, cpu = _state_and_cpu(_json_attributes(point.get("attributes"), _POINT_KEYS))
        points.append((int(point.get("timeUnixNano") or 0), value, state, cpu))
    _add_metric(batch, service, name, rule, points)


# --------------------------------------------------------------------------- sharding

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
        request = _proto_request(signal.request, body, signal.field)
        groups: dict[int, list[Any]] = {}
        for resource in getattr(request, signal.field):
            service = _proto_resource(resource.resource.attributes).service
            groups.setdefault(shard_of(service), []).append(resource)
        if len(groups) == 1:
            return {shard: (body, PROTO_CONTENT_TYPE) for shard in groups}
        parts = {}
        for shard, resources in groups.items():
            part = signal.request()
            getattr(part, signal.field).extend(resources)
            parts[shard] = (part.SerializeToString(), PROTO_CONTENT_TYPE)
        return parts
    payload = _json_object(body, signal.json_field, signal.request.__name__)
    try:
        groups = {}
        for resource in payload.get(signal.json_field) or ():
            values = _json_attributes(
                (resource.get("resource") or {}).get("attributes"), _RESOURCE_KEYS
            )
            groups.setdefault(shard_of(_resource(values).service), []).append(resource)
    except _MALFORMED as exc:
        raise _decode_failure(signal.request.__name__, exc) from exc
    if len(groups) == 1:
        return {shard: (body, JSON_CONTENT_TYPE) for shard in groups}
    return {
        shard: (json.dumps({signal.json_field: resources}).encode(), JSON_CONTENT_TYPE)
        for shard, resources in groups.items()
    }

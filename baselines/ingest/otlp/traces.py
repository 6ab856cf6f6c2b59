"""Spans of an OTLP ``ExportTraceServiceRequest`` as ``SpanEvent``s.

Mapping decisions (the "why" is next to each helper):

* A span's ``service`` is its resource's ``service.name``; a resource without one is read as
  ``unknown_service``, the fallback the OTel SDK specification prescribes, so its spans still
  count rather than vanish; a ``service.name`` longer than 200 characters rejects the
  resource's spans as one rejected item.
* ``SPAN_KIND_INTERNAL`` and ``SPAN_KIND_UNSPECIFIED`` spans become kind ``internal``, with
  their ``parent_span_id``: some tracers set no kind at all, and the detector infers from
  the services of a span's parent and children whether it is an entry, a call or neither.
* Evidence (``exception.type``, ``exception.message`` of the last ``exception`` span event,
  ``status.description`` from the span status) and the resource's ``service.version`` and
  ``deployment.environment`` go into ``SpanEvent.attributes``; spans without evidence share
  one read-only dict per resource (or ``None`` when the resource has neither), so a batch
  of 1000 spans does not carry 1000 copies of the same two strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from baselines.ingest.otlp.common import (
    EPOCH,
    MALFORMED,
    MAX_NAME_CHARS,
    Encoding,
    OtlpBatch,
    Resource,
    clean,
    construct,
    json_attributes,
    json_id,
    json_scopes,
    parse_request,
    proto_scopes,
    proto_value,
    reject,
)
from service.contract import MAX_DURATION_MS, SpanEvent

MAX_TRACE_ID_CHARS = 64
MAX_SPAN_ID_CHARS = 32

_KINDS: tuple[str | None, ...] = (
    "internal",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
)
"""Indexed by the protobuf ``Span.SpanKind`` number."""
_JSON_KINDS: Mapping[int | str, str] = MappingProxyType(
    {
        0: "internal",
        1: "internal",
        "SPAN_KIND_UNSPECIFIED": "internal",
        "SPAN_KIND_INTERNAL": "internal",
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
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.message"})


def parse_otlp_traces(body: bytes, encoding: Encoding) -> OtlpBatch:
    """Spans of an ``ExportTraceServiceRequest`` as ``SpanEvent``s; see the module doc."""
    return parse_request(
        body,
        encoding,
        ExportTraceServiceRequest,
        ("resource_spans", "resourceSpans"),
        _spans_from_proto,
        _spans_from_json,
    )


def _add_span(
    batch: OtlpBatch,
    resource: Resource,
    name: str,
    kind: str,
    start: int,
    end: int,
    trace_id: str | None,
    span_id: str | None,
    parent_span_id: str | None,
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
    elif parent_span_id is not None and len(parent_span_id) > MAX_SPAN_ID_CHARS:
        problem = f"parent_span_id is longer than {MAX_SPAN_ID_CHARS} hex characters"
    if problem is not None:
        label = name[:80] if name else "<unnamed>"
        item: dict[str, object] = {
            "service": resource.service,
            "name": name[:MAX_NAME_CHARS],
            "trace_id": trace_id,
            "span_id": span_id,
            "start_time_unix_nano": start,
            "end_time_unix_nano": end,
        }
        reject(batch, item, f"span {label!r} (span_id {span_id}): {problem}")
        return
    if evidence is None:
        attributes = resource.attributes
    elif resource.attributes:
        attributes = {**resource.attributes, **evidence}
    else:
        attributes = evidence
    batch.events.append(
        construct(
            SpanEvent,
            {
                "service": resource.service,
                "operation": name,
                "duration_ms": (end - start) / 1e6,
                "timestamp": EPOCH + timedelta(microseconds=end // 1000),
                "status": "error" if error else "ok",
                "kind": kind,
                "peer_service": peer[:MAX_NAME_CHARS] if peer else None,
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": parent_span_id,
                "attributes": attributes,
            },
        )
    )


def _exception_evidence(
    exception_type: object, exception_message: object, status_message: str
) -> dict[str, str | int | float | bool] | None:
    evidence: dict[str, str | int | float | bool] = {}
    if exception_type:
        evidence["exception.type"] = clean(str(exception_type))
    if exception_message:
        evidence["exception.message"] = clean(str(exception_message))
    if status_message:
        evidence["status.description"] = clean(status_message)
    return {k: v for k, v in evidence.items() if v} or None


# ----------------------------------------------------------------- spans: protobuf


def _proto_peer(attributes: Iterable[KeyValue]) -> str | None:
    best, best_rank = None, len(PEER_ATTRIBUTES)
    for kv in attributes:
        rank = _PEER_RANK.get(kv.key)
        if rank is not None and rank < best_rank:
            value = proto_value(kv.value)
            if value not in (None, ""):
                best, best_rank = str(value), rank
                if rank == 0:
                    break
    return best


def _spans_from_proto(request: ExportTraceServiceRequest, batch: OtlpBatch) -> None:
    kinds, n_kinds = _KINDS, len(_KINDS)
    for resource, scope_spans in proto_scopes(
        request.resource_spans, "scope_spans", "spans", batch, "spans"
    ):
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
            parent_span_id = span.parent_span_id.hex() or None
            _add_span(
                batch,
                resource,
                span.name,
                kind,
                span.start_time_unix_nano,
                span.end_time_unix_nano,
                trace_id,
                span_id,
                parent_span_id,
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
            values = {kv.key: proto_value(kv.value) for kv in event.attributes}
            exception_type = values.get("exception.type")
            exception_message = values.get("exception.message")
    return _exception_evidence(exception_type, exception_message, status_message)


# ----------------------------------------------------------------- spans: OTLP/JSON


def _spans_from_json(payload: dict[str, Any], batch: OtlpBatch) -> None:
    kinds = _JSON_KINDS
    for resource, scope_spans in json_scopes(
        payload.get("resourceSpans"), "scopeSpans", "spans", batch, "spans"
    ):
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
                    json_id(span.get("traceId"), 16, "traceId"),
                    json_id(span.get("spanId"), 8, "spanId"),
                    json_id(span.get("parentSpanId"), 8, "parentSpanId"),
                    status.get("code", 0) in _JSON_STATUS_ERROR,
                    peer,
                    evidence,
                )
            except MALFORMED as exc:
                name = span.get("name") if isinstance(span, dict) else None
                item = span if isinstance(span, dict) else {"span": repr(span)[:200]}
                reject(batch, item, f"span {name!r}: malformed: {exc}")


def _json_peer(attributes: Any) -> str | None:
    values = json_attributes(attributes, _PEER_RANK)
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
            values = json_attributes(event.get("attributes"), _EXCEPTION_KEYS)
            exception_type = values.get("exception.type")
            exception_message = values.get("exception.message")
    return _exception_evidence(exception_type, exception_message, str(status_message))

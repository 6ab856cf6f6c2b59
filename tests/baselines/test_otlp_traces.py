"""OTLP spans as the Collector's rabbitmqexporter publishes them, built with the OTel SDK's
own types and encoders (``tests.baselines.otlp_helpers``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import SpanKind

from baselines.ingest.otlp import parse_otlp_traces
from service.contract import SpanEvent
from tests.baselines.otlp_helpers import (
    MS,
    RESOURCE,
    T0,
    assert_valid,
    both,
    by_operation,
    mixed_spans,
    timed,
)
from tests.otlp import record_spans, to_otlp_json


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_spans_map_kind_duration_status_peer_and_evidence(encoding: str) -> None:
    spans = record_spans(mixed_spans, RESOURCE)
    body = dict((e, b) for b, e in both(encode_spans(spans)))[encoding]
    batch = parse_otlp_traces(body, encoding)  # type: ignore[arg-type]
    assert not batch.rejected
    assert_valid(batch)
    events = by_operation(batch)

    server = events["POST /checkout"]
    assert (server.service, server.kind, server.status) == ("checkout", "server", "ok")
    assert server.duration_ms == pytest.approx(120.5)
    assert server.timestamp == datetime(2025, 11, 16, 9, 0, 0, 120500, tzinfo=UTC)
    assert server.peer_service is None
    assert server.attributes == {"service.version": "2.4.1", "deployment.environment": "prod"}

    assert events["charge"].peer_service == "payments"
    assert events["charge"].duration_ms == pytest.approx(80.25)
    assert events["SELECT orders"].peer_service == "postgresql"
    assert events["GET"].peer_service == "inventory"  # server.address before db.system
    assert events["orders publish"].kind == "producer"
    assert events["orders publish"].peer_service == "orders"
    assert events["orders process"].kind == "consumer"
    assert events["orders process"].peer_service is None  # only client/producer calls
    # an INTERNAL span is kept, kind "internal", for the detector to resolve from its links
    assert events["render"].kind == "internal"
    assert batch.skipped == 0

    failed = events["fetch rates"]
    assert failed.status == "error"
    assert failed.attributes == {
        "service.version": "2.4.1",
        "deployment.environment": "prod",
        "exception.type": "TimeoutError",
        "exception.message": "fx-rates GET /rates timed out after 5s",
        "status.description": "upstream timed out",
    }
    by_id = {format(s.context.span_id, "016x"): s for s in spans}
    for event in batch.events:
        assert isinstance(event, SpanEvent)
        source = by_id[event.span_id]  # type: ignore[index]
        assert event.trace_id == format(source.context.trace_id, "032x")
        assert event.operation == source.name


def test_protobuf_and_json_give_identical_events() -> None:
    request = encode_spans(record_spans(mixed_spans, RESOURCE))
    (proto, _), (otlp_json, _) = both(request)
    from_proto = parse_otlp_traces(proto, "proto")
    from_json = parse_otlp_traces(otlp_json, "json")
    assert from_proto.events == from_json.events
    assert from_proto.skipped == from_json.skipped == 0
    assert len(from_proto.events) == 8


def test_json_ids_are_hex_as_the_collector_writes_them() -> None:
    spans = record_spans(lambda t: timed(t, "POST /pay", SpanKind.SERVER, 0, 5), RESOURCE)
    body = to_otlp_json(encode_spans(spans))
    raw = json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(raw["traceId"]) == 32 and len(raw["spanId"]) == 16
    (event,) = parse_otlp_traces(body, "json").events
    assert isinstance(event, SpanEvent)
    assert event.trace_id == format(spans[0].context.trace_id, "032x")
    assert event.span_id == format(spans[0].context.span_id, "016x")

    # Upper-case hex, and the base64 of older exporters, mean the same ids.
    raw["traceId"], raw["spanId"] = raw["traceId"].upper(), raw["spanId"].upper()
    upper = json.loads(body)
    upper["resourceSpans"][0]["scopeSpans"][0]["spans"][0] = raw
    assert parse_otlp_traces(json.dumps(upper).encode(), "json").events == [event]
    old = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    assert parse_otlp_traces(json.dumps(old).encode(), "json").events == [event]


def test_json_enum_names_and_numeric_integers_are_accepted() -> None:
    spans = record_spans(
        lambda t: timed(t, "GET /a", SpanKind.SERVER, 0, 5, error="boom"), RESOURCE
    )
    payload = MessageToDict(encode_spans(spans))  # enum names, ids in base64
    span = payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["kind"] == "SPAN_KIND_SERVER"
    span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
    (event,) = parse_otlp_traces(json.dumps(payload).encode(), "json").events
    assert isinstance(event, SpanEvent)
    assert (event.kind, event.status, event.duration_ms) == ("server", "error", 5.0)


def test_a_span_ending_before_it_starts_is_rejected_by_name_and_the_rest_kept() -> None:
    request = encode_spans(record_spans(mixed_spans, RESOURCE))
    bad = request.resource_spans[0].scope_spans[0].spans[1]
    bad.end_time_unix_nano = bad.start_time_unix_nano - 1000
    for body, encoding in both(request):
        batch = parse_otlp_traces(body, encoding)  # type: ignore[arg-type]
        assert len(batch.events) == 7
        ((item, reason),) = batch.rejected
        assert "'charge'" in reason and bad.span_id.hex() in reason
        assert "end_time_unix_nano" in reason and "before start_time_unix_nano" in reason
        json.dumps(item)  # the consumer dead-letters rejected items as JSON


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name is empty"),
        ({"name": "x" * 201}, "name is longer than 200"),
        ({"end_time_unix_nano": T0 + 2 * 86_400_000 * MS}, "duration_ms"),
        ({"start_time_unix_nano": 0}, "start_time_unix_nano is unset"),
    ],
)
def test_invalid_span_fields_are_named(change: dict[str, Any], field: str) -> None:
    request = encode_spans(
        record_spans(lambda t: timed(t, "GET /a", SpanKind.SERVER, 0, 5), RESOURCE)
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for key, value in change.items():
        setattr(span, key, value)
    for body, encoding in both(request):
        batch = parse_otlp_traces(body, encoding)  # type: ignore[arg-type]
        assert not batch.events
        ((_, reason),) = batch.rejected
        assert field in reason


def test_a_malformed_json_span_is_rejected_alone() -> None:
    spans = record_spans(
        lambda t: [timed(t, n, SpanKind.SERVER, 0, 5) for n in ("GET /a", "GET /b")], RESOURCE
    )
    payload = json.loads(to_otlp_json(encode_spans(spans)))
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["endTimeUnixNano"] = "soon"
    batch = parse_otlp_traces(json.dumps(payload).encode(), "json")
    assert [e.operation for e in batch.events] == ["GET /b"]  # type: ignore[union-attr]
    ((_, reason),) = batch.rejected
    assert "'GET /a'" in reason and "malformed" in reason


def test_evidence_text_is_cleaned_and_bounded_and_absent_without_evidence() -> None:
    message = "line one\nline two\x1b[31m\t" + "x" * 400
    spans = record_spans(
        lambda t: [
            timed(t, "GET /a", SpanKind.SERVER, 0, 5, exception=ValueError(message)),
            timed(t, "GET /b", SpanKind.SERVER, 0, 5),
        ],
        resource={"service.name": "checkout"},
    )
    for body, encoding in both(encode_spans(spans)):
        events = by_operation(parse_otlp_traces(body, encoding))  # type: ignore[arg-type]
        text = events["GET /a"].attributes["exception.message"]  # type: ignore[index]
        assert isinstance(text, str) and len(text) == 300
        assert text.startswith("line one line two [31m x")
        assert not any(ord(c) < 32 for c in text)
        assert events["GET /a"].status == "ok"  # an exception alone is not an error status
        assert events["GET /b"].attributes is None


def test_a_resource_without_service_name_is_unknown_service() -> None:
    spans = record_spans(lambda t: timed(t, "GET /a", SpanKind.SERVER, 0, 5), resource={})
    for body, encoding in both(encode_spans(spans)):
        (event,) = parse_otlp_traces(body, encoding).events  # type: ignore[arg-type]
        assert isinstance(event, SpanEvent)
        assert (event.service, event.attributes) == ("unknown_service", None)


def test_an_overlong_service_name_rejects_its_resource_as_one_item() -> None:
    spans = record_spans(
        lambda t: [timed(t, n, SpanKind.SERVER, 0, 5) for n in ("GET /a", "GET /b")],
        resource={"service.name": "s" * 201},
    )
    for body, encoding in both(encode_spans(spans)):
        batch = parse_otlp_traces(body, encoding)  # type: ignore[arg-type]
        assert not batch.events
        ((item, reason),) = batch.rejected
        assert "service.name" in reason and "2 spans" in reason
        json.dumps(item)

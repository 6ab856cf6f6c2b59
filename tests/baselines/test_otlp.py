"""OTLP as the Collector's rabbitmqexporter publishes it, built with the OTel SDK's own
types and encoders, so the tests read what real instrumentation produces."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, Status, StatusCode

from baselines.ingest.json_events import MalformedMessage, ParsedBatch
from baselines.ingest.otlp import (
    OtlpBatch,
    parse_otlp,
    parse_otlp_metrics,
    parse_otlp_traces,
    split_otlp,
)
from service.contract import MetricSample, SpanEvent
from tests.otlp import record_spans, to_otlp_json

T0 = 1_763_283_600_000_000_000
"""2025-11-16T09:00:00Z in nanoseconds."""
MS = 1_000_000

RESOURCE = {
    "service.name": "checkout",
    "service.version": "2.4.1",
    "deployment.environment": "prod",
}


# --------------------------------------------------------------------------- helpers


def timed(
    tracer: Any,
    name: str,
    kind: SpanKind,
    start_ms: float,
    duration_ms: float,
    attributes: dict[str, Any] | None = None,
    error: str | None = None,
    exception: BaseException | None = None,
) -> None:
    span = tracer.start_span(
        name, kind=kind, attributes=attributes, start_time=T0 + int(start_ms * MS)
    )
    if exception is not None:
        span.record_exception(exception)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=T0 + int((start_ms + duration_ms) * MS))


def both(request: Message) -> Iterator[tuple[bytes, str]]:
    yield request.SerializeToString(), "proto"
    yield to_otlp_json(request), "json"


def mixed_spans(tracer: Any) -> None:
    timed(tracer, "POST /checkout", SpanKind.SERVER, 0, 120.5)
    timed(tracer, "charge", SpanKind.CLIENT, 10, 80.25, {"peer.service": "payments"})
    timed(
        tracer,
        "SELECT orders",
        SpanKind.CLIENT,
        20,
        3.0,
        {"db.system": "postgresql", "db.statement": "SELECT 1"},
    )
    timed(
        tracer,
        "GET",
        SpanKind.CLIENT,
        30,
        7.0,
        {"server.address": "inventory", "server.port": 8080, "db.system": "redis"},
    )
    timed(
        tracer,
        "orders publish",
        SpanKind.PRODUCER,
        40,
        1.5,
        {"messaging.destination.name": "orders"},
    )
    timed(tracer, "orders process", SpanKind.CONSUMER, 50, 30.0, {"peer.service": "ignored"})
    timed(tracer, "render", SpanKind.INTERNAL, 60, 2.0)
    timed(
        tracer,
        "fetch rates",
        SpanKind.CLIENT,
        70,
        5000.0,
        {"peer.service": "fx-rates"},
        error="upstream timed out",
        exception=TimeoutError("fx-rates GET /rates timed out after 5s"),
    )


def by_operation(batch: ParsedBatch) -> dict[str, SpanEvent]:
    return {e.operation: e for e in batch.events if isinstance(e, SpanEvent)}


def collect_metrics(
    register: Callable[[Any], None], resource: dict[str, Any] | None = None
) -> Message:
    """One collection of the SDK's metrics, encoded as the OTLP exporter would send it."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource(RESOURCE if resource is None else resource)
    )
    register(provider.get_meter("test.otlp"))
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return encode_metrics(data)


def observe(points: Iterable[tuple[float, dict[str, Any]]]) -> Callable[[CallbackOptions], Any]:
    points = list(points)

    def callback(options: CallbackOptions) -> Iterator[Observation]:
        for value, attributes in points:
            yield Observation(value, attributes)

    return callback


def samples(batch: ParsedBatch) -> dict[str, float]:
    return {e.metric: e.value for e in batch.events if isinstance(e, MetricSample)}


def assert_valid(batch: ParsedBatch) -> None:
    """Events built without validation must equal their validated selves."""
    for event in batch.events:
        assert type(event).model_validate(event.model_dump()) == event
        assert event.timestamp.tzinfo is UTC


# --------------------------------------------------------------------------- spans


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
    assert "render" not in events
    assert batch.skipped == 1

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
    assert from_proto.skipped == from_json.skipped == 1
    assert len(from_proto.events) == 7


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
        assert len(batch.events) == 6
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


# --------------------------------------------------------------------------- metrics


def host_metrics(meter: Any) -> None:
    meter.create_observable_gauge(
        "system.cpu.utilization",
        callbacks=[
            observe(
                [
                    (0.70, {"cpu": 0, "state": "idle"}),
                    (0.25, {"cpu": 0, "state": "user"}),
                    (0.05, {"cpu": 0, "state": "system"}),
                    (0.30, {"cpu": 1, "state": "idle"}),
                    (0.60, {"cpu": 1, "state": "user"}),
                    (0.10, {"cpu": 1, "state": "system"}),
                ]
            )
        ],
        unit="1",
    )
    meter.create_observable_gauge(
        "system.memory.utilization",
        callbacks=[observe([(0.62, {"state": "used"}), (0.38, {"state": "free"})])],
        unit="1",
    )
    meter.create_observable_up_down_counter(
        "rabbitmq.message.current",
        callbacks=[observe([(120, {"state": "ready"}), (8, {"state": "unacknowledged"})])],
    )
    meter.create_observable_gauge(
        "http.server.active_requests.peak", callbacks=[observe([(4, {}), (6, {"r": "/b"})])]
    )
    meter.create_counter("http.server.requests").add(5)
    meter.create_histogram("http.server.request.duration").record(0.2)


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_metrics_map_to_whyslow_names_and_units(encoding: str) -> None:
    request = collect_metrics(host_metrics)
    body = dict((e, b) for b, e in both(request))[encoding]
    batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
    assert not batch.rejected
    assert_valid(batch)
    assert samples(batch) == {
        "cpu_pct": pytest.approx(50.0),  # 100 * (1 - mean idle of 0.7 and 0.3)
        "memory_pct": pytest.approx(62.0),
        "queue_depth": 128.0,
        "http.server.active_requests.peak": 5.0,  # a gauge: mean over its points
    }
    assert {e.service for e in batch.events} == {"checkout"}
    assert batch.skipped == 2  # the monotonic counter and the histogram
    times = {e.timestamp for e in batch.events}
    assert len(times) == 1 and times.pop().tzinfo is UTC


def test_metrics_in_both_encodings_give_identical_samples() -> None:
    (proto, _), (otlp_json, _) = both(collect_metrics(host_metrics))
    from_proto, from_json = (
        parse_otlp_metrics(proto, "proto"),
        parse_otlp_metrics(otlp_json, "json"),
    )
    assert from_proto.events == from_json.events
    assert from_proto.skipped == from_json.skipped


@pytest.mark.parametrize(
    ("name", "unit", "points", "expected"),
    [
        ("process.cpu.utilization", "1", [(0.42, {})], {"cpu_pct": 42.0}),
        (  # per-mode process CPU: the modes add up
            "process.cpu.utilization",
            "1",
            [(0.2, {"cpu.mode": "user"}), (0.1, {"cpu.mode": "system"})],
            {"cpu_pct": 30.0},
        ),
        (  # states without idle: the busy states summed per CPU
            "system.cpu.utilization",
            "1",
            [(0.5, {"cpu": 0, "state": "user"}), (0.3, {"cpu": 1, "state": "user"})],
            {"cpu_pct": 40.0},
        ),
        ("container.cpu.utilization", "%", [(37.0, {})], {"cpu_pct": 37.0}),
        ("process.memory.utilization", "1", [(0.25, {})], {"memory_pct": 25.0}),
        ("container.memory.percent", "1", [(81.0, {})], {"memory_pct": 81.0}),
        ("queue_depth", "1", [(7, {})], {"queue_depth": 7.0}),
    ],
)
def test_well_known_instruments(
    name: str, unit: str, points: list[tuple[float, dict[str, Any]]], expected: dict[str, float]
) -> None:
    request = collect_metrics(
        lambda m: m.create_observable_gauge(name, callbacks=[observe(points)], unit=unit)
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        assert not batch.rejected
        assert samples(batch) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("system.cpu.utilization", 1.5, "cpu_pct 150 is outside 0..100"),
        ("process.memory.utilization", -0.1, "is negative"),
        ("temperature.delta", -3.0, "is negative"),
    ],
)
def test_invalid_metric_values_are_rejected_naming_metric_and_field(
    name: str, value: float, field: str
) -> None:
    request = collect_metrics(
        lambda m: m.create_observable_gauge(name, callbacks=[observe([(value, {})])])
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        assert not batch.events
        ((item, reason),) = batch.rejected
        assert name in reason and field in reason
        json.dumps(item)


def test_a_non_finite_value_is_rejected() -> None:
    """The SDK drops NaN itself; another sender may not, and OTLP/JSON spells it "NaN"."""
    request = collect_metrics(
        lambda m: m.create_observable_gauge(
            "process.cpu.utilization", callbacks=[observe([(0.5, {})])]
        )
    )
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].as_double = float(
        "nan"
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        ((item, reason),) = batch.rejected
        assert "process.cpu.utilization -> cpu_pct" in reason and "value is nan" in reason
        json.dumps(item, allow_nan=False)


# --------------------------------------------------------------------------- dispatch


def test_dispatch_by_routing_key_and_content_type() -> None:
    spans = encode_spans(record_spans(mixed_spans, RESOURCE))
    metrics = collect_metrics(host_metrics)
    expected_spans = parse_otlp_traces(spans.SerializeToString(), "proto").events
    for content_type in ("application/x-protobuf", "application/protobuf", ""):
        batch = parse_otlp(spans.SerializeToString(), "otlp_spans", content_type)
        assert isinstance(batch, OtlpBatch) and batch.events == expected_spans
    for content_type in ("application/json", "application/json; charset=utf-8", ""):
        assert parse_otlp(to_otlp_json(spans), "otlp_spans", content_type).events == (
            expected_spans
        )
    expected_metrics = parse_otlp_metrics(metrics.SerializeToString(), "proto").events
    assert parse_otlp(metrics.SerializeToString(), "otlp_metrics", "").events == expected_metrics
    assert parse_otlp(to_otlp_json(metrics), "otlp_metrics", "").events == expected_metrics


def test_an_empty_request_is_an_empty_batch() -> None:
    assert parse_otlp(b"", "otlp_spans", "application/x-protobuf").events == []
    assert parse_otlp(b"{}", "otlp_metrics", "application/json").events == []


@pytest.mark.parametrize(
    ("body", "routing_key", "content_type", "reason"),
    [
        (b"\xff\xfe garbage", "otlp_spans", "application/x-protobuf", "not an OTLP protobuf"),
        (b"\x12\x00", "otlp_metrics", "application/x-protobuf", "no resource_metrics"),
        (b"not json", "otlp_spans", "application/json", "not JSON"),
        (b"[1, 2]", "otlp_spans", "application/json", "not an OTLP/JSON"),
        (b'{"service": "a", "operation": "b"}', "otlp_spans", "", "no 'resourceSpans'"),
        (b'{"resourceSpans": 5}', "otlp_spans", "application/json", "malformed OTLP/JSON"),
        (b"{}", "telemetry", "application/json", "unknown OTLP routing key 'telemetry'"),
        (b"{}", "otlp_logs", "application/json", "logs are not ingested"),
        (b"{}", "otlp_spans", "text/plain", "unsupported OTLP content type 'text/plain'"),
    ],
)
def test_unusable_messages_raise_a_clear_reason(
    body: bytes, routing_key: str, content_type: str, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_otlp(body, routing_key, content_type)
    with pytest.raises(MalformedMessage, match=reason):  # the router refuses it alike
        split_otlp(body, routing_key, content_type, lambda service: 0)


# --------------------------------------------------------------------------- sharding

SHARDS = {"checkout": 0, "search": 1, "unknown_service": 1}


def several_services() -> list[tuple[Message, str]]:
    """A span request and a metric request, each mixing services of both shards."""
    spans = encode_spans(
        [
            *record_spans(mixed_spans, {"service.name": "checkout"}),
            *record_spans(mixed_spans, {"service.name": "search"}),
            *record_spans(mixed_spans, {}),
        ]
    )
    metrics = ExportMetricsServiceRequest()
    for service in ("checkout", "search"):
        metrics.resource_metrics.extend(
            collect_metrics(host_metrics, {"service.name": service}).resource_metrics
        )
    return [(spans, "otlp_spans"), (metrics, "otlp_metrics")]


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_a_request_splits_by_service_into_requests_that_parse_to_the_same_events(
    encoding: str,
) -> None:
    for request, routing_key in several_services():
        body = dict((e, b) for b, e in both(request))[encoding]
        parts = split_otlp(body, routing_key, "", SHARDS.__getitem__)
        assert parts.keys() == {0, 1}
        events = []
        for shard, (part, content_type) in parts.items():
            assert content_type == f"application/{'x-protobuf' if encoding == 'proto' else 'json'}"
            batch = parse_otlp(part, routing_key, content_type)
            assert not batch.rejected and {SHARDS[e.service] for e in batch.events} == {shard}
            events += batch.events
        whole = parse_otlp(body, routing_key, "").events
        assert len(whole) >= 8 and sorted(events, key=repr) == sorted(whole, key=repr)


def test_a_request_of_one_shard_passes_unchanged() -> None:
    request = encode_spans(record_spans(mixed_spans, RESOURCE))
    proto, otlp_json = request.SerializeToString(), to_otlp_json(request)
    assert split_otlp(proto, "otlp_spans", "", SHARDS.__getitem__) == {
        0: (proto, "application/x-protobuf")
    }
    assert split_otlp(otlp_json, "otlp_spans", "", SHARDS.__getitem__) == {
        0: (otlp_json, "application/json")
    }

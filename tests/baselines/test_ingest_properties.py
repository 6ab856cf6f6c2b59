"""Hostile input for the message parsers (issue 8). Whatever a producer publishes,
``parse_json_events`` and ``parse_otlp`` return a batch or raise ``MalformedMessage`` with a
reason. The consumer dead-letters on ``MalformedMessage`` only: any other exception would
stop it, or have the broker redeliver the message until its delivery limit. And what they
return must be what the contract allows, since the OTLP path builds events unvalidated."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, Status, StatusCode

from baselines.ingest.json_events import (
    MalformedMessage,
    ParsedBatch,
    parse_json_events,
    split_json_events,
)
from baselines.ingest.otlp import parse_otlp, split_otlp
from service.contract import MAX_DURATION_MS, TELEMETRY_EVENT, MetricSample, SpanEvent
from tests.hostile import (
    PROPERTIES,
    Tally,
    hostile_numbers,
    hostile_text,
    mangled,
    mutated,
    tally_fixture,
)
from tests.otlp import record_spans, to_otlp_json

tally = tally_fixture("message parsers (JSON events, OTLP)")

ROUTING_KEYS = ("otlp_spans", "otlp_metrics")
CONTENT_TYPES = ("", "application/json", "application/x-protobuf", "application/protobuf")


# --------------------------------------------------------------------------- the properties


def assert_usable(batch: ParsedBatch) -> None:
    """Each event is what the contract allows (it equals its validated self), each rejected
    item has a reason and can be dead-lettered as the consumer does it (``json.dumps``)."""
    for event in batch.events:
        assert isinstance(event, SpanEvent | MetricSample)
        assert type(event).model_validate(event.model_dump()) == event
        assert event.timestamp.tzinfo is UTC
    for _, reason in batch.rejected:
        assert isinstance(reason, str) and reason
    json.dumps([item for item, _ in batch.rejected], default=str)


def outcome_of(parse: Callable[[], ParsedBatch], tally: Tally, label: str) -> str:
    """Parse; a batch must be usable, an error must be MalformedMessage with a reason (any
    other exception fails the test). Counted in the tally."""
    try:
        batch = parse()
    except MalformedMessage as exc:
        assert str(exc), "MalformedMessage without a reason"
        tally(f"{label} malformed")
        return "malformed"
    assert_usable(batch)
    tally(f"{label} {'partly rejected' if batch.rejected else 'accepted'}")
    return "rejected" if batch.rejected else "accepted"


def shard(service: str) -> int:
    """Any deterministic mapping will do: this one spreads the seeds' services."""
    return len(service) % 3


def split_loses_nothing(
    split: Callable[[], dict[int, tuple[bytes, str]]],
    parse: Callable[[bytes, str], ParsedBatch],
    whole: Callable[[], ParsedBatch],
    tally: Tally,
    label: str,
) -> None:
    """The router's split of a message: refused with a reason (and then the consumer would
    refuse the whole message too), or parts that each parse, as the shard's consumer does,
    to a batch or a reason; when the whole parses, the parts give its events and rejected
    items, no more and no fewer."""
    try:
        parts = split()
    except MalformedMessage as exc:
        assert str(exc), "MalformedMessage without a reason"
        with pytest.raises(MalformedMessage):
            whole()
        tally(f"{label} malformed")
        return
    outcomes = [outcome_of(partial(parse, *part), tally, label) for part in parts.values()]
    try:
        expected = whole()
    except MalformedMessage:
        assert "malformed" in outcomes  # only the parts of the unreadable resources are lost
        return
    batches = [parse(body, type_) for body, type_ in parts.values()]
    assert sorted(repr(e) for b in batches for e in b.events) == sorted(
        repr(e) for e in expected.events
    )
    assert sum(len(b.rejected) for b in batches) == len(expected.rejected)


# --------------------------------------------------------------------------- JSON events

names = st.text(min_size=1, max_size=200)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
attribute_values = st.one_of(
    st.text(max_size=50), st.integers(), st.floats(allow_nan=False), st.booleans()
)


@st.composite
def span_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON span event (optional fields present or not)."""
    moment = draw(moments)
    event: dict[str, Any] = {
        "service": draw(names),
        "operation": draw(names),
        "duration_ms": draw(st.floats(0, MAX_DURATION_MS)),
        "timestamp": draw(st.sampled_from([moment.isoformat(), int(moment.timestamp())])),
    }
    optional = {
        "status": st.sampled_from(["ok", "error"]),
        "kind": st.sampled_from(["server", "client", "consumer", "producer"]),
        "peer_service": names,
        "trace_id": st.text(max_size=64),
        "span_id": st.text(max_size=32),
        "attributes": st.dictionaries(st.text(max_size=20), attribute_values, max_size=4),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        event[key] = draw(optional[key])
    return event


@st.composite
def metric_samples(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON metric sample."""
    metric = draw(
        st.sampled_from(["cpu_pct", "memory_pct", "queue_depth"])
        | st.text(min_size=1, max_size=100)
    )
    top = 100.0 if metric.endswith("_pct") else 1e12
    return {
        "service": draw(names),
        "metric": metric,
        "value": draw(st.floats(0, top)),
        "timestamp": draw(moments).isoformat(),
    }


valid_events = span_events() | metric_samples()

WRONG: dict[str, list[Any]] = {
    "service": ["", "x" * 201, 5, None, [], {}],
    "operation": ["", "x" * 201, 1.5, None, ["a"]],
    "duration_ms": [-1, -1e-9, MAX_DURATION_MS + 1, float("nan"), float("inf"), "x", None, []],
    "timestamp": ["not a date", "2026-13-01T00:00:00Z", None, [], {}, 1e300, "9999-99-99"],
    "status": ["fine", 1, None],
    "kind": ["internal", 2, None],
    "peer_service": ["", "x" * 201, 7],
    "trace_id": ["x" * 65, 5],
    "span_id": ["x" * 33, 5],
    "attributes": [[1], "a", {"k": [1]}, {"k": {"n": 1}}],
    "metric": ["", "x" * 101, 3, None],
    "value": [-1, float("nan"), float("-inf"), "five", None],
}
"""Values each field must refuse, whatever the other fields hold."""


@st.composite
def invalid_items(draw: st.DrawFn) -> Any:
    """An item of a batch that must be rejected: not an object, a required field missing,
    an unknown field, or one field with a value it must refuse."""
    event = draw(valid_events)
    how = draw(st.sampled_from(["not an object", "missing", "unknown field", "wrong value"]))
    if how == "not an object":
        return draw(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())))
    if how == "missing":
        required = ["service", "timestamp"] + (
            ["metric", "value"] if "metric" in event else ["operation", "duration_ms"]
        )
        del event[draw(st.sampled_from(required))]
        return event
    if how == "unknown field":
        event["servcie"] = "typo"
        return event
    field = draw(st.sampled_from([key for key in event if key in WRONG]))
    value = draw(st.sampled_from(WRONG[field]))
    if field == "metric" and not isinstance(value, str):
        value = None  # a metric name of another type would make the item a span
    event[field] = value
    if field == "metric" and value is None:
        del event["metric"]  # a sample without a metric is a span without its fields
    return event


def dumps(value: Any) -> str:
    """For comparing items that may hold NaN (which is not equal to itself)."""
    return json.dumps(value, default=str)


@settings(PROPERTIES, max_examples=200)
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_json_events_any_bytes_give_a_batch_or_a_reason(tally: Tally, body: bytes) -> None:
    outcome_of(lambda: parse_json_events(body), tally, "json_events any bytes:")


@settings(PROPERTIES, max_examples=200)
@given(st.data())
def test_json_events_near_valid_messages_give_a_batch_or_a_reason(
    tally: Tally, data: st.DataObject
) -> None:
    """Valid events with fields mutated, wrong types, huge numbers, NaN/Infinity literals,
    deep nesting, lone surrogates, control characters; then damaged at the byte level."""
    batch = data.draw(st.lists(valid_events, min_size=1, max_size=4))
    document: Any = batch if data.draw(st.booleans()) else batch[0]
    body = data.draw(mutated(document))
    if data.draw(st.booleans()):
        body = data.draw(mangled(body))
    outcome_of(lambda: parse_json_events(body), tally, "json_events near valid:")
    split_loses_nothing(
        lambda: {k: (part, "") for k, part in split_json_events(body, shard).items()},
        lambda part, _: parse_json_events(part),
        lambda: parse_json_events(body),
        tally,
        "json_events split:",
    )


@settings(PROPERTIES, max_examples=150)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.data())
def test_a_mixed_batch_loses_nothing_and_keeps_the_order(
    tally: Tally, plan: list[bool], data: st.DataObject
) -> None:
    """accepted + rejected == sent; the accepted ones are the valid ones in their order, the
    rejected ones the invalid ones, each reason naming the item's position."""
    items = [data.draw(valid_events if valid else invalid_items()) for valid in plan]
    batch = parse_json_events(json.dumps(items).encode())
    tally("json_events mixed batch")
    assert len(batch.events) + len(batch.rejected) == len(items)
    valid = [item for ok, item in zip(plan, items, strict=True) if ok]
    assert batch.events == [TELEMETRY_EVENT.validate_python(item) for item in valid]
    invalid = [(i, item) for i, (ok, item) in enumerate(zip(plan, items, strict=True)) if not ok]
    assert [dumps(item) for item, _ in batch.rejected] == [dumps(item) for _, item in invalid]
    for (_, reason), (index, _) in zip(batch.rejected, invalid, strict=True):
        assert reason.startswith(f"[{index}]"), reason


@settings(PROPERTIES, max_examples=150)
@given(st.lists(span_events(), min_size=1, max_size=5))
def test_json_span_events_round_trip(tally: Tally, events: list[dict[str, Any]]) -> None:
    batch = parse_json_events(json.dumps(events).encode())
    tally("json_events round trip")
    assert not batch.rejected
    for sent, got in zip(events, batch.events, strict=True):
        assert isinstance(got, SpanEvent)
        assert (got.service, got.operation, got.duration_ms) == (
            sent["service"],
            sent["operation"],
            sent["duration_ms"],
        )
        stamp = sent["timestamp"]
        expected = (
            datetime.fromtimestamp(stamp, UTC)
            if isinstance(stamp, int)
            else datetime.fromisoformat(stamp)
        )
        assert got.timestamp == expected
        assert got.kind == sent.get("kind", "server") and got.status == sent.get("status", "ok")
        assert got.peer_service == sent.get("peer_service")
        assert got.attributes == sent.get("attributes")


# --------------------------------------------------------------------------- OTLP

KINDS = {
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
T0 = 1_763_283_600_000_000_000  # 2025-11-16T09:00:00Z in ns
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_NS = int(MAX_DURATION_MS) * 1_000_000

span_specs = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=200),  # name
        st.sampled_from(sorted(KINDS, key=lambda k: k.value)),
        st.integers(0, 10**15),  # start, ns after T0
        st.integers(0, DAY_NS),  # duration, ns
        st.one_of(st.none(), st.text(min_size=1, max_size=50)),  # peer.service
        st.one_of(st.none(), hostile_text),  # an error status message
    ),
    min_size=1,
    max_size=6,
)


def traces_request(service: str, specs: list[tuple[Any, ...]]) -> Any:
    """An ExportTraceServiceRequest of spans recorded through the OTel SDK."""

    def build(tracer: Any) -> None:
        for name, kind, start, duration, peer, error in specs:
            attributes = {"peer.service": peer} if peer is not None else None
            span = tracer.start_span(name, kind=kind, attributes=attributes, start_time=T0 + start)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end(end_time=T0 + start + duration)

    return encode_spans(record_spans(build, {"service.name": service}))


def metrics_request(cpu: float, queue: int, other: float) -> Any:
    """An ExportMetricsServiceRequest of one SDK collection."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "api"}))
    meter = provider.get_meter("test.hostile")

    def observe(value: float, attributes: dict[str, Any]) -> Any:
        def callback(options: CallbackOptions) -> list[Observation]:
            return [Observation(value, attributes)]

        return callback

    meter.create_observable_gauge(
        "system.cpu.utilization", callbacks=[observe(cpu, {"cpu": 0, "state": "idle"})]
    )
    meter.create_observable_up_down_counter(
        "rabbitmq.message.current", callbacks=[observe(queue, {"state": "ready"})]
    )
    meter.create_observable_gauge("app.pool.size", callbacks=[observe(other, {})])
    data = reader.get_metrics_data()
    provider.shutdown()
    return encode_metrics(data)


SEED_TRACES = traces_request(
    "checkout",
    [
        ("POST /checkout", SpanKind.SERVER, 0, 120_000_000, None, None),
        ("charge", SpanKind.CLIENT, 1000, 80_000_000, "payments", "timeout"),
    ],
)
SEED_TRACES.resource_spans.extend(  # a second service, in another shard
    traces_request(
        "search", [("GET /search", SpanKind.SERVER, 0, 9_000_000, None, None)]
    ).resource_spans
)
SEED_METRICS = metrics_request(0.3, 12, 4.0)
SEEDS = {
    ("otlp_spans", "proto"): SEED_TRACES.SerializeToString(),
    ("otlp_spans", "json"): to_otlp_json(SEED_TRACES),
    ("otlp_metrics", "proto"): SEED_METRICS.SerializeToString(),
    ("otlp_metrics", "json"): to_otlp_json(SEED_METRICS),
}
"""Valid messages of each routing key and encoding, to damage."""


@settings(PROPERTIES, max_examples=200)
@given(
    st.binary(max_size=2000),
    st.sampled_from([*ROUTING_KEYS, "otlp_logs", "other"]),
    st.sampled_from([*CONTENT_TYPES, "text/plain"]),
)
def test_otlp_any_bytes_give_a_batch_or_a_reason(
    tally: Tally, body: bytes, routing_key: str, content_type: str
) -> None:
    outcome_of(lambda: parse_otlp(body, routing_key, content_type), tally, "otlp any bytes:")


@settings(PROPERTIES, max_examples=200)
@given(st.sampled_from(sorted(SEEDS)), st.sampled_from(CONTENT_TYPES), st.data())
def test_otlp_damaged_messages_give_a_batch_or_a_reason(
    tally: Tally, seed: tuple[str, str], content_type: str, data: st.DataObject
) -> None:
    """Truncated, bit-flipped, spliced protobuf and OTLP/JSON, under every content type
    (so protobuf is also read as JSON, and JSON as protobuf)."""
    body = data.draw(mangled(SEEDS[seed]))
    outcome_of(lambda: parse_otlp(body, seed[0], content_type), tally, "otlp damaged bytes:")
    split_loses_nothing(
        lambda: split_otlp(body, seed[0], content_type, shard),
        lambda part, type_: parse_otlp(part, seed[0], type_),
        lambda: parse_otlp(body, seed[0], content_type),
        tally,
        "otlp split damaged:",
    )


@settings(PROPERTIES, max_examples=300)
@given(st.sampled_from(ROUTING_KEYS), st.sampled_from(["", "application/json"]), st.data())
def test_otlp_json_with_hostile_fields_gives_a_batch_or_a_reason(
    tally: Tally, routing_key: str, content_type: str, data: st.DataObject
) -> None:
    """OTLP/JSON with any node replaced: Infinity as a timestamp, a list as a name, a
    10,000-digit number, a lone surrogate as the service name..."""
    document = json.loads(SEEDS[(routing_key, "json")])
    body = data.draw(mutated(document) | mutated(document, hostile_numbers, leaves=True))
    outcome_of(lambda: parse_otlp(body, routing_key, content_type), tally, "otlp hostile json:")
    split_loses_nothing(
        lambda: split_otlp(body, routing_key, content_type, shard),
        lambda part, type_: parse_otlp(part, routing_key, type_),
        lambda: parse_otlp(body, routing_key, content_type),
        tally,
        "otlp split hostile json:",
    )


@settings(PROPERTIES, max_examples=100)
@given(st.text(min_size=1, max_size=200), span_specs, st.booleans())
def test_otlp_spans_round_trip(
    tally: Tally, service: str, specs: list[tuple[Any, ...]], as_json: bool
) -> None:
    """Spans recorded with the OTel SDK, encoded as the exporter does, come back as the
    events of their service, operation, kind and duration, in order."""
    request = traces_request(service, specs)
    body = to_otlp_json(request) if as_json else request.SerializeToString()
    batch = parse_otlp(body, "otlp_spans", "")
    tally("otlp round trip")
    assert_usable(batch)
    assert not batch.rejected
    got = [
        (e.service, e.operation, e.kind, e.duration_ms, e.timestamp, e.peer_service)
        for e in batch.events
    ]
    assert got == [
        (
            service,
            name,
            KINDS[kind],
            duration / 1e6,
            EPOCH + timedelta(microseconds=(T0 + start + duration) // 1000),
            peer if KINDS[kind] in ("client", "producer") else None,
        )
        for name, kind, start, duration, peer, _ in specs
    ]


# --------------------------------------------------------------------------- known crashes


def otlp_span(**fields: Any) -> bytes:
    span = {"name": "x", "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": "2", **fields}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def otlp_point(**fields: Any) -> bytes:
    point = {"asDouble": 1.0, "timeUnixNano": "5", **fields}
    metric = {"name": "g", "gauge": {"dataPoints": [point]}}
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}).encode()


SERVICE = {"key": "service.name", "value": {"stringValue": "\ud800"}}
KNOWN: dict[str, tuple[str, bytes]] = {
    "JSON nested 100,000 deep": ("application/json", b"[" * 100_000),
    "a 5000-digit integer": ("application/json", b'{"value": ' + b"9" * 5000 + b"}"),
    "a timestamp in year 0 once in UTC": (
        "application/json",
        json.dumps(
            {
                "service": "a",
                "operation": "b",
                "duration_ms": 1,
                "timestamp": "0001-01-01T00:00+01:00",
            }
        ).encode(),
    ),
    "OTLP/JSON nested 100,000 deep": ("otlp_spans", b'{"resourceSpans": ' + b"[" * 100_000),
    "a span starting at Infinity": ("otlp_spans", otlp_span(startTimeUnixNano=math.inf)),
    "a span starting at 10**400 ns": ("otlp_spans", otlp_span(startTimeUnixNano=10**400)),
    "a span ending at 10**30 ns": (
        "otlp_spans",
        otlp_span(startTimeUnixNano=10**30 - 5, endTimeUnixNano=10**30),
    ),
    "a span named by a list": ("otlp_spans", otlp_span(name=[None])),
    "a service named by a lone surrogate": (
        "otlp_spans",
        json.dumps(
            {"resourceSpans": [{"resource": {"attributes": [SERVICE]}, "scopeSpans": []}]}
        ).encode(),
    ),
    "a point valued Infinity as an int": ("otlp_metrics", otlp_point(asInt=math.inf)),
    "a point valued 10**400": ("otlp_metrics", otlp_point(asInt=10**400)),
    "a point at 10**30 ns": ("otlp_metrics", otlp_point(timeUnixNano=10**30)),
    "a point at Infinity": ("otlp_metrics", otlp_point(timeUnixNano=math.inf)),
}
"""Messages that raised RecursionError, ValueError, OverflowError out of the parsers, or
gave an event the contract refuses, before issue 8."""


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_messages_that_crashed_the_parsers_are_refused_with_a_reason(
    tally: Tally, name: str
) -> None:
    where, body = KNOWN[name]

    def parse() -> ParsedBatch:
        if where == "application/json":
            return parse_json_events(body)
        return parse_otlp(body, where, "application/json")

    assert outcome_of(parse, tally, "known crash:") in ("malformed", "rejected")

"""Hostile input for ``parse_otlp`` and ``split_otlp``. Whatever a producer publishes, they
return a batch or raise ``MalformedMessage`` with a reason. The consumer dead-letters on
``MalformedMessage`` only: any other exception would stop it, or have the broker redeliver
the message until its delivery limit. And what they return must be what the contract
allows, since the OTLP path builds events unvalidated."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
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

from baselines.ingest.json_events import ParsedBatch
from baselines.ingest.otlp import parse_otlp, split_otlp
from service.contract import MAX_DURATION_MS
from tests.baselines.ingest_properties import assert_usable, outcome_of, shard, split_loses_nothing
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

tally = tally_fixture("message parsers (OTLP)")

ROUTING_KEYS = ("otlp_spans", "otlp_metrics")
CONTENT_TYPES = ("", "application/json", "application/x-protobuf", "application/protobuf")


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
"""Messages (routing key, OTLP/JSON body) that raised RecursionError, ValueError,
OverflowError out of the parsers, or gave an event the contract refuses, before they were
hardened against hostile input."""


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_messages_that_crashed_the_parsers_are_refused_with_a_reason(
    tally: Tally, name: str
) -> None:
    routing_key, body = KNOWN[name]

    def parse() -> ParsedBatch:
        return parse_otlp(body, routing_key, "application/json")

    assert outcome_of(parse, tally, "known crash:") in ("malformed", "rejected")

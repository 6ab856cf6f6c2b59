"""Builders of OTLP requests for the OTLP parser tests, with the OTel SDK's own types and
encoders, so the tests read what real instrumentation produces."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC
from typing import Any

from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, Status, StatusCode

from baselines.ingest.json_events import ParsedBatch
from service.contract import MetricSample, SpanEvent
from tests.otlp import to_otlp_json

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

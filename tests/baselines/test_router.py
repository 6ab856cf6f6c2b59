"""Scale-out through the real broker: the router splits each message by service, in its own
format, and two shard consumers learn exactly what one consumer learns from the whole."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pika
import pytest
from opentelemetry.trace import SpanKind

from baselines.consumer import TelemetryConsumer
from baselines.demo import free_port
from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.metrics import RouterCollector, serve_metrics
from baselines.router import Router, shard_of
from baselines.settings import Settings
from baselines.store import open_store
from baselines.synthetic import last_full_week_start, telemetry
from baselines.topology import ERROR_HEADER
from tests.helpers import (
    dead_letters,
    declare,
    publish,
    running_consumer,
    sample_value,
    wait_for,
)
from tests.otlp import otlp_requests, to_otlp_json

SERVICES = ("checkout", "exchange-api", "search")
EVENT = {"operation": "POST /checkout", "duration_ms": 1, "timestamp": time.time()}

Encode = Callable[[list[dict]], list[bytes | object]]
FORMATS: dict[str, tuple[Encode, str, str]] = {
    "JSON events": (
        lambda events: [events[i : i + 300] for i in range(0, len(events), 300)],
        "test",
        "application/json",
    ),
    # no content type: what the Collector's rabbitmqexporter sends
    "OTLP protobuf": (
        lambda events: [r.SerializeToString() for r in otlp_requests(events)],
        "otlp_spans",
        "",
    ),
    "OTLP/JSON": (
        lambda events: [to_otlp_json(r) for r in otlp_requests(events)],
        "otlp_spans",
        "",
    ),
}


@contextmanager
def running_router(settings: Settings, shards: int) -> Iterator[Router]:
    router = Router(settings, shards)
    thread = threading.Thread(target=router.run, daemon=True)
    thread.start()
    wait_for(router.ready.is_set, 30, "the router")
    try:
        yield router
    finally:
        router.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the router did not stop"


def applied(consumer: TelemetryConsumer) -> int:
    return consumer.detector.stats.spans + consumer.detector.stats.metrics


def learnt(detector: Detector, service: str) -> dict[str, Any]:
    """The service's span series with their window-p95 state (the written part of its ring
    of recent windows), its metric series, its calls out and its usual errors."""
    series, metrics, extras = detector.export(service)
    p95 = {}
    for key, state in series.items():
        arrays = state.p95.state()
        p95[key] = {**arrays, "recent": arrays["recent"][: int(arrays["meta"][2])]}
    return {"p95": p95, "metrics": sorted(metrics), "extras": extras}


@pytest.mark.parametrize("wire", FORMATS)
def test_each_service_lives_in_one_shard_and_learns_what_one_consumer_learns(
    amqp_settings, tmp_path, wire: str
) -> None:
    encode, routing_key, content_type = FORMATS[wire]
    start = last_full_week_start(datetime.now(UTC))
    events = [
        e
        for minute in telemetry(start, [], minutes=180)
        for e in minute
        if wire == "JSON events" or "metric" not in e  # OTLP here carries spans
    ]
    bodies = encode(events)
    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    settings = amqp_settings.model_copy(update={"baselines_url": f"sqlite:///{tmp_path / 's.db'}"})
    stores = [open_store(settings.resolved_baselines_url()) for _ in (0, 1)]
    try:
        with running_consumer(amqp_settings, DetectorConfig(), forwarder) as whole:
            publish(amqp_settings, bodies, content_type=content_type, routing_key=routing_key)
            wait_for(lambda: applied(whole) == len(events), 60, "all events, one consumer")
        whole.detector.flush()

        shard_settings = [settings.model_copy(update={"shard": k}) for k in (0, 1)]
        with (
            running_router(settings, shards=2) as router,
            running_consumer(shard_settings[0], DetectorConfig(), forwarder, stores[0]) as zero,
            running_consumer(shard_settings[1], DetectorConfig(), forwarder, stores[1]) as one,
        ):
            publish(settings, bodies, content_type=content_type, routing_key=routing_key)
            wait_for(lambda: applied(zero) + applied(one) == len(events), 60, "all events")
    finally:
        forwarder.close()
        for store in stores:
            store.close()

    assert router.stats.messages == len(bodies) and router.stats.dead_lettered == 0
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    ingest = connection.channel().queue_declare(settings.queue, passive=True)
    connection.close()
    assert ingest.method.message_count == 0  # every original acknowledged (committed)
    assert router.stats.published > len(bodies)  # the messages mixing shards were split
    shards = (zero, one)
    for consumer in shards:
        consumer.detector.flush()
        assert consumer.stats.dead_lettered == 0
    for service in SERVICES:
        owners = [k for k, c in enumerate(shards) if c.detector.export(service)[0]]
        assert owners == [shard_of(service, 2)], service
        ours, theirs = learnt(shards[owners[0]].detector, service), learnt(whole.detector, service)
        assert ours["metrics"] == theirs["metrics"]
        assert ours["p95"].keys() == theirs["p95"].keys()
        for key, state in ours["p95"].items():
            for part, array in state.items():
                np.testing.assert_array_equal(array, theirs["p95"][key][part], f"{key} {part}")


def test_a_copy_the_router_sends_again_is_applied_once(amqp_settings) -> None:
    """The router died after publishing a copy and before acknowledging its original: the
    copy it sends again carries the same message id, and the shard's consumer drops it."""
    shard = amqp_settings.model_copy(update={"shard": 0})
    event = {**EVENT, "service": "checkout"}
    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    try:
        with running_consumer(shard, DetectorConfig(), forwarder) as consumer:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_settings.amqp_url))
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(2):
                channel.basic_publish(
                    amqp_settings.shard_exchange,
                    "0",
                    json.dumps([event]).encode(),
                    pika.BasicProperties(
                        content_type="application/json", type="test", message_id="0" * 32 + ":0"
                    ),
                )
            connection.close()
            wait_for(lambda: consumer.stats.redelivered_skipped == 1, 30, "the copy to be dropped")
            assert consumer.detector.stats.spans == 1
    finally:
        forwarder.close()


LOGS_ARE_NOT_A_LIST = b'{"resourceLogs": 5}'


def test_what_the_router_cannot_split_goes_to_the_dead_letter_queue_with_the_reason(
    amqp_settings,
) -> None:
    declare(amqp_settings)
    port = free_port()
    mixed = [{**EVENT, "service": service} for service in SERVICES]
    with running_router(amqp_settings, shards=2) as router:
        assert serve_metrics(RouterCollector(router), port, "127.0.0.1")
        publish(amqp_settings, [b"\x0a\xff\xff"], content_type="", routing_key="otlp_spans")
        publish(amqp_settings, [b"{not json", mixed], content_type="application/json")
        publish(amqp_settings, [LOGS_ARE_NOT_A_LIST], content_type="", routing_key="otlp_logs")
        wait_for(lambda: router.stats.messages == 4, 30, "four messages")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    letters = {body: headers[ERROR_HEADER] for headers, body in dead_letters(amqp_settings)}
    assert letters.keys() == {b"\x0a\xff\xff", b"{not json", LOGS_ARE_NOT_A_LIST}
    assert "not an OTLP protobuf ExportTraceServiceRequest" in letters[b"\x0a\xff\xff"]
    assert letters[b"{not json"].startswith("not JSON")
    assert "malformed OTLP/JSON ExportLogsServiceRequest" in letters[LOGS_ARE_NOT_A_LIST]
    assert sample_value(text, "whyslow_router_messages_total") == 4
    assert sample_value(text, "whyslow_router_dead_lettered_total") == 3
    assert sample_value(text, "whyslow_router_copies_total") == 2  # the mixed batch, split
    assert sample_value(text, "whyslow_router_active") == 1


def test_one_trace_links_the_producer_the_router_and_each_shard_consumer(
    amqp_settings, spans
) -> None:
    mixed = [{**EVENT, "service": service} for service in SERVICES]
    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    shards = [amqp_settings.model_copy(update={"shard": k}) for k in (0, 1)]
    spans.clear()
    try:
        with (
            running_router(amqp_settings, shards=2),
            running_consumer(shards[0], DetectorConfig(), forwarder) as zero,
            running_consumer(shards[1], DetectorConfig(), forwarder) as one,
        ):
            publish(amqp_settings, [mixed], traced=True)
            wait_for(lambda: zero.stats.messages + one.stats.messages == 2, 30, "both copies")
    finally:
        forwarder.close()
    finished = spans.get_finished_spans()
    (produced,) = [s for s in finished if s.kind == SpanKind.PRODUCER]
    (routed,) = [s for s in finished if s.name == f"{amqp_settings.queue} route"]
    processed = [s for s in finished if s.name.endswith(" process")]
    assert sorted(s.name for s in processed) == sorted(
        f"{s.consumed_queue()} process" for s in shards
    )
    assert routed.context.trace_id == produced.context.trace_id
    assert routed.parent is not None and routed.parent.span_id == produced.context.span_id
    for span in processed:
        assert span.context.trace_id == produced.context.trace_id
        assert span.parent is not None and span.parent.span_id == routed.context.span_id

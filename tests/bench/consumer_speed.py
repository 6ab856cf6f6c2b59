"""Throughput of the consumer through the real broker, against a raw pika consumer that only
acknowledges the same messages, measured in the same run.

    .venv/bin/python tests/bench/consumer_speed.py [--spans 200000] [--per-message 1000 100 10]

Workloads: batched OTLP protobuf (1,000 spans per message, as the Collector's batch
processor sends them under load, and smaller batches, as it sends them on its timeout at
low traffic) and JSON events (50 per message). whyslow runs without a store and in its
exactly-once mode (a SQLite checkpoint before each acknowledgement). The scale-out router
(``whyslow route --shards 2``) is measured on the same messages: it feeds the shard
consumers, so it must outrun them.

A second reference bounds what any consumer of these messages can reach: a pika consumer
that acknowledges after decoding each message with the standard libraries
(``ExportTraceServiceRequest.FromString`` of the OTel protobuf package, ``json.loads``)
and reads nothing from it. Its ratio to the raw rate is the ceiling for a consumer that
looks inside the messages at all.

Targets: >= 50,000 spans/s with batched OTLP and >= 0.8 of the raw-consume rate.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pika
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from baselines.consumer import TelemetryConsumer
from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.router import Router
from baselines.settings import Settings, shard_queue
from baselines.store import open_store
from baselines.synthetic import last_full_week_start, telemetry
from baselines.topology import declare_topology, delete_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: test helpers
from tests.helpers import own_topology

ROUTED_SHARDS = 2
REFERENCE_UNITS = 1_000_000
"""Spans (or events) each reference run consumes, the messages repeated as needed."""


def otlp_messages(spans: int, per_message: int) -> list[bytes]:
    """Synthetic spans of three busy services (up to about 20,000 a minute), as the
    Collector's batch processor sends them under load: each request holds up to
    ``per_message`` spans of one minute, grouped by service (resource) as the OTLP encoder
    groups them. A request never spans two minutes, so no span arrives after its window
    has closed (a request of several minutes grouped by service would send the later
    services' early spans late)."""
    start = last_full_week_start(datetime.now(UTC))
    chunks: list[list[dict]] = []
    taken = 0
    for minute in telemetry(start, [], minutes=10 * 1440, peak_per_minute=4000):
        minute_spans = [e for e in minute if "metric" not in e][: spans - taken]
        chunks += [
            minute_spans[i : i + per_message] for i in range(0, len(minute_spans), per_message)
        ]
        taken += len(minute_spans)
        if taken == spans:
            break
    messages = []
    for chunk in chunks:
        recorded = []
        for service in ("checkout", "exchange-api", "search"):
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=Resource({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            tracer = provider.get_tracer("bench")
            for e in chunk:
                if e["service"] != service:
                    continue
                end = round(e["timestamp"] * 1e9)
                kind = SpanKind.SERVER if e["kind"] == "server" else SpanKind.CLIENT
                span = tracer.start_span(
                    e["operation"],
                    kind=kind,
                    start_time=end - round(e["duration_ms"] * 1e6),
                    attributes={"peer.service": e["peer_service"]} if "peer_service" in e else None,
                )
                span.end(end_time=end)
            recorded += exporter.get_finished_spans()
        messages.append(encode_spans(recorded).SerializeToString())
    return messages


def json_messages(events_total: int) -> list[bytes]:
    start = last_full_week_start(datetime.now(UTC))
    events = []
    for minute in telemetry(start, [], minutes=10 * 1440, peak_per_minute=60):
        events += minute
        if len(events) >= events_total:
            break
    events = events[:events_total]
    return [json.dumps(events[i : i + 50]).encode() for i in range(0, len(events), 50)]


def fill(settings: Settings, messages: list[bytes], routing_key: str, content_type: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    declare_topology(channel, settings)
    channel.queue_purge(settings.queue)
    properties = pika.BasicProperties(content_type=content_type, delivery_mode=2)
    for body in messages:
        channel.basic_publish(settings.exchange, routing_key, body, properties)

    def held() -> int:
        return channel.queue_declare(settings.queue, passive=True).method.message_count

    # unconfirmed, so 100,000 small messages go in seconds: wait until the queue holds them
    deadline = time.monotonic() + 120
    while held() < len(messages):
        if time.monotonic() > deadline:
            raise SystemExit(f"the queue holds {held()} of the {len(messages)} messages published")
        time.sleep(0.05)
    connection.close()


def raw_consume(
    settings: Settings, count: int, decode: Callable[[bytes], object] | None = None
) -> tuple[float, float]:
    """(seconds, the share of them its process was on a CPU) for a bare pika consumer to
    receive and ack ``count`` messages, decoding each body first when ``decode`` is given.
    A share near 1 means the consumer, not the broker, sets the pace, so whatever a
    consumer does per message adds to its time."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=settings.prefetch)
    seen = 0
    started, cpu = time.perf_counter(), time.process_time()

    def on_message(ch, method, properties, body) -> None:
        nonlocal seen
        if decode is not None:
            decode(body)
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen == count:
            ch.stop_consuming()

    channel.basic_consume(settings.queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    busy = (time.process_time() - cpu) / elapsed
    connection.close()
    return elapsed, busy


class Worker(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


def timed(worker: Worker, count: Callable[[], int], messages: int) -> float:
    """Seconds for ``worker`` (a consumer or the router), run in a thread, to take
    ``messages`` messages as ``count`` counts them; stopped and joined after."""
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    while count() < messages:
        time.sleep(0.005)
    worker.stop()
    thread.join()
    return time.perf_counter() - started


def whyslow_consume(settings: Settings, count: int, units: int, store_url: str | None) -> float:
    """Seconds for the consumer to apply ``count`` messages; every one of their ``units``
    events must be applied (none late), or the figure would flatter it."""
    store = open_store(store_url) if store_url else None
    forwarder = Forwarder(settings.service_url, 5).start()
    consumer = TelemetryConsumer(settings, lambda: Detector(DetectorConfig()), forwarder, store)
    elapsed = timed(consumer, lambda: consumer.stats.messages, count)
    forwarder.close()
    if store:
        store.close()
    stats = consumer.detector.stats
    if stats.spans + stats.metrics != units:
        raise SystemExit(
            f"applied {stats.spans + stats.metrics} of {units} events ({stats.late} late)"
        )
    return elapsed


def route(settings: Settings, count: int) -> float:
    """Seconds for ``whyslow route --shards 2`` to split ``count`` messages into the shard
    queues (copies and acknowledgements committed)."""
    router = Router(settings, ROUTED_SHARDS)
    elapsed = timed(router, lambda: router.stats.messages, count)
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    for shard in range(ROUTED_SHARDS):
        channel.queue_purge(shard_queue(settings.queue, shard))
    connection.close()
    return elapsed


def teardown(settings: Settings, shards: int) -> None:
    """Remove what a bench run declared: its queues (shards included) and exchanges."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    delete_topology(connection.channel(), settings, shards)
    connection.close()


def run(
    label: str,
    messages: list[bytes],
    units: int,
    routing_key: str,
    content_type: str,
    decode: Callable[[bytes], object],
    settings: Settings,
    tmp: Path,
) -> None:

    repeats = math.ceil(REFERENCE_UNITS / units)

    def reference(decode: Callable[[bytes], object] | None) -> tuple[float, str]:
        """(seconds a reference takes for ``messages`` once, its CPU share): the median of
        three runs over ``repeats`` copies of them, since a raw consumer drains 227 large
        messages in about 50 ms, too short for one run to be trusted (one such run gave a
        ceiling of 1.11)."""
        runs, busy = [], []
        for _ in range(3):
            fill(settings, messages * repeats, routing_key, content_type)
            seconds, share = raw_consume(settings, len(messages) * repeats, decode)
            runs.append(seconds / repeats)
            busy.append(share)
        return statistics.median(runs), f"on a CPU {min(busy):.0%}-{max(busy):.0%} of its time"

    raw, raw_busy = reference(None)
    print(
        f"{label}: raw pika, ack only: {units / raw:>10,.0f}/s "
        f"({len(messages) / raw:,.0f} msgs/s, {raw_busy})"
    )
    ceiling, ceiling_busy = reference(decode)
    print(
        f"{label}: raw pika, decode and ack: {units / ceiling:>10,.0f}/s, "
        f"ratio to raw {raw / ceiling:.2f} (the ceiling; {ceiling_busy})"
    )
    for mode, url in (
        ("no store", None),
        ("exactly-once, SQLite", f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}"),
    ):
        fill(settings, messages, routing_key, content_type)
        ours = whyslow_consume(settings, len(messages), units, url)
        print(f"{label}: whyslow ({mode}): {units / ours:>10,.0f}/s, ratio to raw {raw / ours:.2f}")
    fill(settings, messages, routing_key, content_type)
    routed = route(settings, len(messages))
    print(
        f"{label}: whyslow route --shards {ROUTED_SHARDS}: {units / routed:>10,.0f}/s, "
        f"ratio to raw {raw / routed:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument(
        "--per-message",
        type=int,
        nargs="+",
        default=[1000, 100, 10],
        help="OTLP spans per message, one workload each",
    )
    args = parser.parse_args()
    settings = own_topology("bench", checkpoint_seconds=1.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for per_message in args.per_message:
                messages = otlp_messages(args.spans, per_message)
                run(
                    f"OTLP protobuf, {args.spans / len(messages):.0f} spans/msg",
                    messages,
                    args.spans,
                    "otlp_spans",
                    "",
                    ExportTraceServiceRequest.FromString,
                    settings,
                    Path(tmp),
                )
            run(
                "JSON, 50 events/msg",
                json_messages(args.spans // 2),
                args.spans // 2,
                "json",
                "application/json",
                json.loads,
                settings,
                Path(tmp),
            )
    finally:
        teardown(settings, ROUTED_SHARDS)


if __name__ == "__main__":
    main()

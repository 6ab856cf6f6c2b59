"""A slow leaf deep in a chain of services, published as OTLP protobuf spans through the
real broker into a real consumer that checkpoints in SQLite and restarts in the middle of
the incident: the reports a stand-in for the service receives are the in-process
detector's, one incident rooted at the leaf, each report once."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.ingest.otlp.common import EPOCH
from baselines.settings import Settings
from baselines.snapshot import restore
from baselines.store import open_store
from service.contract import AnomalyReport, SpanEvent
from tests.baselines.test_incident import (
    CHAIN,
    STEADY_MINUTES,
    D,
    Fault,
    Topology,
    minutes,
    scenario,
)
from tests.helpers import publish, running_consumer, wait_for

KINDS = {"server": Span.SPAN_KIND_SERVER, "client": Span.SPAN_KIND_CLIENT}


def nanos(event: SpanEvent) -> tuple[int, int]:
    """(start, end) in integer nanoseconds, as a tracer records them."""
    end = (event.timestamp - EPOCH) // timedelta(microseconds=1) * 1000
    return end - round(event.duration_ms * 1e6), end


def otlp(events: list[SpanEvent]) -> bytes:
    """One ExportTraceServiceRequest, each service's spans under its resource, as the
    Collector exports them."""
    by_service: dict[str, list[Span]] = {}
    for event in events:
        start, end = nanos(event)
        peer = event.peer_service
        by_service.setdefault(event.service, []).append(
            Span(
                trace_id=bytes.fromhex(event.trace_id or ""),
                span_id=bytes.fromhex(event.span_id or ""),
                parent_span_id=bytes.fromhex(event.parent_span_id or ""),
                name=event.operation,
                kind=KINDS[event.kind],
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=[KeyValue(key="peer.service", value=AnyValue(string_value=peer))]
                if peer
                else [],
            )
        )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value=name))]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
            for name, spans in by_service.items()
        ]
    ).SerializeToString()


class Receiver(ThreadingHTTPServer):
    """Stands in for the service: records every report POSTed to /v1/analyze."""

    def __init__(self) -> None:
        self.posted: list[AnomalyReport] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/analyze":
                    with receiver.lock:
                        receiver.posted.append(AnomalyReport.model_validate_json(body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({}).encode())

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reports(self) -> list[AnomalyReport]:
        with self.lock:
            return list(self.posted)


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_a_slow_leaf_through_the_broker_is_one_incident_reported_once_across_a_restart(
    amqp_settings: Settings, tmp_path: Path
) -> None:
    topology, fault = Topology((CHAIN,)), Fault(own={D: 10.0})
    expected, _ = scenario(topology, fault)
    messages = [
        otlp([e for e in minute if isinstance(e, SpanEvent)]) for minute in minutes(topology, fault)
    ]
    # the first revision closes with the fault's second minute, the next with its third:
    # the consumer restarts between them
    cut = STEADY_MINUTES + 2
    settings = amqp_settings.model_copy(update={"checkpoint_seconds": 0.5})
    config = DetectorConfig(window_seconds=60)
    store_url = f"sqlite:///{tmp_path / 'baselines.db'}"

    def run(part: list[bytes], receiver: Receiver, then: int) -> None:
        """Publish ``part`` to a fresh consumer and forwarder; stop once all is applied and
        ``then`` reports have been received."""
        forwarder = Forwarder(receiver.url, 5).start()
        store = open_store(store_url)
        try:
            with running_consumer(settings, config, forwarder, store) as consumer:
                publish(settings, list(part), "application/x-protobuf", "otlp_spans")
                wait_for(lambda: consumer.stats.messages >= len(part), 120, "the messages")
                wait_for(lambda: len(receiver.reports()) >= then, 30, f"{then} reports")
                wait_for(forwarder.idle, 30, "the forwarder to deliver")
                assert consumer.stats.dead_lettered == consumer.stats.items_rejected == 0
        finally:
            forwarder.close()
            store.close()

    with receiving() as receiver:
        run(messages[:cut], receiver, then=1)
        assert [r.id for r in receiver.reports()] == [expected[0].id]

        # what a restarted consumer loads holds the call graph learnt before
        store = open_store(store_url)
        try:
            restored = Detector(config)
            restore(restored, store.load([s for s in store.services() if s in CHAIN]))
        finally:
            store.close()
        assert set(itertools.pairwise(CHAIN)) <= set(restored.graph.edges)

        run(messages[cut:], receiver, then=len(expected))
        received = receiver.reports()

    ids = [r.id for r in received]
    assert len(ids) == len(set(ids)), f"a report was delivered twice: {ids}"
    assert ids == [r.id for r in expected]
    assert len({r.incident.id for r in received if r.incident}) == 1
    for report in received:
        assert report.incident is not None and report.incident.root_cause is not None
        assert report.incident.root_cause.service == D
    assert received[-1].incident is not None and received[-1].incident.path == list(CHAIN)

"""Faults in chains of services, published as OTLP protobuf spans through the real broker
into a real consumer that checkpoints in SQLite: the reports a stand-in for the service
receives are the in-process detector's, each once, every incident rooted at its fault. A
slow leaf deep in a chain stays one incident across a restart of the consumer in the middle
of it; the network in front of a service, two chains failing at once and a leaf without
spans of its own are each rooted where the fault is."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
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
from service.contract import AnomalyReport, Candidate, SpanEvent
from tests.baselines.test_incident import (
    CHAIN,
    STEADY_MINUTES,
    A,
    B,
    C,
    D,
    Fault,
    Topology,
    X,
    Y,
    minutes,
    scenario,
)
from tests.helpers import publish, running_consumer, wait_for

CONFIG = DetectorConfig(window_seconds=60)
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


def deliver(
    settings: Settings, store_url: str, messages: list[bytes], receiver: Receiver, then: int
) -> None:
    """Publish ``messages`` to a fresh consumer (checkpointing in ``store_url``) and
    forwarder; stop once all are applied and ``then`` reports have been received."""
    forwarder = Forwarder(receiver.url, 5).start()
    store = open_store(store_url)
    try:
        with running_consumer(settings, CONFIG, forwarder, store) as consumer:
            publish(settings, list(messages), "application/x-protobuf", "otlp_spans")
            wait_for(lambda: consumer.stats.messages >= len(messages), 120, "the messages")
            wait_for(lambda: len(receiver.reports()) >= then, 30, f"{then} reports")
            wait_for(forwarder.idle, 30, "the forwarder to deliver")
            assert consumer.stats.dead_lettered == consumer.stats.items_rejected == 0
    finally:
        forwarder.close()
        store.close()


def spans_published(topology: Topology, fault: Fault) -> list[bytes]:
    """The scenario's minutes, one OTLP message a minute."""
    return [
        otlp([e for e in minute if isinstance(e, SpanEvent)]) for minute in minutes(topology, fault)
    ]


def test_a_slow_leaf_through_the_broker_is_one_incident_reported_once_across_a_restart(
    amqp_settings: Settings, tmp_path: Path
) -> None:
    topology, fault = Topology((CHAIN,)), Fault(own={D: 10.0})
    expected, _ = scenario(topology, fault)
    messages = spans_published(topology, fault)
    # the first revision closes with the fault's second minute, the next with its third:
    # the consumer restarts between them
    cut = STEADY_MINUTES + 2
    settings = amqp_settings.model_copy(update={"checkpoint_seconds": 0.5})
    store_url = f"sqlite:///{tmp_path / 'baselines.db'}"

    with receiving() as receiver:
        deliver(settings, store_url, messages[:cut], receiver, then=1)
        assert [r.id for r in receiver.reports()] == [expected[0].id]

        # what a restarted consumer loads holds the call graph learnt before
        store = open_store(store_url)
        try:
            restored = Detector(CONFIG)
            restore(restored, store.load([s for s in store.services() if s in CHAIN]))
        finally:
            store.close()
        assert set(itertools.pairwise(CHAIN)) <= set(restored.graph.edges)

        deliver(settings, store_url, messages[cut:], receiver, then=len(expected))
        received = receiver.reports()

    ids = [r.id for r in received]
    assert len(ids) == len(set(ids)), f"a report was delivered twice: {ids}"
    assert ids == [r.id for r in expected]
    assert len({r.incident.id for r in received if r.incident}) == 1
    for report in received:
        assert report.incident is not None and report.incident.root_cause is not None
        assert report.incident.root_cause.service == D
    assert received[-1].incident is not None and received[-1].incident.path == list(CHAIN)


@pytest.mark.parametrize(
    ("topology", "fault", "roots"),
    [
        pytest.param(
            Topology((CHAIN,)), Fault(wire={(B, C): 200.0}), {(C, "network")}, id="network"
        ),
        pytest.param(
            Topology(((A, B), (X, Y))),
            Fault(own={B: 10.0, Y: 10.0}),
            {(B, "own_time"), (Y, "own_time")},
            id="two-independent",
        ),
        pytest.param(
            Topology((CHAIN,), spanless=frozenset({D})),
            Fault(own={D: 10.0}),
            {(D, "own_time")},
            id="leaf-without-spans",
        ),
    ],
)
def test_through_the_broker_each_incident_is_rooted_where_its_fault_is(
    amqp_settings: Settings,
    tmp_path: Path,
    topology: Topology,
    fault: Fault,
    roots: set[tuple[str, str]],
) -> None:
    """The network in front of payment slows (root payment, network); two independent
    chains' leaves slow at once (two incidents, one each); a leaf that emits no spans slows
    (root the leaf, seen in its caller's calls alone). Through the broker and a consumer,
    the reports are the in-process detector's, each delivered once, and every incident's
    final root is its fault's."""
    expected, _ = scenario(topology, fault)
    store_url = f"sqlite:///{tmp_path / 'baselines.db'}"
    with receiving() as receiver:
        deliver(amqp_settings, store_url, spans_published(topology, fault), receiver, len(expected))
        received = receiver.reports()

    assert [r.id for r in received] == [r.id for r in expected]
    finals: dict[str, Candidate] = {}
    for report in received:
        assert report.incident is not None and report.incident.root_cause is not None
        finals[report.incident.id] = report.incident.root_cause
    assert {(root.service, root.kind) for root in finals.values()} == roots
    assert len(finals) == len(roots)

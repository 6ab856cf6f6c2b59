"""Against the real broker on 127.0.0.1:5672 (and the real service for the last test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from opentelemetry.trace import SpanKind

from baselines.detect import DetectorConfig
from baselines.forward import Forwarder
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from baselines.topology import ERROR_HEADER, ROUTING_KEY_HEADER
from service.contract import Analysis, AnomalyReport
from tests.helpers import dead_letters, publish, running_consumer, sample_value, wait_for


def test_published_events_reach_the_baseline(amqp_settings) -> None:
    config = DetectorConfig(window_seconds=60, allowed_lateness_seconds=0)
    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    t0 = datetime(2026, 11, 16, 9, tzinfo=UTC)
    spans = [
        {
            "service": "cart",
            "operation": "GET /cart",
            "duration_ms": 40 + i,
            "timestamp": (t0 + timedelta(seconds=i)).isoformat(),
        }
        for i in range(20)
    ]
    tick = dict(spans[0], timestamp=(t0 + timedelta(minutes=1)).isoformat())
    with running_consumer(amqp_settings, config, forwarder) as consumer:
        publish(amqp_settings, [spans, tick])
        wait_for(lambda: consumer.detector.stats.spans == 21, 30, "the spans to be applied")
        assert consumer.stats.dead_lettered == 0
        detector = consumer.detector
    forwarder.close()
    profile = detector.profile_p95("cart", "GET /cart")
    assert profile is not None and profile.history == 1
    learnt = profile.state()["recent"][0]  # in log ms: the profile of latency is multiplicative
    assert float(np.exp(learnt)) == pytest.approx(58.05, abs=0.01)  # p95 of 40..59 ms


def test_malformed_messages_land_in_the_dead_letter_queue_with_the_reason(amqp_settings) -> None:
    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    good = {
        "service": "cart",
        "operation": "GET /cart",
        "duration_ms": 5,
        "timestamp": "2026-11-16T09:00:00Z",
    }
    bad = dict(good, duration_ms="fast")
    with running_consumer(amqp_settings, DetectorConfig(), forwarder) as consumer:
        publish(amqp_settings, [b"{not json", [good, bad]])
        publish(amqp_settings, [b"\x0a\x03abc"], content_type="application/x-protobuf")
        wait_for(lambda: consumer.stats.dead_lettered == 3, 30, "three dead letters")
    forwarder.close()
    letters = dead_letters(amqp_settings)
    assert len(letters) == 3
    reasons = {headers[ERROR_HEADER]: body for headers, body in letters}
    (not_json,) = [r for r in reasons if r.startswith("not JSON")]
    assert reasons[not_json] == b"{not json"
    (item,) = [r for r in reasons if "duration_ms" in r]
    assert item.startswith("[1]") and json.loads(reasons[item]) == [bad]
    assert any("unknown OTLP routing key 'test'" in r for r in reasons)
    assert all(headers[ROUTING_KEY_HEADER] == "test" for headers, _ in letters)
    assert consumer.detector.stats.spans == 1  # the good span of the mixed batch was applied


@pytest.mark.slow
def test_an_injected_incident_reaches_the_service_and_is_analysed_in_one_trace(
    amqp_settings, live_service, spans
) -> None:
    """Four days of traffic through the broker, published as an instrumented producer
    would; the CPU incident on day 4 is flagged, POSTed to /v1/analyze and comes back as a
    valid Analysis, and one trace links the producer, the consumer and the analysis."""
    week_start = last_full_week_start(datetime.now(UTC))
    incident = demo_incidents(week_start)[0]
    analysed: list[tuple[AnomalyReport, Analysis]] = []
    forwarder = Forwarder(live_service, 60, lambda r, a: analysed.append((r, a))).start()
    minutes = int((incident.end - week_start).total_seconds() // 60) + 30
    spans.clear()
    with running_consumer(amqp_settings, DetectorConfig(), forwarder):
        batches = list(telemetry(week_start, [incident], minutes=minutes))
        messages = [
            [event for batch in batches[i : i + 30] for event in batch]
            for i in range(0, minutes, 30)
        ]
        publish(amqp_settings, messages, traced=True)
        wait_for(lambda: analysed, 120, "an analysis")
    forwarder.close()
    ((report, analysis),) = analysed
    assert report.service == incident.service and incident.covers(report.window.start)
    assert analysis.anomaly_id == report.id
    assert (analysis.service, analysis.operation) == (report.service, report.operation)
    Analysis.model_validate(analysis.model_dump())
    assert forwarder.stats.refused == 0 and forwarder.stats.forwarded == 1

    finished = spans.get_finished_spans()
    (served,) = [
        s
        for s in finished
        if s.kind == SpanKind.SERVER and s.attributes.get("http.route") == "/v1/analyze"
    ]
    trace_id = served.context.trace_id
    in_trace = {(s.kind, s.name) for s in finished if s.context.trace_id == trace_id}
    assert any(kind == SpanKind.PRODUCER for kind, _ in in_trace), in_trace
    assert (SpanKind.CONSUMER, f"{amqp_settings.queue} process") in in_trace
    assert (SpanKind.INTERNAL, "whyslow.analysis") in in_trace
    assert (SpanKind.INTERNAL, "llm.generate") in in_trace


def test_metrics_report_what_the_consumer_did(amqp_settings) -> None:
    from baselines.demo import free_port
    from baselines.metrics import ConsumerCollector, serve_metrics

    forwarder = Forwarder(amqp_settings.service_url, 5).start()
    good = {
        "service": "cart",
        "operation": "GET /cart",
        "duration_ms": 5,
        "timestamp": "2026-11-16T09:00:00Z",
    }
    port = free_port()
    with running_consumer(amqp_settings, DetectorConfig(), forwarder) as consumer:
        assert serve_metrics(ConsumerCollector(consumer), port, "127.0.0.1")
        taken = serve_metrics(ConsumerCollector(consumer), port, "127.0.0.1")
        assert not taken  # a warning, not a crash
        publish(amqp_settings, [[good] * 7, b"garbage"])
        wait_for(lambda: consumer.stats.messages == 2, 30, "two messages")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    forwarder.close()
    assert sample_value(text, "whyslow_consumer_events_applied_total", kind="span") == 7
    assert sample_value(text, "whyslow_consumer_dead_lettered_total") == 1
    assert sample_value(text, "whyslow_consumer_active") == 1
    assert sample_value(text, "whyslow_forwarder_outbox") == 0

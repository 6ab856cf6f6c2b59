"""OTLP through the real broker learns exactly what the equivalent JSON events teach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from baselines.detect import DetectorConfig
from baselines.forward import Forwarder
from baselines.synthetic import last_full_week_start, telemetry
from tests.helpers import publish, running_consumer, wait_for
from tests.otlp import otlp_requests, to_otlp_json


def learn(settings, bodies, routing_key: str, content_type: str, spans: int):
    forwarder = Forwarder(settings.service_url, 5).start()
    with running_consumer(settings, DetectorConfig(), forwarder) as consumer:
        publish(settings, bodies, content_type=content_type, routing_key=routing_key)
        wait_for(lambda: consumer.detector.stats.spans == spans, 120, f"{spans} spans")
        consumer.detector.flush()
    forwarder.close()
    return consumer.detector


def test_otlp_protobuf_and_json_learn_the_same_baselines_as_json_events(amqp_settings) -> None:
    start = last_full_week_start(datetime.now(UTC)) + timedelta(days=1)
    events = [
        e for minute in telemetry(start, [], minutes=720) for e in minute if "metric" not in e
    ]
    requests = otlp_requests(events)
    json_batches = [events[i : i + 500] for i in range(0, len(events), 500)]

    reference = learn(amqp_settings, json_batches, "test", "application/json", len(events))
    proto = learn(
        amqp_settings,
        [r.SerializeToString() for r in requests],
        "otlp_spans",
        "application/x-protobuf",
        len(events),
    )
    otlp_json = learn(
        amqp_settings,
        [to_otlp_json(r) for r in requests],
        "otlp_spans",
        "application/json",
        len(events),
    )

    for detector in (proto, otlp_json):
        assert detector.stats == reference.stats
        for service in ("checkout", "exchange-api", "search"):
            ours, theirs = detector.export(service)[0], reference.export(service)[0]
            assert ours.keys() == theirs.keys()
            for key in ours:
                for part, array in ours[key].p95.state().items():
                    np.testing.assert_array_equal(array, theirs[key].p95.state()[part], part)

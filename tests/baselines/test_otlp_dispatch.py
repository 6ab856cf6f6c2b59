"""OTLP messages dispatched by routing key and content type, and split by service for the
router, built with the OTel SDK's own types and encoders (``tests.baselines.otlp_helpers``)."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from baselines.ingest.json_events import MalformedMessage
from baselines.ingest.otlp import (
    OtlpBatch,
    parse_otlp,
    parse_otlp_metrics,
    parse_otlp_traces,
    split_otlp,
)
from tests.baselines.otlp_helpers import RESOURCE, both, collect_metrics, host_metrics, mixed_spans
from tests.otlp import record_spans, to_otlp_json

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
        (b'{"resourceLogs": 5}', "otlp_logs", "", "malformed OTLP/JSON ExportLogsServiceRequest"),
        (b"\x12\x00", "otlp_logs", "application/x-protobuf", "no resource_logs"),
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

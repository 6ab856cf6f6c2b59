"""The Collector's spanmetrics output as input: histograms stand in for the spans they count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint

from baselines.detect import Detector, DetectorConfig
from baselines.ingest.otlp import parse_otlp
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import TELEMETRY_EVENT, AnomalyReport, SpanEvent, SpanHistogram
from tests.otlp import attributes, spanmetrics_request

BOUNDS_MS = [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000]
"""The spanmetrics connector's default buckets."""
KINDS = {"server": "SPAN_KIND_SERVER", "client": "SPAN_KIND_CLIENT"}
SAME_INCIDENT = timedelta(minutes=5)
"""Two incidents with one root that start this close are the same incident: a p95 fitted to
the buckets of a dozen spans may cross the line a window after the spans' own p95 does."""


class Connector:
    """What the spanmetrics connector writes for a minute of spans: one cumulative
    histogram point per (service, span name, kind, status), in one request per minute."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.totals: dict[tuple[str, str, str, str, str], list[int]] = {}

    def export(self, spans: list[SpanEvent], end_ns: int) -> bytes:
        for span in spans:
            status = "STATUS_CODE_ERROR" if span.status == "error" else "STATUS_CODE_UNSET"
            key = (span.service, span.operation, span.kind, span.peer_service or "", status)
            counts = self.totals.setdefault(key, [0] * (len(BOUNDS_MS) + 1))
            counts[next((i for i, b in enumerate(BOUNDS_MS) if span.duration_ms <= b), -1)] += 1
        points: list[tuple[str, HistogramDataPoint]] = []
        for (service, name, kind, peer, status), counts in self.totals.items():
            dims = {"service.name": service, "span.name": name, "span.kind": KINDS[kind]}
            dims["status.code"] = status
            if peer:
                dims["peer.service"] = peer
            point = HistogramDataPoint(
                attributes=attributes(dims),
                start_time_unix_nano=self.start_ns,
                time_unix_nano=end_ns,
                count=sum(counts),
                bucket_counts=counts,
                explicit_bounds=BOUNDS_MS,
            )
            points.append((service, point))
        return spanmetrics_request(points)


def _week() -> Iterator[list[dict[str, object]]]:
    week_start = last_full_week_start(datetime.now(UTC))
    return telemetry(week_start, demo_incidents(week_start))


def _flags(reports: list[AnomalyReport]) -> set[tuple[str, str]]:
    return {(r.service, r.window.start.strftime("%a %H:%M")) for r in reports if r.window}


def _incidents(reports: list[AnomalyReport]) -> list[tuple[str, datetime, frozenset[str]]]:
    """(root service, start, services reached) of each incident, as its last revision says."""
    last = {r.incident.id: r.incident for r in reports if r.incident}
    found = [
        (
            i.root_cause.service if i.root_cause else "",
            i.started,
            frozenset(a.service for a in i.affected),
        )
        for i in last.values()
    ]
    return sorted(found, key=lambda f: (f[0], f[1]))


@pytest.fixture(scope="module")
def demo_week_both_ways() -> tuple[list[AnomalyReport], list[AnomalyReport]]:
    """The demo week's reports from its spans, and from the spanmetrics of the same spans."""
    from_spans = Detector(DetectorConfig())
    from_histograms = Detector(DetectorConfig())
    span_reports: list[AnomalyReport] = []
    histogram_reports: list[AnomalyReport] = []
    connector: Connector | None = None
    points = 0
    for minute in _week():
        events = [TELEMETRY_EVENT.validate_python(e) for e in minute]
        span_reports += from_spans.observe(events, now=float("inf"))
        spans = [e for e in events if isinstance(e, SpanEvent)]
        others = [e for e in events if not isinstance(e, SpanEvent)]
        end_ns = int((max(s.timestamp.timestamp() for s in spans) + 0.001) * 1e9)
        if connector is None:
            connector = Connector(end_ns - 60 * 10**9)
        batch = parse_otlp(connector.export(spans, end_ns), "otlp_metrics", "")
        assert not batch.rejected
        points += sum(isinstance(e, SpanHistogram) for e in batch.events)
        histogram_reports += from_histograms.observe([*batch.events, *others], now=float("inf"))
    span_reports += from_spans.flush()
    histogram_reports += from_histograms.flush()
    print(f"{points} histogram points; flags from spans {sorted(_flags(span_reports))}")
    print(f"flags from histograms {sorted(_flags(histogram_reports))}")
    return span_reports, histogram_reports


def test_spanmetrics_of_the_demo_week_flag_what_its_spans_flag(
    demo_week_both_ways: tuple[list[AnomalyReport], list[AnomalyReport]],
) -> None:
    span_reports, histogram_reports = demo_week_both_ways
    from_spans, from_histograms = _incidents(span_reports), _incidents(histogram_reports)
    assert from_spans and len(from_histograms) == len(from_spans)
    for (root, started, reached), (other_root, other_start, other_reached) in zip(
        from_spans, from_histograms, strict=True
    ):
        assert (other_root, other_reached) == (root, reached)
        assert abs(other_start - started) <= SAME_INCIDENT


def test_a_cumulative_stream_counts_each_interval_once_and_its_first_point_sets_the_level() -> None:
    detector = Detector(DetectorConfig())
    connector = Connector(start_ns=1_700_000_000 * 10**9)
    minute_ns = 60 * 10**9
    seen = []
    for minute in range(1, 4):
        end_ns = connector.start_ns + minute * minute_ns
        ts = datetime.fromtimestamp(end_ns / 1e9 - 1, UTC)
        spans = [
            SpanEvent(service="a", operation="GET /", duration_ms=5.0 * minute, timestamp=ts)
            for _ in range(10)
        ]
        batch = parse_otlp(connector.export(spans, end_ns), "otlp_metrics", "")
        detector.observe(batch.events, now=float("inf"))
        seen.append(detector.stats.spans)
    assert seen == [0, 10, 20]  # the first point of the stream only sets its level


def test_spanmetrics_points_are_checked_and_internal_spans_skipped() -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name, metric.unit = "traces.span.metrics.duration", "ms"
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    good = {"service.name": "a", "span.name": "GET /", "span.kind": "SPAN_KIND_SERVER"}
    internal = {**good, "span.kind": "SPAN_KIND_INTERNAL"}
    nameless = {"service.name": "a", "span.kind": "SPAN_KIND_SERVER"}
    cases = ((good, [1, 2, 3]), (internal, [1, 0, 0]), (nameless, [1, 0, 0]), (good, [1, 2]))
    for dims, counts in cases:
        metric.histogram.data_points.add(
            attributes=attributes(dims),
            time_unix_nano=1_700_000_000 * 10**9,
            bucket_counts=counts,
            explicit_bounds=[10, 100],
        )
    batch = parse_otlp(request.SerializeToString(), "otlp_metrics", "")
    points = [e for e in batch.events if isinstance(e, SpanHistogram)]
    assert [(e.service, e.operation, e.bucket_counts) for e in points] == [
        ("a", "GET /", [1, 2, 3])
    ]
    assert batch.skipped == 1
    reasons = [reason for _, reason in batch.rejected]
    assert any("span.name attribute is missing" in r for r in reasons)
    assert any("2 bucket counts for 2 bounds" in r for r in reasons)

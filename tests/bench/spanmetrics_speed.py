"""Throughput of one consumer on the Collector's spanmetrics output through the real broker,
in spans-equivalent per second, against a raw pika consumer of the same messages and
against the same consumer on raw OTLP spans, measured in the same run.

    .venv/bin/python tests/bench/spanmetrics_speed.py [--services 200] [--operations 5]
        [--minutes 60] [--spans-per-minute 600] [--per-message 2000 250]

Workload: a fleet exporting through a spanmetrics connector. Every 60 s of event time the
connector flushes one cumulative ``traces.span.metrics.duration`` point (unit ms, the 16
default buckets) per series: service x operation x status (``STATUS_CODE_UNSET`` and
``STATUS_CODE_ERROR``), server spans, each point counting about ``--spans-per-minute`` more
spans than the last. The batch processor cuts each flush into requests of up to
``--per-message`` points, grouped by service (resource) as the connector groups them.

A histogram point stands for all the spans it counts, so whyslow's cost grows with series
and intervals, not with spans: the claim is >= 5,000,000 spans-equivalent per second
through one consumer. The spans-equivalent are the spans the detector applies, which
excludes each stream's first point (it only sets the stream's level); the bench stops if
the detector applies fewer than the points count.

whyslow runs without a store and in its exactly-once mode (a SQLite checkpoint before each
acknowledgement), as in ``consumer_speed.py``, whose helpers this reuses: once with a
checkpoint every second, as there, and once at the default interval (a checkpoint every
60 s, or sooner once half the prefetch waits for one). A checkpoint writes every series
that changed, so its cost, like the rest, grows with series. ``consumer_speed``'s span
workload (1,000 spans a message) gives the consumer's spans/s on raw OTLP spans.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from consumer_speed import fill, otlp_messages, raw_consume, teardown, whyslow_consume
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint

from baselines.ingest.otlp.dispatch import METRICS_ROUTING_KEY
from baselines.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: test helpers
from tests.helpers import own_topology
from tests.otlp import attributes, spanmetrics_request

TARGET = 5_000_000
"""Spans-equivalent per second through one consumer."""
BOUNDS_MS = [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000]
"""The spanmetrics connector's default buckets (``histogram.explicit.buckets``)."""
STATUSES = ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR")
ERROR_SHARE = 0.01
"""Of an operation's spans: its error series is far quieter than its ok series."""
LATENCY_SIGMA = 0.5
"""Of an operation's log-normal latency."""
MINUTE_NS = 60 * 10**9
REFERENCE_MESSAGES = 600
REFERENCE_BYTES = 200 * 2**20
"""Each raw reference run consumes the messages repeated to about this many messages, and
no more than this many bytes (the queue holds them all at once)."""
SPAN_SAMPLE = 50_000
"""Raw OTLP spans for the spans/s comparison."""


@dataclass(frozen=True)
class Workload:
    messages: list[bytes]
    points: int
    spans: int
    """The spans the detector applies: every point's count minus its stream's first."""


def spanmetrics_messages(
    services: int, operations: int, minutes: int, spans_per_minute: int, per_message: int
) -> Workload:
    """What the connector and the batch processor send for ``minutes`` minutes of the fleet.

    Each operation has its own usual latency (log-normal around a median of 20-400 ms) and
    ``2 * spans_per_minute`` spans a minute (Poisson), ``ERROR_SHARE`` of them errors, which
    end faster; each minute's spans fall into the buckets by multinomial draws."""
    rng = np.random.default_rng(7)
    end_ns = (time.time_ns() // MINUTE_NS - 2) * MINUTE_NS
    start_ns = end_ns - (minutes + 1) * MINUTE_NS
    series: list[tuple[str, list[KeyValue], float, np.ndarray]] = []
    for s in range(services):
        service = f"svc-{s:03d}"
        for o in range(operations):
            median = rng.uniform(20, 400)
            for status, share, scale in (
                ("STATUS_CODE_UNSET", 1 - ERROR_SHARE, 1.0),
                ("STATUS_CODE_ERROR", ERROR_SHARE, 0.3),
            ):
                dims = {
                    "service.name": service,
                    "span.name": f"GET /api/v1/op-{o}",
                    "span.kind": "SPAN_KIND_SERVER",
                    "status.code": status,
                }
                rate = 2 * spans_per_minute * share
                series.append((service, attributes(dims), rate, _bucket_shares(median * scale)))
    totals = np.zeros((len(series), len(BOUNDS_MS) + 1), dtype=np.int64)
    messages: list[bytes] = []
    first_total = 0
    for minute in range(1, minutes + 1):
        points: list[tuple[str, HistogramDataPoint]] = []
        for (service, attrs, rate, shares), counts in zip(series, totals, strict=True):
            counts += rng.multinomial(rng.poisson(rate), shares)
            point = HistogramDataPoint(
                attributes=attrs,
                start_time_unix_nano=start_ns,
                time_unix_nano=start_ns + minute * MINUTE_NS,
                count=int(counts.sum()),
                bucket_counts=counts.tolist(),
                explicit_bounds=BOUNDS_MS,
            )
            points.append((service, point))
        if minute == 1:
            first_total = int(totals.sum())
        for i in range(0, len(points), per_message):
            messages.append(spanmetrics_request(points[i : i + per_message]))
    return Workload(messages, len(series) * minutes, int(totals.sum()) - first_total)


def _bucket_shares(median_ms: float) -> np.ndarray:
    """The probability of each bucket for a log-normal latency of this median."""
    edges = [0.0, *BOUNDS_MS, math.inf]
    cdf = [
        0.0 if e == 0 else 0.5 * math.erfc(-math.log(e / median_ms) / (LATENCY_SIGMA * 2**0.5))
        for e in edges[:-1]
    ] + [1.0]
    shares = np.diff(np.array(cdf))
    return shares / shares.sum()


def reference(
    settings: Settings, messages: list[bytes], decode: Callable[[bytes], object] | None
) -> tuple[float, str]:
    """(seconds a raw pika consumer takes for ``messages`` once, its CPU share): the median
    of three runs over enough copies of them to be timed."""
    size = sum(map(len, messages))
    repeats = max(1, min(math.ceil(REFERENCE_MESSAGES / len(messages)), REFERENCE_BYTES // size))
    runs, busy = [], []
    for _ in range(3):
        fill(settings, messages * repeats, METRICS_ROUTING_KEY, "")
        seconds, share = raw_consume(settings, len(messages) * repeats, decode)
        runs.append(seconds / repeats)
        busy.append(share)
    return statistics.median(runs), f"on a CPU {min(busy):.0%}-{max(busy):.0%} of its time"


def run(workload: Workload, settings: Settings, tmp: Path) -> None:
    messages, points, spans = workload.messages, workload.points, workload.spans
    label = f"spanmetrics, {points / len(messages):,.0f} points/msg"
    size = sum(map(len, messages)) / len(messages)
    print(
        f"{label}: {len(messages)} messages of {size / 1024:,.0f} KiB, {points:,} points, "
        f"{spans:,} spans-equivalent"
    )

    def rates(seconds: float) -> str:
        return (
            f"{points / seconds:>9,.0f} points/s, {spans / seconds:>12,.0f} spans-eq/s, "
            f"{len(messages) / seconds:>7,.1f} msgs/s"
        )

    raw, raw_busy = reference(settings, messages, None)
    print(f"{label}: raw pika, ack only:        {rates(raw)} ({raw_busy})")
    ceiling, ceiling_busy = reference(settings, messages, ExportMetricsServiceRequest.FromString)
    print(
        f"{label}: raw pika, decode and ack:  {rates(ceiling)}, ratio to raw "
        f"{raw / ceiling:.2f} ({ceiling_busy})"
    )
    default_every = Settings.model_fields["checkpoint_seconds"].default
    for mode, url, every in (
        ("no store", None, default_every),
        (
            "exactly-once, SQLite, checkpoint every 1 s",
            f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}",
            1.0,
        ),
        (
            f"exactly-once, SQLite, default checkpoint ({default_every:.0f} s or "
            f"{settings.prefetch // 2} messages)",
            f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}",
            default_every,
        ),
    ):
        fill(settings, messages, METRICS_ROUTING_KEY, "")
        timed_settings = settings.model_copy(update={"checkpoint_seconds": every})
        ours = whyslow_consume(timed_settings, len(messages), spans, url)
        verdict = "PASS" if spans / ours >= TARGET else "MISS"
        print(
            f"{label}: whyslow ({mode}): {rates(ours)}, ratio to raw {raw / ours:.2f}; "
            f"{verdict} against {TARGET:,} spans-eq/s"
        )


def raw_spans(settings: Settings) -> None:
    """The same consumer on raw OTLP spans (``consumer_speed``'s workload), for scale."""
    messages = otlp_messages(SPAN_SAMPLE, 1000)
    fill(settings, messages, "otlp_spans", "")
    seconds = whyslow_consume(settings, len(messages), SPAN_SAMPLE, None)
    print(
        f"raw OTLP spans, {SPAN_SAMPLE / len(messages):.0f} spans/msg: whyslow (no store): "
        f"{SPAN_SAMPLE / seconds:>12,.0f} spans/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--operations", type=int, default=5, help="per service")
    parser.add_argument("--minutes", type=int, default=60, help="connector flushes")
    parser.add_argument("--spans-per-minute", type=int, default=600, help="per series")
    parser.add_argument(
        "--per-message",
        type=int,
        nargs="+",
        default=[2000, 250],
        help="points per request, one workload each",
    )
    args = parser.parse_args()
    settings = own_topology("bench.spanmetrics")
    series = args.services * args.operations * len(STATUSES)
    print(
        f"{series:,} series ({args.services} services x {args.operations} operations x "
        f"{len(STATUSES)} statuses), {args.minutes} one-minute flushes, about "
        f"{args.spans_per_minute} spans a minute per series, cumulative, "
        f"{len(BOUNDS_MS)} buckets"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for per_message in args.per_message:
                workload = spanmetrics_messages(
                    args.services, args.operations, args.minutes, args.spans_per_minute, per_message
                )
                run(workload, settings, Path(tmp))
            raw_spans(settings)
    finally:
        teardown(settings, 0)


if __name__ == "__main__":
    main()

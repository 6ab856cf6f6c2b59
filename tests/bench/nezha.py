"""A Nezha fault-injection day (``../shared/data/nezha-dev/``) read from its CSVs and turned
into the OTLP messages a Collector's rabbitmqexporter would publish for it.

Why: root-cause analysis must be measured on telemetry nobody here wrote, and it must
arrive the way it does in production (OTLP protobuf through RabbitMQ, signals interleaved
in event time), not as pre-digested events. This module only reads and encodes; scoring is
``rca_real.py``'s.

What a Collector would do and the data does not say, decided here:

- ``service.name`` is the pod name without its two hash suffixes, ``k8s.pod.name`` the pod;
- spans keep kind UNSPECIFIED (the data has none) and their parent span id, so a pipeline
  has to infer kinds from service boundaries, as it must for such traces;
- a gateway Collector's batching: one traces (logs) message per ``batch_s`` seconds of span
  end (log) time, every service mixed, spans grouped per resource inside the request;
- logs: body = the ``log`` text of the container runtime's JSON line (trailing newline
  removed, as the filelog receiver's container parser does); severity from the Java level
  word after the time, as a regex parser with the default severity mapping would;
- metrics: one message per minute of the day (every pod's row of that minute), each pod's
  ``CpuUsageRate(%)`` and ``MemoryUsageRate(%)`` as the kubeletstats-style gauges
  ``container.cpu.utilization`` and ``container.memory.utilization`` (fractions 0..1).
  A NaN cell is no data point.
- the day's one fault-free minute (``construct_data``) is replayed first, moved to end one
  minute before the first fault's data: the only span and log history the faults can have.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

NS = 1_000_000_000
TRACES_KEY, LOGS_KEY, METRICS_KEY = "otlp_spans", "otlp_logs", "otlp_metrics"
CONTENT_TYPE = "application/x-protobuf"
METRICS_SCOPE = (
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kubeletstatsreceiver"
)
"""The receiver whose gauges these are shaped like (not dockerstats: that one sends percent)."""
METRIC_COLUMNS = {
    "container.cpu.utilization": "CpuUsageRate(%)",
    "container.memory.utilization": "MemoryUsageRate(%)",
}
"""OTel gauge -> the Nezha column it carries, as a fraction (the column / 100)."""
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17}
SEVERITIES |= {"FATAL": 21}
"""The OTel severity parser's default mapping of level words."""
_LEVEL = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d+\s+([A-Z]+)\b")


def service_of(pod: str) -> str:
    """``ts-contacts-service-866bd68c97-xcqfx`` -> ``ts-contacts-service``."""
    return pod.rsplit("-", 2)[0]


def severity(line: str) -> tuple[str, int]:
    """(severity text, number) of a Java log line (``16:42:22.382 INFO  t.s....``); a line
    without a level (a stack trace's continuation) has none: ("", 0)."""
    match = _LEVEL.match(line)
    if match is None or match.group(1) not in SEVERITIES:
        return "", 0
    return match.group(1), SEVERITIES[match.group(1)]


@dataclass(frozen=True)
class Fault:
    at: float
    """``inject_time`` read as UTC, epoch seconds (``inject_timestamp`` is often 8 h off)."""
    kind: str
    pod: str

    @property
    def service(self) -> str:
        return service_of(self.pod)

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%H:%M:%S")


class Span(NamedTuple):
    trace_id: str
    span_id: str
    parent_id: str | None
    pod: str
    operation: str
    start_ns: int
    end_ns: int


class LogLine(NamedTuple):
    time_ns: int
    pod: str
    container: str
    trace_id: str
    span_id: str
    body: str
    level: str


class MetricRow(NamedTuple):
    time_ns: int
    pod: str
    values: dict[str, float]
    """Nezha column -> value, NaN cells left out."""


@dataclass
class Segment:
    """The spans and logs of one stretch of the day: the fault-free minute or a fault's
    three minute files."""

    label: str
    fault: Fault | None
    spans: list[Span]
    logs: list[LogLine]
    minutes: int
    """Minute files it was read from."""

    @property
    def first_ns(self) -> int:
        return min([s.end_ns for s in self.spans] + [g.time_ns for g in self.logs])

    @property
    def last_ns(self) -> int:
        return max([s.end_ns for s in self.spans] + [g.time_ns for g in self.logs])


@dataclass
class Day:
    segments: list[Segment]
    """The fault-free minute first (moved), then each fault's, in time order."""
    metrics: list[MetricRow]
    shift_s: float
    """How far the fault-free minute was moved (negative: earlier)."""
    faults: list[Fault]


def read_faults(day_dir: Path) -> list[Fault]:
    listing = json.loads(next(day_dir.glob("*fault_list.json")).read_text())
    faults = [
        Fault(
            datetime.fromisoformat(entry["inject_time"]).replace(tzinfo=UTC).timestamp(),
            entry["inject_type"],
            entry["inject_pod"],
        )
        for entries in listing.values()
        for entry in entries
    ]
    return sorted(faults, key=lambda f: f.at)


def read_spans(paths: Iterable[Path]) -> list[Span]:
    spans = []
    for path in paths:
        with path.open(newline="") as source:
            rows = csv.reader(source)
            next(rows)
            for trace_id, span_id, parent, pod, operation, start, end, _ in rows:
                spans.append(
                    Span(
                        trace_id,
                        span_id,
                        None if parent == "root" else parent,
                        pod,
                        operation,
                        int(start),
                        int(end),
                    )
                )
    return spans


def read_logs(paths: Iterable[Path]) -> list[LogLine]:
    logs = []
    decoder = json.JSONDecoder()
    for path in paths:
        with path.open(newline="") as source:
            rows = csv.reader(source)
            next(rows)
            for row in rows:
                raw = ",".join(row[7:])  # one row of the day has a stray quote: more cells
                try:  # the runtime's JSON line; raw_decode ignores what follows it
                    body = str(decoder.raw_decode(raw)[0]["log"]).rstrip("\n")
                except (ValueError, KeyError, TypeError):
                    body = raw
                time_ns = int(row[1])
                if time_ns <= 0:  # Go's zero time in some rows: the Timestamp column has it
                    time_ns = _iso_ns(row[0])
                logs.append(
                    LogLine(time_ns, row[3], row[4], row[5], row[6], body, severity(body)[0])
                )
    return logs


def _iso_ns(text: str) -> int:
    """``2023-01-29T09:20:29.295`` or ``...29.295315911Z`` (UTC) in nanoseconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return int(seconds) * NS + int((fraction or "0").ljust(9, "0")[:9])


def read_metrics(metric_dir: Path) -> list[MetricRow]:
    rows = []
    for path in sorted(metric_dir.glob("*_metric.csv")):
        with path.open(newline="") as source:
            for row in csv.DictReader(source):
                values = {}
                for column in METRIC_COLUMNS.values():
                    try:
                        value = float(row[column])
                    except (KeyError, ValueError):
                        continue
                    if math.isfinite(value):
                        values[column] = value
                rows.append(MetricRow(int(row["TimeStamp"]) * NS, row["PodName"], values))
    return sorted(rows)


def _minute_files(folder: Path, suffix: str, fault: Fault) -> list[Path]:
    """The fault's three minute files (``HH_MM_<suffix>.csv``): its minute and the next two."""
    start = int(fault.at // 60) * 60
    names = [
        datetime.fromtimestamp(start + 60 * i, UTC).strftime(f"%H_%M_{suffix}.csv")
        for i in range(3)
    ]
    return [folder / name for name in names if (folder / name).is_file()]


def load_day(data: Path, day: str) -> Day:
    """The day's faults, their spans and logs, the fault-free minute (moved) and the
    per-pod minute metrics."""
    day_dir, construct = data / "rca_data" / day, data / "construct_data" / day
    faults = read_faults(day_dir)
    segments = []
    for fault in faults:
        traces = _minute_files(day_dir / "trace", "trace", fault)
        segments.append(
            Segment(
                f"fault {fault.label}",
                fault,
                read_spans(traces),
                read_logs(_minute_files(day_dir / "log", "log", fault)),
                len(traces),
            )
        )
    clean_traces = sorted((construct / "trace").glob("*_trace.csv"))
    spans, logs = read_spans(clean_traces), read_logs(sorted((construct / "log").glob("*_log.csv")))
    clean = Segment("fault-free minute", None, spans, logs, len(clean_traces))
    first = min(s.first_ns for s in segments if s.spans or s.logs)
    shift_ns = first - 60 * NS - clean.last_ns
    clean.spans = [
        s._replace(start_ns=s.start_ns + shift_ns, end_ns=s.end_ns + shift_ns) for s in spans
    ]
    clean.logs = [g._replace(time_ns=g.time_ns + shift_ns) for g in logs]
    return Day([clean, *segments], read_metrics(day_dir / "metric"), shift_ns / NS, faults)


def moved_segment(segment: Segment, after_s: int, label: str | None = None) -> Segment:
    """``segment`` (its spans, log lines and fault) ``after_s`` seconds later."""
    ns = after_s * NS
    fault = segment.fault
    return Segment(
        segment.label if label is None else label,
        None if fault is None else replace(fault, at=fault.at + after_s),
        [s._replace(start_ns=s.start_ns + ns, end_ns=s.end_ns + ns) for s in segment.spans],
        [g._replace(time_ns=g.time_ns + ns) for g in segment.logs],
        segment.minutes,
    )


def twice(day: Day, after_s: int) -> Day:
    """The day, then its faults' segments and metrics again ``after_s`` seconds later (the
    fault-free minute once): the second copy has the whole first as its history."""
    ns = after_s * NS
    again = [moved_segment(s, after_s, f"{s.label}, again") for s in day.segments[1:]]
    return Day(
        [*day.segments, *again],
        [*day.metrics, *(m._replace(time_ns=m.time_ns + ns) for m in day.metrics)],
        day.shift_s,
        [*day.faults, *(replace(f, at=f.at + after_s) for f in day.faults)],
    )


# --------------------------------------------------------------------------- OTLP


class Message(NamedTuple):
    """One publish: ordered by the newest event it holds, as a batch leaves when full."""

    sort_ns: int
    routing_key: str
    body: bytes
    items: int


def _attributes(
    target: RepeatedCompositeFieldContainer[KeyValue], pod: str, extra: dict[str, str] | None = None
) -> None:
    values = {"service.name": service_of(pod), "k8s.pod.name": pod} | (extra or {})
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        kv.value.string_value = value


def _bins(times: Iterable[tuple[int, int]], batch_ns: int) -> dict[int, list[int]]:
    """Index groups by ``time // batch_ns`` from (time, index) pairs."""
    groups: dict[int, list[int]] = {}
    for time_ns, index in times:
        groups.setdefault(time_ns // batch_ns, []).append(index)
    return groups


def span_messages(spans: list[Span], batch_s: float) -> Iterator[Message]:
    """One ExportTraceServiceRequest per ``batch_s`` of span end time."""
    groups = _bins(((s.end_ns, i) for i, s in enumerate(spans)), int(batch_s * NS))
    for _, indices in sorted(groups.items()):
        batch = sorted((spans[i] for i in indices), key=lambda s: s.end_ns)
        by_pod: dict[str, list[Span]] = {}
        for span in batch:
            by_pod.setdefault(span.pod, []).append(span)
        request = ExportTraceServiceRequest()
        for pod, members in by_pod.items():
            resource = request.resource_spans.add()
            _attributes(resource.resource.attributes, pod)
            scope = resource.scope_spans.add()
            for span in members:
                out = scope.spans.add()
                out.trace_id = bytes.fromhex(span.trace_id)
                out.span_id = bytes.fromhex(span.span_id)
                if span.parent_id:
                    out.parent_span_id = bytes.fromhex(span.parent_id)
                out.name = span.operation
                out.start_time_unix_nano = span.start_ns
                out.end_time_unix_nano = span.end_ns
        yield Message(batch[-1].end_ns, TRACES_KEY, request.SerializeToString(), len(batch))


def log_messages(logs: list[LogLine], batch_s: float) -> Iterator[Message]:
    """One ExportLogsServiceRequest per ``batch_s`` of log time."""
    groups = _bins(((g.time_ns, i) for i, g in enumerate(logs)), int(batch_s * NS))
    for _, indices in sorted(groups.items()):
        batch = sorted((logs[i] for i in indices), key=lambda g: g.time_ns)
        by_pod: dict[tuple[str, str], list[LogLine]] = {}
        for line in batch:
            by_pod.setdefault((line.pod, line.container), []).append(line)
        request = ExportLogsServiceRequest()
        for (pod, container), members in by_pod.items():
            resource = request.resource_logs.add()
            _attributes(resource.resource.attributes, pod, {"k8s.container.name": container})
            scope = resource.scope_logs.add()
            for line in members:
                record = scope.log_records.add()
                record.time_unix_nano = line.time_ns
                record.observed_time_unix_nano = line.time_ns
                record.body.string_value = line.body
                if line.level:
                    record.severity_text = line.level
                    record.severity_number = SEVERITIES[line.level]  # type: ignore[assignment]
                if len(line.trace_id) == 32:
                    record.trace_id = bytes.fromhex(line.trace_id)
                if len(line.span_id) == 16:
                    record.span_id = bytes.fromhex(line.span_id)
        yield Message(batch[-1].time_ns, LOGS_KEY, request.SerializeToString(), len(batch))


def metric_messages(rows: list[MetricRow]) -> Iterator[Message]:
    """One ExportMetricsServiceRequest per minute: every pod's gauges of that minute."""
    groups = _bins(((r.time_ns, i) for i, r in enumerate(rows)), 60 * NS)
    for _, indices in sorted(groups.items()):
        request = ExportMetricsServiceRequest()
        points = 0
        for i in indices:
            row = rows[i]
            resource = request.resource_metrics.add()
            _attributes(resource.resource.attributes, row.pod)
            scope = resource.scope_metrics.add()
            scope.scope.name = METRICS_SCOPE
            for name, column in METRIC_COLUMNS.items():
                if column not in row.values:
                    continue
                metric = scope.metrics.add()
                metric.name, metric.unit = name, "1"
                point = metric.gauge.data_points.add()
                point.time_unix_nano = row.time_ns
                point.as_double = row.values[column] / 100.0
                points += 1
        newest = max(rows[i].time_ns for i in indices)
        yield Message(newest, METRICS_KEY, request.SerializeToString(), points)


def replay_messages(day: Day, batch_s: float) -> list[Message]:
    """Every message of the day, the three signals interleaved by event time."""
    spans = [s for segment in day.segments for s in segment.spans]
    logs = [g for segment in day.segments for g in segment.logs]
    streams = [
        list(span_messages(spans, batch_s)),
        list(log_messages(logs, batch_s)),
        list(metric_messages(day.metrics)),
    ]
    return list(heapq.merge(*streams, key=lambda m: m.sort_ns))

"""Hours of fault-free TrainTicket traffic: how often the detector opens an incident.

Why: the held-out run is a continuous stream with long fault-free hours, and the Nezha day
holds only the minutes around its faults. A service that logs bursts of familiar errors now
and then (TrainTicket's do: ts-basic-service's "No instances available", travel2's
dispatcher errors) looks new in a short replay and every half hour in a long one. This
builds the long one from the day's own healthy minutes and counts what the detector raises.

    .venv/bin/python tests/bench/fault_free_real.py [--hours 36] [--seed 0] [--data DIR]

Healthy minutes: the fault-free minute of ``construct_data``, and the minute before each
fault's labelled injection without the fault's root service (its spans' traces and its log
lines: several roots log errors before their labelled time). Each minute of the stream is
one of them drawn at random, moved to its place (trace and span ids made unique per minute),
encoded as the Collector's rabbitmqexporter publishes OTLP protobuf (``nezha.py``) and fed
to the consumer's parser and ``Detector`` in this process, with default settings. No
metrics: the day's CPU plateaus are not in it. Prints every incident opened (its start, in
hours, and its root) and, per service, incidents opened in each day of the stream: the
detector's target is at most one a service a day once its baselines have learnt.

With ``--then-faults`` the day itself follows the stream (its fault-free minute, its faults'
minutes and its metrics from there on, moved to a minute after the stream's end) and its
faults are scored as ``rca_real.py`` scores them, in process: what the detector makes of the
same faults once it has learnt hours of healthy traffic, as a continuous stream gives it.
``--min-gap-s`` keeps only the minutes before injections at least that long after the
previous one (a fault's minute before the next injection may still hold its trouble).

A report, not a test: exit 0 whatever the counts, 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import nezha
import numpy as np
import rca_real
from rca_real import DEFAULT_DATA

from baselines.consumer import parse_message
from baselines.detect import Detector
from baselines.settings import Settings
from service.contract import AnomalyReport

START_S = 1_700_000_000  # a Tuesday, 22:13 UTC: the stream's first minute
Minute = tuple[list[nezha.Span], list[nezha.LogLine], int]
"""A healthy minute: its spans, its log lines and when it began (ns)."""


def healthy_minutes(day: nezha.Day, min_gap_s: float = 0.0) -> list[Minute]:
    """The fault-free minute, and each fault's minute before its injection without its root
    service (whole traces only: a trace that touches the root, or runs past the injection,
    is left out), of the injections at least ``min_gap_s`` after the previous one."""
    clean = day.segments[0]
    minutes: list[Minute] = [(clean.spans, clean.logs, clean.first_ns)]
    previous = -np.inf
    for segment in day.segments[1:]:
        assert segment.fault is not None
        gap, previous = segment.fault.at - previous, segment.fault.at
        if gap < min_gap_s:
            continue
        end = int(segment.fault.at * nezha.NS)
        begin, root = end - 60 * nezha.NS, segment.fault.service
        left_out = {
            s.trace_id
            for s in segment.spans
            if nezha.service_of(s.pod) == root or not begin <= s.start_ns <= s.end_ns < end
        }
        spans = [s for s in segment.spans if s.trace_id not in left_out]
        logs = [
            g for g in segment.logs if begin <= g.time_ns < end and nezha.service_of(g.pod) != root
        ]
        minutes.append((spans, logs, begin))
    return minutes


def _unique(identifier: str, minute: int) -> str:
    return identifier[:-4] + f"{minute % 65536:04x}" if identifier else identifier


def stream(minutes: list[Minute], hours: float, seed: int) -> nezha.Day:
    """``hours`` of minutes drawn from ``minutes``, one after the other from ``START_S``."""
    rng = np.random.default_rng(seed)
    segments = []
    for m in range(round(hours * 60)):
        spans, logs, began = minutes[int(rng.integers(len(minutes)))]
        shift = (START_S + 60 * m) * nezha.NS - began
        moved_spans = [
            s._replace(
                start_ns=s.start_ns + shift,
                end_ns=s.end_ns + shift,
                trace_id=_unique(s.trace_id, m),
                span_id=_unique(s.span_id, m),
                parent_id=_unique(s.parent_id, m) if s.parent_id else s.parent_id,
            )
            for s in spans
        ]
        moved_logs = [
            g._replace(
                time_ns=g.time_ns + shift,
                trace_id=_unique(g.trace_id, m),
                span_id=_unique(g.span_id, m),
            )
            for g in logs
        ]
        segments.append(nezha.Segment(f"minute {m}", None, moved_spans, moved_logs, 1))
    return nezha.Day(segments, [], 0.0, [])


def then(stream_day: nezha.Day, day: nezha.Day) -> tuple[nezha.Day, int]:
    """The stream, then ``day`` moved to begin a minute after it (its metrics from there on);
    and how far the day was moved (s)."""
    end = max(s.last_ns for s in stream_day.segments)
    offset = (end // nezha.NS + 60) - day.segments[0].first_ns // nezha.NS
    ns = offset * nezha.NS
    segments = [nezha.moved_segment(segment, offset) for segment in day.segments]
    metrics = [m._replace(time_ns=m.time_ns + ns) for m in day.metrics if m.time_ns + ns > end]
    faults = [replace(f, at=f.at + offset) for f in day.faults]
    return nezha.Day([*stream_day.segments, *segments], metrics, day.shift_s, faults), offset


def score_day(reports: list[AnomalyReport], day: nezha.Day, offset: int) -> None:
    """The faults of ``day`` (moved by ``offset``) scored as ``rca_real.py`` scores them."""
    begins = offset + day.segments[0].first_ns / nezha.NS
    found = rca_real.moved_back(rca_real.alarms(reports), begins, offset)
    scoring = rca_real.score(rca_real.analyse_data(day), found)
    rca_real.report_table(scoring.overlapping, "The day's faults after the stream, with overlap")
    rca_real.totals(scoring, day)


def detect(day: nezha.Day) -> list[AnomalyReport]:
    detector = Detector(Settings().detector_config())
    reports: list[AnomalyReport] = []
    for message in nezha.replay_messages(day, 2.0):
        batch = parse_message(message.body, message.routing_key, nezha.CONTENT_TYPE)
        reports += detector.observe(batch.events)
    return reports + detector.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the nezha-dev folder")
    parser.add_argument("--day", default="2023-01-29", help="a day of rca_data (TrainTicket)")
    parser.add_argument("--hours", type=float, default=36.0, help="length of the stream")
    parser.add_argument("--seed", type=int, default=0, help="which minutes are drawn")
    parser.add_argument(
        "--then-faults",
        action="store_true",
        help="replay the day's faults after the stream and score them",
    )
    parser.add_argument(
        "--min-gap-s",
        type=float,
        default=0.0,
        help="healthy minutes only before injections at least this long after the previous",
    )
    args = parser.parse_args(argv)
    if not (args.data / "rca_data" / args.day).is_dir():
        print(f"no {args.data / 'rca_data' / args.day}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    recorded = nezha.load_day(args.data, args.day)
    minutes = healthy_minutes(recorded, args.min_gap_s)
    day = stream(minutes, args.hours, args.seed)
    spans = sum(len(s.spans) for s in day.segments)
    lines = sum(len(s.logs) for s in day.segments)
    print(
        f"{len(minutes)} healthy minutes drawn into {args.hours:g} h: {spans:,} spans, "
        f"{lines:,} log lines"
    )
    stream_end = START_S + round(args.hours * 60) * 60
    offset = 0
    if args.then_faults:
        day, offset = then(day, recorded)
        print(f"then the day's {len(recorded.faults)} faults, moved by {offset:+d} s")
    reports = detect(day)
    opened = [
        r.incident
        for r in reports
        if r.incident and r.incident.revision == 0 and r.incident.started.timestamp() < stream_end
    ]
    per_day: Counter[tuple[str, int]] = Counter()
    for incident in opened:
        hours = incident.started.timestamp() / 3600 - START_S / 3600
        root = incident.root_cause
        service = root.service if root else "-"
        per_day[(service, int(hours // 24))] += 1
        reason = root.reasons[0][:90] if root and root.reasons else ""
        print(f"  {hours:6.2f} h  {service} ({root.kind if root else '-'}): {reason}")
    days = int(np.ceil(args.hours / 24))
    print(f"\nincidents opened: {len(opened)}; per service, day 1..{days}:")
    for service in sorted({s for s, _ in per_day}):
        print(f"  {service:32} {[per_day[(service, d)] for d in range(days)]}")
    last = max((i.started.timestamp() / 3600 - START_S / 3600 for i in opened), default=0.0)
    if args.then_faults:
        score_day(reports, recorded, offset)
    print(f"the last opened {last:.2f} h in; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

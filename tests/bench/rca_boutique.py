"""Root cause on real per-edge latencies with network delays and CPU faults (Nezha
OnlineBoutique), through the in-process detector with its default settings.

Why: the faults whose root shows in latency rather than in logs (network delay in front of
a service, CPU contention or consumption in its pod) are what a held-out continuous stream
mostly holds, and the TrainTicket day of ``rca_real.py`` has no network delay at all. The
Nezha OnlineBoutique days ``../shared/data/nezha-dev/rca_data/2022-08-2*/`` hold, for every
minute of about 12 to 20 hours, each call edge's median latency measured at the caller
(``source_50.csv``) and at the callee (``destination_50.csv``), every pod's CPU and memory,
and 56 labelled faults.

    .venv/bin/python tests/bench/rca_boutique.py [--data DIR] [--day DAY ...] [--per-minute N]

What it does: each minute becomes ``--per-minute`` traces down the call graph of
``dependency.csv`` (a client span in the caller, as long as that minute's caller-side median
of the edge, and the callee's server span under it, as long as the callee-side median; the
frontend's own span is ``front_service.csv``'s median), each duration times a log-normal
factor of sigma 0.1 (the spread within a minute is not in the data: it is this bench's
assumption), and each pod's CPU and memory percentages as metric samples; the minutes are fed
to ``Detector.observe`` in event time. A fault is detected when an incident starts within
[injection - 120 s, injection + 240 s]; its ranked services are those incidents' candidates,
its kind the first incident's root kind (cpu_contention, cpu_consumed: resources;
network_delay: network; exception, return: errors, which per-edge medians cannot show).
False alarms: incidents starting outside every fault window, per hour of data outside them.

Beside it, in the same run, a reference ranks services by the relative rise of their own
server latency (the callee-side medians of the edges into them; the frontend's own median)
in the three minutes after the injection over the ten before it.

Totals are printed per fault kind and over the faults at least ``--history`` minutes into
the day's data (default 120: a new series is judged once its baseline and its score
distribution are known, which takes one to two hours of one-minute windows).

A report, not a test: exit 0 whatever the scores, 2 when data is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from nezha import service_of
from rca_real import DEFAULT_DATA, EXPECTED_KIND, Alarm, alarms, clock

from baselines.detect import Detector
from baselines.settings import Settings
from service.contract import AnomalyReport, MetricSample, SpanEvent

DAYS = ("2022-08-22", "2022-08-23")
BEFORE_S, AFTER_S = 120.0, 240.0
METRICS = (("cpu_pct", "CpuUsageRate(%)"), ("memory_pct", "MemoryUsageRate(%)"))
Edges = dict[int, dict[str, float]]
"""Minute (epoch seconds) -> ``caller_callee`` -> median latency in seconds."""


def minute_of(stamp: str) -> int:
    return int(float(stamp)) // 60 * 60


def read_edges(path: Path) -> Edges:
    edges: Edges = {}
    with path.open() as source:
        for row in csv.DictReader(source):
            edges[minute_of(row["timestamp"])] = {
                name: float(value)
                for name, value in row.items()
                if "_" in name and name != "timestamp" and value not in ("", "nan")
            }
    return edges


@dataclass
class BoutiqueDay:
    name: str
    caller_side: Edges
    callee_side: Edges
    front: dict[int, float]
    calls: dict[str, list[str]]
    metrics: dict[int, list[tuple[str, str, float]]]
    faults: list[tuple[float, str, str]]
    """(injection time, root service, fault kind), in time order."""

    @property
    def minutes(self) -> list[int]:
        return sorted(set(self.caller_side) & set(self.callee_side))


def load_day(data: Path, name: str) -> BoutiqueDay:
    folder = data / "rca_data" / name
    metric = folder / "metric"
    calls: dict[str, list[str]] = {}
    with (metric / "dependency.csv").open() as source:
        for row in csv.DictReader(source):  # targets that are addresses are databases
            if row["Source"] != "loadgenerator" and not row["Target"][0].isdigit():
                calls.setdefault(row["Source"], []).append(row["Target"])
    with (metric / "front_service.csv").open() as source:
        front = {
            minute_of(r["TimeStamp"]): float(r["LatencyP50(s)"]) for r in csv.DictReader(source)
        }
    metrics: dict[int, list[tuple[str, str, float]]] = {}
    for path in sorted(metric.glob("*_metric.csv")):
        with path.open() as source:
            for row in csv.DictReader(source):
                for name_, column in METRICS:
                    value = float(row[column] or "nan")
                    if math.isfinite(value):
                        metrics.setdefault(minute_of(row["TimeStamp"]), []).append(
                            (service_of(row["PodName"]), name_, min(max(value, 0.0), 100.0))
                        )
    listed = json.loads((folder / f"{name}-fault_list.json").read_text())
    faults = sorted(
        (
            datetime.fromisoformat(f["inject_time"]).replace(tzinfo=UTC).timestamp(),
            service_of(f["inject_pod"]),
            f["inject_type"],
        )
        for group in listed.values()
        for f in group
    )
    return BoutiqueDay(
        name,
        read_edges(metric / "source_50.csv"),
        read_edges(metric / "destination_50.csv"),
        front,
        calls,
        metrics,
        faults,
    )


@dataclass
class Tracer:
    """Whole traces down the call graph, one minute's medians at a time."""

    day: BoutiqueDay
    rng: np.random.Generator
    ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 62)))

    def trace(self, minute: int, begin: datetime) -> list[SpanEvent]:
        spans: list[SpanEvent] = []
        trace = f"{next(self.ids):032x}"
        front_ms = self.day.front.get(minute, 0.2) * 1000 * self.jitter()
        self.serve(spans, minute, begin, trace, "frontend", None, front_ms, 0.0)
        return spans

    def jitter(self) -> float:
        return float(self.rng.lognormal(0.0, 0.1))

    def serve(
        self,
        spans: list[SpanEvent],
        minute: int,
        begin: datetime,
        trace: str,
        service: str,
        parent: str | None,
        ms: float,
        at_ms: float,
    ) -> None:
        """The server span of ``service`` and, under it, its calls and their callees."""
        caller, callee = self.day.caller_side[minute], self.day.callee_side[minute]
        span = f"{next(self.ids):016x}"
        for target in self.day.calls.get(service, []):
            edge = f"{service}_{target}"
            if edge not in caller or edge not in callee:
                continue
            call_ms = caller[edge] * 1000 * self.jitter()
            served_ms = callee[edge] * 1000 * self.jitter()
            call = f"{next(self.ids):016x}"
            spans.append(
                SpanEvent(
                    service=service,
                    operation=f"call {target}",
                    kind="client",
                    peer_service=target,
                    duration_ms=call_ms,
                    timestamp=begin + timedelta(milliseconds=at_ms + call_ms),
                    trace_id=trace,
                    span_id=call,
                    parent_span_id=span,
                )
            )
            wire = max(call_ms - served_ms, 0.0) / 2
            self.serve(spans, minute, begin, trace, target, call, served_ms, at_ms + wire)
        spans.append(
            SpanEvent(
                service=service,
                operation=f"serve {service}",
                kind="server",
                duration_ms=ms,
                timestamp=begin + timedelta(milliseconds=at_ms + ms),
                trace_id=trace,
                span_id=span,
                parent_span_id=parent,
            )
        )


def minutes_of_events(
    day: BoutiqueDay, per_minute: int, seed: int
) -> Iterator[tuple[int, list[SpanEvent | MetricSample]]]:
    """Each minute's traces and metric samples, in the order they end."""
    tracer = Tracer(day, np.random.default_rng(seed))
    for minute in day.minutes:
        start = datetime.fromtimestamp(minute, UTC)
        events: list[SpanEvent | MetricSample] = [
            span
            for i in range(per_minute)
            for span in tracer.trace(minute, start + timedelta(seconds=55 * i / per_minute))
        ]
        sampled = start + timedelta(seconds=30)
        events += [
            MetricSample(service=s, metric=m, value=v, timestamp=sampled)
            for s, m, v in day.metrics.get(minute, [])
        ]
        events.sort(key=lambda e: e.timestamp)
        yield minute, events


def reference(day: BoutiqueDay, at: float) -> list[str]:
    """Services by the relative rise of their own server latency, after the injection over
    the ten minutes before it."""

    def own(minute: int) -> dict[str, float]:
        latency = {"frontend": day.front.get(minute, math.nan)}
        for edge, value in day.callee_side.get(minute, {}).items():
            target = edge.split("_", 1)[1]
            latency[target] = max(latency.get(target, 0.0), value)
        return latency

    start = int(at) // 60 * 60
    before = [own(start - 60 * k) for k in range(1, 11)]
    after = [own(start + 60 * k) for k in range(3)]
    rise = {}
    for service in after[0]:
        was = np.nanmedian([b.get(service, math.nan) for b in before] or [math.nan])
        now = np.nanmedian([a.get(service, math.nan) for a in after])
        if math.isfinite(was) and was > 0 and math.isfinite(now):
            rise[service] = now / was
    return sorted(rise, key=lambda s: -rise[s])


@dataclass
class Verdict:
    at: float
    root: str
    kind: str
    minutes_in: float
    alarms: list[Alarm] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[str]:
        return list(dict.fromkeys(s for a in self.alarms if a.incident for s in a.services))

    def hit(self, k: int) -> bool:
        return self.root in self.ranked[:k]

    @property
    def kind_right(self) -> bool:
        first = next((a.kind for a in self.alarms if a.incident), None)
        return first == EXPECTED_KIND[self.kind]


def judge(day: BoutiqueDay, reports: list[AnomalyReport]) -> tuple[list[Verdict], list[Alarm]]:
    first = day.minutes[0]
    verdicts = [
        Verdict(at, root, kind, (at - first) / 60, reference=reference(day, at))
        for at, root, kind in day.faults
    ]
    outside: list[Alarm] = []
    for alarm in alarms(reports):
        owners = [v for v in verdicts if v.at - BEFORE_S <= alarm.start <= v.at + AFTER_S]
        (owners[-1].alarms if owners else outside).append(alarm)
    return verdicts, outside


def totals(verdicts: list[Verdict], history_minutes: float) -> None:
    groups = {kind: [v for v in verdicts if v.kind == kind] for kind in EXPECTED_KIND}
    groups["all"] = verdicts
    groups[f"all, {history_minutes:.0f}+ min in"] = [
        v for v in verdicts if v.minutes_in >= history_minutes
    ]
    groups[f"network + cpu, {history_minutes:.0f}+ min in"] = [
        v
        for v in groups[f"all, {history_minutes:.0f}+ min in"]
        if EXPECTED_KIND[v.kind] in ("network", "resources")
    ]
    print(
        f"\n{'faults':30} {'n':>3} {'recall':>7} {'AC@1':>6} {'AC@3':>6} {'kind':>6}"
        "   reference AC@1  AC@3"
    )
    for name, group in groups.items():
        n = max(len(group), 1)
        print(
            f"{name:30} {len(group):3} {sum(bool(v.alarms) for v in group) / n:7.2f} "
            f"{sum(v.hit(1) for v in group) / n:6.2f} {sum(v.hit(3) for v in group) / n:6.2f} "
            f"{sum(v.kind_right for v in group) / n:6.2f}   "
            f"{sum(v.root in v.reference[:1] for v in group) / n:14.2f} "
            f"{sum(v.root in v.reference[:3] for v in group) / n:5.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the nezha-dev folder")
    parser.add_argument("--day", action="append", help="OnlineBoutique days (default: both)")
    parser.add_argument("--per-minute", type=int, default=12, help="traces a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history", type=float, default=120.0, help="minutes, see above")
    args = parser.parse_args(argv)
    everything: list[Verdict] = []
    false_alarms, hours_outside = 0, 0.0
    for name in args.day or DAYS:
        if not (args.data / "rca_data" / name / "metric").is_dir():
            print(f"no {args.data / 'rca_data' / name / 'metric'}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        day = load_day(args.data, name)
        detector = Detector(Settings().detector_config())
        reports: list[AnomalyReport] = []
        spans = 0
        for minute, events in minutes_of_events(day, args.per_minute, args.seed):
            spans += sum(isinstance(e, SpanEvent) for e in events)
            reports += detector.observe(events, now=minute + 60.0)
        reports += detector.observe([], now=day.minutes[-1] + 3600.0)
        verdicts, outside = judge(day, reports)
        minutes = day.minutes
        covered = sum(BEFORE_S + AFTER_S for _ in day.faults) / 3600
        hours = (minutes[-1] - minutes[0] + 60) / 3600 - covered
        print(
            f"\n{name}: {len(minutes)} minutes ({clock(minutes[0])}-{clock(minutes[-1])}), "
            f"{spans:,} spans, {len(reports)} reports, {time.perf_counter() - started:.1f} s"
        )
        print(
            f"{'fault':8}  {'kind':15} {'root':22} {'min in':>6}  {'ranked (pipeline)':23}"
            f"{'kind':11}reference"
        )
        for v in verdicts:
            mark = "*" if v.hit(1) else ("+" if v.hit(3) else " ")
            first = next((a.kind for a in v.alarms if a.incident), None) or "-"
            ranked = ", ".join(v.ranked[:3]) or "-"
            print(
                f"{clock(v.at)}  {v.kind:15} {v.root:22} {v.minutes_in:6.0f}  {mark}{ranked:22} "
                f"{first:10} {', '.join(v.reference[:3])}"
            )
        for alarm in outside:
            where = f"{clock(alarm.start)} {', '.join(alarm.services[:3])} ({alarm.kind})"
            print(f"  outside every fault window: {where}")
        everything += verdicts
        false_alarms += len(outside)
        hours_outside += hours
    totals(everything, args.history)
    print(
        f"false alarms: {false_alarms} incidents outside every fault window over "
        f"{hours_outside:.1f} h of data outside them: {false_alarms / hours_outside:.2f} per hour"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

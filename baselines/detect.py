"""Event-time windows per series, judged against their seasonal baselines.

All series share aligned windows (``start = floor(t / W) * W``). When the stream's event
time passes a window's end (plus the allowed lateness), the whole window closes at once
(what it holds: ``window``): spans of unknown kind are resolved from their links
(``callgraph``), context series (CPU, memory) are summarised, every entry, call and
call-gap series is judged, and so are each service's errors (``errors``); what they say of
each service (``signals``) folds into incidents across the call graph (``incident``), each
reported once with its ranked root cause. Then the baselines
learn from the window, except for services in an open incident, so an anomaly does not
teach its own baseline that it is normal.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from baselines.baseline import LOG_FLOOR, Estimate, SeasonalProfile, local_hour
from baselines.callgraph import CallGraph, SpanIndex
from baselines.errors import MAX_SAMPLES, ErrorHabits, ErrorVerdict, ErrorWindow, flags
from baselines.incident import IncidentTracker, Update
from baselines.judge import (
    Habits,
    IncidentGate,
    Thresholds,
    deviation,
    floored_spread,
    likelihood,
    material_and_calm,
    raw_score,
)
from baselines.report import WindowFacts, build_report
from baselines.signals import (
    error_signals,
    latency_signals,
    p95_text,
    resource_signals,
    shared_failures,
)
from baselines.trail import HourlyTrail
from baselines.window import (
    CALL_KINDS,
    GAP_KIND,
    MAX_EVIDENCE,
    OWN_KINDS,
    SpanKey,
    SpanWindow,
    WindowData,
    second_slowest,
    summarise,
)
from service.contract import AnomalyReport, LogRecord, MetricSample, SpanEvent, SpanHistogram

MAX_FUTURE_SECONDS = 300.0
MIN_POOLED_SPANS = 3
"""A series pooled for ``max_pooled_windows`` is judged if it gathered at least this many."""
MAX_LINKED_PER_WINDOW = 100_000
"""Spans a window holds for linking (unknown kinds, entries below a call); further ones are
counted in ``DetectorStats.unlinked``."""
ERROR_LEVELS = frozenset({"error", "fatal"})
MAX_CUMULATIVE_STREAMS = 200_000


@dataclass(frozen=True)
class DetectorConfig:
    window_seconds: int = 60
    min_window_count: int = 10
    allowed_lateness_seconds: float = 5.0
    timezone: str = "UTC"
    max_series: int = 50_000
    """Distinct series kept; events of further ones are counted as overflow and dropped."""
    max_pooled_windows: int = 30
    """A series whose window holds fewer than ``min_window_count`` spans is pooled with its
    next windows, up to this many, and judged on them together."""
    learn_seconds: float = 0.0
    """Event time, from the first window closed, in which every window is judged and learnt
    from but nothing alerts, and every error template seen becomes known: a first install on
    a running system learns what it already logs instead of opening an incident for each."""
    thresholds: Thresholds = field(default_factory=Thresholds)


ServiceExtras = dict[str, Any]
"""A service's part of the call graph and its usual errors, JSON-ready."""


@dataclass(frozen=True)
class Closing:
    """A window being closed, as the facts of its reports are read from it."""

    start: float
    hour: int
    data: WindowData
    summaries: dict[SpanKey, tuple[float, float, float]]
    """(p50, p95, p99) of each series."""
    usual: dict[SpanKey, Estimate | None]
    """Each series' usual p95 for the window's hour."""
    metrics: dict[tuple[str, str], tuple[float, float | None]]
    """(service, metric) -> (the window's mean, its usual value)."""

    def service_metrics(self, service: str) -> dict[str, tuple[float, float | None]]:
        return {name: v for (svc, name), v in self.metrics.items() if svc == service}


def _context_profile() -> SeasonalProfile:
    return SeasonalProfile(depth=10, recent=64, min_level_samples=8)


@dataclass
class SeriesState:
    """Baselines of one span series and its incident state (about 42 KB when full)."""

    p95: SeasonalProfile = field(default_factory=lambda: SeasonalProfile(log=True))
    p50: SeasonalProfile = field(default_factory=_context_profile)
    count: SeasonalProfile = field(default_factory=_context_profile)
    error_rate: SeasonalProfile = field(default_factory=_context_profile)
    gate: IncidentGate = field(default_factory=IncidentGate)
    habits: Habits = field(default_factory=Habits)
    """What is ordinary for the window p95: its score distribution and smallest step."""
    hour: int = -1
    """The local hour last judged: an incident may be adopted when a new one starts."""
    pool: SpanWindow | None = None
    """Sparse windows not judged yet (see ``DetectorConfig.max_pooled_windows``)."""
    trail: HourlyTrail = field(default_factory=HourlyTrail)
    """The last week as observed (server and consumer series), incidents included."""

    @property
    def nbytes(self) -> int:
        profiles = self.p95.nbytes + self.p50.nbytes + self.count.nbytes + self.error_rate.nbytes
        grid = 32 * len(self.habits.grid)  # a list of floats: a pointer and a float object each
        return profiles + self.trail.nbytes + grid


@dataclass
class DetectorStats:
    spans: int = 0
    metrics: int = 0
    late: int = 0
    future: int = 0
    overflow: int = 0
    windows_closed: int = 0
    flagged: int = 0
    logs: int = 0
    histograms: int = 0
    """Histogram points (spanmetrics) applied; their spans count in ``spans``."""
    unlinked: int = 0
    """Spans that could not be placed: of unknown kind whose parent was never seen (an entry
    or in-process work?), or past the window's cap of spans held for linking. In-process
    work is placed (its entry span holds its time) and not counted here."""
    incidents_dropped: int = 0
    """Opening signals refused because the cap of open incidents was reached."""
    windows_learning: int = 0
    """Windows closed in the learning period (``DetectorConfig.learn_seconds``)."""


class Detector:
    """Feed it events in (roughly) time order; it returns the reports of flagged windows."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.stats = DetectorStats()
        self._zone = ZoneInfo(config.timezone)
        self._open: dict[float, WindowData] = {}
        self._closed_before = -math.inf
        self._watermark = -math.inf
        self._series: dict[SpanKey, SeriesState] = {}
        self._metrics: dict[tuple[str, str], SeasonalProfile] = {}
        self._errors: dict[tuple[str, str], ErrorHabits] = {}
        """(service, 'logs' or 'spans') -> what errors are usual for it."""
        self.graph = CallGraph()
        self.incidents = IncidentTracker(config.window_seconds)
        self._index = SpanIndex()
        self._cumulative: OrderedDict[str, list[int]] = OrderedDict()
        """The last counts of each cumulative histogram stream (bounded; not checkpointed:
        after a restart each stream's first point only sets its level again)."""
        self._changed: set[str] = set()
        self._learn_until: float | None = None
        """The end of the learning period: set when the first window closes."""

    def profile_p95(self, service: str, operation: str) -> SeasonalProfile | None:
        """The learnt window-p95 profile of a server series, if any."""
        state = self._series.get((service, operation, "server", ""))
        return None if state is None else state.p95

    def export(
        self, service: str
    ) -> tuple[dict[SpanKey, SeriesState], dict[tuple[str, str], SeasonalProfile], ServiceExtras]:
        """The learnt state of one service's series, its calls out and its usual errors
        (for a checkpoint)."""
        return (
            {k: v for k, v in self._series.items() if k[0] == service},
            {k: v for k, v in self._metrics.items() if k[0] == service},
            {
                "service": service,
                "calls": self.graph.export(service),
                "errors": {
                    source: habits.state()
                    for (svc, source), habits in self._errors.items()
                    if svc == service
                },
            },
        )

    def install(
        self,
        series: dict[SpanKey, SeriesState],
        metrics: dict[tuple[str, str], SeasonalProfile],
        extras: ServiceExtras | None = None,
    ) -> None:
        """Put back state exported earlier (a restart, or a service moving consumers)."""
        self._series.update(series)
        self._metrics.update(metrics)
        if extras:
            service = str(extras["service"])
            calls = extras.get("calls")
            if isinstance(calls, dict):
                self.graph.install(service, calls)
            errors = extras.get("errors")
            if isinstance(errors, dict):
                for source, saved in errors.items():
                    self._errors[(service, source)] = ErrorHabits.from_state(saved)

    def stream_state(self) -> dict[str, object]:
        """Where the stream stands (open windows, watermark, counters), JSON-ready: with
        the services' baselines, everything a restarted consumer needs to go on as if it
        had never stopped."""
        return {
            "watermark": self._watermark,
            "closed_before": self._closed_before,
            "stats": asdict(self.stats),
            "open": [
                {
                    "start": start,
                    "spans": [
                        [
                            list(key),
                            agg.durations,
                            agg.errors,
                            agg.slowest,
                            list(agg.evidence),
                            [[lo, up, n] for (lo, up), n in agg.buckets.items()],
                        ]
                        for key, agg in window.spans.items()
                    ],
                    "metrics": [[list(key), values] for key, values in window.metrics.items()],
                    "linked": [event.model_dump(mode="json") for event in window.linked],
                    "logs": [
                        [
                            service,
                            agg.total,
                            agg.errors,
                            agg.templates,
                            agg.samples,
                            sorted(agg.traces),
                            agg.trace_cutoff,
                            agg.first,
                        ]
                        for service, agg in window.logs.items()
                    ],
                }
                for start, window in self._open.items()
            ],
            "incidents": self.incidents.state(),
            "learn_until": self._learn_until,
        }

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self._watermark = float(state["watermark"])
        self._closed_before = float(state["closed_before"])
        self.stats = DetectorStats(**state["stats"])
        self._open = {}
        for entry in state["open"]:
            window = self._open[float(entry["start"])] = WindowData()
            for key, durations, errors, slowest, evidence, *rest in entry["spans"]:
                span_key = (key[0], key[1], key[2], key[3])
                self._series.setdefault(span_key, SeriesState())
                saved = rest[0] if rest else []
                buckets = {(float(lo), float(up)): int(n) for lo, up, n in saved}
                window.spans[span_key] = SpanWindow(
                    durations,
                    errors,
                    [(d, t) for d, t in slowest],
                    dict.fromkeys(evidence),
                    buckets=buckets,
                    bucketed=sum(buckets.values()),
                )
            for key, values in entry["metrics"]:
                self._metrics.setdefault((key[0], key[1]), _context_profile())
                window.metrics[(key[0], key[1])] = values
            for saved in entry.get("linked", ()):
                event = SpanEvent.model_validate(saved)
                if event.kind == "internal":
                    self._remember_internal(event, window)
                else:
                    window.linked.append(event)
            for service, total, errors, templates, samples, *rest in entry.get("logs", ()):
                # checkpoints written before trace ids (or the first line's time) were kept
                # have none
                ids, cutoff, first = (*rest, None)[:3] if rest else ([], None, None)
                window.logs[service] = ErrorWindow(
                    total, errors, templates, samples, set(ids), cutoff, first
                )
        self.incidents.load(state.get("incidents", []))
        # a checkpoint written before the learning period existed has learnt already
        until = state.get("learn_until", -math.inf)
        self._learn_until = None if until is None else float(until)

    def take_changed(self) -> set[str]:
        """Services whose baselines changed since the last call (what to checkpoint)."""
        changed, self._changed = self._changed, set()
        return changed

    def mark_changed(self, services: set[str]) -> None:
        """Services to checkpoint again (a checkpoint of them failed)."""
        self._changed |= services

    def memory(self) -> tuple[int, int]:
        """(series, bytes) held by the baselines."""
        spans = sum(state.nbytes for state in self._series.values())
        metrics = sum(profile.nbytes for profile in self._metrics.values())
        return len(self._series) + len(self._metrics), spans + metrics

    def _admit(self) -> bool:
        if len(self._series) + len(self._metrics) < self.config.max_series:
            return True
        self.stats.overflow += 1
        return False

    def observe(
        self,
        events: Iterable[SpanEvent | MetricSample | LogRecord | SpanHistogram],
        now: float | None = None,
    ) -> list[AnomalyReport]:
        """Apply events to the open windows; close and judge windows the stream has passed."""
        horizon = (time.time() if now is None else now) + MAX_FUTURE_SECONDS
        width = self.config.window_seconds
        stats, series, metrics, open_windows = self.stats, self._series, self._metrics, self._open
        reports: list[AnomalyReport] = []
        for event in events:
            ts = event.timestamp.timestamp()
            if ts > horizon:
                stats.future += 1
                continue
            start = ts - ts % width
            if start < self._closed_before:
                stats.late += 1
                continue
            window = open_windows.get(start)
            if window is None:
                window = open_windows[start] = WindowData()
            if isinstance(event, SpanEvent):
                kind = event.kind
                if kind == "internal":
                    self._remember_internal(event, window)
                    stats.spans += 1
                    if ts > self._watermark:
                        self._advance(ts, reports)
                    continue
                if event.parent_span_id is not None and kind in OWN_KINDS:
                    if len(window.linked) < MAX_LINKED_PER_WINDOW:
                        window.linked.append(event)
                    else:
                        stats.unlinked += 1
                elif event.span_id is not None and kind in CALL_KINDS:
                    self._index.add(
                        event.span_id, (event.service, event.operation, event.duration_ms)
                    )
                key = (event.service, event.operation, event.kind, event.peer_service or "")
                agg = window.spans.get(key)
                if agg is None:
                    if key not in series:
                        if not self._admit():
                            continue
                        series[key] = SeriesState()
                    agg = window.spans[key] = SpanWindow()
                agg.add(event)
                stats.spans += 1
            elif isinstance(event, SpanHistogram):
                counts = self._interval_counts(event)
                if counts is None:
                    continue
                key = (event.service, event.operation, event.kind, event.peer_service or "")
                histogram = self._aggregate(window, key)
                if histogram is None:
                    continue
                histogram.add_histogram(event.bounds_ms, counts, event.error)
                stats.histograms += 1
                stats.spans += sum(counts)
            elif isinstance(event, LogRecord):
                logs = window.logs.get(event.service)
                if logs is None:
                    logs = window.logs[event.service] = ErrorWindow()
                logs.add(
                    event.severity in ERROR_LEVELS, event.template, event.body, event.trace_id, ts
                )
                stats.logs += 1
            else:
                metric_key = (event.service, event.metric)
                values = window.metrics.get(metric_key)
                if values is None:
                    if metric_key not in metrics:
                        if not self._admit():
                            continue
                        metrics[metric_key] = _context_profile()
                    values = window.metrics[metric_key] = []
                values.append(event.value)
                stats.metrics += 1
            if ts > self._watermark:
                self._advance(ts, reports)
        return reports

    def _interval_counts(self, point: SpanHistogram) -> list[int] | None:
        """A histogram point's counts over its own interval: delta counts as they are,
        cumulative ones minus the stream's previous point (None for a stream's first point
        since this consumer started, which only sets its level, and after a reset)."""
        if not point.stream:
            return point.bucket_counts
        previous = self._cumulative.get(point.stream)
        self._cumulative[point.stream] = point.bucket_counts
        self._cumulative.move_to_end(point.stream)
        if len(self._cumulative) > MAX_CUMULATIVE_STREAMS:
            self._cumulative.popitem(last=False)
        if previous is None or len(previous) != len(point.bucket_counts):
            return None
        counts = [now - before for now, before in zip(point.bucket_counts, previous, strict=True)]
        return None if min(counts) < 0 else counts

    def _remember_internal(self, event: SpanEvent, window: WindowData) -> None:
        """A span of unknown kind waits in its window for its links (see ``_link``)."""
        if event.span_id is not None:
            self._index.add(event.span_id, (event.service, event.operation, event.duration_ms))
        if event.parent_span_id is not None:
            self._index.add_child(event.parent_span_id, event.service)
        if len(window.linked) < MAX_LINKED_PER_WINDOW:
            window.linked.append(event)
        else:
            self.stats.unlinked += 1

    def _advance(self, ts: float, reports: list[AnomalyReport]) -> None:
        """Move the watermark to ``ts``; close the windows it passed."""
        if ts > self._watermark:
            self._watermark = ts
            limit = ts - self.config.allowed_lateness_seconds
            width = self.config.window_seconds
            if limit >= self._closed_before + width:
                reports.extend(self._close_before(limit - limit % width))

    def flush(self) -> list[AnomalyReport]:
        """Close every open window (end of a replay or of the demo)."""
        return self._close_before(max(self._open, default=0.0) + self.config.window_seconds)

    def _close_before(self, boundary: float) -> list[AnomalyReport]:
        """Close the open windows that start before ``boundary``; later events for them
        are counted as late."""
        reports: list[AnomalyReport] = []
        for window_start in sorted(s for s in self._open if s < boundary):
            reports.extend(self._close(window_start, self._open.pop(window_start)))
        self._closed_before = max(self._closed_before, boundary)
        return reports

    def _close(self, start: float, window: WindowData) -> list[AnomalyReport]:
        cfg, th = self.config, self.config.thresholds
        self.stats.windows_closed += 1
        learning = self._learning(start)
        hour = local_hour(start, self._zone)
        end = start + cfg.window_seconds
        self._link(window, start)
        metrics = {
            key: (sum(values) / len(values), _usual(self._metrics[key].estimate(hour)))
            for key, values in window.metrics.items()
        }
        complete = self._pool(window)
        summaries = {key: summarise(agg) for key, agg in window.spans.items()}
        for key in window.spans:
            state = self._series[key]
            if state.hour != hour:
                state.hour = hour
                state.habits.begin_hour(hour, th)
                offset = state.gate.adopt(start, th)
                if offset is not None:
                    state.p95.shift(offset)
        usual = {key: self._series[key].p95.estimate(hour, th.min_history) for key in window.spans}
        closing = Closing(start, hour, window, summaries, usual, metrics)

        watched = [key for key in window.spans if key[2] in OWN_KINDS + CALL_KINDS + (GAP_KIND,)]
        for key in watched:
            if key[2] in OWN_KINDS:
                self._series[key].trail.add(hour, summaries[key][1])
        judged = [
            (key, base)
            for key in watched
            if key in complete
            and (base := usual[key]) is not None
            and base.history >= th.min_history
            and window.spans[key].count >= min(MIN_POOLED_SPANS, cfg.min_window_count)
        ]
        flagged: dict[SpanKey, WindowFacts] = {}
        stirring: dict[SpanKey, str] = {}  # far out, not yet a surprise: "p95 .., usual .."
        if judged:  # all series of the window in one vectorised step
            states = [self._series[key] for key, _ in judged]
            p95 = np.array([summaries[key][1] for key, _ in judged])
            center = np.array([base.center for _, base in judged])
            spread = floored_spread(
                center,
                np.array([base.spread for _, base in judged]),
                th,
                True,
                np.array([state.habits.frozen_quantum for state in states]),
                np.array([state.p95.recent_spread(hour) for state in states]),
            )
            z, ratio, usual_p95 = deviation(p95, center, spread, th, log=True)
            scores = raw_score(z)
            material, calm = material_and_calm(p95, usual_p95, z, ratio, th)
            # one slow call among a few is no slowdown of the series: a small window is
            # material only if its second-slowest span is too
            out = np.flatnonzero(material)
            if out.size:
                slowest = [second_slowest(window.spans[judged[i][0]]) for i in out]
                second = np.minimum(p95[out], slowest)
                z2, ratio2, _ = deviation(second, center[out], spread[out], th, log=True)
                material[out] &= material_and_calm(second, usual_p95[out], z2, ratio2, th)[0]
            offsets = np.log(np.maximum(p95, LOG_FLOOR)) - center
            for i, ((key, _), state) in enumerate(zip(judged, states, strict=True)):
                state.habits.seed(state.p95, float(center[i]), float(spread[i]), th)
                surprise = state.habits.standardised_one(float(scores[i]), th)
                state.habits.commit_one(float(scores[i]), float(p95[i]), th)
                exceeds = bool(material[i]) and surprise > th.critical and not learning
                if state.gate.step(end, exceeds, bool(calm[i]), th):
                    state.trail.flag(start, hour, float(p95[i]))
                    score = float(likelihood(np.array([surprise]))[0])
                    flagged[key] = self._facts(key, score, closing)
                if state.gate.open:
                    state.gate.keep_offsets(offsets[i : i + 1])
                elif material[i]:
                    stirring[key] = p95_text(float(p95[i]), float(usual_p95[i]))
        alerting = {key[0] for key in window.spans if self._series[key].gate.open}
        alerting |= self.incidents.touched_services()
        judged_errors = self._judge_errors(window, complete, alerting, start, learning)
        verdicts = {k: v for k, v in judged_errors.items() if flags(v)}
        signals = latency_signals(
            flagged,
            {key for key, _ in judged},
            {key for key in watched if self._series[key].gate.open},
            stirring,
        )
        signals += [
            signal
            for (service, source), verdict in judged_errors.items()
            for signal in error_signals(service, source, verdict)
        ]
        signals += shared_failures(verdicts, window.logs, self._errors, self.graph)
        suspects = self.incidents.touched_services() | {s.service for s in signals}
        signals += resource_signals(metrics, suspects, self.graph)
        dropped = self.incidents.dropped
        updates = [] if learning else self.incidents.update(start, signals, self.graph)
        self.stats.incidents_dropped += self.incidents.dropped - dropped
        reports = [self._incident_report(update, flagged, closing) for update in updates]
        self.stats.flagged += len(reports)
        alerting |= {service for service, _ in verdicts}

        for key, agg in window.spans.items():
            if key[0] not in alerting:
                state, (p50, p95_, _) = self._series[key], summaries[key]
                state.count.add(hour, complete.get(key, agg).count)
                if key in complete:
                    state.p95.add(hour, p95_)
                    state.p50.add(hour, p50)
                    state.error_rate.add(hour, agg.errors / agg.count)
        for (service, name), (value, _) in metrics.items():
            if service not in alerting:
                self._metrics[(service, name)].add(hour, value)
        self._changed.update(key[0] for key in window.spans)
        self._changed.update(key[0] for key in window.metrics)
        self._changed.update(window.logs)
        return reports

    def _learning(self, start: float) -> bool:
        """Whether the window closing at ``start`` is in the learning period, which begins
        with the first window closed."""
        if self._learn_until is None:
            self._learn_until = start + self.config.learn_seconds
        learning = start < self._learn_until
        self.stats.windows_learning += learning
        return learning

    def _link(self, window: WindowData, start: float) -> None:
        """Resolve the window's spans of unknown kind into entries and calls, and learn the
        call graph and the gap series from entries under a call in another service."""
        calls: dict[tuple[str, str], int] = {}
        for event in window.linked:
            kind: str = event.kind
            peer = event.peer_service
            if kind == "internal":
                resolved = self._index.resolve(event.span_id, event.service, event.parent_span_id)
                if resolved is None:
                    self.stats.unlinked += 1
                    continue
                kind, peer = resolved
                if kind == "internal":
                    continue  # in-process work: its entry span holds its time
                agg = self._aggregate(window, (event.service, event.operation, kind, peer or ""))
                if agg is not None:
                    agg.add(event)
            if kind not in OWN_KINDS:
                continue
            parent = self._index.get(event.parent_span_id)
            if parent is None or parent[0] == event.service:
                continue
            caller, operation, waited = parent
            calls[(caller, event.service)] = calls.get((caller, event.service), 0) + 1
            gap = self._aggregate(window, (caller, operation, GAP_KIND, event.service))
            if gap is not None:
                gap.add_value(max(waited - event.duration_ms, 0.0), event.trace_id)
        called: dict[tuple[str, str], int] = {}
        """Calls by client spans, where no entry span under them counted them."""
        for key, agg in window.spans.items():
            if key[2] in CALL_KINDS and key[3] and (key[0], key[3]) not in calls:
                called[(key[0], key[3])] = called.get((key[0], key[3]), 0) + agg.count
        for (caller, callee), count in (calls | called).items():
            self.graph.observe(caller, callee, count, start)
        window.linked = []

    def _aggregate(self, window: WindowData, key: SpanKey) -> SpanWindow | None:
        """The window's aggregate of a series, made (and the series admitted) on its first
        event; None past the series cap. The ingest loop inlines it for plain spans."""
        agg = window.spans.get(key)
        if agg is None:
            if key not in self._series:
                if not self._admit():
                    return None
                self._series[key] = SeriesState()
            agg = window.spans[key] = SpanWindow()
        return agg

    def _judge_errors(
        self,
        window: WindowData,
        complete: dict[SpanKey, SpanWindow],
        alerting: set[str],
        start: float,
        learning: bool,
    ) -> dict[tuple[str, str], ErrorVerdict]:
        """Each service's error lines and error spans against what is usual for it; learns
        from the window where nothing is flagged (from every window while ``learning``,
        which flags nothing). Error spans are this window's own
        (``complete``: of a pooled series, those of this window alone): a pool's earlier
        windows' were counted in theirs."""
        th = self.config.thresholds
        sources: dict[tuple[str, str], ErrorWindow] = {
            (service, "logs"): agg for service, agg in window.logs.items()
        }
        for key, pooled in window.spans.items():
            if key[2] in OWN_KINDS:
                agg = complete.get(key, pooled)
                spans = sources.setdefault((key[0], "spans"), ErrorWindow())
                spans.total += agg.count
                spans.errors += agg.errors
                if agg.errors:
                    for text in agg.evidence:
                        if len(spans.samples) < MAX_SAMPLES:
                            spans.samples.setdefault(text, text)
                            spans.templates[text] = spans.templates.get(text, 0) + 1
        verdicts: dict[tuple[str, str], ErrorVerdict] = {}
        services: frozenset[str] = frozenset()
        """The names error lines may name, gathered once a window has errors at all."""
        for source, errors in sources.items():
            habits = self._errors.get(source)
            if habits is None:
                if not self._admit():
                    continue
                habits = self._errors[source] = ErrorHabits()
            if errors.errors and not services:
                services = frozenset(k[0] for k in self._series) | {k[0] for k in self._errors}
            verdict = habits.judge(errors, th.surprise, services, source[0], start)
            if learning:
                habits.learn(errors)
                continue
            if verdict is not None:
                verdicts[source] = verdict
            if not flags(verdict) and source[0] not in alerting:
                habits.learn(errors)
        return verdicts

    def _incident_report(
        self, update: Update, flagged: dict[SpanKey, WindowFacts], closing: Closing
    ) -> AnomalyReport:
        """One report for an incident: led by the flagged window of its most upstream
        flagged service (what users feel), or the busiest entry series of its first service
        when only errors flagged it; the incident rides along."""
        incident = update.incident
        lead = None
        related: list[WindowFacts] = []
        for service in update.flagged:
            group = [(k[2] in OWN_KINDS, f) for k, f in flagged.items() if k[0] == service]
            if group:
                lead, related = _coalesce(group)
                break
        if lead is None:
            service = update.flagged[0] if update.flagged else incident.affected[0].service
            lead = self._quiet_facts(service, closing)
        report = build_report(lead, related)
        root = incident.root_cause
        evidence = list(dict.fromkeys([*(root.evidence if root else []), *report.evidence]))
        report_key = incident.id if incident.revision == 0 else f"{incident.id}-{incident.revision}"
        return report.model_copy(
            update={"id": report_key, "incident": incident, "evidence": evidence[:MAX_EVIDENCE]}
        )

    def _quiet_facts(self, service: str, closing: Closing) -> WindowFacts:
        """The facts of a service's busiest entry series in the window, flagged or not."""
        spans = closing.data.spans
        own = [k for k in spans if k[0] == service and k[2] in OWN_KINDS]
        if own:
            return self._facts(max(own, key=lambda k: spans[k].count), 0.0, closing)
        return WindowFacts(
            service=service,
            operation="(errors)",
            start=datetime.fromtimestamp(closing.start, UTC),
            seconds=self.config.window_seconds,
            count=0,
            errors=0,
            p50=0.0,
            p95=0.0,
            p99=0.0,
            baseline_p50=None,
            baseline=None,
            score=0.0,
            count_usual=None,
            error_rate_usual=None,
            metrics=closing.service_metrics(service),
            downstream=[],
            evidence=[],
            trace_ids=[],
        )

    def _pool(self, window: WindowData) -> dict[SpanKey, SpanWindow]:
        """Pool sparse windows: each series' window joins the windows pooled before it;
        a pool is complete (judged and learnt) once it holds ``min_window_count`` spans or
        ``max_pooled_windows`` windows, and then replaces the window's own data. Returns the
        complete series with the spans of this window alone (the count profile and the
        error spans count per window)."""
        cfg = self.config
        complete: dict[SpanKey, SpanWindow] = {}
        for key, agg in window.spans.items():
            state = self._series[key]
            merged = agg if state.pool is None else state.pool.merged(agg)
            full = merged.count >= cfg.min_window_count
            if full or merged.windows >= cfg.max_pooled_windows:
                state.pool = None
                complete[key] = agg
                window.spans[key] = merged
            else:
                state.pool = merged
        return complete

    def _facts(self, key: SpanKey, score: float, closing: Closing) -> WindowFacts:
        """Everything about a flagged window a person would look at next."""
        service, operation = key[0], key[1]
        window, summaries, usual = closing.data, closing.summaries, closing.usual
        hour = closing.hour
        agg, state, base = window.spans[key], self._series[key], usual[key]
        p50, p95, p99 = summaries[key]
        return WindowFacts(
            service=service,
            operation=operation,
            start=datetime.fromtimestamp(
                closing.start - (agg.windows - 1) * self.config.window_seconds, UTC
            ),
            seconds=self.config.window_seconds * agg.windows,
            count=agg.count,
            errors=agg.errors,
            p50=p50,
            p95=p95,
            p99=p99,
            baseline_p50=_usual(state.p50.estimate(hour)),
            baseline=base,
            score=score,
            count_usual=_usual(state.count.estimate(hour)),
            error_rate_usual=_usual(state.error_rate.estimate(hour)),
            metrics=closing.service_metrics(service),
            downstream=[
                (k[3] or k[1], k[1], summaries[k][1], _usual(usual[k]))
                for k in window.spans
                if k[0] == service and k[2] in CALL_KINDS
            ],
            evidence=list(
                dict.fromkeys(
                    text for k, a in window.spans.items() if k[0] == service for text in a.evidence
                )
            )[:MAX_EVIDENCE],
            trace_ids=[trace for _, trace in sorted(agg.slowest, reverse=True)],
        )


def _coalesce(group: list[tuple[bool, WindowFacts]]) -> tuple[WindowFacts, list[WindowFacts]]:
    """One report for a service's series flagged together (``(own, facts)``: whether the
    series is the service's own operation rather than a call it makes): its own worst
    operation leads, its slow calls show as context and related operations."""
    ordered = [facts for _, facts in sorted(group, key=lambda g: (g[0], g[1].score), reverse=True)]
    return ordered[0], ordered[1:]


def _usual(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.usual

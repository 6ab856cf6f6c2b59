"""Event-time windows per series, judged against their seasonal baselines.

All series share aligned windows (``start = floor(t / W) * W``). When the stream's event
time passes a window's end (plus the allowed lateness), the whole window closes at once:
context series (CPU, memory, client calls) are summarised, every server/consumer series is
judged, then the baselines learn from the window, except for services in an open incident,
so an anomaly does not teach its own baseline that it is normal.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from baselines.baseline import LOG_FLOOR, Estimate, SeasonalProfile, local_hour
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
from baselines.trail import HourlyTrail
from service.contract import AnomalyReport, MetricSample, SpanEvent

MAX_FUTURE_SECONDS = 300.0
MAX_EXEMPLARS = 5
MAX_EVIDENCE = 8
MIN_POOLED_SPANS = 3
"""A series pooled for ``max_pooled_windows`` is judged if it gathered at least this many."""
OWN_KINDS = ("server", "consumer")
"""Span kinds of a service's own operations..."""
CALL_KINDS = ("client", "producer")
"""...and of its calls to others, as the caller sees them (network delay in front of a
callee shows there, not in the callee's spans). Both are judged."""


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
    thresholds: Thresholds = field(default_factory=Thresholds)


SpanKey = tuple[str, str, str, str]
"""(service, operation, kind, peer_service or '')."""


@dataclass
class SpanWindow:
    durations: list[float] = field(default_factory=list)
    errors: int = 0
    slowest: list[tuple[float, str]] = field(default_factory=list)
    evidence: dict[str, None] = field(default_factory=dict)
    windows: int = 1
    """Consecutive windows pooled into this one (a sparse series)."""

    def merged(self, later: SpanWindow) -> SpanWindow:
        """This pool and the next window of the same series, as one."""
        slowest = heapq.nlargest(MAX_EXEMPLARS, self.slowest + later.slowest)
        heapq.heapify(slowest)
        evidence = dict.fromkeys(list(self.evidence) + list(later.evidence))
        return SpanWindow(
            self.durations + later.durations,
            self.errors + later.errors,
            slowest,
            dict.fromkeys(list(evidence)[:MAX_EVIDENCE]),
            self.windows + later.windows,
        )

    def add(self, event: SpanEvent) -> None:
        self.durations.append(event.duration_ms)
        if event.status == "error":
            self.errors += 1
        if event.trace_id:
            entry = (event.duration_ms, event.trace_id)
            if len(self.slowest) < MAX_EXEMPLARS:
                heapq.heappush(self.slowest, entry)
            elif entry > self.slowest[0]:
                heapq.heapreplace(self.slowest, entry)
        if event.attributes and len(self.evidence) < MAX_EVIDENCE:
            for name in ("exception.type", "exception.message", "status.description"):
                text = event.attributes.get(name)
                if isinstance(text, str) and text:
                    self.evidence.setdefault(f"{name}: {text[:200]}")


@dataclass
class WindowData:
    spans: dict[SpanKey, SpanWindow] = field(default_factory=dict)
    metrics: dict[tuple[str, str], list[float]] = field(default_factory=dict)


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
        return profiles + self.trail.nbytes


@dataclass
class DetectorStats:
    spans: int = 0
    metrics: int = 0
    late: int = 0
    future: int = 0
    overflow: int = 0
    windows_closed: int = 0
    flagged: int = 0


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
        self._changed: set[str] = set()

    def profile_p95(self, service: str, operation: str) -> SeasonalProfile | None:
        """The learnt window-p95 profile of a server series, if any."""
        state = self._series.get((service, operation, "server", ""))
        return None if state is None else state.p95

    def export(
        self, service: str
    ) -> tuple[dict[SpanKey, SeriesState], dict[tuple[str, str], SeasonalProfile]]:
        """The learnt state of one service's series (for a checkpoint)."""
        return (
            {k: v for k, v in self._series.items() if k[0] == service},
            {k: v for k, v in self._metrics.items() if k[0] == service},
        )

    def install(
        self,
        series: dict[SpanKey, SeriesState],
        metrics: dict[tuple[str, str], SeasonalProfile],
    ) -> None:
        """Put back state exported earlier (a restart, or a service moving consumers)."""
        self._series.update(series)
        self._metrics.update(metrics)

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
                        [list(key), agg.durations, agg.errors, agg.slowest, list(agg.evidence)]
                        for key, agg in window.spans.items()
                    ],
                    "metrics": [[list(key), values] for key, values in window.metrics.items()],
                }
                for start, window in self._open.items()
            ],
        }

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self._watermark = float(state["watermark"])
        self._closed_before = float(state["closed_before"])
        self.stats = DetectorStats(**state["stats"])
        self._open = {}
        for entry in state["open"]:
            window = self._open[float(entry["start"])] = WindowData()
            for key, durations, errors, slowest, evidence in entry["spans"]:
                span_key = (key[0], key[1], key[2], key[3])
                self._series.setdefault(span_key, SeriesState())
                window.spans[span_key] = SpanWindow(
                    durations, errors, [(d, t) for d, t in slowest], dict.fromkeys(evidence)
                )
            for key, values in entry["metrics"]:
                self._metrics.setdefault((key[0], key[1]), _context_profile())
                window.metrics[(key[0], key[1])] = values

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
        self, events: Iterable[SpanEvent | MetricSample], now: float | None = None
    ) -> list[AnomalyReport]:
        """Apply events to the open windows; close and judge windows the stream has passed."""
        horizon = (time.time() if now is None else now) + MAX_FUTURE_SECONDS
        width = self.config.window_seconds
        lateness = self.config.allowed_lateness_seconds
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
                self._watermark = ts
                limit = ts - lateness
                if limit >= self._closed_before + width:
                    reports.extend(self._close_before(limit - limit % width))
        return reports

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
        hour = local_hour(start, self._zone)
        end = start + cfg.window_seconds
        metrics = {
            key: (float(np.mean(values)), _usual(self._metrics[key].estimate(hour)))
            for key, values in window.metrics.items()
        }
        complete = self._pool(window)
        summaries = {key: _summarise(agg.durations) for key, agg in window.spans.items()}
        for key in window.spans:
            state = self._series[key]
            if state.hour != hour:
                state.hour = hour
                state.habits.begin_day(hour // 24, th)
                offset = state.gate.adopt(start, th)
                if offset is not None:
                    state.p95.shift(offset)
        usual = {key: self._series[key].p95.estimate(hour) for key in window.spans}

        watched = [key for key in window.spans if key[2] in OWN_KINDS + CALL_KINDS]
        for key in watched:
            if key[2] in OWN_KINDS:
                self._series[key].trail.add(hour, summaries[key][1])
        judged = [
            (key, base)
            for key in watched
            if key in complete
            and (base := usual[key]) is not None
            and base.history >= th.min_history
            and len(window.spans[key].durations) >= min(MIN_POOLED_SPANS, cfg.min_window_count)
        ]
        flagged: dict[str, list[tuple[bool, WindowFacts]]] = {}
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
                np.array([state.p95.recent_spread(hour // 24) for state in states]),
            )
            z, ratio, usual_p95 = deviation(p95, center, spread, th, log=True)
            scores = raw_score(z)
            material, calm = material_and_calm(p95, usual_p95, z, ratio, th)
            offsets = np.log(np.maximum(p95, LOG_FLOOR)) - center
            for i, ((key, _), state) in enumerate(zip(judged, states, strict=True)):
                surprise = state.habits.standardised_one(float(scores[i]), th)
                state.habits.commit_one(float(scores[i]), float(p95[i]), th)
                exceeds = bool(material[i]) and surprise > th.critical
                if state.gate.step(end, exceeds, bool(calm[i]), th):
                    state.trail.flag(start, hour, float(p95[i]))
                    score = float(likelihood(np.array([surprise]))[0])
                    facts = self._facts(key, start, hour, score, window, summaries, usual, metrics)
                    flagged.setdefault(key[0], []).append((key[2] in OWN_KINDS, facts))
                if state.gate.open:
                    state.gate.keep_offsets(offsets[i : i + 1])
        alerting = {key[0] for key in window.spans if self._series[key].gate.open}
        reports = [build_report(*_coalesce(group)) for group in flagged.values()]
        self.stats.flagged += len(reports)

        for key, agg in window.spans.items():
            if key[0] not in alerting:
                state, (p50, p95_, _) = self._series[key], summaries[key]
                state.count.add(hour, complete.get(key, len(agg.durations)))
                if key in complete:
                    state.p95.add(hour, p95_)
                    state.p50.add(hour, p50)
                    state.error_rate.add(hour, agg.errors / len(agg.durations))
        for (service, name), (value, _) in metrics.items():
            if service not in alerting:
                self._metrics[(service, name)].add(hour, value)
        self._changed.update(key[0] for key in window.spans)
        self._changed.update(key[0] for key in window.metrics)
        return reports

    def _pool(self, window: WindowData) -> dict[SpanKey, int]:
        """Pool sparse windows: each series' window joins the windows pooled before it;
        a pool is complete (judged and learnt) once it holds ``min_window_count`` spans or
        ``max_pooled_windows`` windows, and then replaces the window's own data. Returns the
        complete series with the spans of this window alone (the count profile learns
        per window)."""
        cfg = self.config
        complete: dict[SpanKey, int] = {}
        for key, agg in window.spans.items():
            state = self._series[key]
            merged = agg if state.pool is None else state.pool.merged(agg)
            full = len(merged.durations) >= cfg.min_window_count
            if full or merged.windows >= cfg.max_pooled_windows:
                state.pool = None
                complete[key] = len(agg.durations)
                window.spans[key] = merged
            else:
                state.pool = merged
        return complete

    def _facts(
        self,
        key: SpanKey,
        start: float,
        hour: int,
        score: float,
        window: WindowData,
        summaries: dict[SpanKey, tuple[float, float, float]],
        usual: dict[SpanKey, Estimate | None],
        metrics: dict[tuple[str, str], tuple[float, float | None]],
    ) -> WindowFacts:
        """Everything about a flagged window a person would look at next."""
        service, operation = key[0], key[1]
        agg, state, base = window.spans[key], self._series[key], usual[key]
        assert base is not None
        p50, p95, p99 = summaries[key]
        return WindowFacts(
            service=service,
            operation=operation,
            start=datetime.fromtimestamp(
                start - (agg.windows - 1) * self.config.window_seconds, UTC
            ),
            seconds=self.config.window_seconds * agg.windows,
            count=len(agg.durations),
            errors=agg.errors,
            p50=p50,
            p95=p95,
            p99=p99,
            baseline_p50=_usual(state.p50.estimate(hour)),
            baseline=base,
            score=score,
            count_usual=_usual(state.count.estimate(hour)),
            error_rate_usual=_usual(state.error_rate.estimate(hour)),
            metrics={name: v for (svc, name), v in metrics.items() if svc == service},
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


def _summarise(durations: list[float]) -> tuple[float, float, float]:
    """(p50, p95, p99) with numpy's default (linear) interpolation, on a sorted list: a
    window holds few values, where np.percentile's overhead would dominate."""
    ordered = sorted(durations)
    last = len(ordered) - 1

    def at(q: float) -> float:
        k = last * q
        lo = int(k)
        hi = min(lo + 1, last)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return at(0.50), at(0.95), at(0.99)


def _usual(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.usual

"""Event-time windows per series, judged against their seasonal baselines.

All series share aligned windows (``start = floor(t / W) * W``). When the stream's event
time passes a window's end, the whole window closes at once: context series (CPU, memory,
client calls) are summarised first, then every server/consumer series is judged, then the
baselines learn from the window, except for services in an open incident, so an anomaly
does not teach its own baseline that it is normal.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from baselines.baseline import Estimate, SeasonalBaseline, hour_of_week
from baselines.report import WindowFacts, build_report
from service.contract import AnomalyReport, MetricSample, SpanEvent

MAX_FUTURE_SECONDS = 300.0
MAX_EXEMPLARS = 5
MAX_EVIDENCE = 8


@dataclass(frozen=True)
class DetectorConfig:
    window_seconds: int = 60
    min_window_count: int = 10
    min_baseline_windows: int = 30
    flag_ratio: float = 2.0
    clear_ratio: float = 1.5
    min_delta_ms: float = 20.0
    cooldown_seconds: int = 900
    allowed_lateness_seconds: float = 5.0
    timezone: str = "UTC"


SpanKey = tuple[str, str, str, str]
"""(service, operation, kind, peer_service or '')."""


@dataclass
class SpanWindow:
    durations: list[float] = field(default_factory=list)
    errors: int = 0
    slowest: list[tuple[float, str]] = field(default_factory=list)
    evidence: dict[str, None] = field(default_factory=dict)

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


@dataclass
class IncidentGate:
    """One incident gives one alert: open at ``flag_ratio``, stay open (and silent) until
    the ratio falls under ``clear_ratio``, then keep quiet for ``cooldown_seconds``."""

    open: bool = False
    quiet_until: float = 0.0

    def step(
        self, config: DetectorConfig, end: float, ratio: float | None, judged: bool, delta: float
    ) -> bool:
        """Feed one judged window ending at ``end``; True when it raises a new alert."""
        if self.open and (ratio is None or ratio < config.clear_ratio):
            self.open = False
            self.quiet_until = end + config.cooldown_seconds
        if not (judged and ratio is not None and ratio >= config.flag_ratio):
            return False
        if delta < config.min_delta_ms:
            return False
        alert = not self.open and end > self.quiet_until
        self.open = True
        return alert


@dataclass
class SeriesState:
    """Baselines of one span series and its incident state."""

    p50: SeasonalBaseline = field(default_factory=SeasonalBaseline)
    p95: SeasonalBaseline = field(default_factory=SeasonalBaseline)
    count: SeasonalBaseline = field(default_factory=SeasonalBaseline)
    error_rate: SeasonalBaseline = field(default_factory=SeasonalBaseline)
    gate: IncidentGate = field(default_factory=IncidentGate)


@dataclass
class DetectorStats:
    spans: int = 0
    metrics: int = 0
    late: int = 0
    future: int = 0
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
        self._metric_baselines: dict[tuple[str, str], SeasonalBaseline] = {}

    def usual_p95(self, service: str, operation: str, how: int) -> Estimate | None:
        """The learnt usual p95 of a server series at an hour of the week, if any."""
        state = self._series.get((service, operation, "server", ""))
        return None if state is None else state.p95.estimate(how)

    def observe(
        self, events: Iterable[SpanEvent | MetricSample], now: float | None = None
    ) -> list[AnomalyReport]:
        """Apply events to the open windows; close and judge windows the stream has passed."""
        horizon = (time.time() if now is None else now) + MAX_FUTURE_SECONDS
        width = self.config.window_seconds
        reports: list[AnomalyReport] = []
        for event in events:
            ts = event.timestamp.timestamp()
            if ts > horizon:
                self.stats.future += 1
                continue
            start = ts - ts % width
            if start < self._closed_before:
                self.stats.late += 1
                continue
            window = self._open.get(start)
            if window is None:
                window = self._open[start] = WindowData()
            if isinstance(event, SpanEvent):
                self.stats.spans += 1
                key = (event.service, event.operation, event.kind, event.peer_service or "")
                agg = window.spans.get(key)
                if agg is None:
                    agg = window.spans[key] = SpanWindow()
                agg.add(event)
            else:
                self.stats.metrics += 1
                window.metrics.setdefault((event.service, event.metric), []).append(event.value)
            if ts > self._watermark:
                self._watermark = ts
                limit = ts - self.config.allowed_lateness_seconds
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
        cfg = self.config
        self.stats.windows_closed += 1
        how = hour_of_week(start, self._zone)
        end = start + cfg.window_seconds
        metrics = {
            key: (
                float(np.mean(values)),
                _usual(self._metric_baselines.setdefault(key, SeasonalBaseline()).estimate(how)),
            )
            for key, values in window.metrics.items()
        }
        summaries = {key: _summarise(agg) for key, agg in window.spans.items()}
        usual = {
            key: self._series.setdefault(key, SeriesState()).p95.estimate(how)
            for key in window.spans
        }

        reports = []
        alerting: set[str] = set()
        for key, agg in window.spans.items():
            service, operation, kind, _ = key
            if kind not in ("server", "consumer"):
                continue
            state, base, (p50, p95, p99) = self._series[key], usual[key], summaries[key]
            judged = (
                base is not None
                and len(agg.durations) >= cfg.min_window_count
                and base.samples >= cfg.min_baseline_windows
            )
            ratio = p95 / base.usual if base and base.usual > 0 else None
            delta = p95 - base.usual if base else 0.0
            if state.gate.step(cfg, end, ratio, judged, delta) and base is not None:
                self.stats.flagged += 1
                facts = WindowFacts(
                    service=service,
                    operation=operation,
                    start=datetime.fromtimestamp(start, UTC),
                    seconds=cfg.window_seconds,
                    hour_of_week=how,
                    count=len(agg.durations),
                    errors=agg.errors,
                    p50=p50,
                    p95=p95,
                    p99=p99,
                    baseline_p50=_usual(state.p50.estimate(how)),
                    baseline=base,
                    count_usual=_usual(state.count.estimate(how)),
                    error_rate_usual=_usual(state.error_rate.estimate(how)),
                    metrics={name: v for (svc, name), v in metrics.items() if svc == service},
                    downstream=[
                        (peer or op, op, summaries[k][1], _usual(usual[k]))
                        for k in window.spans
                        if k[0] == service and k[2] in ("client", "producer")
                        for _, op, _, peer in [k]
                    ],
                    evidence=list(
                        dict.fromkeys(
                            text
                            for k, a in window.spans.items()
                            if k[0] == service
                            for text in a.evidence
                        )
                    )[:MAX_EVIDENCE],
                    trace_ids=[trace for _, trace in sorted(agg.slowest, reverse=True)],
                )
                reports.append(build_report(facts))
            if state.gate.open:
                alerting.add(service)

        for key, agg in window.spans.items():
            if key[0] not in alerting:
                state, (p50, p95, _) = self._series[key], summaries[key]
                state.p50.add(how, p50)
                state.p95.add(how, p95)
                state.count.add(how, len(agg.durations))
                state.error_rate.add(how, agg.errors / len(agg.durations))
        for (service, name), (value, _) in metrics.items():
            if service not in alerting:
                self._metric_baselines[(service, name)].add(how, value)
        return reports


def _summarise(agg: SpanWindow) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(agg.durations), (50, 95, 99))
    return float(p50), float(p95), float(p99)


def _usual(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.usual

"""What a detection window holds: per span series, its spans (or their histogram buckets),
pooled with the next windows while the series is sparse, and their quantiles; per service,
its metrics and error lines."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from baselines.baseline import LOG_FLOOR
from baselines.errors import ErrorWindow
from service.contract import SpanEvent

MAX_EXEMPLARS = 5
MAX_EVIDENCE = 8
SMALL_WINDOW = 20
"""Spans a window holds at most for its p95 (linear interpolation) to lie between its two
slowest spans."""
OWN_KINDS = ("server", "consumer")
"""Span kinds of a service's own operations..."""
CALL_KINDS = ("client", "producer")
"""...and of its calls to others, as the caller sees them (network delay in front of a
callee shows there, not in the callee's spans). Both are judged."""
GAP_KIND = "gap"
"""A call's time the callee did not spend working: the caller's span minus the callee's
entry span under it, per (caller, operation, callee)."""

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
    buckets: dict[tuple[float, float], int] = field(default_factory=dict)
    """Spans known only by their histogram bucket: (lower, upper) ms -> spans."""
    bucketed: int = 0

    @property
    def count(self) -> int:
        return len(self.durations) + self.bucketed

    def merged(self, later: SpanWindow) -> SpanWindow:
        """This pool and the next window of the same series, as one."""
        slowest = heapq.nlargest(MAX_EXEMPLARS, self.slowest + later.slowest)
        heapq.heapify(slowest)
        evidence = dict.fromkeys(list(self.evidence) + list(later.evidence))
        buckets = dict(self.buckets)
        for bucket, n in later.buckets.items():
            buckets[bucket] = buckets.get(bucket, 0) + n
        return SpanWindow(
            self.durations + later.durations,
            self.errors + later.errors,
            slowest,
            dict.fromkeys(list(evidence)[:MAX_EVIDENCE]),
            self.windows + later.windows,
            buckets,
            self.bucketed + later.bucketed,
        )

    def add_histogram(self, bounds: list[float], counts: list[int], error: bool) -> None:
        """Spans summarised by a histogram: each bucket's spans lie between its bounds (the
        last bucket's at its lower bound: nothing says how far above it they are)."""
        lower = 0.0
        total = 0
        for i, n in enumerate(counts):
            upper = bounds[i] if i < len(bounds) else lower
            if n:
                self.buckets[(lower, upper)] = self.buckets.get((lower, upper), 0) + n
                total += n
            lower = upper
        self.bucketed += total
        if error:
            self.errors += total

    def add(self, event: SpanEvent) -> None:
        self.add_value(event.duration_ms, event.trace_id)
        if event.status == "error":
            self.errors += 1
        if event.attributes and len(self.evidence) < MAX_EVIDENCE:
            for name in ("exception.type", "exception.message", "status.description"):
                text = event.attributes.get(name)
                if isinstance(text, str) and text:
                    self.evidence.setdefault(f"{name}: {text[:200]}")

    def add_value(self, duration_ms: float, trace_id: str | None) -> None:
        self.durations.append(duration_ms)
        if trace_id:
            entry = (duration_ms, trace_id)
            if len(self.slowest) < MAX_EXEMPLARS:
                heapq.heappush(self.slowest, entry)
            elif entry > self.slowest[0]:
                heapq.heapreplace(self.slowest, entry)


@dataclass
class WindowData:
    spans: dict[SpanKey, SpanWindow] = field(default_factory=dict)
    metrics: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    linked: list[SpanEvent] = field(default_factory=list)
    """Spans of unknown kind, and entry spans under a call, resolved at the window's close."""
    logs: dict[str, ErrorWindow] = field(default_factory=dict)


def summarise(agg: SpanWindow) -> tuple[float, float, float]:
    """(p50, p95, p99) with numpy's default (linear) interpolation, on a sorted list: a
    window holds few values, where np.percentile's overhead would dominate. Spans known by
    their histogram bucket: see ``_buckets``."""
    if agg.buckets:
        return _buckets(agg)
    ordered = sorted(agg.durations)
    last = len(ordered) - 1

    def at(q: float) -> float:
        k = last * q
        lo = int(k)
        hi = min(lo + 1, last)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return at(0.50), at(0.95), at(0.99)


def second_slowest(agg: SpanWindow) -> float:
    """The second-slowest span of a window of at most ``SMALL_WINDOW`` spans, whose p95
    lies between its two slowest: one call decides it. Inf for a larger window (its p95 is
    below its second-slowest already) or spans known by their histogram bucket."""
    if agg.buckets or not 2 <= len(agg.durations) <= SMALL_WINDOW:
        return math.inf
    return heapq.nlargest(2, agg.durations)[1]


def _buckets(agg: SpanWindow) -> tuple[float, float, float]:
    """Quantiles of spans known by their histogram bucket, from a log-normal fitted to the
    buckets: reading a quantile off one bucket jumps across its whole width when a few
    spans move over a bound, while the fit moves with all of them. Each bucket contributes
    its geometric middle and the spread within it; the last bucket (above every bound) its
    lower bound."""
    weights = 0.0
    total = 0.0
    squares = 0.0
    for d in agg.durations:
        x = math.log(max(d, LOG_FLOOR))
        weights, total, squares = weights + 1, total + x, squares + x * x
    for (lower, upper), n in agg.buckets.items():
        low = max(lower, upper / 2 if lower <= 0 else lower, LOG_FLOOR)
        high = max(upper, low)
        x = 0.5 * (math.log(low) + math.log(high))
        inside = (math.log(high) - math.log(low)) ** 2 / 12
        weights += n
        total += n * x
        squares += n * (x * x + inside)
    mu = total / weights
    sigma = math.sqrt(max(squares / weights - mu * mu, 0.0))
    return math.exp(mu), math.exp(mu + 1.6449 * sigma), math.exp(mu + 2.3263 * sigma)

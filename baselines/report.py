"""Turning a flagged window and its context into the AnomalyReport of the wire contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from baselines.baseline import Estimate
from service.contract import (
    AnomalyReport,
    BaselineRef,
    Context,
    Deviation,
    Downstream,
    LatencySummary,
    RelatedOperation,
    Window,
    report_id,
)

CONTEXT_METRICS = {
    "cpu_pct": ("cpu_pct", "cpu_baseline_pct"),
    "memory_pct": ("memory_pct", "memory_baseline_pct"),
    "queue_depth": ("queue_depth", "queue_depth_baseline"),
}
"""Metric name on the wire -> (observed, usual) fields of the report's context."""


@dataclass(frozen=True)
class WindowFacts:
    """Everything the detector knows about a flagged window, before it is put on the wire."""

    service: str
    operation: str
    start: datetime
    seconds: int
    count: int
    errors: int
    p50: float
    p95: float
    p99: float
    baseline_p50: float | None
    baseline: Estimate | None
    """None for a service flagged by its errors alone, with no latency baseline yet."""
    score: float
    count_usual: float | None
    error_rate_usual: float | None
    metrics: dict[str, tuple[float, float | None]]
    downstream: list[tuple[str, str, float, float | None]]
    evidence: list[str]
    trace_ids: list[str]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def build_report(facts: WindowFacts, related: list[WindowFacts] | None = None) -> AnomalyReport:
    base = facts.baseline
    context: dict[str, object] = {
        "request_rate": _round(facts.count / facts.seconds, 2),
        "request_rate_baseline": _round(
            None if facts.count_usual is None else facts.count_usual / facts.seconds, 2
        ),
        "error_rate": round(facts.errors / facts.count, 3) if facts.count else None,
        "error_rate_baseline": _round(facts.error_rate_usual, 3),
        "downstream": [
            Downstream(
                service=peer, operation=op, p95_ms=round(p95, 1), baseline_p95_ms=_round(usual)
            )
            for peer, op, p95, usual in facts.downstream
        ],
    }
    for metric, (observed, usual) in facts.metrics.items():
        if metric in CONTEXT_METRICS:
            observed_field, usual_field = CONTEXT_METRICS[metric]
            context[observed_field] = round(observed, 1)
            context[usual_field] = _round(usual)
    return AnomalyReport(
        id=report_id(facts.service, facts.operation, facts.start),
        service=facts.service,
        operation=facts.operation,
        window=Window(
            start=facts.start,
            end=facts.start + timedelta(seconds=facts.seconds),
            count=facts.count,
        ),
        latency_ms=LatencySummary(
            p50=round(facts.p50, 1), p95=round(facts.p95, 1), p99=round(facts.p99, 1)
        ),
        baseline=None
        if base is None
        else BaselineRef(
            hour_of_week=base.hour_of_week,
            p50=round(facts.baseline_p50 or 0.0, 1),
            p95=round(base.usual, 1),
            samples=base.samples,
            level=base.level,
        ),
        deviation=None
        if base is None
        else Deviation(ratio=round(facts.p95 / base.usual, 2), score=round(facts.score, 3)),
        context=Context.model_validate(context),
        evidence=facts.evidence,
        trace_ids=facts.trace_ids,
        related=[
            RelatedOperation(
                operation=other.operation,
                p95_ms=round(other.p95, 1),
                baseline_p95_ms=round(other.baseline.usual, 1),
            )
            for other in related or []
            if other.baseline is not None
        ],
    )

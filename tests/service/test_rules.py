import pytest

from service.contract import AnomalyReport, ProbableCause, Severity
from service.grounding import report_numbers, ungrounded
from service.rules import diagnose

BASE = {
    "service": "checkout",
    "operation": "POST /checkout",
    "latency_ms": {"p95": 900},
    "baseline": {
        "hour_of_week": 10,
        "p50": 100,
        "p95": 200,
        "samples": 100,
        "level": "hour_of_week",
    },
}


@pytest.mark.parametrize(
    ("context", "cause"),
    [
        ({"cpu_pct": 97, "cpu_baseline_pct": 45}, ProbableCause.local_cpu_saturation),
        (
            {
                "cpu_pct": 12,
                "cpu_baseline_pct": 40,
                "downstream": [
                    {"service": "fx", "operation": "GET /q", "p95_ms": 500, "baseline_p95_ms": 60}
                ],
            },
            ProbableCause.downstream_dependency,
        ),
        (
            {
                "cpu_pct": 90,
                "cpu_baseline_pct": 45,
                "request_rate": 40,
                "request_rate_baseline": 12,
            },
            ProbableCause.traffic_surge,
        ),
        ({"memory_pct": 95, "memory_baseline_pct": 60}, ProbableCause.memory_pressure),
        ({"queue_depth": 5000, "queue_depth_baseline": 20}, ProbableCause.queue_backlog),
        ({"deployed_minutes_ago": 12}, ProbableCause.recent_deployment),
        ({}, ProbableCause.unknown),
    ],
)
def test_rules_follow_the_signals_and_cite_only_report_numbers(context, cause) -> None:
    report = AnomalyReport.model_validate(BASE | {"context": context})
    diagnosis = diagnose(report)
    assert diagnosis.probable_cause == cause
    assert diagnosis.severity == Severity.critical  # 900 / 200 = 4.5x
    assert ungrounded(f"{diagnosis.summary} {diagnosis.explanation}", report_numbers(report)) == []
    names = ("checkout", "POST /checkout", "fx")
    assert all(any(n in action for n in names) for action in diagnosis.recommended_actions)

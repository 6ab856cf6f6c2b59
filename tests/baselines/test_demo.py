"""The demo's verdict: it passes only when the model itself named each injected cause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from baselines.demo import RIGHT, verdicts
from baselines.synthetic import demo_incidents
from service.contract import Analysis, AnomalyReport

WEEK = datetime(2026, 11, 9, tzinfo=UTC)


def _answer(incident, cause: str, grounding: str, n: int = 0) -> tuple[AnomalyReport, Analysis]:
    start = incident.start + timedelta(minutes=n)
    report = AnomalyReport.model_validate(
        {
            "id": f"{incident.service}-{n}",
            "service": incident.service,
            "operation": "GET /x",
            "window": {"start": start.isoformat(), "end": start.isoformat(), "count": 5},
            "latency_ms": {"p95": 900},
        }
    )
    model = {"base": "rules" if grounding == "rules" else "tuned.gguf", "quantization": "Q8_0"}
    analysis = Analysis.model_validate(
        {
            "anomaly_id": report.anomaly_id,
            "service": incident.service,
            "operation": "GET /x",
            "probable_cause": cause,
            "severity": "critical",
            "confidence": 0.9,
            "summary": "s",
            "explanation": "e",
            "recommended_actions": ["a"],
            "model": model,
            "latency_ms": 1.0,
            "grounding": grounding,
        }
    )
    return report, analysis


def test_only_the_models_right_cause_passes() -> None:
    cpu, dependency = demo_incidents(WEEK)
    right = [_answer(cpu, cpu.cause, "grounded"), _answer(dependency, dependency.cause, "degraded")]
    assert [(state, ok) for _, state, ok in verdicts([cpu, dependency], right)] == [
        (RIGHT, True),
        (RIGHT, True),
    ]
    cases = {
        "rule engine only": [_answer(cpu, cpu.cause, "rules")],
        "wrong cause": [_answer(cpu, "unknown", "grounded")],
        "one window right, one wrong": [
            _answer(cpu, cpu.cause, "grounded"),
            _answer(cpu, "traffic_surge", "grounded", 1),
        ],
        "the model and the rule engine": [
            _answer(cpu, cpu.cause, "grounded"),
            _answer(cpu, cpu.cause, "rules", 1),
        ],
        "missed": [],
    }
    for what, analysed in cases.items():
        ((_, state, ok),) = verdicts([cpu], analysed)
        assert not ok, (what, state)
    ((_, state, _),) = verdicts([cpu], [_answer(cpu, cpu.cause, "rules")])
    assert state == "answered by the rule engine, not the model"

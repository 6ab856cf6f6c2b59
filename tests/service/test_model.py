"""The model: which file is served, with which calibration, and the path a report takes
through it (facts first, the model writing what they leave open, the answer cache)."""

from pathlib import Path
from typing import Any

import pytest

from service.analyses import Analyses
from service.analyze import Analyzer
from service.contract import AnomalyReport, ProbableCause, Severity
from service.grounding import unsupported
from service.model.embedded import shipped_gguf
from service.model.loader import ModelLoader
from service.model.runtime import ModelRuntime
from service.model.tuned import cause_bias, prepare_tuned
from service.prompt import settled
from service.settings import Settings
from service.store import AnalysisStore


def test_model_path_overrides_the_embedded_model(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=shipped_gguf()))
    loader.start()
    assert loader.wait(60)
    assert loader.runtime.info.quantization == "Q4_1"
    assert loader.runtime.cause_bias == {}  # a given file brings no calibration
    assert not (tmp_path / "models").exists()  # nothing prepared when a file is given


def test_the_tuned_default_is_served_with_its_calibration(service_settings: Settings) -> None:
    """The shipped adapter's per-cause bias (its manifest) is what the served model adds
    when it names a cause: the eval's numbers are the service's."""
    loader = ModelLoader(service_settings)
    loader.start()
    assert loader.wait(120), loader.error
    try:
        assert loader.runtime.info.quantization == "Q8_0"
        assert loader.runtime.cause_bias == cause_bias() != {}
    finally:
        loader.runtime.close()


def test_a_missing_model_file_is_reported_not_raised(tmp_path: Path) -> None:
    loader = ModelLoader(Settings(data_dir=tmp_path, model_path=tmp_path / "nope.gguf"))
    loader.start()
    assert not loader.wait(10)
    assert "model file not found" in loader.error and "nope.gguf" in loader.error


# ------------------------------------------------------------------ the model path, facts first

BASELINE = {"hour_of_week": 10, "p50": 90, "p95": 200, "samples": 120, "level": "hour_of_week"}
CLEAR: dict[ProbableCause, dict[str, Any]] = {
    ProbableCause.local_cpu_saturation: {"context": {"cpu_pct": 96, "cpu_baseline_pct": 40}},
    ProbableCause.downstream_dependency: {
        "context": {
            "cpu_pct": 14,
            "cpu_baseline_pct": 36,
            "downstream": [
                {
                    "service": "fx-provider",
                    "operation": "GET /quote",
                    "p95_ms": 430,
                    "baseline_p95_ms": 60,
                }
            ],
        }
    },
    ProbableCause.memory_pressure: {"context": {"memory_pct": 95, "memory_baseline_pct": 50}},
    ProbableCause.traffic_surge: {"context": {"request_rate": 900, "request_rate_baseline": 200}},
    ProbableCause.queue_backlog: {"context": {"queue_depth": 5000, "queue_depth_baseline": 100}},
    ProbableCause.recent_deployment: {
        "context": {"cpu_pct": 41, "cpu_baseline_pct": 40, "deployed_minutes_ago": 4}
    },
    ProbableCause.network_degradation: {
        "incident": {
            "id": "inc-net",
            "started": "2026-11-12T14:03:00Z",
            "root_cause": {
                "service": "fx-gateway",
                "kind": "network",
                "score": 2.0,
                "reasons": ["calls to it 480ms vs its own time 35ms"],
            },
            "path": ["exchange-api", "fx-gateway"],
        }
    },
    ProbableCause.unknown: {"context": {"cpu_pct": 41, "cpu_baseline_pct": 40}},
}
"""One report per cause whose facts show that cause alone."""


def _clear(cause: ProbableCause, **more: Any) -> AnomalyReport:
    base: dict[str, Any] = {
        "id": f"clear-{cause.value}",
        "service": "exchange-api",
        "operation": "GET /rates",
        "latency_ms": {"p95": 900},
        "baseline": BASELINE,
    }
    return AnomalyReport.model_validate(base | CLEAR[cause] | more)


@pytest.fixture(scope="module")
def analyses(service_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    s = service_settings
    runtime = ModelRuntime(
        prepare_tuned(s.data_dir), 2048, 2, 0, s.repeat_penalty, cause_bias=cause_bias()
    )
    store = AnalysisStore(f"sqlite:///{tmp_path_factory.mktemp('store') / 'analyses.db'}")
    yield Analyses(store, 4, 120, 600), Analyzer(runtime, s.max_tokens)
    runtime.close()


@pytest.mark.slow
def test_a_clear_report_of_each_cause_is_answered_by_the_model_with_that_cause(analyses) -> None:
    """The facts settle the cause; the model writes the rest, at the policy's confidence
    and the severity of the report's impact (an unknown cause is no page)."""
    answers, analyzer = analyses
    for cause in ProbableCause:
        report = _clear(cause)
        analysis = answers.analyze(report, analyzer)
        assert analysis.grounding != "rules", analysis
        assert analysis.probable_cause == cause, analysis
        assert analysis.confidence == settled(report).confidence, analysis
        expected = Severity.warning if cause == ProbableCause.unknown else Severity.critical
        assert analysis.severity == expected, analysis
        text = f"{analysis.summary} {analysis.explanation}"
        assert not unsupported(text, report), text


@pytest.mark.slow
def test_a_cached_answer_carries_this_reports_numbers_and_severity(analyses) -> None:
    """An alert storm reuses the decision, not the other report's numbers: p95 700ms is a
    warning where 900ms was critical (usual 200ms), and the summary says 700ms."""
    answers, analyzer = analyses
    first = answers.analyze(_clear(ProbableCause.local_cpu_saturation, id="storm-a"), analyzer)
    report = _clear(ProbableCause.local_cpu_saturation, id="storm-b", latency_ms={"p95": 700})
    again = answers.analyze(report, analyzer)
    assert again.cached and again.anomaly_id == "storm-b"
    assert again.probable_cause == first.probable_cause
    assert again.recommended_actions == first.recommended_actions
    assert (first.severity, again.severity) == (Severity.critical, Severity.warning)
    assert "700ms" in again.summary and "900" not in again.summary, again.summary
    assert not unsupported(f"{again.summary} {again.explanation}", report), again

"""A plain rule engine over the derived signals the model reads.

It answers when the model cannot (not loaded, failed, too slow: marked ``model: rules``),
writes the grounded text a degraded answer falls back to, and is the honest baseline the
tuned model must beat where rules are weak (mixed signals, service knowledge, free text).
Every number it writes comes from the report.
"""

from __future__ import annotations

from service import playbook
from service.contract import AnomalyReport, Diagnosis, ModelInfo, ProbableCause, Severity
from service.prompt import Signal, derived_signals, severity_from_latency

RULES_MODEL = ModelInfo(base="rules", quantization="none")


def _signal(signals: list[Signal], name: str) -> Signal | None:
    return next((s for s in signals if s.name == name), None)


def _higher(signal: Signal | None) -> bool:
    return signal is not None and "HIGHER" in signal.tag


def decide(report: AnomalyReport) -> tuple[ProbableCause, Signal | None]:
    """The cause the signals point at first, and the signal that points at it."""
    signals = derived_signals(report)
    slow_downstream = [s for s in signals if s.name.startswith("downstream") and _higher(s)]
    cpu, memory = _signal(signals, "cpu"), _signal(signals, "memory")
    rate, queue = _signal(signals, "request rate"), _signal(signals, "queue depth")
    deployed = report.context.deployed_minutes_ago
    if slow_downstream:
        return ProbableCause.downstream_dependency, max(
            slow_downstream, key=lambda s: s.observed / (s.usual or 1)
        )
    if _higher(rate):
        return ProbableCause.traffic_surge, rate
    if _higher(cpu):
        return ProbableCause.local_cpu_saturation, cpu
    if _higher(memory):
        return ProbableCause.memory_pressure, memory
    if _higher(queue):
        return ProbableCause.queue_backlog, queue
    if deployed is not None and deployed <= 60:
        return ProbableCause.recent_deployment, None
    return ProbableCause.unknown, None


def severity_of(report: AnomalyReport) -> Severity:
    """The policy's severity; warning when no baseline says how far latency is off."""
    return severity_from_latency(report) or Severity.warning


def explain(
    report: AnomalyReport, cause: ProbableCause, evidence: Signal | None
) -> tuple[str, str]:
    """(summary, explanation), citing only the report's own numbers."""
    latency = derived_signals(report)[0]
    what = f"{report.service} {report.operation}"
    summary = f"{what} p95 is {latency.line().split(': ', 1)[1]}."
    because = {
        ProbableCause.downstream_dependency: "a downstream call is slower than usual",
        ProbableCause.traffic_surge: "traffic is above its usual level",
        ProbableCause.local_cpu_saturation: "CPU is above its usual level",
        ProbableCause.memory_pressure: "memory use is above its usual level",
        ProbableCause.queue_backlog: "the queue is deeper than usual",
        ProbableCause.recent_deployment: "a deploy happened shortly before",
        ProbableCause.network_degradation: "the network is slower than usual",
        ProbableCause.unknown: "no context signal stands out",
    }[cause]
    detail = f" ({evidence.line()})" if evidence is not None else ""
    explanation = f"Latency rose while {because}{detail}."
    return summary[:160], explanation[:400]


def diagnose(report: AnomalyReport) -> Diagnosis:
    cause, evidence = decide(report)
    summary, explanation = explain(report, cause, evidence)
    return Diagnosis(
        probable_cause=cause,
        severity=severity_of(report),
        confidence=0.6 if evidence is not None else 0.3,
        summary=summary,
        explanation=explanation,
        recommended_actions=playbook.actions(report)[cause],
    )

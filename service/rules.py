"""A plain rule engine over the derived signals the model reads.

It answers when the model cannot (not loaded, failed, too slow: marked ``model: rules``),
writes the grounded text a degraded answer falls back to, and is the honest baseline the
tuned model must beat where rules are weak (mixed signals, service knowledge, free text).
Every number it writes comes from the report.
"""

from __future__ import annotations

from service.contract import AnomalyReport, Diagnosis, ModelInfo, ProbableCause, Severity
from service.prompt import Signal, derived_signals, severity_from_latency

RULES_MODEL = ModelInfo(base="rules", quantization="none")

ACTIONS: dict[ProbableCause, list[str]] = {
    ProbableCause.local_cpu_saturation: [
        "Scale out {service} or add CPU",
        "Profile the hottest code path of {operation}",
        "Check for a runaway job or retry loop on {service}",
    ],
    ProbableCause.downstream_dependency: [
        "Check the health and latency of {dependency}",
        "Tighten timeouts and add a circuit breaker towards {dependency}",
        "Serve cached or degraded responses while {dependency} is slow",
    ],
    ProbableCause.memory_pressure: [
        "Check {service} for a memory leak or oversized caches",
        "Look at garbage collection pauses and swap on {service}",
        "Restart or scale out {service} to relieve memory",
    ],
    ProbableCause.traffic_surge: [
        "Scale out {service} for the extra traffic",
        "Find the source of the surge on {service} and rate-limit it if abusive",
    ],
    ProbableCause.queue_backlog: [
        "Add consumers or throughput to drain the backlog of {service}",
        "Check what slowed the consumers of {service}",
    ],
    ProbableCause.recent_deployment: [
        "Compare the latest deploy of {service} with the previous version",
        "Roll back {service} if the regression is confirmed",
    ],
    ProbableCause.network_degradation: [
        "Check network latency and packet loss around {service}",
    ],
    ProbableCause.unknown: [
        "Open the slowest traces of {operation} and compare them with normal ones",
        "Check recent changes and dependencies of {service}",
    ],
}


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


def _slowest_dependency(report: AnomalyReport) -> str:
    calls = [d for d in report.context.downstream if d.baseline_p95_ms]
    if not calls:
        return "the dependency"
    worst = max(calls, key=lambda d: d.p95_ms / (d.baseline_p95_ms or 1))
    return f"{worst.service} {worst.operation}"


def actions_for(report: AnomalyReport, cause: ProbableCause) -> list[str]:
    """The cause's actions, naming this service, operation and slowest dependency."""
    return [
        action.format(
            service=report.service,
            operation=report.operation,
            dependency=_slowest_dependency(report),
        )[:100]
        for action in ACTIONS[cause]
    ]


def diagnose(report: AnomalyReport) -> Diagnosis:
    cause, evidence = decide(report)
    summary, explanation = explain(report, cause, evidence)
    return Diagnosis(
        probable_cause=cause,
        severity=severity_of(report),
        confidence=0.6 if evidence is not None else 0.3,
        summary=summary,
        explanation=explanation,
        recommended_actions=actions_for(report, cause),
    )

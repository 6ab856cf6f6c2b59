"""What to do about each cause: the actions an answer recommends, from one playbook.

The tuned model learnt these (every generated training answer recommends two of its
cause's, ``training/dataset``), yet writing them a token at a time it recommended another
cause's a fifth of the time ("Raise the prefetch or batch size of billing consumers" for
CPU saturation; the eval's "actions of another cause"). So the local decoder lets it pick
among its cause's actions, filled with the report's names, and writes the one picked as a
whole.
"""

from __future__ import annotations

from service.contract import AnomalyReport, Diagnosis, ProbableCause

C = ProbableCause

ACTIONS: dict[ProbableCause, list[str]] = {
    C.local_cpu_saturation: [
        "Scale out {service} or raise its CPU limit",
        "Profile the hottest code path of {op} on {service}",
        "Look for a runaway job or retry loop on {service}",
        "Shed or defer non-critical work on {service} until CPU recovers",
    ],
    C.downstream_dependency: [
        "Check the health and latency of {dep}",
        "Check {dep} for slow queries, locks or saturation",
        "Tighten the timeout and add a circuit breaker from {service} to {dep}",
        "Serve cached or degraded responses while {dep} is slow",
    ],
    C.memory_pressure: [
        "Check {service} for a memory leak or an oversized cache",
        "Look at GC pauses and heap usage of {service}",
        "Raise the memory limit of {service} or scale it out",
        "Restart the worst {service} instances to relieve memory",
    ],
    C.traffic_surge: [
        "Scale out {service} for the extra traffic",
        "Find the source of the surge on {op} and rate-limit it if abusive",
        "Enable autoscaling headroom for {service}",
    ],
    C.queue_backlog: [
        "Add consumers to drain the backlog of {service}",
        "Check why the consumers of {service} slowed down",
        "Raise the prefetch or batch size of {service} consumers",
    ],
    C.recent_deployment: [
        "Compare the latest deploy of {service} with the previous version",
        "Roll back {service} if the regression is confirmed",
        "Check the feature flags and config changed by the deploy of {service}",
    ],
    C.network_degradation: [
        "Check network latency and packet loss between {service} and {dep}",
        "Check DNS and TLS errors on the hosts of {service}",
        "Move traffic away from the degraded zone or link",
    ],
    C.unknown: [
        "Open the slowest traces of {op} and compare them with normal ones",
        "Check recent changes and dependencies of {service}",
        "Add CPU, memory and downstream metrics for {service} to narrow it down",
    ],
}

WITHOUT_DEPENDENCY: dict[ProbableCause, list[str]] = {
    C.downstream_dependency: [
        "Find the slow call in the slowest traces of {op} on {service}",
        "Check the health and latency of the dependencies of {service}",
        "Tighten the timeouts and add circuit breakers on the outbound calls of {service}",
        "Serve cached or degraded responses from {service} while its dependency is slow",
    ],
}
"""A slow dependency's actions when the report names none (no client spans reached the
consumer; a catalogue note or an evidence line made the case): finding it comes first,
and each action names the service whose calls to look at."""

NO_DEPENDENCY = "its dependency"
"""What the other causes' actions call the dependency when the report names none."""
LENGTH = Diagnosis.model_json_schema()["properties"]["recommended_actions"]["items"]["maxLength"]


def root_dependency(report: AnomalyReport) -> str | None:
    """The root of the report's incident, when it is another service than the flagged one:
    the dependency the actions name before any call the report measured."""
    incident = report.incident
    if incident is None or incident.root_cause is None:
        return None
    root = incident.root_cause.service
    return root if root != report.service else None


def caller_of(report: AnomalyReport, dependency: str | None) -> str:
    """The service whose calls to ``dependency`` crossed the network: the one before it on
    the incident's path, else the report's own (the network's actions name it where the
    others name the report's service)."""
    path = report.incident.path if report.incident else []
    if dependency in path and path.index(dependency) > 0:
        return path[path.index(dependency) - 1]
    return report.service


def slowest_dependency(report: AnomalyReport) -> str | None:
    """The downstream service that slowed most against its usual p95, if any is known."""
    calls = [d for d in report.context.downstream if d.baseline_p95_ms]
    if not calls:
        return None
    return max(calls, key=lambda d: d.p95_ms / (d.baseline_p95_ms or 1)).service


def actions(report: AnomalyReport) -> dict[ProbableCause, list[str]]:
    """Every cause's actions, naming this report's service, operation and dependency: its
    incident's root in another service, else its slowest call (cut to the contract's
    length, which only very long names reach)."""
    dependency = root_dependency(report) or slowest_dependency(report)
    book = ACTIONS if dependency else ACTIONS | WITHOUT_DEPENDENCY
    names = {"service": report.service, "op": report.operation, "dep": dependency or NO_DEPENDENCY}
    # the network's actions look at the calling side: the hosts whose calls slowed
    caller = names | {"service": caller_of(report, dependency)}
    return {
        cause: [
            a.format(**(caller if cause == C.network_degradation else names))[:LENGTH]
            for a in listed
        ]
        for cause, listed in book.items()
    }

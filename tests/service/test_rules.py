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
    # 900 / 200 = 4.5x; a cause nobody identified is no reason to page
    expected = Severity.warning if cause == ProbableCause.unknown else Severity.critical
    assert diagnosis.severity == expected
    assert ungrounded(f"{diagnosis.summary} {diagnosis.explanation}", report_numbers(report)) == []
    names = ("checkout", "POST /checkout", "fx")
    assert all(any(n in action for n in names) for action in diagnosis.recommended_actions)


def _incident(root: dict, path: list[str], **more) -> dict:
    return {"id": "inc-4711", "started": "2026-11-12T14:03:00Z", "root_cause": root} | {
        "path": path,
        **more,
    }


CHAIN = ["ts-order-service", "ts-cart-service", "ts-gateway", "ts-payment-service"]
OWN_TIME = {
    "service": "ts-payment-service",
    "kind": "own_time",
    "score": 3.5,
    "reasons": ["POST /pay: p95 840 ms, usual 42 ms", "3 of the incident's services call into it"],
}
NETWORK = {
    "service": "ts-gateway",
    "kind": "network",
    "score": 2.25,
    "reasons": [
        "calls from ts-cart-service (GET /gw) wait beyond its work: p95 480 ms, usual 35 ms"
    ],
}
CPU_HERE = {
    "service": "ts-order-service",
    "kind": "resources",
    "score": 2.0,
    "reasons": ["CPU 95% (usual 30%)"],
}
ERRORS = {
    "service": "ts-payment-service",
    "kind": "errors",
    "score": 1.5,
    "reasons": ["error log lines: 12 in the window (usual 0.0)"],
    "evidence": ["ERROR PaymentGatewayTimeout after 3000ms"],
}


def _incident_report(incident: dict, context: dict | None = None) -> AnomalyReport:
    return AnomalyReport.model_validate(
        BASE
        | {"service": "ts-order-service", "operation": "POST /order", "context": context or {}}
        | {"incident": incident}
    )


def _grounded(report: AnomalyReport) -> None:
    diagnosis = diagnose(report)
    text = f"{diagnosis.summary} {diagnosis.explanation}"
    assert ungrounded(text, report_numbers(report)) == [], text


def test_a_root_down_the_chain_is_the_flagged_services_slow_dependency() -> None:
    """A -> B -> C -> D, D's own time rose: A is slow because it waits on D, and the
    summary says through which services, with D's numbers."""
    incident = _incident(
        OWN_TIME,
        CHAIN,
        candidates=[OWN_TIME, NETWORK],
        affected=[
            {"service": s, "operations": ["POST /x"], "signals": ["latency"]}
            for s in [*CHAIN, "ts-inventory-service"]
        ],
    )
    report = _incident_report(incident, {"cpu_pct": 97, "cpu_baseline_pct": 45})
    diagnosis = diagnose(report)
    assert diagnosis.probable_cause == ProbableCause.downstream_dependency  # not its CPU
    assert diagnosis.summary == (
        "ts-order-service is slow because it waits on ts-payment-service (via ts-cart-service,"
        " ts-gateway), whose own time rose: POST /pay: p95 840 ms, usual 42 ms."
    )
    assert "Path: ts-order-service -> ts-cart-service -> ts-gateway -> ts-payment-service." in (
        diagnosis.explanation
    )
    assert diagnosis.explanation.endswith(
        "Other candidates: ts-gateway (network). Also affected: ts-inventory-service."
    )
    assert diagnosis.recommended_actions[0] == "Check the health and latency of ts-payment-service"
    _grounded(report)


def test_a_slow_network_in_front_of_a_service_is_the_networks_cause() -> None:
    report = _incident_report(_incident(NETWORK, CHAIN[:3]))
    diagnosis = diagnose(report)
    assert diagnosis.probable_cause == ProbableCause.network_degradation
    assert diagnosis.summary == (
        "ts-order-service is slow because the network in front of ts-gateway (via"
        " ts-cart-service) slowed its calls."  # the reason would pass 160 characters
    )
    assert (
        "ts-order-service -> ts-cart-service -> ts-gateway. Root cause ts-gateway (the network"
        in (diagnosis.explanation)
    )
    assert diagnosis.explanation.endswith("wait beyond its work: p95 480 ms, usual 35 ms.")
    # the calls that crossed the network are the caller's, the one before the root
    assert diagnosis.recommended_actions[0] == (
        "Check network latency and packet loss between ts-cart-service and ts-gateway"
    )
    _grounded(report)


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        ("CPU 95% (usual 30%)", ProbableCause.local_cpu_saturation),
        ("memory 91% (usual 40%)", ProbableCause.memory_pressure),
    ],
)
def test_a_root_in_the_flagged_service_is_its_own_resources(reason, cause) -> None:
    report = _incident_report(_incident(CPU_HERE | {"reasons": [reason]}, ["ts-order-service"]))
    diagnosis = diagnose(report)
    assert diagnosis.probable_cause == cause
    resource = "CPU" if "CPU" in reason else "memory"
    assert (
        diagnosis.summary == f"ts-order-service is slow because its {resource} is high: {reason}."
    )
    assert all("ts-order-service" in a for a in diagnosis.recommended_actions[:2])
    _grounded(report)


def test_a_failing_root_sends_the_reader_to_its_error_log() -> None:
    report = _incident_report(_incident(ERRORS, [CHAIN[0], CHAIN[3]]))
    diagnosis = diagnose(report)
    assert diagnosis.probable_cause == ProbableCause.downstream_dependency
    assert diagnosis.summary == (
        "ts-order-service is slow because it waits on ts-payment-service, which fails:"
        " error log lines: 12 in the window (usual 0.0)."
    )
    assert (
        diagnosis.recommended_actions[0] == "Read the latest error log lines of ts-payment-service"
    )
    assert all("ts-payment-service" in a for a in diagnosis.recommended_actions[:3])
    _grounded(report)


@pytest.mark.parametrize(
    ("root", "path", "summary"),
    [
        (
            ERRORS | {"service": "ts-order-service"},
            ["ts-order-service"],
            "ts-order-service fails: error log lines: 12 in the window (usual 0.0).",
        ),
        (
            ERRORS,
            [CHAIN[0], CHAIN[3]],
            "ts-order-service is affected because it calls ts-payment-service, which fails:"
            " error log lines: 12 in the window (usual 0.0).",
        ),
    ],
    ids=["its own errors", "its callee's errors"],
)
def test_a_service_failing_at_its_usual_latency_is_not_called_slow(root, path, summary) -> None:
    """An incident of errors: the flagged service's p95 is 180 ms against 200 ms usual, and
    the summary says it fails (or is affected), not that it is slow."""
    report = _incident_report(_incident(root, path))
    report = report.model_copy(
        update={"latency_ms": report.latency_ms.model_copy(update={"p95": 180})}
    )
    diagnosis = diagnose(report)
    assert diagnosis.summary == summary
    assert (
        diagnosis.recommended_actions[0] == f"Read the latest error log lines of {root['service']}"
    )
    _grounded(report)


def test_long_names_and_reasons_keep_whole_sentences_within_the_contract() -> None:
    long = ["svc-" + "x" * 190 + str(i) for i in range(4)]
    root = OWN_TIME | {"service": long[3], "reasons": ["POST /pay: p95 840 ms, usual 42 ms"] * 8}
    report = _incident_report(_incident(root, [CHAIN[0], *long]))
    report = report.model_copy(update={"operation": "o" * 200})
    diagnosis = diagnose(report)  # the contract's lengths hold, or this raises
    assert diagnosis.summary.startswith("ts-order-service is slow because it waits on svc-xx")
    assert diagnosis.summary.endswith("\u2026, whose own time rose.")
    assert "Path: ts-order-service -> svc-xxx" in diagnosis.explanation
    assert diagnosis.explanation.endswith("p95 840 ms, usual 42 ms.")
    _grounded(report)


def test_an_incident_without_a_root_leaves_the_signals_in_charge() -> None:
    incident = {"id": "inc-1", "started": "2026-11-12T14:03:00Z", "path": CHAIN}
    report = _incident_report(incident, {"cpu_pct": 97, "cpu_baseline_pct": 45})
    assert diagnose(report).probable_cause == ProbableCause.local_cpu_saturation

"""The playbook names the report's own service, operation and slowest dependency."""

from __future__ import annotations

from service import playbook
from service.contract import AnomalyReport, ProbableCause


def _report(downstream: list[dict]) -> AnomalyReport:
    return AnomalyReport.model_validate(
        {
            "service": "checkout",
            "operation": "POST /pay",
            "latency_ms": {"p95": 900},
            "context": {"downstream": downstream},
        }
    )


def test_every_cause_has_actions_naming_the_reports_service_operation_and_slowest_call() -> None:
    calls = [
        {"service": "ledger", "operation": "GET /", "p95_ms": 90, "baseline_p95_ms": 60},
        {"service": "payments", "operation": "POST /", "p95_ms": 700, "baseline_p95_ms": 70},
    ]
    offered = playbook.actions(_report(calls))
    assert set(offered) == set(ProbableCause)
    assert all(offered[cause] for cause in ProbableCause)
    text = " ".join(a for listed in offered.values() for a in listed)
    assert "{" not in text and "checkout" in text and "POST /pay" in text
    assert "payments" in text and "ledger" not in text  # 10x slower beats 1.5x


def test_without_a_known_dependency_the_actions_find_it_from_the_service() -> None:
    """No client spans named the dependency: each action says where to look, on the
    report's service; the other causes call it plainly ``its dependency``."""
    offered = playbook.actions(_report([]))
    slow = offered[ProbableCause.downstream_dependency]
    assert slow[0] == "Find the slow call in the slowest traces of POST /pay on checkout"
    assert all("checkout" in action for action in slow)
    network = offered[ProbableCause.network_degradation][0]
    assert (
        network
        == f"Check network latency and packet loss between checkout and {playbook.NO_DEPENDENCY}"
    )
    assert "{" not in " ".join(a for listed in offered.values() for a in listed)


def test_an_action_never_outgrows_the_contract() -> None:
    report = _report([]).model_copy(update={"service": "s" * 200})
    offered = [a for listed in playbook.actions(report).values() for a in listed]
    assert max(len(a) for a in offered) == playbook.LENGTH == 100

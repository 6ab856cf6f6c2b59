"""What a window's judged series say about each service: errors point at the service that
logs them and, at half the strength, at the one their lines name; a habitual burst is one
weak signal; CPU far above usual is a resources signal for the services of an incident and
what they call, and saturation one anywhere. Runs without the model."""

from __future__ import annotations

import pytest

from baselines.callgraph import CallGraph
from baselines.errors import ErrorVerdict
from baselines.signals import NAMED_SHARE, error_signals, resource_signals


def verdict(named: dict[str, int] | None = None, habitual: bool = False) -> ErrorVerdict:
    return ErrorVerdict(
        errors=10,
        usual=0.5,
        novel=10,
        surprise=1e-9,
        samples=["No instances available for payments"],
        named=named or {},
        habitual=habitual,
    )


def test_errors_are_the_loggers_and_half_as_much_the_named_services() -> None:
    own, named = error_signals("checkout", "logs", verdict({"payments": 10}))
    assert (own.service, own.kind, own.direct) == ("checkout", "errors", True)
    assert (named.service, named.direct) == ("payments", False)
    assert named.strength == pytest.approx(NAMED_SHARE * own.strength)
    assert "naming payments" in named.reason


def test_a_habitual_burst_is_one_weak_signal_that_opens_nothing() -> None:
    (signal,) = error_signals("checkout", "logs", verdict({"payments": 10}, habitual=True))
    assert signal.service == "checkout" and signal.weak and not signal.opening
    assert "as large as its usual ones" in signal.reason


def test_cpu_far_above_usual_counts_near_an_incident_and_saturation_anywhere() -> None:
    graph = CallGraph()
    graph.observe("checkout", "payments", 5, 60.0)
    metrics = {
        ("payments", "cpu_pct"): (70.0, 20.0),  # called by a suspect: a signal
        ("search", "cpu_pct"): (70.0, 20.0),  # unconnected, not saturated: none
        ("ledger", "cpu_pct"): (95.0, 20.0),  # saturated: a signal that opens
        ("catalog", "cpu_pct"): (24.0, 20.0),  # a small rise: none
    }
    signals = {s.service: s for s in resource_signals(metrics, {"checkout"}, graph)}
    assert set(signals) == {"payments", "ledger"}
    assert not signals["payments"].opens and signals["ledger"].opens
    assert signals["ledger"].strength > signals["payments"].strength
    assert signals["payments"].reason == "CPU 70% (usual 20%)"

"""The assessment: the labelling policy's five steps on a report's own facts, what they
settle, what they rule out, and how bad the slowdown is."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service import rules
from service.assess import EVIDENCE, assess, severity
from service.contract import AnomalyReport, ProbableCause, Severity
from service.grounding import facts, misstated
from service.prompt import derived_signals, settled
from training.dataset import samples, texts
from training.evaluate import load_cases

C = ProbableCause
BASELINE = {"hour_of_week": 10, "p50": 90, "p95": 200, "samples": 120, "level": "hour_of_week"}
names = st.text(min_size=1, max_size=60).filter(str.strip)


def _report(service: str, context: dict[str, Any], **more: Any) -> AnomalyReport:
    data = {
        "service": service,
        "operation": "GET /x",
        "latency_ms": {"p95": 900},
        "baseline": BASELINE,
        "context": context,
    }
    return AnomalyReport.model_validate(data | more)


@st.composite
def quiet(draw: st.DrawFn, skip: str) -> dict[str, Any]:
    """Signals at their usual values (some, maybe none), none of them ``skip``."""
    context: dict[str, Any] = {}
    for name, low, high in (("cpu", 5, 80), ("memory", 5, 75)):
        if name != skip and draw(st.booleans()):
            usual = draw(st.integers(low, high))
            context[f"{name}_pct"] = usual + draw(st.integers(-2, 2)) if usual > 2 else usual
            context[f"{name}_baseline_pct"] = usual
    if skip != "rate" and draw(st.booleans()):
        usual = draw(st.floats(1, 5000))
        context |= {"request_rate": usual, "request_rate_baseline": usual}
    if skip != "queue" and draw(st.booleans()):
        usual = draw(st.integers(0, 500))
        context |= {"queue_depth": usual, "queue_depth_baseline": usual}
    if draw(st.booleans()):
        usual = draw(st.floats(1, 2000))
        dep = {"service": draw(names), "operation": "GET /y", "p95_ms": usual}
        context["downstream"] = [dep | {"baseline_p95_ms": usual}]
    if skip != "deploy" and draw(st.booleans()):
        context["deployed_minutes_ago"] = draw(st.floats(61, 10_000))
    return context


@st.composite
def clear(draw: st.DrawFn) -> tuple[ProbableCause, AnomalyReport]:
    """A report whose facts show one cause alone, on any service."""
    cause = draw(st.sampled_from(list(ProbableCause)))
    service = draw(names)
    skip = {
        C.local_cpu_saturation: "cpu",
        C.memory_pressure: "memory",
        C.traffic_surge: "rate",
        C.queue_backlog: "queue",
        C.recent_deployment: "deploy",
    }.get(cause, "")
    context = draw(quiet(skip))
    more: dict[str, Any] = {}
    if cause in (C.local_cpu_saturation, C.memory_pressure):
        name = "cpu" if cause == C.local_cpu_saturation else "memory"
        context[f"{name}_pct"] = draw(st.floats(90, 100))
        context[f"{name}_baseline_pct"] = draw(st.floats(5, 55))
    elif cause == C.traffic_surge:
        usual = draw(st.floats(1, 5000))
        context |= {"request_rate": usual * draw(st.floats(2, 20)), "request_rate_baseline": usual}
    elif cause == C.queue_backlog:
        usual = draw(st.integers(0, 500))
        context |= {"queue_depth": usual * 3 + 20, "queue_depth_baseline": usual}
    elif cause == C.downstream_dependency:
        usual = draw(st.floats(1, 2000))
        slow = {"service": draw(names), "operation": "GET /z", "baseline_p95_ms": usual}
        context["downstream"] = [*context.get("downstream", []), slow | {"p95_ms": usual * 3 + 20}]
    elif cause == C.recent_deployment:
        context["deployed_minutes_ago"] = draw(st.floats(0, 60))
    elif cause == C.network_degradation:
        root = {"service": draw(names), "kind": "network", "score": 1.0}
        more["incident"] = {"id": "inc-1", "started": "2026-11-12T14:03:00Z", "root_cause": root}
    return cause, _report(service, context, **more)


@settings(max_examples=300, deadline=None)
@given(clear())
def test_one_abnormal_fact_settles_its_cause_on_any_service(case) -> None:
    cause, report = case
    found = assess(report)
    assert found.settled == cause, found.reasons
    assert rules.decide(report) == cause
    assert settled(report).cause == cause


@st.composite
def mixed(draw: st.DrawFn) -> AnomalyReport:
    """Any mix of signals above, at or below their usual values, maybe a deploy."""
    context: dict[str, Any] = {}
    for name in ("cpu", "memory"):
        if draw(st.booleans()):
            context[f"{name}_pct"] = draw(st.floats(0, 100))
            context[f"{name}_baseline_pct"] = draw(st.floats(0, 100))
    for name in ("request_rate", "queue_depth"):
        if draw(st.booleans()):
            context[name] = draw(st.floats(0, 1000))
            context[f"{name}_baseline"] = draw(st.floats(0, 1000))
    calls = draw(st.lists(st.tuples(st.floats(0, 3000), st.floats(0, 3000)), max_size=3))
    context["downstream"] = [
        {"service": f"dep-{i}", "operation": "GET /y", "p95_ms": p95, "baseline_p95_ms": usual}
        for i, (p95, usual) in enumerate(calls)
    ]
    if draw(st.booleans()):
        context["deployed_minutes_ago"] = draw(st.floats(0, 600))
    return _report(draw(names), context)


@settings(max_examples=300, deadline=None)
@given(mixed())
def test_a_cause_the_numbers_contradict_is_never_chosen(report: AnomalyReport) -> None:
    """CPU saturation with the CPU not above usual, a dependency with every dependency at
    its usual latency, a deploy with no deploy in the hour: never allowed, never answered."""
    found = assess(report)
    ctx = report.context
    tags = {s.name: s.tag for s in derived_signals(report)}
    ruled_out = set()
    if "cpu" in tags and "HIGHER" not in tags["cpu"] and ctx.cpu_baseline_pct is not None:
        ruled_out.add(C.local_cpu_saturation)
    calls = [t for n, t in tags.items() if n.startswith("downstream ")]
    if calls and not any("HIGHER" in t or t == "no baseline" for t in calls):
        ruled_out.add(C.downstream_dependency)
    if ctx.deployed_minutes_ago is None or ctx.deployed_minutes_ago > 60:
        ruled_out.add(C.recent_deployment)
    assert ruled_out <= found.contradicted, found.reasons
    assert not ruled_out & set(found.allowed)
    assert rules.decide(report) not in ruled_out
    assert not ruled_out & set(settled(report).causes)


def test_cpu_idle_beside_a_slow_dependency_is_the_dependency_never_the_cpu() -> None:
    report = _report(
        "exchange-api",
        {
            "cpu_pct": 14,
            "cpu_baseline_pct": 36,
            "downstream": [
                {
                    "service": "fx-provider",
                    "operation": "GET /q",
                    "p95_ms": 430,
                    "baseline_p95_ms": 60,
                }
            ],
        },
    )
    found = assess(report)
    assert found.settled == C.downstream_dependency
    assert C.local_cpu_saturation in found.contradicted
    assert "not local_cpu_saturation: cpu is 14% vs usual 36% (LOWER)" in found.reasons


def test_a_slow_dependency_is_no_cause_when_the_incidents_root_is_the_service_itself() -> None:
    """The consumer saw the whole graph and rooted the incident in the service's own errors:
    its slower call is a consequence, and the answer may not blame the dependency."""
    calls = {"service": "fx-provider", "operation": "GET /q", "p95_ms": 430, "baseline_p95_ms": 60}
    root = {"service": "exchange-api", "kind": "errors", "score": 1.5, "reasons": ["12 errors"]}
    incident = {"id": "inc-1", "started": "2026-11-12T14:03:00Z", "root_cause": root}
    found = assess(_report("exchange-api", {"downstream": [calls]}, incident=incident))
    assert C.downstream_dependency in found.contradicted
    assert found.settled == C.unknown
    assert "not downstream_dependency: the incident's root is exchange-api itself" in found.reasons


def test_decisive_evidence_outweighs_a_quiet_signal_as_the_policy_says() -> None:
    """Thread-pool starvation at a usual CPU is CPU saturation (policy step 1), and a queue
    that service's note says its latency includes is its backlog (step 2)."""
    starving = _report(
        "bff",
        {"cpu_pct": 61, "cpu_baseline_pct": 58},
        evidence=["WARN ThreadPoolExecutor: request-pool exhausted, tasks rejected"],
    )
    assert assess(starving).settled == C.local_cpu_saturation
    waiting = _report("mailer", {"queue_depth": 140, "queue_depth_baseline": 110})
    assert assess(waiting, "mailer latency includes queue wait").settled == C.queue_backlog
    assert C.queue_backlog in assess(waiting).contradicted


def test_several_supported_causes_are_offered_with_the_policys_pick_first() -> None:
    """A deploy 4 minutes ago beside a CPU at 97%: both supported, the model chooses; the
    rule engine takes the one loud signal (policy step 4 before step 5)."""
    report = _report("cart", {"cpu_pct": 97, "cpu_baseline_pct": 40, "deployed_minutes_ago": 4})
    found = assess(report)
    assert found.settled is None
    assert found.allowed == (C.local_cpu_saturation, C.recent_deployment)
    given = settled(report)
    assert given.cause is None and given.confidence is None
    assert given.causes == found.allowed
    assert rules.diagnose(report).confidence == 0.9


def test_severity_follows_impact_and_no_guess_pages() -> None:
    quiet_report = _report("geo", {"cpu_pct": 30, "cpu_baseline_pct": 31})  # 4.5x, unknown
    assert assess(quiet_report).settled == C.unknown
    assert assess(quiet_report).severity == Severity.warning
    assert severity(quiet_report, C.local_cpu_saturation) == Severity.critical
    blind = quiet_report.model_copy(update={"baseline": None})
    assert severity(blind, C.local_cpu_saturation) == Severity.warning
    mild = _report("geo", {}, latency_ms={"p95": 300})  # 1.5x: info...
    assert severity(mild, C.traffic_surge) == Severity.info
    failing = _report(
        "geo", {"error_rate": 0.3, "error_rate_baseline": 0.01}, latency_ms={"p95": 300}
    )
    assert severity(failing, C.traffic_surge) == Severity.critical  # ...unless it fails
    wide = {
        "id": "inc-1",
        "started": "2026-11-12T14:03:00Z",
        "affected": [{"service": s} for s in ("a", "b", "c", "d", "e")],
    }
    assert severity(_report("geo", {}, latency_ms={"p95": 300}, incident=wide), None) == (
        Severity.critical
    )


def test_every_evidence_text_of_the_dataset_names_its_cause_alone() -> None:
    rng = random.Random(0)
    for cause, templates in texts.EVIDENCE.items():
        for template in templates:
            text = texts.fill(template, "orders-db", rng)
            assert [c for c, words in EVIDENCE.items() if words.search(text)] == [cause], text
    for text in texts.NOISE_EVIDENCE:
        assert not [c for c, words in EVIDENCE.items() if words.search(text)], text


def test_the_rule_engine_follows_the_labelled_policy_and_says_only_what_the_facts_do() -> None:
    """On the held-out generated and hand-written cases the complete-policy rule engine names
    the labelled cause, and its text gives no signal a direction its numbers do not have."""
    for path in (samples.HELDOUT, samples.HANDWRITTEN_HELDOUT_CHAT):
        for case in load_cases(path):
            answer = rules.diagnose(case.report, case.note)
            assert answer.probable_cause == case.expected.probable_cause, case.id
            text = f"{answer.summary} {answer.explanation}"
            assert not misstated(text, facts(case.report, case.note)), (case.id, text)

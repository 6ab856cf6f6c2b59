"""The rule engine: the dataset's whole policy (``assess.py``), written out.

It answers when the model cannot (not loaded, failed, too slow: marked ``model: rules``),
writes the grounded text a degraded answer falls back to, and is the honest baseline the
tuned model is measured against: it takes the policy's first match among the causes the
facts support, so a model earns its place only by the text it writes and the causes it
chooses better where several are supported. Every number it writes comes from the report.

A report that belongs to an incident with a root cause is answered from it: the consumer
saw every service of the incident, the report's own context only the flagged one. The
diagnosis says the chain, from the flagged service down to the root, and why the root is
the root, in the words of its reasons (whose numbers the grounding guard accepts).
"""

from __future__ import annotations

from dataclasses import dataclass

from service import playbook
from service.assess import Assessment, assess, higher, incident_cause, resource_of
from service.contract import (
    CONTROL_CHARS,
    AnomalyReport,
    Candidate,
    Diagnosis,
    ModelInfo,
    ProbableCause,
    Severity,
)
from service.prompt import Signal, derived_signals

RULES_MODEL = ModelInfo(base="rules", quantization="none")
SUMMARY = Diagnosis.model_json_schema()["properties"]["summary"]["maxLength"]
EXPLANATION = Diagnosis.model_json_schema()["properties"]["explanation"]["maxLength"]
NAME = 60
"""The longest name the explanation writes whole: one 200-character name must not crowd
out the path and the reasons."""
KIND_WORDS = {
    "own_time": "its own time rose",
    "resources": "its resources ran short",
    "network": "the network in front of it slowed its calls",
    "errors": "it fails",
}


@dataclass(frozen=True)
class Chain:
    """The incident as it bears on one report: the flagged service, the root cause, and
    the services between them."""

    flagged: str
    root: Candidate
    via: tuple[str, ...]
    path: tuple[str, ...]

    @property
    def remote(self) -> bool:
        return self.root.service != self.flagged


def chain(report: AnomalyReport) -> Chain | None:
    """The report's incident as a chain; None without an incident or a root cause."""
    incident = report.incident
    if incident is None or incident.root_cause is None:
        return None
    root = incident.root_cause
    path = tuple(incident.path)
    via = tuple(s for s in path if s not in (report.service, root.service))
    return Chain(report.service, root, tuple(dict.fromkeys(via)), path)


def _text(value: str) -> str:
    """A reason or a name as the rule engine writes it: on one line."""
    return " ".join(CONTROL_CHARS.sub(" ", value).split())


def decide(report: AnomalyReport, note: str | None = None) -> ProbableCause:
    """The policy's first match among the causes the report's facts support (``note``: the
    catalogue's note on its service)."""
    return assess(report, note).chosen


def severity_of(report: AnomalyReport, note: str | None = None) -> Severity:
    """The severity the report's impact gives (``assess.severity``)."""
    return assess(report, note).severity


def _fit(options: list[str], limit: int) -> str:
    """The first option within ``limit``; else the last cut at a word, so that no number
    is cut into another."""
    for option in options:
        if len(option) <= limit:
            return option
    cut = options[-1][:limit]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def _joined(sentences: list[list[str]], limit: int) -> str:
    """One alternative of each sentence in order, the first that still fits (none, if none
    does): whole sentences, so no number is cut."""
    text = ""
    for alternatives in sentences:
        for sentence in alternatives:
            longer = f"{text} {sentence}" if text else sentence
            if len(longer) <= limit:
                text = longer
                break
    return text


def _name(value: str, limit: int) -> str:
    """A service name cut to ``limit`` characters with an ellipsis, never inside a number
    (one cut short would be a number the report does not hold)."""
    text = _text(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip("0123456789.") + "\u2026"


def chain_summary(report: AnomalyReport) -> tuple[ProbableCause, str] | None:
    """The cause the report's incident names and the summary that says its chain (None
    without an incident root): what an answer naming that cause opens with."""
    found, cause = chain(report), incident_cause(report)
    if found is None or cause is None:
        return None
    return cause, _chain_summary(report, found)


def _chain_summary(report: AnomalyReport, found: Chain) -> str:
    """``A is slow because it waits on D (via B, C), whose own time rose: reason.``, the
    reason, the services between and whole names left out in that order until it fits. A
    report whose latency is not above usual (an incident of errors) is not called slow:
    ``A fails``, ``A is affected because it calls D, which fails``."""
    root = found.root
    reason = _text(_quoted_reason(root, report))
    resource = "CPU" if resource_of(root, report) == "cpu" else "memory"
    slow = higher(derived_signals(report)[0])

    def clause(limit: int, via: bool) -> str:
        service, flagged = _name(root.service, limit), _name(found.flagged, limit)
        between = ", ".join(_name(s, limit) for s in found.via)
        on = f"{service} (via {between})" if via and between else service
        lead = f"{flagged} is slow" if slow else f"{flagged} is affected"
        if not found.remote:
            return {
                "own_time": f"{flagged} is slow in its own work",
                "resources": f"{lead} because its {resource} is high",
                "network": f"{lead} because the network in front of it slowed calls to it",
                "errors": f"{flagged} is slow and fails" if slow else f"{flagged} fails",
            }[root.kind]
        waits = "waits on" if slow else "calls"
        return (
            f"{lead} because "
            + {
                "own_time": f"it {waits} {on}, whose own time rose",
                "resources": f"it {waits} {on}, whose {resource} is high",
                "network": f"the network in front of {on} slowed its calls",
                "errors": f"it {waits} {on}, which fails",
            }[root.kind]
        )

    detail = f": {reason}" if reason else ""
    uncut = SUMMARY
    return _fit(
        [
            f"{clause(uncut, True)}{detail}.",
            f"{clause(uncut, True)}.",
            f"{clause(uncut, False)}{detail}.",
            f"{clause(uncut, False)}.",
            f"{clause(40, True)}.",
            f"{clause(40, False)}.",
        ],
        SUMMARY,
    )


def _quoted_reason(root: Candidate, report: AnomalyReport) -> str:
    """The reason the summary quotes: for resources, the first naming the resource."""
    if root.kind == "resources":
        resource = resource_of(root, report)
        words = ("mem", "heap", "oom") if resource == "memory" else ("cpu",)
        named = [r for r in root.reasons if any(w in r.lower() for w in words)]
        if named:
            return named[0]
    return root.reasons[0] if root.reasons else ""


def _chain_explanation(report: AnomalyReport, found: Chain, latency: str) -> str:
    """The latency, the path, the root's reasons (as many as fit), the other candidates
    and the other affected services."""
    root, incident = found.root, report.incident
    assert incident is not None
    what = f"{_name(report.service, NAME)} {_name(report.operation, NAME)}"
    sentences = [[f"{what} p95 is {latency}.", f"p95 is {latency}."]]
    if len(found.path) > 1:
        paths = [f"Path: {' -> '.join(_name(s, n) for s in found.path)}." for n in (NAME, 24)]
        sentences.append([paths[0] if len(paths[0]) <= SUMMARY else paths[1]])  # room for reasons
    head = f"Root cause {_name(root.service, NAME)} ({KIND_WORDS[root.kind]})"
    reasons = [_text(r) for r in root.reasons]
    sentences.append(
        [f"{head}: {'; '.join(reasons[:n])}." for n in range(len(reasons), 0, -1)] + [f"{head}."]
    )
    others = [
        f"{_name(c.service, NAME)} ({c.kind})"
        for c in incident.candidates
        if (c.service, c.kind) != (root.service, root.kind)
    ]
    if others:
        sentences.append([f"Other candidates: {', '.join(others)}."])
    on_path = {report.service, root.service, *found.path}
    affected = [_name(a.service, NAME) for a in incident.affected if a.service not in on_path]
    if affected:
        sentences.append([f"Also affected: {', '.join(affected)}."])
    return _joined(sentences, EXPLANATION)


LEAD = {
    ProbableCause.downstream_dependency: "A slow dependency",
    ProbableCause.traffic_surge: "A traffic surge",
    ProbableCause.local_cpu_saturation: "CPU saturation",
    ProbableCause.memory_pressure: "Memory pressure",
    ProbableCause.queue_backlog: "A queue backlog",
    ProbableCause.recent_deployment: "The recent deploy",
    ProbableCause.network_degradation: "Network trouble",
    ProbableCause.unknown: "Cause not identified",
}
NOUN = {cause: lead[0].lower() + lead[1:] for cause, lead in LEAD.items()}
NOUN[ProbableCause.local_cpu_saturation] = "CPU saturation"


def explain(
    report: AnomalyReport,
    cause: ProbableCause,
    evidence: Signal | None = None,
    note: str | None = None,
    facts: Assessment | None = None,
) -> tuple[str, str]:
    """(summary, explanation), citing only the report's own numbers and saying of each
    signal only what its numbers say. When ``cause`` is the one the report's incident
    names, they say the chain down to its root; else the facts that support ``cause``
    (``evidence``, a signal, first), then the facts that rule other causes out."""
    latency = derived_signals(report)[0].line().split(": ", 1)[1]
    found = chain(report)
    if found is not None and cause == incident_cause(report):
        return _chain_summary(report, found), _chain_explanation(report, found, latency)
    facts = facts or assess(report, note)
    summary = f"{_name(report.service, NAME)} {_name(report.operation, NAME)} p95 is {latency}."
    support = facts.supported.get(cause)
    shown = [evidence.line()] if evidence is not None else []
    shown += [_text(r) for r in support.reasons] if support is not None else []
    because = [f"{LEAD[cause]}: {'; '.join(shown[:n])}." for n in range(len(shown), 0, -1)]
    if not shown:
        because = [f"{LEAD[cause]}: no fact of this report shows it."]
    sentences = [[*because, f"{LEAD[cause]}."]]
    sentences += [
        [f"Not {NOUN[other]}: {_text(why)}."]
        for other in ProbableCause
        if other in facts.contradicted and other != cause
        for why in [_against(facts, other)]
        if why
    ]
    return _fit([summary], SUMMARY), _joined(sentences, EXPLANATION)


def _against(facts: Assessment, cause: ProbableCause) -> str:
    """Why the facts rule ``cause`` out, as ``assess`` wrote it."""
    prefix = f"not {cause.value}: "
    return next((r[len(prefix) :] for r in facts.reasons if r.startswith(prefix)), "")


def _actions(report: AnomalyReport, cause: ProbableCause) -> list[str]:
    """The playbook's actions for ``cause``; a failing root's error log comes first."""
    listed = playbook.actions(report)[cause]
    found = chain(report)
    if found is not None and found.root.kind == "errors":
        first = f"Read the latest error log lines of {_text(found.root.service)}"
        listed = [first[: playbook.LENGTH], *listed]
    return listed[:5]


def diagnose(report: AnomalyReport, note: str | None = None) -> Diagnosis:
    """The policy's answer: its first match among the supported causes, the severity the
    impact gives, the policy's confidence in what decided it, grounded text."""
    facts = assess(report, note)
    cause = facts.chosen
    summary, explanation = explain(report, cause, note=note, facts=facts)
    return Diagnosis(
        probable_cause=cause,
        severity=facts.severity,
        confidence=facts.confidence,
        summary=summary,
        explanation=explanation,
        recommended_actions=_actions(report, cause),
    )

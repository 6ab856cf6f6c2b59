"""Facts first: what a report's own facts settle about its cause before any model reads it.

The dataset's policy (``training/dataset/policy.md``, all five steps) in code, kept as the
facts each cause rests on: which causes each signal, quoted evidence line, catalogue trait,
recent deploy and incident root supports, and which causes the numbers rule out. A tuned
135M model named CPU saturation for a service at 14% CPU (usual 36%) whose dependency was
7x slower; here that cause is contradicted, so it is never offered. One supported cause:
the facts settle it and a model only writes the prose. Several: a model chooses among
them, and the rule engine takes the policy's first match (``Assessment.chosen``).

The policy ranks decisive evidence and service knowledge above the numbers ("whatever the
numbers"), so a cause the evidence or the catalogue supports is not contradicted by a
quiet signal: thread-pool starvation at a usual CPU is CPU saturation, a queue-wait
service's quiet queue is its backlog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from service.contract import CONTROL_CHARS, AnomalyReport, Candidate, ProbableCause, Severity
from service.prompt import Signal, derived_signals, number

C = ProbableCause

DEPLOY_WINDOW_MIN = 60.0
"""A deploy this recent may be the cause (policy step 5)."""
HEAP_PCT = 80.0
"""Memory at which a large-heap service's GC pauses show, tagged HIGHER or not."""
MIXED_PCT = 90.0
"""CPU or memory at which, beside another loud signal, it is the cause (policy step 3)."""
MIXED_DOWNSTREAM_RATIO = 2.0
"""A downstream call slower than usual by less than this waits on a saturated CPU."""
ERRORS_WARNING, ERRORS_CRITICAL = 0.05, 0.25
"""Error rates (above usual) that make a slowdown at least a warning, or critical."""
BREADTH_WARNING, BREADTH_CRITICAL = 3, 5
"""Services an incident reached that make it at least a warning, or critical."""
QUOTE_CHARS = 90


class Step(IntEnum):
    """What supports a cause, in the policy's order: the first match wins. An incident's root
    (seen across services by the consumer) comes before the report's own facts."""

    INCIDENT = 0
    EVIDENCE = 1
    KNOWLEDGE = 2
    MIXED = 3
    SIGNAL = 4
    DEPLOY = 5
    NOTHING = 6


CONFIDENCE = {
    Step.INCIDENT: 0.75,
    Step.EVIDENCE: 0.9,
    Step.KNOWLEDGE: 0.75,
    Step.MIXED: 0.75,
    Step.SIGNAL: 0.9,
    Step.DEPLOY: 0.6,
    Step.NOTHING: 0.3,
}
"""The policy's confidence of a cause by what decided it: 0.9 one clear signal or decisive
evidence, 0.75 mixed signals or service knowledge, 0.6 a deploy with nothing else, 0.3
unknown; an incident's root is a ranking across services, as sure as mixed signals."""

EVIDENCE: dict[ProbableCause, re.Pattern[str]] = {
    cause: re.compile(pattern, re.IGNORECASE)
    for cause, pattern in {
        C.memory_pressure: r"out ?of ?memory|memoryerror|\boom(killed)?\b|gc overhead|\bheap\b"
        r"|full gc|gc pause|time in gc|gc forced|stop-the-world|mark-(sweep|compact)|swap"
        r"|kswapd|page faults|to-space exhausted|humongous|\brss\b.*limit|into memory",
        C.downstream_dependency: r"connection is not available|connection ?pool|queuepool"
        r"|pool checkout timed out|waiting for (a )?connection|timeout acquiring a connection"
        r"|acquire timed out|connection from the pool|failed to obtain jdbc connection"
        r"|no more connections allowed|slow ?query|slow ?log|slowlog|query_time"
        r"|statement timeout|seq scan|full table scan|lock wait|deadlock|upstream request"
        r" timeout|upstream_rq_timeout|deadline.?exceeded|gateway timeout|read ?timed? ?out"
        r"|request timed out|circuit breaker|elasticsearchtimeout|responded in \d+ ?ms"
        r"|time is spent inside|\b(get|post|put|patch|delete) \S+ timed out",
        C.network_degradation: r"handshake|\bssl|\btls\b|connection reset|econnreset"
        r"|reset by peer|packet loss|packets? dropped|dropping packet|retransmit|\bdns\b"
        r"|getaddrinfo|eai_again|i/o timeout|etimedout|no route to host|network unreachable"
        r"|broken pipe|\bmtu\b|conntrack|rx drops|socket hang up|disconnect/reset",
        C.recent_deployment: r"rolled out|\brollout\b|\bdeploy|release v?\d|canary|helm upgrade"
        r"|argo ?cd|image tag|feature flag|config change|migration|promoted build|new build"
        r"|new version",
        C.queue_backlog: r"consumer lag|\blag=\d|consumer group|redeliver|backlog"
        r"|messages ready|ready messages|unacked|rebalanc|messages? (waiting|pending)"
        r"|piling up|oldest ?message|tasks pending|queue latency|jobs queued|scaled to 0",
        C.local_cpu_saturation: r"thread ?pool|threadpoolexecutor|starv|throttl|busy ?loop"
        r"|busy wait|spinning|cpu quota|cpu limit|cpu\.stat|event loop (blocked|lag)"
        r"|hot loop|regex|backtracking|profiler|flame graph|% of cycles|gil held|gomaxprocs"
        r"|load average|cpu-bound handler|threads busy|workers busy|bcrypt"
        r"|compiled on every request|main thread busy",
        C.traffic_surge: r"crawler|\bbots?\b|scraper|campaign|rate limit|\b429\b|captcha"
        r"|flash sale|retry storm|are retries|polling every|ddos|batch import|advert"
        r"|push notification|sessions up|autoscaler at max|incoming requests|same minute"
        r"|shared on social|new visitors|new connections up|spiking|user-agent python",
    }.items()
}
"""Evidence that names a cause (policy step 1); "200 OK" or "cache miss" names none."""

Trait = Literal["cpu_bound", "io_bound", "heap", "queue_wait", "wan"]
TRAITS: dict[Trait, re.Pattern[str]] = {
    "cpu_bound": re.compile(r"cpu[- ]bound|computes?\b.*\bin[- ]process", re.IGNORECASE),
    "io_bound": re.compile(r"\bi/?o[- ]bound|waiting on|waits on", re.IGNORECASE),
    "heap": re.compile(r"\bheap\b", re.IGNORECASE),
    "queue_wait": re.compile(r"\bqueue", re.IGNORECASE),
    "wan": re.compile(r"\bwan\b|across regions", re.IGNORECASE),
}
"""A catalogue note's traits, read from its words (never from the service's name)."""
KNOWLEDGE: dict[Trait, tuple[ProbableCause, str]] = {
    "cpu_bound": (C.downstream_dependency, "is CPU-bound, so a CPU not busy means it waits"),
    "io_bound": (C.downstream_dependency, "is I/O-bound and no local signal stands out"),
    "heap": (C.memory_pressure, "holds a large heap, where high memory means GC pauses"),
    "queue_wait": (C.queue_backlog, "latency includes queue wait and no signal stands out"),
    "wan": (C.network_degradation, "fronts the WAN and no local signal stands out"),
}
"""What each trait implies when its condition holds (policy, service catalogue)."""

SIGNAL_CAUSE = {
    "downstream": C.downstream_dependency,
    "request rate": C.traffic_surge,
    "cpu": C.local_cpu_saturation,
    "memory": C.memory_pressure,
    "queue depth": C.queue_backlog,
}
"""The signals that point at a cause when tagged HIGHER, in the order a mix the policy
does not decide is settled (the downstream call first: the others follow from it)."""


@dataclass(frozen=True)
class Support:
    """Why a cause is supported: the policy step that supports it (lower wins), its order
    within the step, and the facts, each a clause citing the report's own numbers."""

    step: Step
    order: tuple[int, ...]
    reasons: tuple[str, ...]

    def stronger(self, other: Support) -> Support:
        """The better ranked of two supports of one cause, with the reasons of both."""
        first, second = sorted((self, other), key=lambda s: (s.step, s.order))
        reasons = tuple(dict.fromkeys(first.reasons + second.reasons))
        return Support(first.step, first.order, reasons)


@dataclass(frozen=True)
class Assessment:
    """A report's facts, judged: every cause they support and those they rule out."""

    supported: dict[ProbableCause, Support]
    contradicted: frozenset[ProbableCause]
    settled: ProbableCause | None
    """The cause, when the facts support exactly one."""
    severity: Severity
    reasons: tuple[str, ...]
    """Each supporting and contradicting fact, ``cause: fact`` / ``not cause: fact``."""

    @property
    def allowed(self) -> tuple[ProbableCause, ...]:
        """The causes an answer may name, the policy's pick first."""
        return tuple(sorted(self.supported, key=lambda c: _rank(self.supported[c])))

    @property
    def chosen(self) -> ProbableCause:
        """The policy's first match: the rule engine's answer."""
        return self.allowed[0]

    @property
    def confidence(self) -> float:
        """The policy's confidence in ``chosen``."""
        return CONFIDENCE[self.supported[self.chosen].step]


def _rank(support: Support) -> tuple[int, tuple[int, ...]]:
    return support.step, support.order


def clause(signal: Signal) -> str:
    """``cpu is 97% vs usual 45% (2.2x HIGHER)``: a signal's prompt line as a clause."""
    name, value = signal.line().split(": ", 1)
    return f"{name} is {value}"


def quote(text: str) -> str:
    """Untrusted text as a reason quotes it: on one line, cut at a space (never inside a
    number), within single quotes that the text itself cannot close."""
    flat = " ".join(CONTROL_CHARS.sub(" ", text).replace("'", "\u2019").split())
    if len(flat) > QUOTE_CHARS:
        cut = flat[: QUOTE_CHARS - 1]
        flat = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "\u2026"
    return f"'{flat}'"


def higher(signal: Signal | None) -> bool:
    return signal is not None and "HIGHER" in signal.tag


def _quiet(signal: Signal | None) -> bool:
    """Measured beside its usual value and not above it."""
    return signal is not None and signal.tag in ("normal", "LOWER")


def traits(note: str | None) -> list[Trait]:
    """The traits a catalogue note states, in the order of ``TRAITS``."""
    return [trait for trait, words in TRAITS.items() if note and words.search(note)]


def resource_of(root: Candidate, report: AnomalyReport) -> Literal["cpu", "memory"]:
    """Which resource of a root ran short: the first reason that names one, else the
    report's own signals (memory only when it alone is high)."""
    for reason in root.reasons:
        lowered = reason.lower()
        if "mem" in lowered or "heap" in lowered or "oom" in lowered:
            return "memory"
        if "cpu" in lowered:
            return "cpu"
    signals = {s.name: s for s in derived_signals(report)}
    if higher(signals.get("memory")) and not higher(signals.get("cpu")):
        return "memory"
    return "cpu"


def incident_cause(report: AnomalyReport) -> ProbableCause | None:
    """The cause the report's incident names, None without one. A root in another service
    is the flagged one's dependency (its network, when that slowed the calls); a root in
    the flagged service itself is its resources, its network, or, for its own time or its
    errors, a recent deploy when there was one (else unknown)."""
    incident = report.incident
    if incident is None or incident.root_cause is None:
        return None
    root = incident.root_cause
    if root.kind == "network":
        return C.network_degradation
    if root.service != report.service:
        return C.downstream_dependency
    if root.kind == "resources":
        return (
            C.memory_pressure if resource_of(root, report) == "memory" else C.local_cpu_saturation
        )
    deployed = report.context.deployed_minutes_ago
    if deployed is not None and deployed <= DEPLOY_WINDOW_MIN:
        return C.recent_deployment
    return C.unknown


class _Facts:
    """The report's signals by name, and the support found so far."""

    def __init__(self, report: AnomalyReport, note: str | None) -> None:
        self.report = report
        self.note = note
        self.signals = derived_signals(report)
        self.by_name = {s.name: s for s in self.signals[1:]}
        count = len(report.context.downstream)
        self.downstream = self.signals[len(self.signals) - count :] if count else []
        self.support: dict[ProbableCause, Support] = {}

    def add(self, cause: ProbableCause, step: Step, order: tuple[int, ...], reason: str) -> None:
        found = Support(step, order, (reason,) if reason else ())
        known = self.support.get(cause)
        self.support[cause] = found if known is None else known.stronger(found)

    def get(self, name: str) -> Signal | None:
        return self.by_name.get(name)

    def loud(self) -> dict[str, list[Signal]]:
        """The signals tagged HIGHER that point at a cause, by kind."""
        loud: dict[str, list[Signal]] = {}
        for signal in self.signals[1:]:
            kind = "downstream" if signal.name.startswith("downstream ") else signal.name
            if kind in SIGNAL_CAUSE and higher(signal):
                loud.setdefault(kind, []).append(signal)
        return loud


def _incident(facts: _Facts) -> None:
    cause = incident_cause(facts.report)
    incident = facts.report.incident
    if cause is None or cause == C.unknown or incident is None or incident.root_cause is None:
        return
    root = incident.root_cause
    reason = f"the incident's root cause is {root.service} ({root.kind})"
    if root.reasons:
        reason += f": {' '.join(CONTROL_CHARS.sub(' ', root.reasons[0]).split())}"
    facts.add(cause, Step.INCIDENT, (0,), reason)


def _evidence(facts: _Facts) -> None:
    for line, text in enumerate(facts.report.evidence):
        for cause, words in EVIDENCE.items():
            if (match := words.search(text)) is not None:
                facts.add(
                    cause, Step.EVIDENCE, (line, match.start()), f"the evidence says {quote(text)}"
                )


def _knowledge(facts: _Facts) -> None:
    loud = facts.loud()
    cpu, memory = facts.get("cpu"), facts.get("memory")
    latency = facts.signals[0]
    slower = latency.usual is None or latency.observed > latency.usual
    for trait in traits(facts.note):
        if trait == "heap":
            high = memory is not None and memory.observed >= HEAP_PCT
            holds = slower and (high or (higher(cpu) and higher(memory)))
            holds = holds and set(loud) <= {"cpu", "memory"}
        else:
            holds = not loud
        if holds:
            cause, means = KNOWLEDGE[trait]
            facts.add(
                cause, Step.KNOWLEDGE, (0,), f"the catalogue says {facts.report.service} {means}"
            )


def _mixed_pick(facts: _Facts, loud: dict[str, list[Signal]]) -> str | None:
    """The cause the policy's step 3 gives a mix of loud signals, None if it gives none."""
    cpu, memory = facts.get("cpu"), facts.get("memory")
    if "request rate" in loud:
        return "request rate"
    if "memory" in loud and "cpu" in loud and memory and memory.observed >= MIXED_PCT:
        return "memory"
    calls = loud.get("downstream", [])
    slightly = all(s.usual and s.observed / s.usual < MIXED_DOWNSTREAM_RATIO for s in calls)
    if "cpu" in loud and cpu and cpu.observed >= MIXED_PCT and calls and slightly:
        return "cpu"
    if "queue depth" in loud and calls:
        return "downstream"
    return None


def _signals(facts: _Facts) -> None:
    loud = facts.loud()
    kinds = list(SIGNAL_CAUSE)
    pick = _mixed_pick(facts, loud) if len(loud) > 1 else None
    step = Step.MIXED if len(loud) > 1 else Step.SIGNAL
    for kind, signals in loud.items():
        order = (0,) if kind == pick else (1 + kinds.index(kind),)
        worst = max(signals, key=lambda s: s.observed / (s.usual or 1))
        facts.add(SIGNAL_CAUSE[kind], step, order, clause(worst))


def _deploy(facts: _Facts) -> None:
    deployed = facts.report.context.deployed_minutes_ago
    if deployed is not None and deployed <= DEPLOY_WINDOW_MIN:
        facts.add(
            C.recent_deployment, Step.DEPLOY, (0,), f"a deploy {number(deployed)} minutes ago"
        )


def _contradictions(facts: _Facts) -> dict[ProbableCause, str]:
    """The causes the numbers rule out, and why (a dependency, too, when the incident's
    root is the service itself); evidence, knowledge or an incident root that supports a
    cause outweighs them (the policy's first steps)."""
    found: dict[ProbableCause, str] = {}
    for name, cause in SIGNAL_CAUSE.items():
        signal = facts.get(name)
        if name == "memory" and signal is not None and signal.observed >= HEAP_PCT:
            continue
        if _quiet(signal):
            assert signal is not None
            found[cause] = clause(signal)
    calls = facts.downstream
    remote = incident_cause(facts.report) == C.downstream_dependency
    if calls and all(_quiet(s) for s in calls) and not remote:
        found[C.downstream_dependency] = (
            clause(calls[0]) if len(calls) == 1 else "every dependency is at its usual latency"
        )
    incident = facts.report.incident
    root = incident.root_cause if incident is not None else None
    if root is not None and root.service == facts.report.service:
        found[C.downstream_dependency] = f"the incident's root is {root.service} itself"
    if C.recent_deployment not in facts.support:
        found[C.recent_deployment] = "no deploy within the hour"
    return {
        cause: why
        for cause, why in found.items()
        if cause not in facts.support or facts.support[cause].step > Step.KNOWLEDGE
    }


def severity(report: AnomalyReport, cause: ProbableCause | None) -> Severity:
    """How bad the slowdown is, from its impact: how far p95 is off its usual value (>= 4x
    critical, >= 2x warning, else info, as the policy reads it), raised by the error rate
    (above usual, >= 5% warning, >= 25% critical) and by how many services the incident
    reached (3 warning, 5 critical). Without a baseline, or with the cause not identified,
    latency alone makes a warning at most: a number nobody can compare, or a cause nobody
    named, is no reason to page."""
    levels = list(Severity)
    level = Severity.warning
    if report.baseline is not None and report.baseline.p95:
        ratio = report.latency_ms.p95 / report.baseline.p95
        level = (
            Severity.critical if ratio >= 4 else Severity.warning if ratio >= 2 else Severity.info
        )
        if cause == C.unknown:
            level = min(level, Severity.warning, key=levels.index)
    errors = next((s for s in derived_signals(report) if s.name == "error rate"), None)
    loud = errors is not None and (higher(errors) or errors.usual is None)
    if errors is not None and loud and errors.observed >= ERRORS_WARNING:
        impact = Severity.critical if errors.observed >= ERRORS_CRITICAL else Severity.warning
        level = max(level, impact, key=levels.index)
    if report.incident is not None:
        reached = len({a.service for a in report.incident.affected} | {report.service})
        if reached >= BREADTH_WARNING:
            impact = Severity.critical if reached >= BREADTH_CRITICAL else Severity.warning
            level = max(level, impact, key=levels.index)
    return level


def assess(report: AnomalyReport, note: str | None = None) -> Assessment:
    """The report's facts judged by the policy; ``note`` is the catalogue's note on its
    service (``catalogue.py``), where the service knowledge comes from."""
    facts = _Facts(report, note)
    _incident(facts)
    _evidence(facts)
    _knowledge(facts)
    _signals(facts)
    _deploy(facts)
    against = _contradictions(facts)
    supported = {c: s for c, s in facts.support.items() if c not in against}
    if not supported:
        nothing = "no signal, evidence or recent deploy stands out"
        supported = {C.unknown: Support(Step.NOTHING, (0,), (nothing,))}
    settled = next(iter(supported)) if len(supported) == 1 else None
    reasons = [f"{c.value}: {r}" for c, s in supported.items() for r in s.reasons]
    reasons += [f"not {c.value}: {why}" for c, why in against.items()]
    first = min(supported, key=lambda c: _rank(supported[c]))
    return Assessment(
        supported=supported,
        contradicted=frozenset(against),
        settled=settled,
        severity=severity(report, first),
        reasons=tuple(reasons),
    )

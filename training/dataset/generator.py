"""Seeded generator of realistic anomaly scenarios, each with the diagnosis it deserves.

Every scenario follows ``policy.md``: a recipe sets up the signals (or the evidence, or the
service) that decide the cause, adds background noise that does not, and writes the answer
the way a good on-call note reads: the cause first, the deciding facts quoted with the
prompt's own numbers, actions naming the service and the dependency. Recipes rotate, so
any ``n`` is balanced across causes and patterns.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from service.contract import AnomalyReport, Diagnosis, ProbableCause
from service.playbook import ACTIONS
from service.prompt import derived_signals
from service.rules import severity_of
from training.dataset.texts import TRAINING, TRAITS, Wording, explanation_for, fill

C = ProbableCause

GENERIC = [
    ("orders-api", ["POST /orders", "GET /orders/{id}"], ("orders-db", "INSERT orders")),
    ("inventory", ["GET /stock/{sku}", "PUT /stock"], ("inventory-db", "SELECT stock")),
    ("user-profile", ["GET /users/{id}", "PATCH /users/{id}"], ("users-db", "SELECT users")),
    ("catalog", ["GET /products", "GET /products/{id}"], ("catalog-cache", "GET")),
    ("billing", ["POST /invoices", "GET /invoices/{id}"], ("tax-service", "POST /quote")),
    ("auth", ["POST /token", "GET /userinfo"], ("ldap", "bind")),
    ("ledger", ["POST /entries", "GET /balance"], ("ledger-db", "UPDATE accounts")),
    ("pricing", ["GET /price/{sku}", "POST /price/batch"], ("rules-engine", "POST /evaluate")),
    ("notifications", ["POST /notify", "consume notifications"], ("sms-gateway", "POST /send")),
    ("media-resizer", ["POST /resize", "GET /thumb/{id}"], ("object-store", "GET object")),
    ("shipping", ["POST /labels", "GET /rates"], ("carrier-api", "POST /shipments")),
    ("recommendations", ["GET /recs/{user}", "POST /feedback"], ("feature-store", "GET")),
]
KNOWN = {
    "exchange-api": (["GET /quote", "POST /convert"], ("fx-provider", "GET /rates"), "cpu_bound"),
    "checkout": (
        ["POST /checkout", "POST /cart/pay"],
        ("payments-db", "SELECT orders"),
        "io_bound",
    ),
    "search-api": (["GET /search", "GET /suggest"], ("search-index", "query"), "heap"),
    "email-worker": (["consume emails", "send email"], ("smtp-relay", "SEND"), "queue_wait"),
    "edge-gateway": (["GET /api/*", "POST /api/*"], ("orders-api", "POST /orders"), "wan"),
}
"""Services of the hand-written cases, with their catalogue trait (``texts.TRAITS``). They
also come up in the other recipes, without a note: the trait is read from the prompt's
catalogue note, never from the name."""
SERVICES = GENERIC + [(name, ops, dep) for name, (ops, dep, _) in KNOWN.items()]
OTHER_SERVICE_WITH_TRAIT = 0.5
"""How often a knowledge scenario gives the trait to another service than its usual one."""
NOTE_BESIDE_SIGNALS = 0.25
"""How often a clear, mixed or evidence scenario carries a catalogue note too: a trait
explains quiet signals, it does not outweigh loud ones or decisive evidence (policy.md)."""
BUSY_CPU_NOTE = 0.4
"""How often a CPU-saturation scenario carries a CPU-bound note, which a busy CPU outweighs
(idle CPU means waiting, so a busy one is the cause). Without these a model read "CPU-bound"
as "a dependency is slow" whatever the CPU did (the demo's checkout)."""


@dataclass
class Draft:
    """A scenario being built: the service, its facts, and the cause it must lead to."""

    rng: random.Random
    service: str
    operation: str
    dependency: tuple[str, str]
    cause: ProbableCause
    pattern: str
    context: dict = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    confidence: float = 0.9
    trait: str | None = None
    note: str | None = None
    """The service catalogue's note on the service, quoted in the prompt."""
    wording: Wording = TRAINING
    """The evidence texts drawn from: training's, or the held-out file's own."""

    @property
    def knowledge(self) -> str | None:
        """What the trait implies, as the answer states it."""
        if self.trait is None:
            return None
        return TRAITS[self.trait][1].format(service=self.service, dep=self.dependency[0])

    def pct(self, name: str, low: int, high: int, usual: tuple[int, int] = (25, 55)) -> None:
        self.context[f"{name}_pct"] = self.rng.randint(low, high)
        self.context[f"{name}_baseline_pct"] = self.rng.randint(*usual)

    def quiet_pct(self, name: str) -> None:
        usual = self.rng.randint(25, 60)
        self.context[f"{name}_pct"] = max(1, usual + self.rng.randint(-6, 8))
        self.context[f"{name}_baseline_pct"] = usual

    def rate(self, factor: tuple[float, float]) -> None:
        usual = self.rng.choice([40, 80, 120, 200, 350, 600, 900])
        self.context["request_rate"] = round(usual * self.rng.uniform(*factor))
        self.context["request_rate_baseline"] = usual

    def queue(self, factor: tuple[float, float]) -> None:
        usual = self.rng.randint(20, 200)
        self.context["queue_depth"] = round(usual * self.rng.uniform(*factor))
        self.context["queue_depth_baseline"] = usual

    def downstream(self, factor: tuple[float, float]) -> None:
        service, operation = self.dependency
        usual = self.rng.choice([12, 20, 35, 60, 90, 150])
        self.context.setdefault("downstream", []).append(
            {
                "service": service,
                "operation": operation,
                "p95_ms": round(usual * self.rng.uniform(*factor)),
                "baseline_p95_ms": usual,
            }
        )

    def consequence(self, *names: str) -> None:
        """Half the time, one loud signal that follows from the cause (memory holding a slow
        query's rows, a backlog behind starved workers, dependency calls slowed by the
        network): the evidence still decides (policy.md, step 1). Without these a model
        read an evidence case by its loudest number (the hand-written misses of an early
        adapter)."""
        if self.rng.random() >= 0.5:
            return
        name = self.rng.choice(names)
        if name == "cpu":
            self.pct("cpu", 86, 97)
        elif name == "memory":
            self.pct("memory", 68, 84, (30, 45))
        elif name == "queue":
            self.queue((2.5, 6))
        elif name == "downstream":
            self.downstream((2.5, 6))
        else:
            self.context["error_rate"] = round(self.rng.uniform(0.03, 0.12), 3)
            self.context["error_rate_baseline"] = 0.002

    def background(self, *skip: str) -> None:
        """Some quiet signals, as a real report has: they must not decide."""
        for name in ("cpu", "memory"):
            if name not in skip and f"{name}_pct" not in self.context and self.rng.random() < 0.7:
                self.quiet_pct(name)
        if "rate" not in skip and "request_rate" not in self.context and self.rng.random() < 0.6:
            self.rate((0.9, 1.15))
        if (
            "downstream" not in skip
            and "downstream" not in self.context
            and (self.rng.random() < 0.4)
        ):
            self.downstream((0.9, 1.2))
        if "errors" not in skip and "error_rate" not in self.context and self.rng.random() < 0.3:
            usual = self.rng.choice([0.001, 0.002, 0.005])
            self.context["error_rate"] = usual
            self.context["error_rate_baseline"] = usual
        if self.rng.random() < 0.2 and "deploy" not in skip:
            self.context["deployed_minutes_ago"] = self.rng.randint(240, 4000)
        if self.rng.random() < 0.25:
            self.evidence.append(self.rng.choice(self.wording.noise))

    def say(self) -> None:
        """Put decisive evidence of the cause first among the evidence texts."""
        template = self.rng.choice(self.wording.decisive[self.cause])
        text = fill(template, self.dependency[0], self.rng)
        self.evidence.insert(0, text)


Recipe = Callable[[Draft], None]


def cpu_clear(d: Draft) -> None:
    d.pct("cpu", 86, 99)
    d.background("cpu")


def cpu_mixed(d: Draft) -> None:
    d.pct("cpu", 91, 99)
    d.downstream((1.25, 1.7))
    d.background("cpu", "downstream", "rate")
    d.confidence = 0.75


def cpu_evidence(d: Draft) -> None:
    d.quiet_pct("cpu")
    d.consequence("queue")
    d.say()
    d.background("cpu")


def downstream_clear(d: Draft) -> None:
    d.downstream((2.5, 12))
    d.background("downstream")


def downstream_mixed(d: Draft) -> None:
    d.downstream((2.5, 8))
    d.queue((2.5, 8))
    d.background("downstream")
    d.confidence = 0.75


def downstream_evidence(d: Draft) -> None:
    d.consequence("memory", "queue", "error")
    d.say()
    d.background("downstream")


def memory_clear(d: Draft) -> None:
    d.pct("memory", 86, 98, (35, 55))
    d.background("memory")


def memory_mixed(d: Draft) -> None:
    d.pct("memory", 91, 99, (40, 58))
    d.pct("cpu", 80, 97, (25, 45))
    d.background("memory", "cpu", "rate")
    d.confidence = 0.75


def memory_evidence(d: Draft) -> None:
    d.consequence("cpu")
    d.say()
    d.background("memory", "cpu")


def surge_clear(d: Draft) -> None:
    d.rate((2.2, 5))
    d.background("rate", "cpu")


def surge_mixed(d: Draft) -> None:
    d.rate((1.8, 4))
    d.pct("cpu", 86, 98)
    d.background("rate", "cpu")
    d.confidence = 0.75


def surge_evidence(d: Draft) -> None:
    d.rate((1.0, 1.3))
    d.consequence("cpu")
    d.say()
    d.background("rate")


def queue_clear(d: Draft) -> None:
    d.queue((3, 20))
    d.background("downstream")


def queue_evidence(d: Draft) -> None:
    d.consequence("memory", "cpu")
    d.say()
    d.background()


def deploy_quiet(d: Draft) -> None:
    d.context["deployed_minutes_ago"] = d.rng.randint(3, 55)
    d.background("deploy")
    d.confidence = 0.6


def deploy_evidence(d: Draft) -> None:
    d.consequence("cpu")
    d.context["deployed_minutes_ago"] = d.rng.randint(2, 40)
    d.say()
    d.background("deploy", "cpu")


def network_evidence(d: Draft) -> None:
    d.consequence("error", "downstream")
    d.say()
    d.background("errors", "downstream")


def unknown_quiet(d: Draft) -> None:
    d.background("deploy")
    d.confidence = 0.3


def knowledge(d: Draft) -> None:
    """A catalogue service whose quiet (or misleading) signals only its traits explain."""
    if d.trait == "cpu_bound":
        d.pct("cpu", 8, 20, (40, 60))  # CPU-bound, yet idle: it waits on its dependency
        d.background("cpu", "downstream")
    elif d.trait == "heap":
        d.context["memory_pct"] = d.rng.randint(80, 89)
        d.context["memory_baseline_pct"] = d.context["memory_pct"] - d.rng.randint(4, 12)
        d.background("memory", "cpu")
    else:
        d.background("downstream", "rate")
    d.confidence = 0.75


NONE: frozenset[str] = frozenset()


class Entry(NamedTuple):
    """One way a scenario is drawn."""

    cause: ProbableCause
    pattern: str
    recipe: Recipe
    service: str | None
    """The catalogue service whose traits the scenario needs, or None for any service."""
    abnormal: frozenset[str] | None
    """The signals the prompt must tag abnormal. None: the recipe may or may not add one
    misleading signal (``Draft.consequence``), which the evidence outweighs."""


RECIPES: tuple[Entry, ...] = (
    Entry(C.local_cpu_saturation, "clear", cpu_clear, None, frozenset({"cpu"})),
    Entry(C.local_cpu_saturation, "mixed", cpu_mixed, None, frozenset({"cpu", "downstream"})),
    Entry(C.local_cpu_saturation, "evidence", cpu_evidence, None, None),
    Entry(C.downstream_dependency, "clear", downstream_clear, None, frozenset({"downstream"})),
    Entry(
        C.downstream_dependency, "mixed", downstream_mixed, None, frozenset({"downstream", "queue"})
    ),
    Entry(C.downstream_dependency, "evidence", downstream_evidence, None, None),
    Entry(
        C.downstream_dependency, "service_knowledge", knowledge, "exchange-api", frozenset({"cpu"})
    ),
    Entry(C.downstream_dependency, "service_knowledge", knowledge, "checkout", NONE),
    Entry(C.memory_pressure, "clear", memory_clear, None, frozenset({"memory"})),
    Entry(C.memory_pressure, "mixed", memory_mixed, None, frozenset({"memory", "cpu"})),
    Entry(C.memory_pressure, "evidence", memory_evidence, None, None),
    Entry(C.memory_pressure, "service_knowledge", knowledge, "search-api", NONE),
    Entry(C.traffic_surge, "clear", surge_clear, None, frozenset({"request"})),
    Entry(C.traffic_surge, "mixed", surge_mixed, None, frozenset({"request", "cpu"})),
    Entry(C.traffic_surge, "evidence", surge_evidence, None, None),
    Entry(C.queue_backlog, "clear", queue_clear, None, frozenset({"queue"})),
    Entry(C.queue_backlog, "evidence", queue_evidence, None, None),
    Entry(C.queue_backlog, "service_knowledge", knowledge, "email-worker", NONE),
    Entry(C.recent_deployment, "quiet", deploy_quiet, None, NONE),
    Entry(C.recent_deployment, "evidence", deploy_evidence, None, None),
    Entry(C.network_degradation, "evidence", network_evidence, None, None),
    Entry(C.network_degradation, "service_knowledge", knowledge, "edge-gateway", NONE),
    Entry(C.unknown, "quiet", unknown_quiet, None, NONE),
    Entry(C.unknown, "quiet", unknown_quiet, None, NONE),
)


@dataclass(frozen=True)
class Scenario:
    id: str
    pattern: str
    report: AnomalyReport
    answer: Diagnosis
    note: str | None = None


def _draft(rng: random.Random, cause: ProbableCause, pattern: str, service: str | None) -> Draft:
    """A draft on a random service, or (``service``: a KNOWN one) on a service with that
    one's trait and a catalogue note saying so."""
    if service is None:
        name, operations, dependency = rng.choice(SERVICES)
        d = Draft(rng, name, rng.choice(operations), dependency, cause, pattern)
        if pattern not in ("clear", "mixed", "evidence"):
            return d
        if cause == C.local_cpu_saturation and rng.random() < BUSY_CPU_NOTE:
            trait: str | None = "cpu_bound"
        elif rng.random() < NOTE_BESIDE_SIGNALS:
            trait = rng.choice(list(TRAITS))
        else:
            trait = None
        if trait is not None:
            notes, _ = TRAITS[trait]
            d.note = rng.choice(notes).format(service=name, dep=dependency[0])
        return d
    operations, dependency, trait = KNOWN[service]
    if rng.random() < OTHER_SERVICE_WITH_TRAIT:
        service, operations, dependency = rng.choice(GENERIC)
    d = Draft(rng, service, rng.choice(operations), dependency, cause, pattern, trait=trait)
    d.note = rng.choice(TRAITS[trait][0]).format(service=service, dep=dependency[0])
    return d


def _report(rng: random.Random, d: Draft, report_id: str) -> AnomalyReport:
    usual_p95 = rng.choice([25, 40, 60, 85, 120, 180, 250, 400, 650])
    ratio = rng.choice([1.6, 1.9, 2.4, 3.1, 3.8, 4.5, 6.2, 8.5]) * rng.uniform(0.97, 1.03)
    p95 = round(usual_p95 * ratio)
    start = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(hours=rng.randrange(0, 24 * 21))
    hour = start.weekday() * 24 + start.hour
    count = rng.randint(300, 40000)
    return AnomalyReport.model_validate(
        {
            "id": report_id,
            "service": d.service,
            "operation": d.operation,
            "window": {
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=5)).isoformat(),
                "count": count,
            },
            "latency_ms": {"p50": round(p95 * 0.45), "p95": p95, "p99": round(p95 * 1.6)},
            "baseline": {
                "hour_of_week": hour,
                "p50": round(usual_p95 * 0.45),
                "p95": usual_p95,
                "samples": rng.randint(6, 40),
                "level": "hour_of_week",
            },
            "deviation": {"ratio": round(p95 / usual_p95, 2), "score": 0.99},
            "context": d.context,
            "evidence": d.evidence[:8],
        }
    )


def _abnormal(report: AnomalyReport) -> frozenset[str]:
    """First words of the context signals the prompt tags abnormal (HIGHER or LOWER)."""
    return frozenset(s.name.split(" ")[0] for s in derived_signals(report)[1:] if s.abnormal)


def generate(
    n: int, seed: int, recipes: tuple[Entry, ...] = RECIPES, wording: Wording = TRAINING
) -> list[Scenario]:
    """``n`` scenarios cycling through ``recipes`` (a recipe listed twice comes twice as
    often), their evidence drawn from ``wording``."""
    rng = random.Random(seed)
    scenarios: list[Scenario] = []
    while len(scenarios) < n:
        cause, pattern, recipe, service, expect = recipes[len(scenarios) % len(recipes)]
        scenario_id = f"gen-{seed}-{len(scenarios):05d}"
        for _ in range(200):
            d = _draft(rng, cause, pattern, service)
            d.wording = wording
            recipe(d)
            report = _report(rng, d, scenario_id)
            abnormal = _abnormal(report)
            if abnormal == expect or (expect is None and len(abnormal) <= 1):
                break
        else:  # pragma: no cover - every recipe meets its tags within a few tries
            raise RuntimeError(f"recipe {recipe.__name__} never produced its signals")
        answer = answer_for(report, d)
        scenarios.append(Scenario(scenario_id, pattern, report, answer, d.note))
    return scenarios


def answer_for(report: AnomalyReport, d: Draft) -> Diagnosis:
    summary, explanation = explanation_for(report, d.cause, d.pattern, d.knowledge)
    choices = d.rng.sample(ACTIONS[d.cause], k=2)
    actions = [a.format(service=d.service, dep=d.dependency[0], op=d.operation) for a in choices]
    return Diagnosis(
        probable_cause=d.cause,
        severity=severity_of(report, d.note),
        confidence=d.confidence,
        summary=summary,
        explanation=explanation,
        recommended_actions=actions,
    )

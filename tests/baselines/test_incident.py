"""Incidents across a call graph, through the in-process detector, with traces whose spans
link parent to child as a tracer writes them: a fault deep in a chain of services is one
incident whose root cause is the faulty service, however many callers it slows, whatever
kinds the tracer set; and odd graphs (cycles, orphans, skewed clocks, thousands of
services) neither crash nor stall the detector."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from baselines.callgraph import CallGraph
from baselines.detect import Detector, DetectorConfig
from baselines.incident import IncidentTracker, OpenIncident, Signal, SignalKind
from baselines.trace_sample import TraceSample
from service.contract import AnomalyReport, Candidate, Incident, LogRecord, SpanEvent

A, B, C, D = "frontend", "checkout", "payment", "ledger"
X, Y = "search", "catalog"
CHAIN = (A, B, C, D)
START = datetime(2026, 11, 16, 18, tzinfo=UTC)
"""A Monday evening. The steady traffic crosses midnight, so the fault is judged against
score distributions frozen when the day began, as on any day after a series' first
(``Habits.begin_hour``)."""
STEADY_MINUTES = 390
"""Steady minutes before a fault: the fault starts at 00:30."""
FAULT_MINUTES = 15
AFTER_MINUTES = 10
PER_MINUTE = 12
"""Traces a minute: a few above the detector's ``min_window_count``."""
OWN_MS = 12.0
WIRE_MS = 1.5
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Fault:
    """What changes while a fault lasts."""

    own: dict[str, float] = field(default_factory=dict)
    """Service -> factor on its own time."""
    wire: dict[tuple[str, str], float] = field(default_factory=dict)
    """(caller, callee) -> milliseconds added on the network in front of the callee."""


QUIET = Fault()


@dataclass(frozen=True)
class Topology:
    chains: tuple[tuple[str, ...], ...]
    """Each chain's services, its entry first; each calls the next."""
    spanless: frozenset[str] = frozenset()
    """Services that emit no spans: only their callers' client spans show them."""
    kinds: bool = True
    """False: every span is ``internal``, as from a tracer that sets no kind."""


class Tracer:
    """Whole traces down a chain, with trace, span and parent ids as a tracer writes them.
    Each span's timestamp is its end; a minute's spans arrive in the order they end (a
    child before its parent)."""

    def __init__(self, topology: Topology, seed: int = 0) -> None:
        self.topology = topology
        self.rng = np.random.default_rng(seed)
        self.ids = itertools.count(1)

    def trace(self, chain: Sequence[str], begin: datetime, fault: Fault) -> list[SpanEvent]:
        topology, trace_id = self.topology, f"{next(self.ids):032x}"
        spans: list[SpanEvent] = []

        def emit(
            service: str,
            operation: str,
            kind: str,
            start_ms: float,
            duration_ms: float,
            ids: tuple[str, str | None],
            peer: str | None = None,
        ) -> None:
            if service in topology.spanless:
                return
            spans.append(
                SpanEvent.model_validate(
                    {
                        "service": service,
                        "operation": operation,
                        "kind": kind if topology.kinds else "internal",
                        "peer_service": peer if topology.kinds else None,
                        "duration_ms": duration_ms,
                        "timestamp": begin + timedelta(milliseconds=start_ms + duration_ms),
                        "trace_id": trace_id,
                        "span_id": ids[0],
                        "parent_span_id": ids[1],
                    }
                )
            )

        def serve(depth: int, start_ms: float, parent: str | None) -> float:
            """The entry span of ``chain[depth]`` and all under it; its duration."""
            service = chain[depth]
            own = float(self.rng.lognormal(np.log(OWN_MS), 0.15)) * fault.own.get(service, 1.0)
            entry, duration = f"{next(self.ids):016x}", own
            if depth + 1 < len(chain):
                callee = chain[depth + 1]
                wire = float(self.rng.lognormal(np.log(WIRE_MS), 0.15))
                wire += fault.wire.get((service, callee), 0.0)
                call, call_start = f"{next(self.ids):016x}", start_ms + own / 2
                inner = serve(depth + 1, call_start + wire / 2, call)
                ids = (call, entry)
                emit(service, f"call {callee}", "client", call_start, inner + wire, ids, callee)
                duration += inner + wire
            emit(service, f"serve {service}", "server", start_ms, duration, (entry, parent))
            return duration

        serve(0, 0.0, None)
        return spans

    def minute(self, at: datetime, fault: Fault) -> list[SpanEvent]:
        """A minute of traffic on every chain, in the order the spans end."""
        events = [
            span
            for i in range(PER_MINUTE)
            for chain in self.topology.chains
            for span in self.trace(chain, at + timedelta(seconds=50 * i / PER_MINUTE), fault)
        ]
        return sorted(events, key=lambda e: e.timestamp)


Extra = Callable[[int, datetime, bool], list[SpanEvent | LogRecord]]
"""More events of a minute: (minute index, its start, whether the fault is on)."""


def minutes(
    topology: Topology, fault: Fault, seed: int = 0, extra: Extra | None = None
) -> list[list[SpanEvent | LogRecord]]:
    """Steady traffic, the fault for ``FAULT_MINUTES``, steady again: one list a minute."""
    tracer = Tracer(topology, seed)
    out: list[list[SpanEvent | LogRecord]] = []
    for m in range(STEADY_MINUTES + FAULT_MINUTES + AFTER_MINUTES):
        at = START + timedelta(minutes=m)
        faulty = STEADY_MINUTES <= m < STEADY_MINUTES + FAULT_MINUTES
        events: list[SpanEvent | LogRecord] = list(tracer.minute(at, fault if faulty else QUIET))
        if extra is not None:
            events = sorted([*events, *extra(m, at, faulty)], key=lambda e: e.timestamp)
        out.append(events)
    return out


def scenario(
    topology: Topology, fault: Fault, seed: int = 0, extra: Extra | None = None
) -> tuple[list[AnomalyReport], Detector]:
    """The reports of a whole run through one detector, and the detector."""
    detector = Detector(DetectorConfig(window_seconds=60))
    reports: list[AnomalyReport] = []
    for m, events in enumerate(minutes(topology, fault, seed, extra)):
        now = (START + timedelta(minutes=m + 1)).timestamp()
        reports += detector.observe(events, now=now)
    return reports + detector.flush(), detector


def incidents(reports: list[AnomalyReport]) -> dict[str, list[Incident]]:
    """Each incident's revisions, in the order reported; every report carries one, and
    its id is the incident's, suffixed by the revision after the first."""
    seen: dict[str, list[Incident]] = {}
    for report in reports:
        incident = report.incident
        assert incident is not None, report
        expected = incident.id if incident.revision == 0 else f"{incident.id}-{incident.revision}"
        assert report.id == expected
        seen.setdefault(incident.id, []).append(incident)
    for revisions in seen.values():
        assert [i.revision for i in revisions] == list(range(len(revisions)))
    return seen


def root_of(incident: Incident) -> Candidate:
    assert incident.root_cause is not None, incident
    return incident.root_cause


def fault_window(report: AnomalyReport) -> bool:
    fault_start = START + timedelta(minutes=STEADY_MINUTES)
    assert report.window is not None
    return fault_start <= report.window.start < fault_start + timedelta(minutes=FAULT_MINUTES)


def assert_leaf_root(reports: list[AnomalyReport]) -> Incident:
    """Scenario (a): one incident, its root the slow leaf in every revision."""
    assert reports and all(fault_window(r) for r in reports)
    ((_, revisions),) = incidents(reports).items()
    assert len(reports) == len(revisions) <= len(CHAIN)  # a revision only when it grows
    for incident in revisions:
        root = incident.root_cause
        assert root is not None and (root.service, root.kind) == (D, "own_time"), root
        assert 1 <= len(incident.candidates) <= 3 and incident.candidates[0] == root
        scores = [c.score for c in incident.candidates]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
        assert incident.path[-1] == D and incident.path == list(
            CHAIN[CHAIN.index(incident.path[0]) :]
        )
    final = revisions[-1]
    assert final.path == list(CHAIN)
    assert {s.service for s in final.affected} == set(CHAIN)
    assert reports[0].service == A  # led by what users feel: the entry of the chain
    return final


# --------------------------------------------------------------------------- (a) to (e)


def test_a_slow_leaf_is_one_incident_whose_root_is_the_leaf() -> None:
    reports, _ = scenario(Topology((CHAIN,)), Fault(own={D: 10.0}))
    final = assert_leaf_root(reports)
    assert {c.service for c in final.candidates} <= set(CHAIN)
    assert any("serve ledger" in reason for reason in root_of(final).reasons)


def test_the_slow_leaf_is_not_also_blamed_for_the_network_in_front_of_it() -> None:
    reports, _ = scenario(Topology((CHAIN,)), Fault(own={D: 10.0}))
    ((_, revisions),) = incidents(reports).items()
    for incident in revisions:
        (leaf,) = [s for s in incident.affected if s.service == D]
        assert leaf.signals == ["own_time"]


def test_a_slow_network_in_front_of_a_service_roots_the_incident_there() -> None:
    """The wire from checkout to payment gains 200 ms; payment's own spans stay flat."""
    reports, _ = scenario(Topology((CHAIN,)), Fault(wire={(B, C): 200.0}))
    assert reports and all(fault_window(r) for r in reports)
    ((_, revisions),) = incidents(reports).items()
    for incident in revisions:
        root = incident.root_cause
        assert root is not None and (root.service, root.kind) == (C, "network"), root
        assert incident.candidates[0] == root
        assert incident.path == [A, B, C]
        assert D not in {s.service for s in incident.affected}  # below the fault, nothing
    assert any("wait beyond its work" in r for r in root_of(revisions[-1]).reasons)


def test_a_delay_on_a_pods_every_packet_roots_the_incident_at_that_pod() -> None:
    """A network delay injected into payment's pod delays every packet it sends: its answers
    to checkout and its requests to ledger each gain 200 ms. Both wires slow, but the
    incident settles on payment: its own time rose with its slow requests, and ledger's own
    spans stay flat. (Its first revision may name ledger, below both wires, before payment's
    own time alerts.)"""
    reports, _ = scenario(Topology((CHAIN,)), Fault(wire={(B, C): 200.0, (C, D): 200.0}))
    assert reports and all(fault_window(r) for r in reports)
    ((_, revisions),) = incidents(reports).items()
    root = revisions[-1].root_cause
    assert root is not None and (root.service, root.kind) == (C, "network"), revisions[-1]


def test_two_independent_chains_slowing_at_once_are_two_incidents() -> None:
    """Both leaves slow in the same minute: two incidents, each rooted at its leaf and
    holding only its own chain. (A first revision may name the chain's entry: the leaf's
    series can alert a window after its caller's; the next revision moves the root.)"""
    reports, _ = scenario(Topology(((A, B), (X, Y))), Fault(own={B: 10.0, Y: 10.0}))
    assert reports and all(fault_window(r) for r in reports)
    found = incidents(reports)
    assert len(found) == 2
    finals = {root_of(revisions[-1]).service: revisions[-1] for revisions in found.values()}
    assert set(finals) == {B, Y}
    assert {s.service for s in finals[B].affected} == {A, B}
    assert {s.service for s in finals[Y].affected} == {X, Y}
    assert finals[B].path == [A, B] and finals[Y].path == [X, Y]


def test_a_leaf_without_spans_is_the_root_when_its_callers_calls_to_it_slow() -> None:
    """ledger emits no spans; payment's client spans to it slow 10x with ledger's time."""
    reports, detector = scenario(Topology((CHAIN,), spanless=frozenset({D})), Fault(own={D: 10.0}))
    assert (C, D) in detector.graph.edges  # learnt from payment's client spans alone
    ((_, revisions),) = incidents(reports).items()
    final = revisions[-1]
    assert final.root_cause is not None and final.root_cause.service == D, final.candidates
    assert final.root_cause.kind == "own_time"
    assert final.path == list(CHAIN)


def test_spans_without_kinds_are_resolved_and_the_leaf_is_still_the_root() -> None:
    """The tracer sets no kinds (every span ``internal``, no peer names): entries and calls
    are inferred from the services of parents and children, and (a) holds as it is."""
    reports, detector = scenario(Topology((CHAIN,), kinds=False), Fault(own={D: 10.0}))
    assert set(detector.graph.edges) == {(A, B), (B, C), (C, D)}
    assert detector.stats.unlinked == 0
    for service, operation, kind in [
        (A, "serve frontend", "server"),
        (A, "call checkout", "client"),
        (C, "call ledger", "client"),
        (D, "serve ledger", "server"),
    ]:
        series = detector.export(service)[0]
        assert any(k[1] == operation and k[2] == kind for k in series), (service, series.keys())
    assert_leaf_root(reports)


# --------------------------------------------------------------------------- (f) errors

ERROR_TEMPLATE = "ledger write rejected: journal segment <*> is read-only"


def served(m: int, at: datetime) -> list[SpanEvent | LogRecord]:
    """A few INFO lines a minute of every service."""
    return [
        LogRecord(
            service=service,
            timestamp=at + timedelta(seconds=5 + 15 * i),
            body=f"served request {m}-{i}",
            template="served request <*>",
        )
        for service in CHAIN
        for i in range(3)
    ]


def ledger_logs(m: int, at: datetime, faulty: bool) -> list[SpanEvent | LogRecord]:
    """Every service logs a few INFO lines a minute, the ledger a known error now and
    then; in the fault the ledger logs errors of a template it never logged."""
    lines = served(m, at)
    if m % 10 == 0:
        lines.append(
            LogRecord(
                service=D,
                timestamp=at + timedelta(seconds=30),
                severity="error",
                body=f"retrying journal flush {m}",
                template="retrying journal flush <*>",
            )
        )
    if faulty:
        lines += ledger_errors(at, ERROR_TEMPLATE, 8)
    return lines


def ledger_errors(at: datetime, template: str, first_s: float) -> list[LogRecord]:
    """Four ledger error lines of ``template`` (its field 880-883), 10 s apart from
    ``first_s`` into the minute."""
    return [
        LogRecord(
            service=D,
            timestamp=at + timedelta(seconds=first_s + 10 * i),
            severity="error",
            body=template.replace("<*>", f"88{i}"),
            template=template,
        )
        for i in range(4)
    ]


def test_never_seen_error_lines_open_an_incident_rooted_where_they_are_logged() -> None:
    reports, detector = scenario(Topology((CHAIN,)), QUIET, extra=ledger_logs)
    assert detector.stats.logs > 0
    (report,) = reports  # the known, rare error before it never alerted
    assert fault_window(report) and report.service == D
    ((_, (incident,)),) = incidents(reports).items()
    root = incident.root_cause
    assert root is not None and (root.service, root.kind) == (D, "errors"), root
    assert f"{D}: ledger write rejected: journal segment 880 is read-only" in root.evidence
    assert any("not seen while it was healthy" in reason for reason in root.reasons)
    assert [(s.service, s.signals) for s in incident.affected] == [(D, ["errors"])]
    assert any("journal segment" in text for text in report.evidence)
    # it started with its first error line, 8 s into the window, not at the window's start
    assert report.window is not None
    assert incident.started == report.window.start + timedelta(seconds=8)


LEARN_MINUTES = 60


def errors_while_learning(m: int, at: datetime, faulty: bool) -> list[SpanEvent | LogRecord]:
    """The ledger's read-only errors (``ledger_logs``) in minutes 20-44, inside a 60-minute
    learning period, and again in the fault, where it also logs a template never seen."""
    lines = ledger_logs(m, at, faulty or 20 <= m < 45)
    if faulty:
        lines += ledger_errors(at, "ledger disk full on volume <*>", 12)
    return lines


def learning_run(
    learn_minutes: float, restart_at: int | None = None
) -> tuple[list[AnomalyReport], Detector]:
    """``errors_while_learning`` through a detector that learns for ``learn_minutes`` first;
    ``restart_at``: a minute at which its stream state goes through JSON into a new one."""
    config = DetectorConfig(window_seconds=60, learn_seconds=60.0 * learn_minutes)
    detector = Detector(config)
    reports: list[AnomalyReport] = []
    chain = Topology((CHAIN,))
    for m, events in enumerate(minutes(chain, QUIET, extra=errors_while_learning)):
        if m == restart_at:
            state = json.loads(json.dumps(detector.stream_state()))
            detector = Detector(config)
            detector.load_stream_state(state)
        reports += detector.observe(events, now=(START + timedelta(minutes=m + 1)).timestamp())
    return reports + detector.flush(), detector


def test_errors_seen_while_learning_alert_nothing_and_are_familiar_after() -> None:
    """A first install beside a running system (``WHYSLOW_LEARN_MINUTES``): the errors the
    ledger logs while the detector learns open nothing, then or when they come back; a
    template never seen still opens an incident. Without the period, the same errors open
    one when first seen."""
    reports, detector = learning_run(LEARN_MINUTES)
    assert detector.stats.windows_learning == LEARN_MINUTES
    (report,) = reports
    assert fault_window(report) and report.service == D
    assert any("disk full" in text for text in report.evidence)
    unlearnt, _ = learning_run(0)
    assert any(not fault_window(r) and r.service == D for r in unlearnt)


def test_a_restart_in_the_learning_period_learns_on_until_its_end() -> None:
    """The period's end is part of the stream state a restarted consumer goes on from."""
    reports, _ = learning_run(LEARN_MINUTES, restart_at=30)
    assert [r.service for r in reports] == [D] and fault_window(reports[0])


def requests_failing_deeper(shared: bool, every: bool = False) -> Extra:
    """Every service logs a few INFO lines a minute, and C four errors of a known template
    in requests of its own (``every``: one in every request it serves). In the fault, B
    fails in four requests with an error it never logged, and C logs two errors more than
    usual (not ``every``), too few to flag it: four of its errors are in the requests B
    fails in (``shared``) or all are in others."""

    def lines(m: int, at: datetime, faulty: bool) -> list[SpanEvent | LogRecord]:
        out = served(m, at)
        failing = [f"{m:016x}{i:016x}" for i in range(4)]
        own = [f"c{m:015x}{i:016x}" for i in range(PER_MINUTE)]
        if every:
            traced = failing + own[4:] if faulty and shared else own
        elif faulty:
            traced = failing + own[:2] if shared else own[:6]
        else:
            traced = own[:4]

        def errors(service: str, second: int, template: str, traces: list[str]) -> None:
            out.extend(
                LogRecord(
                    service=service,
                    timestamp=at + timedelta(seconds=second + 4 * i),
                    severity="error",
                    body=template.replace("<*>", f"{m}-{i}"),
                    template=template,
                    trace_id=trace,
                )
                for i, trace in enumerate(traces)
            )

        errors(C, 8, "stale cache entry <*>", traced)
        errors(B, 9, "order <*> rejected: inconsistent totals", failing if faulty else [])
        return out

    return lines


@pytest.mark.parametrize(
    ("shared", "every", "root"), [(True, False, C), (False, False, B), (True, True, B)]
)
def test_a_service_failing_in_the_requests_its_caller_fails_in_is_the_root(
    shared: bool, every: bool, root: str
) -> None:
    """B fails with an error it never logged. C, which B calls, logs a few more errors than
    usual: in the very requests B fails in, C is where they failed first (the root, B's
    errors explained by it, its own lines quoted); in other requests, B fails on its own.
    A C that logs an error in every request it serves, as always, is no evidence: B,
    failing on them now, is what changed."""
    extra = requests_failing_deeper(shared, every)
    reports, _ = scenario(Topology((CHAIN,)), QUIET, extra=extra)
    assert reports and all(fault_window(r) for r in reports)
    ((_, revisions),) = incidents(reports).items()
    cause = root_of(revisions[-1])
    assert (cause.service, cause.kind) == (root, "errors"), revisions[-1]
    if root == C:
        assert any("of the requests checkout failed in" in r for r in cause.reasons), cause
        assert any(e.startswith(f"{C}: stale cache entry") for e in cause.evidence)


# --------------------------------------------------------------------------- (g) odd graphs


def test_a_cycle_in_the_call_graph_neither_loops_nor_crashes() -> None:
    """frontend calls checkout, which calls back into frontend (A -> B -> A)."""
    reports, detector = scenario(Topology(((A, B, A),)), Fault(own={B: 10.0}))
    assert {(A, B), (B, A)} <= set(detector.graph.edges)
    assert detector.graph.downstream(A) == {A, B} and detector.graph.path(A, B) == [A, B]
    assert reports and all(fault_window(r) for r in reports)
    for revisions in incidents(reports).values():
        root = revisions[-1].root_cause
        assert root is not None and root.service == B


def span(service: str, at: datetime, **fields: object) -> SpanEvent:
    return SpanEvent.model_validate(
        {"service": service, "operation": f"op {service}", "duration_ms": 5.0, "timestamp": at}
        | fields
    )


def test_orphans_skewed_clocks_and_callee_only_services_are_taken_in_stride() -> None:
    """Spans whose parent never arrives, a child that ends after its parent (clock skew
    between hosts) and a service only ever named as a callee: the windows still close,
    nothing is flagged, the orphans of unknown kind are counted, and the graph holds only
    what the spans say."""
    detector = Detector(DetectorConfig(window_seconds=60))
    reports = []
    for m in range(40):
        at = START + timedelta(minutes=m)
        batch = []
        for i in range(12):
            t = at + timedelta(seconds=4 * i)
            n = f"{m:04x}{i:04x}"
            batch += [
                # an orphan of unknown kind, and an entry whose caller's span never came
                span("worker", t, kind="internal", span_id=f"a{n}", parent_span_id=f"lost{n}"),
                span("api", t, span_id=f"b{n}", parent_span_id=f"gone{n}"),
                # skew: the callee's entry lasts longer than its caller's span around it
                span("billing", t, span_id=f"c{n}", parent_span_id=f"d{n}", duration_ms=30.0),
                span("api", t, kind="client", peer_service="billing", span_id=f"d{n}",
                     parent_span_id=f"e{n}", duration_ms=20.0),
                span("api", t, span_id=f"e{n}", duration_ms=25.0),
                # a service no span of its own ever shows: a database, a third party
                span("api", t, kind="client", peer_service="vault", span_id=f"f{n}",
                     parent_span_id=f"e{n}", duration_ms=3.0),
            ]  # fmt: skip
        reports += detector.observe(batch, now=(at + timedelta(minutes=1)).timestamp())
    reports += detector.flush()
    assert reports == []
    assert detector.stats.unlinked == 40 * 12  # the orphans of unknown kind, each counted
    assert detector.stats.windows_closed == 40
    assert set(detector.graph.edges) == {("api", "billing"), ("api", "vault")}
    assert detector.export("vault")[0] == {}  # a callee only: an edge, no series
    gap = [k for k in detector.export("api")[0] if k[2] == "gap"]
    assert gap == [("api", "op api", "gap", "billing")]  # learnt, at 0 ms, not negative


def test_ten_thousand_services_are_bounded_and_counted() -> None:
    """A gateway calling 10,000 services, each with its entry spans linked to the call:
    the series, the call graph's edges are capped, and what is over the caps is counted;
    the windows keep closing."""
    services = 10_000
    config = DetectorConfig(window_seconds=60, max_series=5_000)
    detector = Detector(config)
    detector.graph = CallGraph(max_edges=2_000)
    for m in range(4):
        at = START + timedelta(minutes=m)
        batch = []
        for i in range(services):
            t, n = at + timedelta(milliseconds=5 * i), f"{m:02x}{i:06x}"
            batch += [
                span(f"svc-{i}", t, span_id=f"e{n}", parent_span_id=f"c{n}", trace_id=n),
                span("gateway", t, kind="client", peer_service=f"svc-{i}", span_id=f"c{n}",
                     operation=f"route {i}", trace_id=n),
            ]  # fmt: skip
        detector.observe(batch, now=(at + timedelta(minutes=1)).timestamp())
    detector.flush()
    series, _ = detector.memory()
    assert series <= config.max_series
    sent = 4 * 2 * services
    assert detector.stats.spans < sent <= detector.stats.spans + detector.stats.overflow
    assert len(detector.graph.edges) == 2_000 and detector.graph.dropped > 0
    assert detector.stats.windows_closed == 4


def many_services_fail_at_once(services: int) -> None:
    """A shared dependency fails: each of ``services`` services behind a gateway logs two
    error lines of a template it never logged, in the same minute. Prints the number of reports
    they gave."""
    detector = Detector(DetectorConfig(window_seconds=60))
    start = START.timestamp()
    calls = {f"svc-{i}": [10.0, start] for i in range(services)}
    detector.install({}, {}, {"service": "gateway", "calls": calls})  # as after a restart
    for m in range(5):
        at = START + timedelta(minutes=m)
        batch = []
        for i in range(services):
            t = at + timedelta(milliseconds=5 * i)
            batch.append(LogRecord(service=f"svc-{i}", timestamp=t, body="ok", template="ok"))
            if m == 3:
                down = LogRecord(
                    service=f"svc-{i}",
                    timestamp=t,
                    severity="error",
                    body="connection refused: shared-db:5432",
                    template="connection refused: shared-db:<*>",
                )
                batch += [down, down, down]
        reports = detector.observe(batch, now=(at + timedelta(minutes=1)).timestamp())
    reports += detector.flush()
    print(len(reports))


def test_ten_thousand_services_failing_at_once_do_not_stall_the_detector() -> None:
    code = (
        "from tests.baselines.test_incident import many_services_fail_at_once as run; run(10_000)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the window in which 10,000 services fail never closed (stalled)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0


def test_a_window_of_fifteen_thousand_logging_services_closes_quietly() -> None:
    """Each of 15,000 services logs an INFO line a minute: every window closes, nothing is
    flagged, and each service's usual errors are learnt."""
    detector = Detector(DetectorConfig(window_seconds=60))
    for m in range(2):
        at = START + timedelta(minutes=m)
        lines = [
            LogRecord(service=f"svc-{i}", timestamp=at + timedelta(milliseconds=3 * i))
            for i in range(15_000)
        ]
        detector.observe(lines, now=at.timestamp() + 60)
    assert detector.flush() == []
    assert detector.stats.windows_closed == 2
    assert detector.stats.logs == 30_000


def _errors(service: str, strength: float) -> Signal:
    return Signal(service, "errors", strength, f"error log lines of {service}")


@pytest.mark.parametrize(("late_by", "root"), [(0.0, C), (240.0, B)])
def test_a_callee_whose_trouble_began_minutes_later_does_not_take_the_root(
    late_by: float, root: str
) -> None:
    """B calls C. B's errors open the incident; C fails harder. Together, C is the root (a
    callee explains its caller); minutes later, C's failure cannot explain B's earlier one,
    and B stays the root."""
    graph = CallGraph()
    graph.observe(B, C, 10, 0.0)
    tracker = IncidentTracker(quiet_windows=10)
    start = START.timestamp()
    tracker.update(start, [_errors(B, 1.0)], graph)
    if late_by:
        tracker.update(start + 60.0, [_errors(B, 1.0)], graph)
    [update] = tracker.update(start + late_by, [_errors(C, 1.5)], graph)
    assert update.incident.root_cause is not None
    assert update.incident.root_cause.service == root
    assert {c.service for c in update.incident.candidates} == {B, C}
    assert [OpenIncident.from_json(i.to_json()) for i in tracker.open] == tracker.open


@pytest.mark.parametrize("kind", ["own_time", "network", "errors"])
def test_a_slow_or_failing_service_whose_cpu_rose_too_is_rooted_in_its_resources(
    kind: SignalKind,
) -> None:
    """Slow, waited on (a CPU-starved service queues requests before its spans begin) or
    failing while its CPU is far above usual: the CPU is why, whichever signal is louder."""
    tracker = IncidentTracker()
    trouble = Signal(C, kind, 1.5, f"{C}: {kind} 5x usual")
    busy = Signal(C, "resources", 0.6, "CPU 60% (usual 5%)")
    [update] = tracker.update(START.timestamp(), [trouble, busy], CallGraph())
    root = update.incident.root_cause
    assert root is not None and (root.service, root.kind) == (C, "resources")
    assert root.reasons[:2] == ["CPU 60% (usual 5%)", f"{C}: {kind} 5x usual"]


def _slow(service: str, weak: bool = False) -> Signal:
    return Signal(service, "own_time", 0.5 if weak else 1.0, f"{service} p95 3x", weak=weak)


def test_a_callee_far_out_but_not_yet_a_surprise_takes_the_root_from_its_slow_caller() -> None:
    """B calls C calls D. In a fault's first minute B's latency alerts; D's is far out but
    not yet a surprise (a surprise is a mean of a few windows): D is already the root, B's
    own time is explained by it. A weak signal alone opens nothing, and one with no slow
    caller above it ranks nobody."""
    graph = CallGraph()
    graph.observe(B, C, 10, 0.0)
    graph.observe(C, D, 10, 0.0)
    start = START.timestamp()
    assert IncidentTracker().update(start, [_slow(D, weak=True)], graph) == []
    tracker = IncidentTracker()
    [update] = tracker.update(start, [_slow(B), _slow(D, weak=True)], graph)
    assert [c.service for c in update.incident.candidates] == [D, B]
    assert update.incident.root_cause is not None and update.incident.root_cause.service == D
    assert [OpenIncident.from_json(i.to_json()) for i in tracker.open] == tracker.open
    tracker = IncidentTracker()
    [update] = tracker.update(start, [_errors(B, 1.0), _slow(D, weak=True)], graph)
    assert [c.service for c in update.incident.candidates] == [B]


class _TailedRng:
    """Own times and wires as the chain's tracer draws them, times a daily load curve
    (+-30%, busiest at 15:00), and 1 call in 100 three to ten times slower (a pause, a
    retry): the noise of real traffic."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.load = 1.0

    def lognormal(self, mean: float, sigma: float) -> float:
        tail = float(self.rng.uniform(3.0, 10.0)) if self.rng.random() < 0.01 else 1.0
        return float(self.rng.lognormal(mean, sigma)) * tail * self.load


class _RealNoise(Tracer):
    def __init__(self, topology: Topology, seed: int = 0) -> None:
        super().__init__(topology, seed)
        self.noise = _TailedRng(seed)
        self.rng = self.noise  # type: ignore[assignment]

    def trace(self, chain: Sequence[str], begin: datetime, fault: Fault) -> list[SpanEvent]:
        hour = begin.hour + begin.minute / 60
        self.noise.load = 1 + 0.3 * float(np.sin(2 * np.pi * (hour - 9) / 24))
        return super().trace(chain, begin, fault)


def test_four_days_of_fault_free_traffic_with_real_noise_alert_at_most_once_a_service_a_day() -> (
    None
):
    """A chain of four services, from its first minute, through four days of traffic with
    a daily load curve and heavy tails: at most one incident a day rooted at any service
    (while the baselines learn too), none once they have."""
    tracer = _RealNoise(Topology((CHAIN,)), seed=1)
    detector = Detector(DetectorConfig(window_seconds=60))
    first = datetime(2026, 11, 16, tzinfo=UTC)
    reports: list[AnomalyReport] = []
    for m in range(4 * 24 * 60):
        at = first + timedelta(minutes=m)
        reports += detector.observe(tracer.minute(at, QUIET), now=at.timestamp() + 60)
    per_day = Counter(
        (r.incident.started.date(), root_of(r.incident).service)
        for r in reports
        if r.incident is not None and r.incident.revision == 0
    )
    assert max(per_day.values(), default=0) <= 1, per_day
    assert not [day for day, _ in per_day if day >= (first + timedelta(days=2)).date()], per_day


def _bursty_minute(rng: np.random.Generator, at: datetime, service: str = C) -> list[LogRecord]:
    """A minute of a service that logs 1.5 error lines a minute of a familiar template, and
    one minute in 12 a burst of 6 to 34 (a retried call)."""
    errors = int(rng.integers(6, 35)) if rng.random() < 1 / 12 else int(rng.poisson(1.5))
    lines = [
        LogRecord(
            service=service,
            timestamp=at + timedelta(seconds=float(rng.uniform(0, 59))),
            severity="error",
            body=f"retrying call {i}",
            template="retrying call <*>",
        )
        for i in range(errors)
    ]
    return lines + [
        LogRecord(service=service, timestamp=at + timedelta(seconds=10 * i), body="served")
        for i in range(5)
    ]


def _failure(service: str, at: datetime, lines: int = 5) -> list[LogRecord]:
    """Error lines of a template the service never logged."""
    return [
        LogRecord(
            service=service,
            timestamp=at + timedelta(seconds=5 * i),
            severity="error",
            body=f"card {i} declined",
            template="card <*> declined",
        )
        for i in range(lines)
    ]


def test_routine_bursts_of_familiar_error_lines_open_incidents_only_while_they_are_new() -> None:
    """C logs 1.5 error lines a minute of a familiar template, and one minute in 12 a burst
    of 6 to 34 (a retried call): judged by count alone, that is about 100 incidents a day.
    As a habit: incidents in the first hours only (at most 10), none on the second day."""
    rng = np.random.default_rng(7)
    detector = Detector(DetectorConfig(window_seconds=60))
    first = datetime(2026, 11, 16, tzinfo=UTC)
    reports: list[AnomalyReport] = []
    for m in range(2 * 24 * 60):
        at = first + timedelta(minutes=m)
        reports += detector.observe(_bursty_minute(rng, at), now=at.timestamp() + 60)
    opened = [r.incident.started for r in reports if r.incident and r.incident.revision == 0]
    per_day = Counter(started.date() for started in opened)
    hours = sorted(int((started - first).total_seconds() // 3600) for started in opened)
    print(f"incidents opened per day: {sorted(per_day.items())}, in hours {hours}")
    assert 0 < per_day[first.date()] <= 10 and hours[-1] < 4, per_day
    assert per_day[(first + timedelta(days=1)).date()] == 0, per_day


def test_a_habitual_burst_beside_a_new_failure_is_a_later_candidate_of_its_incident() -> None:
    """B calls C, which bursts as the test above has it. On the second day, C's bursts are
    a habit; B fails (never-seen error lines) in a minute C bursts too: B is the root and C
    a candidate after it, its burst called as large as its usual ones."""
    rng = np.random.default_rng(7)
    detector = Detector(DetectorConfig(window_seconds=60))
    first = datetime(2026, 11, 16, tzinfo=UTC)
    detector.graph.observe(B, C, 10, first.timestamp())
    reports: list[AnomalyReport] = []
    for m in range(2 * 24 * 60):
        at = first + timedelta(minutes=m)
        lines = [*_bursty_minute(rng, at), LogRecord(service=B, timestamp=at, body="served")]
        bursts = sum(1 for line in lines if line.severity == "error") >= 10
        fails = m >= 24 * 60 and bursts
        if fails:
            lines += _failure(B, at)
        reports = detector.observe(lines, now=at.timestamp() + 60)
        if fails:
            reports += detector.flush()
            break
    [report] = reports
    assert report.incident is not None
    candidates = report.incident.candidates
    assert [c.service for c in candidates] == [B, C]
    assert "as large as its usual ones" in candidates[1].reasons[0]


def test_a_root_whose_kind_changes_is_reported_again() -> None:
    """C's error lines open the incident; a minute later its CPU is far above usual: the
    same root, now of kind resources, is a new revision (its services did not change)."""
    tracker = IncidentTracker()
    start = START.timestamp()
    [first] = tracker.update(start, [_errors(C, 1.0)], CallGraph())
    busy = Signal(C, "resources", 0.6, "CPU 60% (usual 5%)")
    [second] = tracker.update(start + 60.0, [_errors(C, 1.0), busy], CallGraph())
    assert first.incident.root_cause is not None and second.incident.root_cause is not None
    assert (first.incident.root_cause.kind, second.incident.root_cause.kind) == (
        "errors",
        "resources",
    )
    assert second.incident.revision == 1
    assert tracker.update(start + 120.0, [_errors(C, 1.0), busy], CallGraph()) == []


@pytest.mark.parametrize("window", [10.0, 60.0, 300.0])
def test_trouble_that_comes_back_after_a_calm_window_is_a_new_incident(window: float) -> None:
    """C fails in two windows in a row: one incident, whatever the window's length. After a
    whole calm window its next failure is another incident (a new fault on the same service
    minutes after the last must be seen, not folded into the old one)."""
    tracker = IncidentTracker(window)
    start = START.timestamp()
    [first] = tracker.update(start, [_errors(C, 1.0)], CallGraph())
    tracker.update(start + window, [_errors(C, 1.0)], CallGraph())
    assert [i.id for i in tracker.open] == [first.incident.id]
    tracker.update(start + 2 * window, [], CallGraph())
    [again] = tracker.update(start + 3 * window, [_errors(C, 1.0)], CallGraph())
    assert again.incident.id != first.incident.id and again.incident.revision == 0
    assert [i.id for i in tracker.open] == [again.incident.id]


def _failing(service: str, strength: float, *traces: str) -> Signal:
    sample = TraceSample.of(set(traces))
    return Signal(service, "errors", strength, f"error log lines of {service}", traces=sample)


@pytest.mark.parametrize(
    ("caller_traces", "callee_slow", "root"),
    [(("t1", "t2"), False, B), (("t1", "t3"), False, C), (("t1", "t2"), True, C)],
)
def test_a_caller_failing_in_requests_its_callee_did_not_fail_in_fails_on_its_own(
    caller_traces: tuple[str, ...], callee_slow: bool, root: str
) -> None:
    """B calls C; both log errors, B more. B's error lines of requests in which C logged
    none are B's own failure: B is the root. When they share a request, C's failure
    explains B's (errors travel up), and so does C slowing down, whatever the requests
    (timeouts and retries fail elsewhere)."""
    graph = CallGraph()
    graph.observe(B, C, 10, 0.0)
    signals = [_failing(B, 1.5, *caller_traces), _failing(C, 1.0, "t3", "t4")]
    if callee_slow:
        signals.append(_slow(C))
    tracker = IncidentTracker()
    [update] = tracker.update(START.timestamp(), signals, graph)
    assert update.incident.root_cause is not None
    assert update.incident.root_cause.service == root
    assert [OpenIncident.from_json(i.to_json()) for i in tracker.open] == tracker.open


@pytest.mark.parametrize("rise", [0.22, 2.0])
def test_a_callee_whose_cpu_rose_but_that_neither_slowed_nor_failed_explains_no_error(
    rise: float,
) -> None:
    """B calls C and throws; C's CPU rose, and C is neither slower nor failing: B's errors
    are B's own, B is the root, and C, more likely a coincidence, ranks after B however far
    its CPU rose (a person still sees it among the candidates)."""
    graph = CallGraph()
    graph.observe(B, C, 10, 0.0)
    busy = Signal(C, "resources", rise, "CPU 18% (usual 1%)")
    [update] = IncidentTracker().update(START.timestamp(), [_errors(B, 1.0), busy], graph)
    assert update.incident.root_cause is not None
    assert (update.incident.root_cause.service, update.incident.root_cause.kind) == (B, "errors")
    assert [(c.service, c.kind) for c in update.incident.candidates] == [
        (B, "errors"),
        (C, "resources"),
    ]


def test_a_habitual_burst_of_errors_ranks_after_the_services_with_trouble_of_their_own() -> None:
    """B calls C, and C logs bursts of errors as large as its usual ones. Alone, such a
    burst opens nothing. Beside B's slowdown it is a candidate after B, and it explains
    neither B's time nor its errors (it is what C always does)."""
    graph = CallGraph()
    graph.observe(B, C, 10, 0.0)
    start = START.timestamp()
    burst = Signal(C, "errors", 0.5, "error log lines: 12 (usual 0.3), as usual", weak=True)
    assert IncidentTracker().update(start, [burst], graph) == []
    for trouble in (_slow(B), _errors(B, 0.6)):
        [update] = IncidentTracker().update(start, [trouble, burst], graph)
        assert [c.service for c in update.incident.candidates] == [B, C]
        assert update.incident.candidates[0].score == pytest.approx(trouble.strength)

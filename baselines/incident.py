"""Anomalies of connected services within a few minutes, as one incident with one root.

A slowdown travels up the call graph: when a service deep down slows, fails or runs short
of CPU, every caller above it flags too. Each window's signals join the open incident of
a service they are connected to (one calls the other, directly or through others), or
open a new one. The root-cause candidates are ranked by a score a person can follow:

* each signal of a service adds its strength: ``errors`` (error lines or spans far above
  usual, or of templates not seen while it was healthy), ``network`` (its callers wait on
  it longer than it works), ``resources`` (CPU or memory far above usual), ``own_time``
  (its own operations slowed); its own time and errors count less when a service it
  calls shows a signal of its own too, since slowness and failures travel up: the callee
  explains them. A callee that fails without slowing explains its caller's errors only if
  they failed in a request together, where error lines carry trace ids to tell, and one
  whose CPU rose without slowing or failing explains none (``errors_explained``) and ranks
  after the services with trouble of their own (more likely a coincidence). A signal read
  from another service (a caller's slow calls, error lines naming it) ranks the service
  it points at but explains nothing;
* a burst of errors as large as the service's usual ones (``ErrorVerdict.habitual``) is a
  weak signal: it never opens an incident and explains nothing, but the service ranks
  after those with trouble of their own (it is what the service often does, and a fault's
  errors can look the same);
* a service that more of the incident's services call into, directly or not, gains up to
  ``DEPTH_WEIGHT``: the root sits below what it slows;
* a service whose latency is far out but not yet a surprise (an alert needs a few
  windows, so a fault's first minute often alerts its callers before it) sends a weak
  signal: it never opens an incident, it explains its callers' own time, and it ranks the
  service only when that service shows nothing stronger and sits below a caller whose own
  time slowed;
* a cause comes before its effects: a callee explains its caller only if its trouble began
  no later than ``LATE_SECONDS`` after the caller's, and a service whose trouble began more
  than that after the incident's counts ``LATE`` (a consequence, or a coincidence).

Its kind is the signal that contributes most, but resources over any other: a service
slow, waited on (a CPU-starved service queues requests before its spans begin) or failing
while its CPU or memory is far above usual does so because of them. An incident is
reported when it opens and again (a new revision, the same incident id) when its root, the
root's kind or its affected services change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

from baselines.callgraph import CallGraph
from baselines.trace_sample import TraceSample
from service.contract import (
    AffectedService,
    Candidate,
    Incident,
    RootCauseKind,
    report_id,
)

SignalKind = Literal["own_time", "resources", "network", "errors", "calls"]
"""A root-cause kind, or ``calls``: the service's calls to another slowed (a symptom that
points at the callee)."""
OPENING: frozenset[SignalKind] = frozenset({"own_time", "network", "errors", "calls"})
"""Signals that open an incident; resources only rank the candidates of one, unless
saturated (``Signal.opens``)."""
WEIGHTS: dict[SignalKind, float] = {
    "errors": 1.0,
    "network": 1.0,
    "resources": 0.8,
    "own_time": 1.0,
    "calls": 0.0,
}
EXPLAINED = 0.3
"""What own time and errors still count when a service it calls shows a signal."""
PROPAGATING: frozenset[str] = frozenset({"own_time", "errors"})
DEPTH_WEIGHT = 0.3
LATE_SECONDS = 120.0
"""A service whose first signal came more than this after the incident's first is a
consequence or a coincidence, not its cause: a cause comes before its effects."""
LATE = 0.3
"""What a late service's score still counts."""
QUIET_WINDOWS = 1
"""Whole windows without a new opening signal after which an incident is over: trouble that
comes back after a calm window is a new incident (a new fault on the same service minutes
after the last one must not hide inside it)."""
MAX_OPEN = 1000
MAX_SERVICES = 50
MAX_REASONS = 8


@dataclass(frozen=True)
class Signal:
    """One observation about one service in one window."""

    service: str
    kind: SignalKind
    strength: float
    reason: str
    operation: str = ""
    evidence: tuple[str, ...] = ()
    peer: str = ""
    """For ``calls``, the service called; for ``network``, the caller."""
    direct: bool = True
    """Observed in the service's own telemetry, not read from another's."""
    opens: bool = False
    """Opens an incident although its kind does not (a saturated CPU)."""
    weak: bool = False
    """Far out but not yet a surprise: it joins an open incident of a connected service
    (its first minutes rank the root better) but never opens or prolongs one."""
    traces: TraceSample | None = None
    """For ``errors``, the requests they were logged in, where lines carried trace ids."""
    at: float | None = None
    """When its evidence began, where finer than its window (the earliest error line)."""

    @property
    def opening(self) -> bool:
        return not self.weak and (self.kind in OPENING or self.opens)


@dataclass
class Suspect:
    """What an incident saw of one service: the strongest signal of each kind."""

    strengths: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    operations: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    direct: bool = False
    """Some signal came from the service's own telemetry (its own time, errors, resources)."""
    since: float | None = None
    """Start of the window of the first signal about it."""
    weak: list[str] = field(default_factory=list)
    """Kinds seen only in weak signals (far out, not yet a surprise): they rank a service
    that shows nothing stronger, and a callee with them explains its callers' time."""
    traces: TraceSample | None = None
    """The requests its own errors were logged in (see ``errors_explained``)."""

    @property
    def strong(self) -> dict[str, float]:
        """The strengths of the kinds seen in signals stronger than weak."""
        return {k: v for k, v in self.strengths.items() if k not in self.weak}

    def add(self, signal: Signal, window_start: float) -> None:
        if self.since is None:
            self.since = window_start
        if signal.direct and signal.kind != "calls" and not signal.weak:
            self.direct = True
        if signal.traces is not None and signal.direct:
            self.traces = signal.traces if self.traces is None else self.traces.merge(signal.traces)
        kind, only_weak = signal.kind, signal.kind in self.weak
        if signal.weak and kind in self.strengths and not only_weak:
            return
        if not signal.weak and only_weak:
            self.weak.remove(kind)
            self.strengths.pop(kind)
        elif signal.weak and not only_weak:
            self.weak.append(kind)
        if signal.strength >= self.strengths.get(kind, -1.0):
            self.strengths[kind] = signal.strength
            self.reasons[kind] = signal.reason
        if signal.operation and signal.operation not in self.operations:
            self.operations = [*self.operations, signal.operation][:20]
        for text in signal.evidence:
            if text not in self.evidence and len(self.evidence) < MAX_REASONS:
                self.evidence.append(text)


@dataclass
class OpenIncident:
    id: str
    started: float
    last_signal: float
    suspects: dict[str, Suspect] = field(default_factory=dict)
    revision: int = -1
    reported_root: str = ""
    """The root and its kind as last reported: "service (kind)"."""
    reported_services: list[str] = field(default_factory=list)
    began: float | None = None
    """When its first window's opening evidence began (``Signal.at``; the window's start
    where a signal knows no finer): the ``started`` a person is shown."""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "started": self.started,
            "began": self.began,
            "last_signal": self.last_signal,
            "revision": self.revision,
            "reported_root": self.reported_root,
            "reported_services": self.reported_services,
            "suspects": {
                name: [
                    s.strengths,
                    s.reasons,
                    s.operations,
                    s.evidence,
                    s.direct,
                    s.since,
                    s.weak,
                    None if s.traces is None else s.traces.state(),
                ]
                for name, s in self.suspects.items()
            },
        }

    @classmethod
    def from_json(cls, saved: dict[str, object]) -> OpenIncident:
        suspects = saved["suspects"]
        assert isinstance(suspects, dict)
        return cls(
            id=str(saved["id"]),
            started=float(saved["started"]),  # type: ignore[arg-type]
            last_signal=float(saved["last_signal"]),  # type: ignore[arg-type]
            suspects={
                name: Suspect(
                    dict(saved[0]),
                    dict(saved[1]),
                    list(saved[2]),
                    list(saved[3]),
                    bool(saved[4]),
                    None if len(saved) < 6 or saved[5] is None else float(saved[5]),
                    list(saved[6]) if len(saved) > 6 else [],
                    TraceSample.from_state(saved[7] if len(saved) > 7 else None),
                )
                for name, saved in suspects.items()
            },
            revision=int(saved["revision"]),  # type: ignore[call-overload]
            reported_root=str(saved["reported_root"]),
            reported_services=list(saved["reported_services"]),  # type: ignore[call-overload]
            began=None if saved.get("began") is None else float(saved["began"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Update:
    """An incident to report now: its contract form and the services it flagged."""

    incident: Incident
    flagged: list[str]


class IncidentTracker:
    """The open incidents, fed each closed window's signals in time order."""

    def __init__(self, window_seconds: float = 60.0, quiet_windows: int = QUIET_WINDOWS) -> None:
        self.quiet_seconds = window_seconds * quiet_windows
        """The next window is still judged inside; one more, and the incident is over."""
        self.open: list[OpenIncident] = []
        self.dropped = 0
        """Opening signals refused because ``MAX_OPEN`` incidents were open."""

    def update(self, window_start: float, signals: list[Signal], graph: CallGraph) -> list[Update]:
        """Fold a window's signals into incidents; the incidents to report now."""
        self.open = [i for i in self.open if window_start - i.last_signal <= self.quiet_seconds]
        touched: dict[str, OpenIncident] = {}
        homes = {name: incident for incident in self.open for name in incident.suspects}
        for signal in sorted(signals, key=lambda s: not s.opening):
            opening = signal.opening
            incident = homes.get(signal.service)
            if incident is None:
                near = signal.kind == "resources" and not opening
                incident = _connected(signal.service, graph, homes, near)
            if incident is None:
                if not opening:
                    continue
                if len(self.open) >= MAX_OPEN:
                    self.dropped += 1
                    continue
                incident = OpenIncident(
                    id=report_id(signal.service, "incident", _utc(window_start)),
                    started=window_start,
                    last_signal=window_start,
                )
                self.open.append(incident)
            if opening:
                incident.last_signal = window_start
                if window_start == incident.started:
                    at = window_start if signal.at is None else signal.at
                    incident.began = at if incident.began is None else min(incident.began, at)
            if signal.service not in incident.suspects and len(incident.suspects) >= MAX_SERVICES:
                continue
            incident.suspects.setdefault(signal.service, Suspect()).add(signal, window_start)
            homes[signal.service] = incident
            if signal.kind == "network" and signal.peer:
                caller = Signal(
                    signal.peer, "calls", signal.strength, signal.reason, weak=signal.weak
                )
                incident.suspects.setdefault(signal.peer, Suspect()).add(caller, window_start)
                homes[signal.peer] = incident
            touched[incident.id] = incident
        updates = []
        for incident in touched.values():
            ranked = rank(incident, graph)
            services = sorted(_affected(incident, ranked))
            root = f"{ranked[0].service} ({ranked[0].kind})" if ranked else ""
            if root == incident.reported_root and services == incident.reported_services:
                continue
            incident.revision += 1
            incident.reported_root, incident.reported_services = root, services
            flagged = [
                name
                for name in _upstream_first(incident, graph)
                if any(k in OPENING for k in incident.suspects[name].strong)
            ]
            updates.append(Update(_contract(incident, ranked, flagged, graph), flagged))
        return updates

    def touched_services(self) -> set[str]:
        """Services of open incidents: what a window's resources are read for."""
        return {name for incident in self.open for name in incident.suspects}

    def state(self) -> list[dict[str, object]]:
        return [incident.to_json() for incident in self.open]

    def load(self, saved: list[dict[str, object]]) -> None:
        self.open = [OpenIncident.from_json(entry) for entry in saved]


def _connected(
    service: str, graph: CallGraph, homes: dict[str, OpenIncident], near: bool
) -> OpenIncident | None:
    """The open incident of a service this one calls or is called by, directly or not: a
    slowdown travels up the call graph, never sideways. ``near`` (a resources signal that
    does not open): only the incident of a service that calls it directly: what a service
    calls can explain it, and a busy pod further away is more likely a coincidence."""
    reach = graph.callers(service) if near else graph.upstream(service) | graph.downstream(service)
    found = {id(homes[other]): homes[other] for other in reach if other in homes}
    # the oldest incident wins, whatever order the walk found them in: a replay after a
    # restart must fold the same signals into the same incidents
    return min(found.values(), key=lambda i: (i.started, i.id), default=None)


def rank(incident: OpenIncident, graph: CallGraph) -> list[Candidate]:
    """The incident's services ranked as its root cause, best first (see the module doc)."""
    names = list(incident.suspects)
    symptomatic = {name for name, suspect in incident.suspects.items() if suspect.direct}
    # far out, not yet a surprise: latency may explain a caller's time, a habitual burst not
    stirring = {n for n, s in incident.suspects.items() if {"own_time", "network"} & set(s.weak)}
    upstream_of: dict[str, int] = dict.fromkeys(names, 0)
    # a service whose calls slowed is explained by them, whatever the callee shows; a
    # callee far out but not yet a surprise explains its callers' time, not their errors
    slowed_by = {name: "calls" in s.strengths for name, s in incident.suspects.items()}
    explained = {
        name: slowed_by[name] and "calls" in s.strong for name, s in incident.suspects.items()
    }
    slowing: set[str] = set()  # seen only weakly, below a caller whose own time slowed
    explaining: set[str] = set()  # explain a caller's own time or errors
    slow = {name: "own_time" in s.strong for name, s in incident.suspects.items()}
    members = set(names)
    since = {
        name: incident.started if s.since is None else s.since
        for name, s in incident.suspects.items()
    }
    first = min(since.values(), default=incident.started)
    for name in names:
        for target in graph.downstream(name) & members:
            if target != name:
                upstream_of[target] += 1
                # a callee explains its caller only if its trouble did not begin later
                if since[target] > since[name] + LATE_SECONDS:
                    continue
                if target in symptomatic:
                    slowed_by[name] = True
                    if slow[name]:
                        explaining.add(target)
                    if errors_explained(incident.suspects[name], incident.suspects[target]):
                        explained[name] = True
                        explaining.add(target)
                elif target in stirring:
                    slowed_by[name] = True
                    if slow[name]:
                        slowing.add(target)
    candidates: list[Candidate] = []
    coincidences: list[Candidate] = []
    for name, suspect in incident.suspects.items():
        parts: dict[str, float] = {}
        shown = suspect.strong
        habitual = False
        if not any(shown.values()):
            # weak signals alone rank a service that explains a caller, and one with a
            # habitual burst of errors after the others; nothing else
            if name in slowing:
                shown = suspect.strengths
            elif "errors" in suspect.weak:
                habitual, shown = True, {"errors": suspect.strengths["errors"]}
            else:
                continue
        for kind, strength in shown.items():
            weight = WEIGHTS[cast(SignalKind, kind)]
            if kind in PROPAGATING and (explained if kind == "errors" else slowed_by)[name]:
                weight *= EXPLAINED
            parts[kind] = weight * strength
        depth = DEPTH_WEIGHT * upstream_of[name] / max(len(names) - 1, 1)
        score = sum(parts.values()) + depth
        if not any(v > 0 for v in parts.values()):
            continue
        late = since[name] > first + LATE_SECONDS
        if late:
            score *= LATE
        ordered = sorted((k for k in parts if k != "calls"), key=lambda k: -parts[k])
        if ordered[:1] != ["resources"] and "resources" in parts:
            # it slowed, queued or failed while its CPU or memory rose: they are why
            ordered.insert(0, ordered.pop(ordered.index("resources")))
        root_kind = cast(RootCauseKind, ordered[0] if ordered else "own_time")
        reasons = [suspect.reasons[k] for k in ordered]
        if depth > 0:
            reasons.append(f"{upstream_of[name]} of the incident's services call into it")
        if late:
            reasons.append(
                f"its trouble began {since[name] - first:.0f} s after the incident's: "
                "more likely a consequence"
            )
        candidate = Candidate(
            service=name,
            kind=root_kind,
            score=round(score, 3),
            reasons=[r[:300] for r in reasons[:MAX_REASONS]],
            evidence=[e[:500] for e in suspect.evidence[:MAX_REASONS]],
        )
        coincidence = habitual or (shown.keys() == {"resources"} and name not in explaining)
        (coincidences if coincidence else candidates).append(candidate)
    # a CPU rise that neither slowed nor failed its service nor explains a caller, and a
    # habitual burst, are more likely coincidences than services with trouble of their own:
    # they rank after them
    candidates.sort(key=lambda c: (-c.score, c.service))
    coincidences.sort(key=lambda c: (-c.score, c.service))
    return candidates + coincidences


def errors_explained(caller: Suspect, callee: Suspect) -> bool:
    """Whether a troubled callee can explain its caller's errors: a slow one can (timeouts,
    retries); one that fails, through the requests both failed in, where their error lines
    carry trace ids to tell; one whose CPU or memory rose but that neither slowed nor
    failed cannot (the rise did not reach its callers)."""
    strong = callee.strong
    if strong.keys() & {"own_time", "network", "calls"}:
        return True
    if "errors" not in strong:
        return False
    if caller.traces is None or callee.traces is None:
        return True
    return caller.traces.shares(callee.traces) is not False


def _upstream_first(incident: OpenIncident, graph: CallGraph) -> list[str]:
    """The incident's services, those more others call into last."""
    members = set(incident.suspects)
    below = {name: len(graph.downstream(name) & members) for name in members}
    return sorted(members, key=lambda n: (-below[n], n))


def _affected(incident: OpenIncident, ranked: list[Candidate]) -> list[str]:
    """The incident's services a person is shown: those with a signal stronger than weak,
    and the candidates (a weakly seen service is one only when it explains a caller)."""
    candidates = {c.service for c in ranked}
    return [
        name for name, suspect in incident.suspects.items() if name in candidates or suspect.strong
    ]


def _contract(
    incident: OpenIncident, ranked: list[Candidate], flagged: list[str], graph: CallGraph
) -> Incident:
    root = ranked[0] if ranked else None
    path: list[str] = []
    if root is not None and flagged:
        path = graph.path(flagged[0], root.service) or [root.service]
    return Incident(
        id=incident.id,
        started=_utc(incident.started if incident.began is None else incident.began),
        revision=incident.revision,
        root_cause=root,
        candidates=ranked[:3],
        affected=[
            AffectedService(
                service=name,
                operations=incident.suspects[name].operations[:20],
                signals=sorted(incident.suspects[name].strengths)[:10],
            )
            for name in _affected(incident, ranked)[:MAX_SERVICES]
        ],
        path=path[:20],
    )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)

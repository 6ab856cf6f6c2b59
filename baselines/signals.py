"""What a closed window's judged series say about each service: the signals incidents
are made of (``incident.Signal``). Latency series point at a service's own time or the
network in front of it, errors at the service that logs them (and the one their lines
name), a callee failing in the requests its caller failed in at the callee, and CPU or
memory far above usual at the service's resources."""

from __future__ import annotations

from baselines.callgraph import CallGraph
from baselines.errors import ErrorHabits, ErrorVerdict, ErrorWindow
from baselines.incident import Signal
from baselines.report import WindowFacts
from baselines.window import GAP_KIND, OWN_KINDS, SpanKey

RESOURCE_RISE = 1.5
"""CPU or memory at least this many times its usual, and ``RESOURCE_POINTS`` above it, is a
resources signal for a service in an incident."""
RESOURCE_POINTS = 10.0
SATURATED_PCT = 80.0
"""CPU or memory at or above this, at least ``SATURATED_RISE`` times its usual, is saturation:
a resources signal that opens an incident by itself, wherever the service is."""
SATURATED_RISE = 3.0
NAMED_SHARE = 0.5
"""What error lines naming another service count for it, against the service that logs them."""
WEAK = 0.5
"""The strength of a latency series far out but not yet a surprise (an alert's is 1)."""


def p95_text(p95: float, usual: float) -> str:
    """A series' p95 beside its usual one, as reasons quote them."""
    return f"p95 {p95:.0f} ms, usual {usual:.0f} ms"


def latency_signals(
    flagged: dict[SpanKey, WindowFacts],
    judged: set[SpanKey],
    alerting: set[SpanKey],
    stirring: dict[SpanKey, str],
) -> list[Signal]:
    """What the flagged latency series say about each service. A slow entry is its service's
    own time; a slow gap is the network in front of the callee; a slow call is a symptom of
    its caller and points at the callee: at its own time when the callee has no judged entry
    series (no spans of its own, or too few), at the network when its entries are judged and
    calm. ``alerting``: the series in an alert, new or ongoing. ``stirring``: entries and
    gaps far out but not yet a surprise (a surprise is a mean of a few windows, so a fault's
    first minute often alerts its callers before it): weak signals of the same kinds, so
    an incident's first revision can already rank the service below its callers."""
    own_judged = {key[0] for key in judged if key[2] in OWN_KINDS}
    own_flagged = {key[0] for key in alerting if key[2] in OWN_KINDS}
    gap_flagged = {key[3] for key in alerting if key[2] == GAP_KIND}
    signals = []
    for (service, operation, kind, peer), numbers in stirring.items():
        reason = f"far out, not yet a surprise: {numbers}"
        if kind in OWN_KINDS:
            own = f"{operation}: {reason}"
            signals.append(Signal(service, "own_time", WEAK, own, operation, weak=True))
        elif kind == GAP_KIND:
            wire = f"calls from {service} ({operation}) wait beyond its work, {reason}"
            signals.append(Signal(peer, "network", WEAK, wire, peer=service, weak=True))
    for key, facts in flagged.items():
        service, operation, kind, peer = key
        usual = facts.baseline.usual if facts.baseline is not None else 0.0
        numbers = p95_text(facts.p95, usual)
        evidence = tuple(f"{service}: {text}" for text in facts.evidence)
        if kind in OWN_KINDS:
            signals.append(
                Signal(service, "own_time", 1.0, f"{operation}: {numbers}", operation, evidence)
            )
        elif kind == GAP_KIND:
            reason = f"calls from {service} ({operation}) wait beyond its work: {numbers}"
            signals.append(Signal(peer, "network", 1.0, reason, peer=service))
        else:
            reason = f"calls to {peer or 'its dependency'} ({operation}): {numbers}"
            signals.append(Signal(service, "calls", 1.0, reason, operation, evidence, peer))
            if not peer or peer in own_flagged or peer in gap_flagged:
                continue
            seen = f"seen from {service}'s calls ({operation}): {numbers}"
            if peer in own_judged:
                signals.append(Signal(peer, "network", 0.8, seen, peer=service, direct=False))
            else:
                signals.append(Signal(peer, "own_time", 0.7, seen, direct=False))
    return signals


def error_signals(service: str, source: str, verdict: ErrorVerdict) -> list[Signal]:
    """A service's errors are its own; when most of its error lines name another service
    ("No instances available for ts-basic-service") they also point there, at half the
    strength: the text may be the caller's own failure that mentions what it was calling.
    A burst the service's habit excuses is one weak signal, ranked after the candidates
    with trouble of their own."""
    evidence = tuple(f"{service}: {line}" for line in verdict.samples)
    reason = verdict.reason(source)
    if verdict.habitual:
        usual = f"{reason}, a burst as large as its usual ones"
        return [
            Signal(service, "errors", WEAK, usual, evidence=evidence, weak=True, at=verdict.first)
        ]
    signals = [
        Signal(
            service,
            "errors",
            verdict.strength,
            reason,
            evidence=evidence,
            traces=verdict.traces,
            at=verdict.first,
        )
    ]
    blamed = verdict.blames()
    if blamed is not None:
        named = f"{service}'s {reason}, naming {blamed}"
        strength = NAMED_SHARE * verdict.strength
        signals.append(Signal(blamed, "errors", strength, named, direct=False, at=verdict.first))
    return signals


def shared_failures(
    verdicts: dict[tuple[str, str], ErrorVerdict],
    logs: dict[str, ErrorWindow],
    habits: dict[tuple[str, str], ErrorHabits],
    graph: CallGraph,
) -> list[Signal]:
    """A service below a flagged caller in the call graph that logged more errors than
    usual, if not improbably many, in most of the requests the caller failed in is where
    those failures began: the same requests failed deeper down first. (Errors as usual are
    no evidence: a caller that now fails whenever its callee's routine errors happen is
    what changed.) It is ranked with the caller's strength times that share (its own
    failure, read from its own lines: more than a name in the caller's text,
    ``NAMED_SHARE``), its own error lines as evidence."""
    failing = [
        (service, verdict, verdict.traces)
        for (service, source), verdict in verdicts.items()
        if source == "logs" and verdict.traces is not None
    ]
    if not failing:  # most windows: no sample to draw
        return []
    signals = []
    samples = {
        name: sample
        for name, w in logs.items()
        if (name, "logs") not in verdicts and (sample := w.trace_sample()) is not None
    }
    for service, verdict, traces in failing:
        for callee in sorted(samples.keys() & graph.downstream(service)):
            window, known, sample = logs[callee], habits.get((callee, "logs")), samples[callee]
            if known is None or window.errors <= known.usual:
                continue
            share = traces.share_in(sample)
            if share is not None and share >= 0.5:
                reason = (
                    f"error lines in {share:.0%} of the requests {service} failed in "
                    f"({window.errors} in the window, usual {known.usual:.1f})"
                )
                evidence = tuple(f"{callee}: {line}" for line in window.samples.values())
                strength = share * verdict.strength
                signals.append(
                    Signal(
                        callee,
                        "errors",
                        strength,
                        reason,
                        evidence=evidence,
                        traces=sample,
                        at=window.first,
                    )
                )
    return signals


def resource_signals(
    metrics: dict[tuple[str, str], tuple[float, float | None]],
    suspects: set[str],
    graph: CallGraph,
) -> list[Signal]:
    """CPU or memory far above usual, for the services of incidents and what they call; and
    saturation anywhere. The strength is the rise, scaled by how near the value is to
    saturation."""
    watched = suspects | {callee for service in suspects for callee in graph.callees(service)}
    signals = []
    for (service, name), (value, usual) in metrics.items():
        if name not in ("cpu_pct", "memory_pct") or usual is None:
            continue
        saturated = value >= SATURATED_PCT and value >= SATURATED_RISE * usual
        if service not in watched and not saturated:
            continue
        if value >= RESOURCE_RISE * usual and value - usual >= RESOURCE_POINTS:
            what = "CPU" if name == "cpu_pct" else "memory"
            # a rise far from the limit explains little: CPU at 25% does not slow anyone
            rise = min(1.0, (value - usual) / max(usual, RESOURCE_POINTS))
            strength = rise * min(1.0, value / SATURATED_PCT)
            reason = f"{what} {value:.0f}% (usual {usual:.0f}%)"
            signals.append(Signal(service, "resources", strength, reason, opens=saturated))
    return signals

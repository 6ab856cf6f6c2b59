"""The call graph the consumers learnt, with what recent incidents reached marked on it: for
the dashboard's map of who calls whom and where an incident starts.

The edges come from the week profiles (``WeekProfile.calls``: each service's calls out);
the marks from the incidents of the analyses stored recently, each as its latest report
describes it (its highest revision). Only analysed reports are in the analyses store: an
incident the service has not diagnosed yet is not marked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from service.contract import CallEdge, Incident, WeekProfile
from service.profiles import ProfileReader
from service.store import AnalysisStore

MAX_SERVICES = 2_000
MAX_EDGES = 10_000
MAX_REPORTS = 500
"""The newest analyses of the window whose incidents are read: an alert storm must not make
one map request parse the whole store."""


class TopologyService(BaseModel):
    name: str
    anomalous: bool = Field(
        False, description="In the affected services of an incident reported recently."
    )
    root_of: list[str] = Field(
        [], description="The recent incidents whose root cause is this service, by id."
    )


class TopologyEdge(BaseModel):
    caller: str
    callee: str
    calls: float = Field(description="Calls seen since the edge was first learnt.")
    last_seen: datetime | None = None
    anomalous: bool = Field(
        False,
        description="Both ends are affected by one recent incident and the callee is on "
        "its path from the flagged service down to the root.",
    )


class Topology(BaseModel):
    services: list[TopologyService]
    edges: list[TopologyEdge]
    truncated: bool = Field(
        False,
        description=f"Past {MAX_SERVICES} services or {MAX_EDGES} edges: the anomalous "
        "ones are kept first, then services by name and edges by calls.",
    )


def recent_incidents(store: AnalysisStore, minutes: int) -> list[Incident]:
    """The incidents of the analyses stored in the last ``minutes`` (at most the newest
    MAX_REPORTS), each as its latest report has it: its highest revision, the newest
    report among equals. An incident whose latest report is older is over."""
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    records, _ = store.search(since=since, limit=MAX_REPORTS)
    latest: dict[str, Incident] = {}
    for report, _analysis in records:  # newest first
        incident = report.incident
        if incident is None:
            continue
        seen = latest.get(incident.id)
        if seen is None or incident.revision > seen.revision:
            latest[incident.id] = incident
    return list(latest.values())


def read_profiles(profiles: ProfileReader) -> tuple[list[WeekProfile], bool]:
    """The profiles of the first MAX_SERVICES services by name, and whether there were more."""
    names = profiles.services()
    read = [p for name in names[:MAX_SERVICES] if (p := profiles.get(name)) is not None]
    return read, len(names) > MAX_SERVICES


def topology(
    profiles: Iterable[WeekProfile], incidents: Iterable[Incident], truncated: bool = False
) -> Topology:
    """The graph of ``profiles``' calls, marked by ``incidents``. Its services are those
    with a profile, those they call, and those the incidents affected (a service that is
    not instrumented as a server still has its place)."""
    calls: dict[tuple[str, str], CallEdge] = {}
    callees: dict[str, list[str]] = {}
    names: set[str] = set()
    for profile in profiles:
        names.add(profile.service)
        for call in profile.calls:
            names.add(call.callee)
            calls[profile.service, call.callee] = call
            callees.setdefault(profile.service, []).append(call.callee)
    anomalous: set[str] = set()
    root_of: dict[str, list[str]] = {}
    anomalous_edges: set[tuple[str, str]] = set()
    for incident in incidents:
        affected = {a.service for a in incident.affected}
        anomalous |= affected
        names |= affected
        if incident.root_cause is not None:
            root_of.setdefault(incident.root_cause.service, []).append(incident.id)
            names.add(incident.root_cause.service)
        on_path = affected.intersection(incident.path)
        anomalous_edges |= {
            (caller, callee)
            for caller in affected
            for callee in callees.get(caller, ())
            if callee in on_path
        }

    ranked = sorted(names, key=lambda name: (name not in anomalous, name))
    kept = set(ranked[:MAX_SERVICES])
    kept_edges = sorted(
        (key for key in calls if key[0] in kept and key[1] in kept),
        key=lambda key: (key not in anomalous_edges, -calls[key].calls, key),
    )[:MAX_EDGES]
    edges = [
        TopologyEdge(
            caller=caller,
            callee=callee,
            calls=calls[caller, callee].calls,
            last_seen=calls[caller, callee].last_seen,
            anomalous=(caller, callee) in anomalous_edges,
        )
        for caller, callee in sorted(kept_edges)
    ]
    return Topology(
        services=[
            TopologyService(
                name=name, anomalous=name in anomalous, root_of=sorted(root_of.get(name, []))
            )
            for name in sorted(kept)
        ],
        edges=edges,
        truncated=truncated or len(kept) < len(names) or len(kept_edges) < len(calls),
    )

"""The call graph the dashboard draws: the consumers' learnt calls, marked by what recent
incidents reached."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from baselines.store import open_store
from service import rules
from service.contract import (
    PROFILE_KEY_PREFIX,
    AffectedService,
    Analysis,
    AnomalyReport,
    CallEdge,
    Candidate,
    Incident,
    WeekProfile,
)
from service.settings import Settings
from service.store import AnalysisStore
from service.topology import MAX_EDGES, MAX_SERVICES, topology
from tests.service.serving import serving

SEEN = datetime(2026, 11, 19, 14, 5, tzinfo=UTC)
GRAPH = {
    "frontend": {"checkout": 900, "search": 400},
    "checkout": {"payments": 120, "search": 30},
    "payments": {"db": 300},
    "exchange-api": {"fx-provider": 50},
}


def profile(service: str, calls: dict[str, float]) -> WeekProfile:
    edges = [CallEdge(callee=c, calls=n, last_seen=SEEN) for c, n in calls.items()]
    return WeekProfile(service=service, timezone="UTC", operations={}, calls=edges)


def stored(tmp_path, graph: dict[str, dict[str, float]]) -> Settings:
    """The service's settings, over a consumers' store holding a profile per caller."""
    store = open_store(f"sqlite:///{tmp_path / 'baselines.db'}")
    store.save(
        {
            PROFILE_KEY_PREFIX + s: profile(s, calls).model_dump_json().encode()
            for s, calls in graph.items()
        }
    )
    store.close()
    return Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf")


def analysed(store: AnalysisStore, report_id: str, incident: Incident) -> None:
    """A report of ``incident`` flagged on its first affected service, as analysed."""
    report = AnomalyReport(
        id=report_id,
        service=incident.affected[0].service,
        operation="POST /checkout",
        latency_ms={"p95": 900.0},
        incident=incident,
    )
    analysis = Analysis(
        **rules.diagnose(report).model_dump(),
        anomaly_id=report_id,
        service=report.service,
        operation=report.operation,
        model=rules.RULES_MODEL,
        latency_ms=1.0,
    )
    assert store.put(report, analysis)


def incident(id: str, revision: int, path: list[str], root: str, *also: str) -> Incident:
    return Incident(
        id=id,
        started=SEEN,
        revision=revision,
        root_cause=Candidate(service=root, kind="resources", score=2.0),
        affected=[AffectedService(service=s) for s in [*path, *also]],
        path=path,
    )


def test_the_graph_marks_what_the_latest_report_of_a_recent_incident_reached(tmp_path) -> None:
    settings = stored(tmp_path, GRAPH)
    with serving(settings) as client:
        store = client.app.state.store
        # its second revision reached the database; that report was analysed first
        analysed(store, "r-2", incident("inc-1", 1, ["checkout", "payments", "db"], "db", "search"))
        analysed(store, "r-1", incident("inc-1", 0, ["checkout"], "checkout"))
        # over an hour ago: no longer on the map, unless the window reaches back that far
        analysed(store, "r-0", incident("inc-0", 0, ["exchange-api", "fx-provider"], "fx-provider"))
        with sqlite3.connect(settings.resolved_analyses_url().removeprefix("sqlite:///")) as db:
            hour_ago = (datetime.now(UTC) - timedelta(minutes=61)).isoformat()
            db.execute(
                "UPDATE whyslow_analyses SET created_at = ? WHERE anomaly_id = 'r-0'", (hour_ago,)
            )

        graph = client.get("/v1/topology").json()
        earlier = client.get("/v1/topology", params={"minutes": 90}).json()
        assert client.get("/v1/topology", params={"minutes": 0}).status_code == 422

    assert graph["truncated"] is False
    services = {s["name"]: (s["anomalous"], s["root_of"]) for s in graph["services"]}
    assert services == {
        "frontend": (False, []),
        "checkout": (True, []),  # the first revision's root, no longer
        "search": (True, []),
        "payments": (True, []),
        "db": (True, ["inc-1"]),  # called, without a profile of its own
        "exchange-api": (False, []),
        "fx-provider": (False, []),
    }
    assert [s["name"] for s in graph["services"]] == sorted(services)
    edges = {(e["caller"], e["callee"]): (e["calls"], e["anomalous"]) for e in graph["edges"]}
    assert edges == {
        ("frontend", "checkout"): (900, False),  # frontend was not affected
        ("frontend", "search"): (400, False),
        ("checkout", "payments"): (120, True),
        ("checkout", "search"): (30, False),  # both affected, but search is off the path
        ("payments", "db"): (300, True),
        ("exchange-api", "fx-provider"): (50, False),
    }
    assert {e["last_seen"] for e in graph["edges"]} == {"2026-11-19T14:05:00Z"}

    marked = {s["name"]: s["root_of"] for s in earlier["services"] if s["anomalous"]}
    assert marked["fx-provider"] == ["inc-0"] and marked["db"] == ["inc-1"]
    assert {(e["caller"], e["callee"]) for e in earlier["edges"] if e["anomalous"]} == {
        ("checkout", "payments"),
        ("payments", "db"),
        ("exchange-api", "fx-provider"),
    }


def test_without_profiles_or_analyses_the_graph_is_empty(tmp_path) -> None:
    with serving(Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf")) as client:
        assert client.get("/v1/topology").json() == {
            "services": [],
            "edges": [],
            "truncated": False,
        }


def test_a_large_graph_is_bounded_and_keeps_what_an_incident_reached() -> None:
    """A mesh bigger than the map holds: the anomalous services and edges stay on it."""
    callers = [f"svc-{i:05d}" for i in range(MAX_SERVICES + 100)]
    *fanning, last = callers  # the last by name: the first left out, were it not affected
    profiles = [
        profile(c, {f"dep-{(i + k) % 40:02d}": 1 for k in range(8)}) for i, c in enumerate(fanning)
    ]
    profiles.append(profile(last, {"dep-99": 5}))
    reached = incident("inc-9", 0, [last, "dep-99"], "dep-99")

    graph = topology(profiles, [reached])

    assert graph.truncated
    assert len(graph.services) == MAX_SERVICES and len(graph.edges) <= MAX_EDGES
    names = {s.name for s in graph.services}
    assert {last, "dep-99"} <= names
    assert any(e.caller == last and e.callee == "dep-99" and e.anomalous for e in graph.edges)
    assert all(e.caller in names and e.callee in names for e in graph.edges)

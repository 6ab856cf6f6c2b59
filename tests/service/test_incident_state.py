"""Incident state over a real SQLite store: acknowledged and resolved by a person, resolved
by quiet, filtered on, and test reports kept out of sight. Answers come from the rule
engine (no model file), as when the model failed to load."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.contract import Analysis, AnomalyReport
from service.incident_state import Incidents
from service.rules import RULES_MODEL, diagnose
from service.settings import Settings
from service.store import AnalysisStore
from tests.baselines.conftest import postgres_schema
from tests.service.serving import serving

BASELINE = {"hour_of_week": 1, "p50": 90, "p95": 200, "samples": 60, "level": "hour_of_week"}


def report(anomaly_id: str, incident: str | None = None, **fields: Any) -> AnomalyReport:
    body: dict[str, Any] = {
        "id": anomaly_id,
        "service": "checkout",
        "operation": "POST /checkout",
        "latency_ms": {"p95": 900},
        "baseline": BASELINE,
        "context": {"cpu_pct": 97, "cpu_baseline_pct": 45},
    }
    if incident is not None:
        body["incident"] = {"id": incident, "started": "2026-11-16T09:00:00Z"}
    return AnomalyReport.model_validate(body | fields)


def analysed(store: AnalysisStore, anomaly: AnomalyReport) -> None:
    """The analysis the model would have stored for the report."""
    analysis = Analysis(
        **diagnose(anomaly).model_dump(),
        anomaly_id=anomaly.anomaly_id,
        service=anomaly.service,
        operation=anomaly.operation,
        model=RULES_MODEL,
        latency_ms=1.0,
    )
    store.put(anomaly, analysis)
    time.sleep(0.002)  # distinct creation times: a stable newest-first order


def app_state(client: TestClient) -> Any:
    """The app's state: its store, its notifier."""
    return cast(FastAPI, client.app).state


def settings_for(tmp_path, **more: Any) -> Settings:
    return Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf", **more)


def ids(client: TestClient, **params: Any) -> list[str]:
    page = client.get("/v1/anomalies", params=params)
    assert page.status_code == 200, page.text
    return [item["anomaly_id"] for item in page.json()["items"]]


def test_ack_and_resolve_act_on_the_whole_incident_without_the_model(tmp_path) -> None:
    settings = settings_for(tmp_path)
    store = AnalysisStore(settings.resolved_analyses_url())
    for anomaly in (report("a1", "inc-1"), report("a2", "inc-1"), report("b1")):
        analysed(store, anomaly)
    store.close()
    with serving(settings) as client:
        page = client.get("/v1/anomalies").json()
        assert {i: s["state"] for i, s in page["incidents"].items()} == dict.fromkeys(
            ("a1", "a2", "b1"), "open"
        )
        assert page["incidents"]["a2"]["incident_id"] == "inc-1"
        assert page["incidents"]["b1"]["incident_id"] == "b1"  # no incident: its own

        acked = client.post("/v1/anomalies/a1/ack")
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
        assert acked.json()["acknowledged_at"] is not None
        assert client.post("/v1/anomalies/a1/ack").json()["state"] == "acknowledged"
        assert ids(client, state="acknowledged") == ["a2", "a1"]  # its incident's reports
        assert ids(client, state="open") == ["b1"]
        assert client.get("/v1/anomalies/a2").json()["incident"]["state"] == "acknowledged"

        resolved = client.post("/v1/anomalies/a2/resolve").json()
        assert resolved["state"] == "resolved" and resolved["resolved_by"] == "person"
        assert ids(client, state="resolved") == ["a2", "a1"]
        assert client.post("/v1/anomalies/a2/resolve").status_code == 200  # again: no change
        refused = client.post("/v1/anomalies/a1/ack")
        assert refused.status_code == 409 and "inc-1" in refused.json()["detail"]

        assert client.post("/v1/anomalies/nope/ack").status_code == 404
        assert client.post("/v1/anomalies/nope/resolve").status_code == 404
        assert client.get("/v1/anomalies", params={"state": "closed"}).status_code == 422


def test_a_new_report_of_a_resolved_incident_opens_it_again_without_the_model(tmp_path) -> None:
    settings = settings_for(tmp_path)
    with serving(settings) as client:
        first = report("r1", "inc-2").model_dump(mode="json")
        assert client.post("/v1/analyze", json=first).status_code == 200
        assert client.post("/v1/anomalies/r1/resolve").json()["state"] == "resolved"
        # the same report again (a retried POST) is no new report
        assert client.post("/v1/analyze", json=first).status_code == 200
        assert client.post("/v1/anomalies/r1/ack").status_code == 409
        second = report("r2", "inc-2").model_dump(mode="json")
        assert client.post("/v1/analyze", json=second).status_code == 200
        reopened = client.post("/v1/anomalies/r1/ack").json()
        assert reopened["state"] == "acknowledged" and reopened["resolved_at"] is None


def test_test_reports_are_hidden_unless_asked_for_without_the_model(tmp_path) -> None:
    settings = settings_for(tmp_path)
    with serving(settings) as client:
        store: AnalysisStore = app_state(client).store
        probe = report("probe-1")
        posted = client.post(
            "/v1/analyze", params={"test": "true"}, json=probe.model_dump(mode="json")
        )
        assert posted.status_code == 200 and posted.json()["grounding"] == "rules"
        analysed(store, probe)  # as the model's answer would be stored
        analysed(store, report("real-1"))
        assert ids(client) == ["real-1"]
        assert ids(client, include_tests=True) == ["real-1", "probe-1"]
        assert client.get("/v1/anomalies").json()["total"] == 1
        one = client.get("/v1/anomalies/probe-1").json()  # a permalink still works
        assert one["incident"]["test"] is True
        assert store.is_test(probe) and not store.is_test(report("real-1"))


class Recorder:
    """A notifier that keeps what it is told."""

    def __init__(self) -> None:
        self.resolved_ids: list[str] = []

    def resolved(self, incident_id: str, analysis: Analysis) -> None:
        self.resolved_ids.append(incident_id)


def test_a_quiet_consumer_incident_resolves_itself_once_without_the_model(tmp_path) -> None:
    settings = settings_for(tmp_path, incident_resolve_after_seconds=0.5)
    store = AnalysisStore(settings.resolved_analyses_url())
    analysed(store, report("c1", "inc-quiet"))
    analysed(store, report("m1"))  # posted by hand: resolved by a person only
    store.track(report("t1", "inc-test"), "consumer", test=True)
    analysed(store, report("t1", "inc-test"))
    store.close()
    with serving(settings) as client:
        recorder = Recorder()
        app_state(client).notifier = recorder
        assert ids(client, state="open") == ["m1", "c1"]
        deadline = time.monotonic() + 10
        while "inc-quiet" not in recorder.resolved_ids:  # the background pass, no reads
            assert time.monotonic() < deadline, "no background pass resolved it"
            time.sleep(0.1)
        assert ids(client, state="resolved") == ["c1"]
        assert ids(client, state="open") == ["m1"]
        assert client.get("/v1/anomalies/c1").json()["incident"]["resolved_by"] == "quiet"
        time.sleep(1)
        ids(client)
        assert recorder.resolved_ids == ["inc-quiet"]  # once; the test incident never


def test_quiet_is_evaluated_on_read_and_old_quiet_is_no_news(tmp_path) -> None:
    store = AnalysisStore(f"sqlite:///{tmp_path / 'analyses.db'}")
    analysed(store, report("c1", "inc-1"))
    incidents, recorder = Incidents(store, 900), Recorder()
    now = datetime.now(UTC)
    assert incidents.settle(recorder, now) == []
    assert incidents.settle(recorder, now + timedelta(seconds=901)) == ["inc-1"]
    assert recorder.resolved_ids == ["inc-1"]
    analysed(store, report("c2", "inc-2"))
    assert incidents.settle(recorder, now + timedelta(hours=2)) == ["inc-2"]
    assert recorder.resolved_ids == ["inc-1"]  # quiet for 2 h: resolved silently
    store.close()


def test_a_store_from_before_incident_states_files_its_anomalies(tmp_path) -> None:
    path = tmp_path / "analyses.db"
    old = AnalysisStore(f"sqlite:///{path}")
    analysed(old, report("x1", "inc-x"))
    analysed(old, report("y1"))
    old.close()
    with sqlite3.connect(path) as conn:  # as the store was before the incident tables
        conn.execute("DROP TABLE whyslow_incidents")
        conn.execute("DROP TABLE whyslow_incident_anomalies")
    store = AnalysisStore(f"sqlite:///{path}")
    statuses = store.statuses(["x1", "y1"])
    assert statuses["x1"].incident_id == "inc-x" and statuses["x1"].source == "consumer"
    assert statuses["y1"].incident_id == "y1" and statuses["y1"].source == "manual"
    assert {s.state for s in statuses.values()} == {"open"}
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The analyses' store on either backend it runs on: a SQLite file, or a schema of
    the real PostgreSQL server of the store tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'analyses.db'}"
    else:
        with postgres_schema() as backend:
            yield backend.url


def test_the_incident_states_on_each_store_backend(store_url: str) -> None:
    store = AnalysisStore(store_url)
    try:
        assert store.track(report("p1", "inc-p"), "consumer")
        assert not store.track(report("p1", "inc-p"), "consumer")  # a retried POST
        analysed(store, report("p1", "inc-p"))
        analysed(store, report("p2", "inc-p"))
        store.track(report("q1"), "manual", test=True)
        analysed(store, report("q1"))
        assert store.acknowledge("inc-p") and not store.acknowledge("inc-p")
        assert [a.anomaly_id for _, a in store.search(state="acknowledged")[0]] == ["p2", "p1"]
        assert store.search()[1] == 2 and store.search(include_tests=True)[1] == 3
        incidents = Incidents(store, 60)
        later = datetime.now(UTC) + timedelta(seconds=61)
        assert incidents.settle(None, later) == ["inc-p"]
        assert incidents.settle(None, later) == []  # resolved once
        status = store.status("p2")
        assert status is not None and (status.state, status.resolved_by) == ("resolved", "quiet")
        assert store.incident("inc-p") is not None
        store.track(report("p3", "inc-p"), "consumer")  # a new report opens it again
        reopened = store.status("p1")
        assert reopened is not None and (reopened.state, reopened.acknowledged_at) == ("open", None)
        assert store.resolve("q1", "person") and not store.resolve("q1", "person")
        assert store.is_test(report("q1")) and store.statuses(["q1"])["q1"].state == "resolved"
    finally:
        store.close()

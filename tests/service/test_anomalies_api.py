"""The dashboards' read API over a real SQLite store."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from service.contract import Analysis, AnomalyReport
from service.main import create_app
from service.rules import RULES_MODEL, diagnose
from service.settings import Settings
from service.store import AnalysisStore

CASES = [
    ("checkout", {"cpu_pct": 97, "cpu_baseline_pct": 45}),
    ("checkout", {"memory_pct": 95, "memory_baseline_pct": 50}),
    (
        "exchange-api",
        {
            "downstream": [
                {"service": "fx", "operation": "GET /q", "p95_ms": 500, "baseline_p95_ms": 60}
            ]
        },
    ),
    ("search", {}),
]


def stored(tmp_path) -> Settings:
    settings = Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf")
    store = AnalysisStore(settings.resolved_store_url())
    for i, (service, context) in enumerate(CASES):
        report = AnomalyReport.model_validate(
            {
                "id": f"a{i}",
                "service": service,
                "operation": "GET /x",
                "latency_ms": {"p95": 900 if i else 300},
                "baseline": {
                    "hour_of_week": 1,
                    "p50": 90,
                    "p95": 200,
                    "samples": 60,
                    "level": "hour_of_week",
                },
                "context": context,
            }
        )
        analysis = Analysis(
            **diagnose(report).model_dump(),
            anomaly_id=report.anomaly_id,
            service=service,
            operation="GET /x",
            model=RULES_MODEL,
            latency_ms=1.0,
        )
        store.put(report, analysis)
        time.sleep(0.002)  # distinct creation times: a stable newest-first order
    store.close()
    return settings


def test_list_filter_and_paginate(tmp_path) -> None:
    with TestClient(create_app(stored(tmp_path))) as client:
        page = client.get("/v1/anomalies").json()
        assert page["total"] == 4 and [a["anomaly_id"] for a in page["items"]] == [
            "a3",
            "a2",
            "a1",
            "a0",
        ]
        assert client.get("/v1/anomalies", params={"service": "checkout"}).json()["total"] == 2
        by_cause = client.get("/v1/anomalies", params={"cause": "downstream_dependency"}).json()
        assert [a["service"] for a in by_cause["items"]] == ["exchange-api"]
        assert client.get("/v1/anomalies", params={"severity": "info"}).json()["total"] == 1
        assert client.get("/v1/anomalies", params={"severity": "critical"}).json()["total"] == 3
        second = client.get("/v1/anomalies", params={"limit": 2, "offset": 2}).json()
        assert [a["anomaly_id"] for a in second["items"]] == ["a1", "a0"]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert client.get("/v1/anomalies", params={"since": future}).json()["total"] == 0
        assert client.get("/v1/anomalies", params={"until": future}).json()["total"] == 4


def test_one_anomaly_in_full_and_errors(tmp_path) -> None:
    with TestClient(create_app(stored(tmp_path))) as client:
        record = client.get("/v1/anomalies/a2").json()
        assert record["report"]["service"] == "exchange-api"
        assert record["analysis"]["probable_cause"] == "downstream_dependency"
        missing = client.get("/v1/anomalies/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        assert client.get("/v1/anomalies", params={"cause": "gremlins"}).status_code == 422
        assert client.get("/v1/anomalies", params={"limit": 0}).status_code == 422

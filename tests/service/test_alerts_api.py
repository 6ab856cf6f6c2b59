"""Alertmanager's and Grafana's webhooks in: firing alerts diagnosed, resolved ones resolving
their incidents, re-sent ones the same anomaly, bad payloads refused by field. Answers come
from the rule engine (no model file), as when the model failed to load."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.alerts import Alert, alert_p95
from service.settings import Settings
from service.store import AnalysisStore
from tests.service.serving import serving
from tests.service.test_baselines_api import learnt

ALERT = "/v1/alerts/alertmanager"

CHECKOUT_ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {
        "alertname": "CheckoutSlow",
        "service": "checkout",
        "route": "POST /checkout",
        "severity": "page",
    },
    "annotations": {
        "summary": "checkout p95 above 500 ms",
        "p95_ms": "912.5",
        "cpu_pct": "97",
        "cpu_baseline_pct": "45",
    },
    "startsAt": "2026-11-16T14:02:26.739266876+01:00",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus:9090/graph?g0.expr=whyslow",
    "fingerprint": "1a30ba71cca2921f",
}

ALERTMANAGER: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="CheckoutSlow"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "whyslow",
    "groupLabels": {"alertname": "CheckoutSlow"},
    "commonLabels": {"alertname": "CheckoutSlow"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        CHECKOUT_ALERT,
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": "db-1:9100"},
            "annotations": {"summary": "disk 95% full"},
            "startsAt": "2026-11-16T13:58:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "bc97ff14869b13e3",
        },
    ],
}

GRAFANA: dict[str, Any] = {
    "receiver": "whyslow",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "Quotes slow", "service_name": "exchange-api"},
            "annotations": {"description": "GET /rates p95 over its threshold"},
            "startsAt": "2026-11-16T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example/alerting/grafana/1afz29v7z/view",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://grafana.example/alerting/silence/new",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 812.5, "C": 1},
        }
    ],
    "groupLabels": {"alertname": "Quotes slow"},
    "commonLabels": {"alertname": "Quotes slow", "service_name": "exchange-api"},
    "commonAnnotations": {},
    "externalURL": "https://grafana.example/",
    "version": "1",
    "groupKey": '{}:{alertname="Quotes slow"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:1] Quotes slow",
    "state": "alerting",
    "message": "**Firing**",
}


def app_state(client: TestClient) -> Any:
    """The app's state: its store, its notifier."""
    return cast(FastAPI, client.app).state


def settings_for(tmp_path, **more: Any) -> Settings:
    return Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf", **more)


def resolved(payload: dict[str, Any]) -> dict[str, Any]:
    """The notification Alertmanager sends when the group's alerts resolve."""
    done = copy.deepcopy(payload)
    done["status"] = "resolved"
    for alert in done["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-16T14:20:00Z"
    return done


def test_alertmanager_firing_then_resolved_without_the_model(tmp_path) -> None:
    with serving(settings_for(tmp_path)) as client:
        store: AnalysisStore = app_state(client).store
        answer = client.post(ALERT, json=ALERTMANAGER)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        [analysis] = body["analyses"]
        assert analysis["fingerprint"] == "1a30ba71cca2921f"
        assert analysis["service"] == "checkout" and analysis["operation"] == "POST /checkout"
        assert analysis["anomaly_id"].startswith("alert-")
        assert "912.5ms" in analysis["summary"]  # the alert's p95
        assert analysis["probable_cause"] == "local_cpu_saturation"  # its annotations' cpu
        assert body["skipped"] == [
            {
                "fingerprint": "bc97ff14869b13e3",
                "reason": "no service label (looked for service, service_name, job)",
            }
        ]
        status = store.status(analysis["anomaly_id"])
        assert status is not None and (status.state, status.source) == ("open", "alert")

        again = client.post(ALERT, json=ALERTMANAGER).json()  # repeat_interval's re-send
        assert again["analyses"][0]["anomaly_id"] == analysis["anomaly_id"]

        later = copy.deepcopy(ALERTMANAGER)  # the same alert firing again another time
        later["alerts"][0]["startsAt"] = "2026-11-16T18:00:00Z"
        assert (
            client.post(ALERT, json=later).json()["analyses"][0]["anomaly_id"]
            != (analysis["anomaly_id"])
        )

        done = client.post(ALERT, json=resolved(ALERTMANAGER)).json()
        assert done["analyses"] == []
        assert done["resolved"] == [
            {
                "fingerprint": "1a30ba71cca2921f",
                "anomaly_id": analysis["anomaly_id"],
                "incident_id": analysis["anomaly_id"],
            }
        ]
        assert [s["fingerprint"] for s in done["skipped"]] == ["bc97ff14869b13e3"]
        status = store.status(analysis["anomaly_id"])
        assert status is not None and (status.state, status.resolved_by) == ("resolved", "alert")
        # the API says so too: a resolved incident has nothing to acknowledge
        assert client.post(f"/v1/anomalies/{analysis['anomaly_id']}/ack").status_code == 409


def test_grafana_contact_point_payload_without_the_model(tmp_path) -> None:
    with serving(settings_for(tmp_path)) as client:
        body = client.post(ALERT, json=GRAFANA).json()
        [analysis] = body["analyses"]
        assert analysis["service"] == "exchange-api"
        # no operation label and no profile of the service: the alert's name stands for it
        assert analysis["operation"] == "Quotes slow"
        assert "812.5ms" in analysis["summary"]  # values: B, the query's; C is the condition
        done = client.post(ALERT, json=resolved(GRAFANA)).json()
        assert [r["anomaly_id"] for r in done["resolved"]] == [analysis["anomaly_id"]]


def test_an_alert_without_numbers_is_completed_from_the_profile_without_the_model(
    tmp_path,
) -> None:
    settings = learnt(tmp_path)
    bare = copy.deepcopy(CHECKOUT_ALERT)
    bare["labels"] = {"alertname": "CheckoutSlow", "job": "checkout"}
    bare["annotations"] = {}
    bare["startsAt"] = "2026-11-16T14:00:00Z"  # Monday 14:00 in the profile's zone
    with serving(settings) as client:
        profile = client.get("/v1/baselines/checkout").json()
        answer = client.post(ALERT, json={"status": "firing", "alerts": [bare]})
        assert answer.status_code == 200, answer.text
    [analysis] = answer.json()["analyses"]
    operation = analysis["operation"]
    assert operation in profile["operations"]  # the operation furthest above its usual
    usual = profile["operations"][operation]["p95"][14]
    assert f"vs usual {round(usual, 1):g}ms" in analysis["summary"]


def test_service_labels_are_configurable_without_the_model(tmp_path) -> None:
    with serving(settings_for(tmp_path, alert_service_labels="app, service")) as client:
        alert = copy.deepcopy(CHECKOUT_ALERT)
        alert["labels"]["app"] = "payments"
        body = client.post(ALERT, json={"status": "firing", "alerts": [alert]}).json()
        assert body["analyses"][0]["service"] == "payments"  # "app" comes first


def test_whyslows_own_alerts_are_not_diagnosed_without_the_model(tmp_path) -> None:
    """Its incident alerts (notifications to Alertmanager) and the alerts on whyslow itself
    (deploy/prometheus/whyslow-rules.yml), routed back to it, would feed on themselves."""
    own = copy.deepcopy(CHECKOUT_ALERT)
    own["labels"] = {"alertname": "WhyslowIncident", "service": "checkout", "incident_id": "i"}
    watch = copy.deepcopy(CHECKOUT_ALERT)
    watch["labels"] = {"alertname": "WhyslowConsumerLagging", "job": "whyslow-consumer"}
    watch["labels"]["component"] = "whyslow"
    with serving(settings_for(tmp_path)) as client:
        body = client.post(ALERT, json={"status": "firing", "alerts": [own, watch]}).json()
    assert body["analyses"] == []
    assert [s["reason"].split(" ")[0] for s in body["skipped"]] == ["WhyslowIncident", "an"]


def test_test_alerts_are_hidden_without_the_model(tmp_path) -> None:
    with serving(settings_for(tmp_path)) as client:
        body = client.post(ALERT, params={"test": "true"}, json=ALERTMANAGER).json()
        status = app_state(client).store.status(body["analyses"][0]["anomaly_id"])
        assert status is not None and status.test


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["alerts"][0].pop("startsAt"), ["body", "alerts", 0, "startsAt"]),
        (lambda p: p["alerts"][0].update(status="pending"), ["body", "alerts", 0, "status"]),
        (lambda p: p.update(alerts={"not": "a list"}), ["body", "alerts"]),
        (lambda p: p["alerts"][0].update(labels=["service"]), ["body", "alerts", 0, "labels"]),
        (lambda p: p.pop("status"), ["body", "status"]),
        (lambda p: p.update(orgId=False), ["body", "orgId"]),
        (lambda p: p["alerts"][0].update(startsAt=1794819601), ["body", "alerts", 0, "startsAt"]),
        (lambda p: p["alerts"][0].update(endsAt=0), ["body", "alerts", 0, "endsAt"]),
        (
            lambda p: p["alerts"][0].update(values={"B": "812"}),
            ["body", "alerts", 0, "values", "B"],
        ),
    ],
)
def test_a_bad_payload_gets_422_naming_the_field(tmp_path, change, field) -> None:
    payload = copy.deepcopy(ALERTMANAGER)
    change(payload)
    with serving(settings_for(tmp_path)) as client:
        answer = client.post(ALERT, json=payload)
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [field]


@pytest.mark.parametrize(
    ("annotations", "grafana", "p95"),
    [
        ({"p95_ms": "512"}, {}, 512.0),
        ({"p95_ms": "512ms"}, {}, 512.0),
        ({"p95_seconds": "0.5"}, {}, 500.0),
        ({"value": "0.25", "unit": "s"}, {}, 250.0),
        ({"value": "3.2e+02"}, {}, 320.0),
        ({"value": "high"}, {"values": {"A": 700.0, "B": 1}}, 700.0),
        ({}, {"valueString": "[ var='B' labels={} value=641.2 ], [ var='C' value=1 ]"}, 641.2),
        ({}, {}, None),
    ],
)
def test_the_p95_an_alert_carries(annotations, grafana, p95) -> None:
    alert = Alert.model_validate(
        {
            "status": "firing",
            "labels": {},
            "annotations": annotations,
            "startsAt": "2026-11-16T14:00:00Z",
        }
        | grafana
    )
    assert alert_p95(alert) == p95

"""``POST /v1/alerts/alertmanager``: Alertmanager's and Grafana's webhook in. Each firing
alert naming a service is diagnosed as a posted report is; each resolved one resolves the
incident of its anomaly."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from service.alerts import (
    AlertLabels,
    AlertWebhook,
    Skipped,
    anomaly_id,
    fingerprint,
    report_of,
    service_of,
)
from service.analyses import Overloaded
from service.api.deps import AnalysesDep, AnalyzerDep, ProfilesDep
from service.contract import ProbableCause
from service.incident_state import IncidentsDep, NotifierDep

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


class AlertAnalysis(BaseModel):
    fingerprint: str
    anomaly_id: str
    service: str
    operation: str
    probable_cause: ProbableCause
    summary: str


class ResolvedAlert(BaseModel):
    fingerprint: str
    anomaly_id: str
    incident_id: str


class SkippedAlert(BaseModel):
    fingerprint: str
    reason: str


class AlertsAnswer(BaseModel):
    analyses: list[AlertAnalysis] = []
    """The firing alerts diagnosed (GET /v1/anomalies/{anomaly_id} has each in full)."""
    resolved: list[ResolvedAlert] = []
    """The resolved alerts, each with the incident it resolved (or had resolved before)."""
    skipped: list[SkippedAlert] = []
    """Alerts that made no report or matched no anomaly, and why."""


async def get_alert_labels(request: Request) -> AlertLabels:
    return request.app.state.alert_labels


AlertLabelsDep = Annotated[AlertLabels, Depends(get_alert_labels)]


@router.post(
    "/alertmanager",
    responses={
        400: {"description": "The body is not UTF-8 JSON."},
        413: {"description": "The body is over WHYSLOW_MAX_BODY_BYTES: lower max_alerts."},
        503: {
            "description": "The model is still loading, or its queue is full: the sender "
            "retries, and the alerts already diagnosed are answered from the store then."
        },
    },
)
def alertmanager(
    payload: AlertWebhook,
    names: AlertLabelsDep,
    analyzer: AnalyzerDep,
    analyses: AnalysesDep,
    profiles: ProfilesDep,
    incidents: IncidentsDep,
    notifier: NotifierDep,
    test: Annotated[
        bool, Query(description="Test alerts: hidden like test reports, never notified.")
    ] = False,
) -> AlertsAnswer:
    """Alertmanager's webhook (``webhook_configs``, payload version 4) or a Grafana webhook
    contact point. A firing alert whose labels name a service (``service``,
    ``service_name``, ``job``: WHYSLOW_ALERT_SERVICE_LABELS) and maybe an operation
    (``operation``, ``span_name``, ``route``, ``handler``) becomes an anomaly report with
    the alert's values (annotations ``p95_ms`` or ``value``, Grafana's ``values``) and the
    usual p95 from the consumers' profile, and is diagnosed. Its id comes from the alert's
    fingerprint and ``startsAt``: a re-sent alert is the same anomaly. A resolved alert
    resolves the incident of its anomaly."""
    answer = AlertsAnswer()
    store = incidents.store
    for alert in payload.alerts:
        key, anomaly = fingerprint(alert), anomaly_id(alert)
        if alert.status == "resolved":
            status = store.status(anomaly)
            if status is None:
                reason = "no anomaly of this alert: its firing notification never came"
                answer.skipped.append(SkippedAlert(fingerprint=key, reason=reason))
                continue
            incidents.resolve(status.incident_id, "alert", notifier)
            answer.resolved.append(
                ResolvedAlert(fingerprint=key, anomaly_id=anomaly, incident_id=status.incident_id)
            )
            continue
        try:
            report = report_of(alert, names, profiles.get(service_of(alert, names)))
        except Skipped as exc:
            answer.skipped.append(SkippedAlert(fingerprint=key, reason=str(exc)))
            continue
        store.track(report, "alert", test)
        try:
            analysis = analyses.analyze(report, analyzer)
        except Overloaded as exc:
            raise HTTPException(
                503, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}
            ) from exc
        store.note_analysis(report, analysis)
        answer.analyses.append(
            AlertAnalysis(
                fingerprint=key,
                anomaly_id=anomaly,
                service=report.service,
                operation=report.operation,
                probable_cause=analysis.probable_cause,
                summary=analysis.summary,
            )
        )
    return answer

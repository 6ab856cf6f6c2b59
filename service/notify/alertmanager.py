"""Alertmanager's ``POST /api/v2/alerts``: one alert per incident, routed by its labels.

Alertmanager tells alerts apart by their label set, so the incident's id is a label: two
incidents of one service with one cause stay two alerts, and resolving one leaves the
other firing. An alert without ``endsAt`` is kept for Alertmanager's ``resolve_timeout``
(5 minutes by default) and must be posted again before that, as Prometheus does: the
'opened' body is re-sent every ``WHYSLOW_ALERTMANAGER_RESEND_SECONDS`` while the incident
is open. Resolved: the same alert (labels, startsAt) with ``endsAt``."""

from __future__ import annotations

import json
from typing import Any

from service.notify.event import Event

ALERTNAME = "WhyslowIncident"
API_PATH = "/api/v2/alerts"


def alerts_url(base: str) -> str:
    """Alertmanager's base URL (http://alertmanager:9093) or the API endpoint itself."""
    base = base.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


class Alertmanager:
    name = "alertmanager"

    def __init__(self, url: str, resend_seconds: float) -> None:
        self.url = alerts_url(url)
        self.resend_seconds: float | None = resend_seconds

    def render(self, event: Event, opened: str | None) -> str:
        if event.kind == "resolved" and opened is not None:
            alerts: list[dict[str, Any]] = json.loads(opened)
            for alert in alerts:
                alert["endsAt"] = event.at.isoformat()
            return json.dumps(alerts)
        return json.dumps([self._alert(event)])

    def _alert(self, event: Event) -> dict[str, Any]:
        analysis = event.analysis
        incident = event.incident
        root = incident.root_cause if incident is not None else None
        actions = "; ".join(analysis.recommended_actions)
        annotations = {
            "summary": analysis.summary,
            "description": f"{analysis.explanation} Actions: {actions}",
        }
        if event.links.dashboard:
            annotations["dashboard_url"] = event.links.dashboard
        if event.links.traces:
            annotations["trace_urls"] = " ".join(event.links.traces)
        alert: dict[str, Any] = {
            "labels": {
                "alertname": ALERTNAME,
                "incident_id": event.incident_id,
                "service": analysis.service,
                "root_service": root.service if root is not None else analysis.service,
                "cause": analysis.probable_cause.value,
                "severity": analysis.severity.value,
            },
            "annotations": annotations,
            "startsAt": (incident.started if incident is not None else event.at).isoformat(),
        }
        if event.links.dashboard:
            alert["generatorURL"] = event.links.dashboard
        if event.kind == "resolved":  # its 'opened' alert was never made: resolved at once
            alert["endsAt"] = event.at.isoformat()
        return alert

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        return {"Content-Type": "application/json"}

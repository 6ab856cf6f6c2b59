"""Grafana annotations: the incident drawn on the graphs where its latency shows, from its
start to its end.

Opened: ``POST /api/annotations`` with ``time`` (the incident's start, epoch ms), ``tags``
(``whyslow``, the service, the root cause's service, the cause: what a dashboard's
annotation query filters on), ``text`` (the summary, the root cause, a link to whyslow's
dashboard) and, with ``WHYSLOW_GRAFANA_DASHBOARD_UID``, ``dashboardUID`` (else an
organisation annotation, shown wherever an annotation query matches its tags). Grafana
answers the annotation's ``id``, which the outbox keeps with the 'opened' row. Resolved:
``PATCH /api/annotations/{id}`` with ``timeEnd`` turns the point into a region. An open
that Grafana refused (400 or 422: the same body never passes) is given up, so no id is
known at resolve: the whole region is posted then instead.

Grafana's exchange is not one POST of a stored body, so these rows go through
``AnnotatingSender``: same outbox, claims, pacing, backoff and counts as every target. The
service-account token is sent as ``Authorization: Bearer`` and never logged."""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from service.notify.event import Event
from service.notify.outbox import Row
from service.notify.pacing import retry_after
from service.notify.sender import Sender

log = logging.getLogger(__name__)

API_PATH = "/api/annotations"
TAG = "whyslow"
REFUSED = frozenset({400, 422})
"""Answers to a POST that no retry of the same body changes."""
GONE = 404
"""The answer to a PATCH of an annotation deleted in Grafana meanwhile."""


def annotations_url(base: str) -> str:
    """Grafana's base URL (http://grafana:3000, or under a sub-path) or the endpoint itself."""
    base = base.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def epoch_ms(event: Event) -> int:
    return int(event.at.timestamp() * 1000)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes


class Grafana:
    name = "grafana"
    resend_seconds: float | None = None

    def __init__(self, url: str, token: str | None, dashboard_uid: str | None) -> None:
        self.url = annotations_url(url)
        self._token = token or None
        self._dashboard_uid = dashboard_uid or None

    def render(self, event: Event, opened: str | None) -> str:
        """'opened': the annotation; 'resolved': it as a region (``timeEnd`` added), what
        is posted when its id is unknown. ``dashboardUID`` is added at send time, so a
        row waiting through a change of the setting goes where the setting now says."""
        if event.kind == "resolved" and opened is not None:
            annotation: dict[str, Any] = json.loads(opened)
        else:
            annotation = self._annotation(event)
        if event.kind == "resolved":
            annotation["timeEnd"] = max(epoch_ms(event), int(annotation["time"]))
        return json.dumps(annotation)

    def _annotation(self, event: Event) -> dict[str, Any]:
        analysis = event.analysis
        incident = event.incident
        root = incident.root_cause if incident is not None else None
        cause = analysis.probable_cause.value
        tags = [TAG, analysis.service, root.service if root is not None else analysis.service]
        started = incident.started.timestamp() * 1000 if incident is not None else None
        lines = [
            f"<b>Slow: {html.escape(analysis.service)} {html.escape(analysis.operation)}</b>",
            html.escape(analysis.summary),
            f"Root cause: {html.escape(root.service)} ({root.kind}), {cause}"
            if root is not None
            else f"Probable cause: {cause}",
        ]
        if event.links.dashboard:
            href = html.escape(event.links.dashboard, quote=True)
            lines.append(f'<a href="{href}">Open in whyslow</a>')
        return {
            "time": int(started) if started is not None else epoch_ms(event),
            # Grafana stores a tag once per annotation: a repeated one is refused
            "tags": list(dict.fromkeys([*tags, cause])),
            "text": "<br>".join(lines),
        }

    def request(self, row: Row, annotation_id: str | None) -> Request:
        """The call that delivers ``row``: 'resolved' with the annotation's id patches its
        end in; anything else posts the row's annotation."""
        annotation: dict[str, Any] = json.loads(row.payload)
        if row.event == "resolved" and annotation_id is not None:
            body = json.dumps({"timeEnd": annotation["timeEnd"]}).encode()
            return Request("PATCH", f"{self.url}/{annotation_id}", body)
        if self._dashboard_uid is not None:
            annotation["dashboardUID"] = self._dashboard_uid
        return Request("POST", self.url, json.dumps(annotation).encode())

    def given_up(self, request: Request, status: int) -> bool:
        """Whether an answer makes the request pointless to try again."""
        return status == GONE if request.method == "PATCH" else status in REFUSED

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers


def annotation_id(response: httpx.Response) -> str | None:
    """The ``id`` of Grafana's answer to a POST (``{"id": 1, "message": ...}``)."""
    try:
        value = response.json().get("id")
    except (ValueError, AttributeError):
        return None
    return str(value) if isinstance(value, int | str) and str(value) else None


class AnnotatingSender(Sender):
    """The sender, with Grafana's rows sent as ``Grafana.request`` says and the id of the
    annotation an 'opened' row made kept with it; other targets' rows as ever."""

    def _post(self, client: httpx.Client, row: Row) -> None:
        target = self._targets[row.target]
        if not isinstance(target, Grafana):
            super()._post(client, row)
            return
        wait = None
        try:
            known = None
            if row.event == "resolved":
                known = self._outbox.reference(row.incident_id, row.target)
            request = target.request(row, known)
            response = client.request(
                request.method,
                request.url,
                content=request.body,
                headers=target.headers(request.body, time.time()),
            )
            if response.is_success:
                self._delivered(row, request, response)
                return
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            if target.given_up(request, response.status_code):
                self._give_up(row, request, error)
                return
            wait = retry_after(response.headers.get("retry-after"))
        except Exception as exc:  # the URL stays out of the log, as for every target
            error = f"{type(exc).__name__}: {exc}"[:300]
        self._retry_later(row, error, wait)

    def _delivered(self, row: Row, request: Request, response: httpx.Response) -> None:
        made = annotation_id(response) if request.method == "POST" else None
        if row.event == "opened" and made is None:
            log.warning(
                "grafana named no annotation for incident %s: its end will be posted "
                "as a region of its own",
                row.incident_id,
            )
        self._outbox.delivered(row, time.time(), made if row.event == "opened" else None)
        self.sent[row.target] += 1
        log.info("notified %s: incident %s %s", row.target, row.incident_id, row.event)

    def _give_up(self, row: Row, request: Request, error: str) -> None:
        """Done without effect: counted and logged as an ERROR; the row is closed, so an
        'opened' row's 'resolved' follows (as a whole region)."""
        self._outbox.delivered(row, time.time())
        self.failures[row.target] += 1
        log.error(
            "grafana answered the %s of incident %s %s with %s: given up",
            request.method,
            row.incident_id,
            row.event,
            error,
        )

"""A generic webhook: the analysis as JSON with the report's incident and the links, signed
when a secret is set.

Body: ``{"event": "opened"|"resolved", "incident_id", "at", "analysis": <Analysis>,
"incident": <Incident>|null, "links": {"traces": [...], "dashboard": ...}}``. With
``WHYSLOW_WEBHOOK_SECRET``, ``X-Whyslow-Signature: sha256=<hex HMAC-SHA256 of the raw
body>`` and ``X-Whyslow-Timestamp`` (epoch seconds of the post); ``at`` in the signed body
dates the event, for a receiver that refuses old ones."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from service.notify.event import Event

SIGNATURE_HEADER = "X-Whyslow-Signature"
TIMESTAMP_HEADER = "X-Whyslow-Timestamp"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    name = "webhook"
    resend_seconds: float | None = None

    def __init__(self, url: str, secret: str | None) -> None:
        self.url = url
        self._secret = secret or None

    def render(self, event: Event, opened: str | None) -> str:
        incident: Any = None
        if event.incident is not None:
            incident = event.incident.model_dump(mode="json")
        elif opened is not None:  # a resolved incident whose last report is not stored
            incident = json.loads(opened).get("incident")
        return json.dumps(
            {
                "event": event.kind,
                "incident_id": event.incident_id,
                "at": event.at.isoformat(),
                "analysis": event.analysis.model_dump(mode="json"),
                "incident": incident,
                "links": event.links.model_dump(mode="json"),
            }
        )

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[TIMESTAMP_HEADER] = str(int(now))
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        return headers

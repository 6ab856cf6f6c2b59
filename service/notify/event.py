"""What a target is told, and what a target is: the body it is posted and its headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.contract import Analysis, AnomalyReport, Incident
from service.notify.links import Links
from service.notify.outbox import EventKind


@dataclass(frozen=True)
class Event:
    """An incident opened (its first analysed report) or resolved (its last analysis)."""

    kind: EventKind
    incident_id: str
    analysis: Analysis
    report: AnomalyReport | None
    """The report analysed; for a resolved incident, the stored report of that analysis
    (None when none was stored)."""
    links: Links
    at: datetime

    @property
    def incident(self) -> Incident | None:
        return self.report.incident if self.report is not None else None


class Target(Protocol):
    """A receiver of notifications, enabled by its setting."""

    name: str
    """Its key in the outbox and its ``target`` label."""
    url: str
    resend_seconds: float | None
    """Post the 'opened' body again this often while the incident is open (Alertmanager
    forgets an alert that is not re-sent); None: once."""

    def render(self, event: Event, opened: str | None) -> str:
        """The body to post; for 'resolved', ``opened`` is the incident's 'opened' body
        to this target."""
        ...

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        """Headers of one post of ``body`` (a signature is made per post)."""
        ...

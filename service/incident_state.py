"""Incidents over time: open when their first report arrives, acknowledged by a person,
resolved by a person, by the alert that raised them, or, for the consumers' incidents, by
quiet: no report of theirs for ``WHYSLOW_INCIDENT_RESOLVE_AFTER_SECONDS``.

Quiet is evaluated both lazily and in the background: every read of the anomalies (the
list, one anomaly, acknowledging or resolving) settles the quiet incidents first, so what
is read is exact; and a pass every minute (or every half period, when shorter) settles
them too, so that a resolution is announced even while nobody reads. Alerts' and hand-
posted incidents never resolve by quiet: Alertmanager re-sends a firing alert only every
``repeat_interval`` (hours) and says when it resolves; a person resolves their own.

Each resolution is announced once (the store's conditional update decides which process
made it) to the notifier, when the app has one, with the incident's latest analysis;
never for a test incident. A quiet resolution found long after the fact (the incident went
quiet more than one more period ago: the service was down, or the anomalies were analysed
before incident states existed) is made silently: it is no news any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request

from service.contract import Analysis
from service.store import AnalysisStore, ResolvedBy

log = logging.getLogger(__name__)

BACKGROUND_PASS_S = 60.0
"""The longest time between two background passes."""


class ResolvedNotifier(Protocol):
    """What this module needs of the app's notifier (``app.state.notifier``)."""

    def resolved(self, incident_id: str, analysis: Analysis) -> Any: ...


def notifier_of(app: Any) -> ResolvedNotifier | None:
    """The app's notifier, None when it has none (notifications are off)."""
    return getattr(app.state, "notifier", None)


def announce_resolved(
    store: AnalysisStore, notifier: ResolvedNotifier | None, incident_id: str
) -> None:
    """Tell the notifier an incident was resolved, with its latest analysis: the one place
    a resolution leaves the service. Not for a test incident, nor one never analysed; a
    notifier that fails is logged, never the reason a request fails."""
    if notifier is None:
        return
    found = store.incident(incident_id)
    if found is None:
        return
    status, analysis = found
    if status.test or analysis is None:
        return
    try:
        notifier.resolved(incident_id, analysis)
    except Exception:
        log.exception("incident %s: the resolved notification failed", incident_id)


class Incidents:
    """The state transitions that need a policy: resolving (and announcing it) and quiet."""

    def __init__(self, store: AnalysisStore, resolve_after_s: float) -> None:
        self.store = store
        self.resolve_after = timedelta(seconds=resolve_after_s)

    def resolve(self, incident_id: str, by: ResolvedBy, notifier: ResolvedNotifier | None) -> bool:
        """Resolve it and announce it; False when it was already resolved (or unknown)."""
        if not self.store.resolve(incident_id, by):
            return False
        announce_resolved(self.store, notifier, incident_id)
        return True

    def settle(self, notifier: ResolvedNotifier | None, now: datetime | None = None) -> list[str]:
        """Resolve the consumers' incidents quiet for the period; the ids this call
        resolved."""
        now = now or datetime.now(UTC)
        since = now - self.resolve_after
        news_since = since - self.resolve_after
        resolved = []
        for incident_id, last_report in self.store.quiet_incidents(since):
            if self.store.resolve(incident_id, "quiet", quiet_since=since):
                resolved.append(incident_id)
                if last_report >= news_since:
                    announce_resolved(self.store, notifier, incident_id)
        if resolved:
            log.info("%d incidents resolved: no report for %s", len(resolved), self.resolve_after)
        return resolved

    def pass_interval_s(self) -> float:
        return min(BACKGROUND_PASS_S, self.resolve_after.total_seconds() / 2)


async def get_incidents(request: Request) -> Incidents:
    return request.app.state.incidents


async def get_notifier(request: Request) -> ResolvedNotifier | None:
    return notifier_of(request.app)


IncidentsDep = Annotated[Incidents, Depends(get_incidents)]
NotifierDep = Annotated[ResolvedNotifier | None, Depends(get_notifier)]


@asynccontextmanager
async def settle_in_background(app: FastAPI) -> AsyncIterator[None]:
    """The background pass, for the life of the app (the lifespan of the anomalies'
    router: it ends before the app's own lifespan closes the store)."""
    incidents: Incidents = app.state.incidents

    async def passes() -> None:
        while True:
            await asyncio.sleep(incidents.pass_interval_s())
            try:
                await asyncio.to_thread(incidents.settle, notifier_of(app))
            except Exception:  # a store outage: the next pass tries again
                log.exception("settling quiet incidents failed")

    task = asyncio.create_task(passes())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

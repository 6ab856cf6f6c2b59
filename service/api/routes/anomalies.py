"""The read API dashboards use: recent diagnoses, filtered and paginated, and one in full;
and the state of each anomaly's incident, which a person acknowledges and resolves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, BeforeValidator, Field

from service.api.deps import CatalogueDep, StoreDep
from service.contract import Analysis, AnomalyReport, ProbableCause, Severity
from service.feedback import Feedback, WrongVerdict, training_sample
from service.incident_state import IncidentsDep, NotifierDep, settle_in_background
from service.notify import LinkBuilder, Links
from service.store import IncidentState, IncidentStatus

router = APIRouter(prefix="/v1/anomalies", tags=["anomalies"], lifespan=settle_in_background)


def _rfc3339(value: object) -> object:
    """A date-time as RFC 3339 text: a bare number is refused, not read as epoch seconds."""
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-11-16T09:00:00Z")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]
UNDECODABLE: dict[int | str, dict[str, Any]] = {400: {"description": "The body is not UTF-8 JSON."}}


class AnomalyPage(BaseModel):
    items: list[Analysis]
    total: int
    limit: int
    offset: int
    reports: dict[str, AnomalyReport] | None = Field(
        None, description="With include_reports: each item's report, by anomaly id."
    )
    incidents: dict[str, IncidentStatus] = Field(
        {}, description="Each item's incident and its state, by anomaly id."
    )


class AnomalyRecord(BaseModel):
    report: AnomalyReport
    analysis: Analysis
    incident: IncidentStatus | None = Field(None, description="Its incident and its state.")
    links: Links = Field(
        default_factory=Links,
        description="The report's traces (WHYSLOW_TRACE_URL_TEMPLATE) and the anomaly on the "
        "dashboard (WHYSLOW_DASHBOARD_URL); empty where those are unset.",
    )


async def get_links(request: Request) -> LinkBuilder:
    return request.app.state.links


LinksDep = Annotated[LinkBuilder, Depends(get_links)]


@router.get("")
def list_anomalies(
    store: StoreDep,
    incidents: IncidentsDep,
    notifier: NotifierDep,
    service: str | None = None,
    cause: ProbableCause | None = None,
    severity: Severity | None = None,
    since: Annotated[Rfc3339 | None, Query(description="Analysed at or after.")] = None,
    until: Annotated[Rfc3339 | None, Query(description="Analysed before.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    include_reports: Annotated[
        bool, Query(description="Add the reports (window, latency, context) by id.")
    ] = False,
    state: Annotated[IncidentState | None, Query(description="Their incident's state.")] = None,
    include_tests: Annotated[
        bool, Query(description="List the reports posted with ?test=true too.")
    ] = False,
) -> AnomalyPage:
    """Analysed anomalies, newest first, each with its incident's state."""
    incidents.settle(notifier)
    records, total = store.search(
        service,
        cause.value if cause else None,
        severity.value if severity else None,
        since,
        until,
        limit,
        offset,
        state,
        include_tests,
    )
    return AnomalyPage(
        items=[analysis for _, analysis in records],
        total=total,
        limit=limit,
        offset=offset,
        reports={a.anomaly_id: r for r, a in records} if include_reports else None,
        incidents=store.statuses([a.anomaly_id for _, a in records]),
    )


@router.get("/{anomaly_id}", responses={404: {"description": "No analysis with this id."}})
def get_anomaly(
    anomaly_id: str,
    store: StoreDep,
    incidents: IncidentsDep,
    notifier: NotifierDep,
    links: LinksDep,
) -> AnomalyRecord:
    """One anomaly: the report as received, its analysis and its incident's state."""
    incidents.settle(notifier)
    record = store.record(anomaly_id)
    if record is None:
        raise HTTPException(404, detail=f"no analysed anomaly {anomaly_id!r}")
    report, analysis = record
    return AnomalyRecord(
        report=report,
        analysis=analysis,
        incident=store.status(anomaly_id),
        links=links.links(anomaly_id, report.trace_ids),
    )


UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "No anomaly with this id."}}


def _change(
    anomaly_id: str,
    to: Literal["acknowledged", "resolved"],
    incidents: IncidentsDep,
    notifier: NotifierDep,
) -> IncidentStatus:
    incidents.settle(notifier)
    status = incidents.store.status(anomaly_id)
    if status is None:
        raise HTTPException(404, detail=f"no anomaly {anomaly_id!r}")
    if to == "resolved":
        incidents.resolve(status.incident_id, "person", notifier)
    elif not incidents.store.acknowledge(status.incident_id) and status.state == "resolved":
        raise HTTPException(409, detail=f"incident {status.incident_id!r} is resolved")
    changed = incidents.store.status(anomaly_id)
    assert changed is not None  # anomalies are never deleted
    return changed


@router.post(
    "/{anomaly_id}/ack",
    responses={**UNKNOWN, 409: {"description": "Its incident is resolved."}},
)
def acknowledge(anomaly_id: str, incidents: IncidentsDep, notifier: NotifierDep) -> IncidentStatus:
    """Acknowledge the anomaly's incident: someone is on it. Acknowledging it again
    changes nothing; a new report of it keeps it acknowledged."""
    return _change(anomaly_id, "acknowledged", incidents, notifier)


@router.post("/{anomaly_id}/resolve", responses=UNKNOWN)
def resolve(anomaly_id: str, incidents: IncidentsDep, notifier: NotifierDep) -> IncidentStatus:
    """Resolve the anomaly's incident (announced to the notifications once). A new report
    of it opens it again."""
    return _change(anomaly_id, "resolved", incidents, notifier)


@router.post(
    "/{anomaly_id}/feedback",
    status_code=201,
    responses={404: {"description": "No analysis with this id."}, **UNDECODABLE},
)
def give_feedback(anomaly_id: str, feedback: Feedback, store: StoreDep) -> Feedback:
    """Say whether a diagnosis was right (and if not, what the cause was): kept, and
    exported as training samples by GET /v1/feedback/export."""
    if store.record(anomaly_id) is None:
        raise HTTPException(404, detail=f"no analysed anomaly {anomaly_id!r}")
    cause = feedback.right_cause.value if isinstance(feedback, WrongVerdict) else None
    store.add_feedback(anomaly_id, feedback.verdict, cause, feedback.note)
    return feedback


export_router = APIRouter(prefix="/v1/feedback", tags=["anomalies"])


@export_router.get("/export", response_class=PlainTextResponse)
def export_feedback(store: StoreDep, catalogue: CatalogueDep) -> str:
    """Every feedback as a chat-format training sample, one JSON object per line (the prompt
    with the catalogue's note on the service, as the model reads it now)."""
    return "".join(
        training_sample(*row, catalogue.note(row[0].service)) + "\n" for row in store.feedback()
    )

"""The read API dashboards use: recent diagnoses, filtered and paginated, and one in full."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, BeforeValidator, Field

from service.api.deps import CatalogueDep, StoreDep
from service.contract import Analysis, AnomalyReport, ProbableCause, Severity
from service.feedback import Feedback, WrongVerdict, training_sample

router = APIRouter(prefix="/v1/anomalies", tags=["anomalies"])


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


class AnomalyRecord(BaseModel):
    report: AnomalyReport
    analysis: Analysis


@router.get("")
def list_anomalies(
    store: StoreDep,
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
) -> AnomalyPage:
    """Analysed anomalies, newest first."""
    records, total = store.search(
        service,
        cause.value if cause else None,
        severity.value if severity else None,
        since,
        until,
        limit,
        offset,
    )
    return AnomalyPage(
        items=[analysis for _, analysis in records],
        total=total,
        limit=limit,
        offset=offset,
        reports={a.anomaly_id: r for r, a in records} if include_reports else None,
    )


@router.get("/{anomaly_id}", responses={404: {"description": "No analysis with this id."}})
def get_anomaly(anomaly_id: str, store: StoreDep) -> AnomalyRecord:
    """One anomaly: the report as received and its analysis."""
    record = store.record(anomaly_id)
    if record is None:
        raise HTTPException(404, detail=f"no analysed anomaly {anomaly_id!r}")
    return AnomalyRecord(report=record[0], analysis=record[1])


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

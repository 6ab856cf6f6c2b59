from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query

from service.analyses import Overloaded
from service.api.deps import AnalysesDep, AnalyzerDep, ProfilesDep, StoreDep
from service.contract import Analysis, AnomalyReport
from service.model.adapters import UnknownAdapter
from service.model.gguf_files import AdapterMismatch, InvalidManifest
from service.profiles import complete

router = APIRouter(prefix="/v1", tags=["analysis"])


@router.post(
    "/analyze",
    responses={
        400: {"description": "The body is not UTF-8 JSON."},
        409: {
            "description": "The adapter asked for was trained for another base than the "
            "loaded one (its manifest says which), or its manifest is unreadable."
        },
        503: {
            "description": "The model is still loading, or its queue is full; retry after "
            "the Retry-After delay."
        },
    },
)
def analyze(
    report: AnomalyReport,
    analyzer: AnalyzerDep,
    analyses: AnalysesDep,
    profiles: ProfilesDep,
    store: StoreDep,
    test: Annotated[
        bool,
        Query(
            description="A test report: diagnosed as any other, hidden from GET "
            "/v1/anomalies and the dashboard unless asked for, never notified."
        ),
    ] = False,
    adapter: Annotated[
        str | None,
        Header(
            alias="X-Whyslow-Adapter", description="LoRA adapter to answer with (GET /v1/models)."
        ),
    ] = None,
) -> Analysis:
    """Diagnose one anomaly: the probable cause first, then a grounded explanation. A
    report whose id was analysed before gets that analysis back (``cached``: true); one
    without a baseline gets its operation's usual p95 from the consumers' profile."""
    if adapter is not None and analyzer is not None:
        adapters = analyzer.runtime.adapters
        try:
            adapters.check(adapter)
        except UnknownAdapter as exc:
            known = adapters.names()
            raise HTTPException(422, detail=f"unknown adapter {adapter!r}; known: {known}") from exc
        except (AdapterMismatch, InvalidManifest) as exc:
            raise HTTPException(409, detail=str(exc)) from exc
    if report.baseline is None:  # a hand-posted report: the consumers' profile completes it
        report = complete(report, profiles.get(report.service))
    store.track(report, "consumer" if report.incident is not None else "manual", test)
    try:
        analysis = analyses.analyze(report, analyzer, adapter)
    except Overloaded as exc:
        raise HTTPException(
            503, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        ) from exc
    store.note_analysis(report, analysis)
    return analysis

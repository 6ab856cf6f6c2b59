from fastapi import APIRouter, HTTPException

from service.analyses import Overloaded
from service.api.deps import AnalysesDep, AnalyzerDep
from service.contract import Analysis, AnomalyReport

router = APIRouter(prefix="/v1", tags=["analysis"])


@router.post(
    "/analyze",
    responses={
        400: {"description": "The body is not UTF-8 JSON."},
        503: {
            "description": "The model is still loading, or its queue is full; retry after "
            "the Retry-After delay."
        },
    },
)
def analyze(report: AnomalyReport, analyzer: AnalyzerDep, analyses: AnalysesDep) -> Analysis:
    """Diagnose one anomaly: the probable cause first, then a grounded explanation. A
    report whose id was analysed before gets that analysis back (``cached``: true)."""
    try:
        return analyses.analyze(report, analyzer)
    except Overloaded as exc:
        raise HTTPException(
            503, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        ) from exc

from fastapi import APIRouter, HTTPException

from service.analyze import ModelOutputError
from service.api.deps import AnalysesDep, AnalyzerDep
from service.contract import Analysis, AnomalyReport

router = APIRouter(prefix="/v1", tags=["analysis"])


@router.post(
    "/analyze",
    responses={
        502: {"description": "The model produced no valid diagnosis."},
        503: {"description": "The model is not loaded yet; retry after the given delay."},
    },
)
def analyze(report: AnomalyReport, analyzer: AnalyzerDep, analyses: AnalysesDep) -> Analysis:
    """Diagnose one anomaly: the probable cause first, then a grounded explanation. A
    report whose id was analysed before gets that analysis back (``cached``: true)."""
    try:
        return analyses.analyze(report, analyzer)
    except ModelOutputError as exc:
        raise HTTPException(502, detail=str(exc)) from exc

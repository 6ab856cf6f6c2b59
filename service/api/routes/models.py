from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import AnalyzerDep
from service.contract import ModelInfo
from service.rules import RULES_MODEL

router = APIRouter(prefix="/v1", tags=["models"])


class Models(BaseModel):
    base: ModelInfo
    adapters: list[str]
    """Names to pass as X-Whyslow-Adapter."""


@router.get("/models")
def models(analyzer: AnalyzerDep) -> Models:
    """The base model (or the rule engine when it failed to load) and its LoRA adapters."""
    if analyzer is None:
        return Models(base=RULES_MODEL, adapters=[])
    runtime = analyzer.runtime
    return Models(base=runtime.info, adapters=runtime.adapters.names())

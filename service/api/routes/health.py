from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import LoaderDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Model not loaded (yet, or failed)."}})
def readyz(loader: LoaderDep) -> JSONResponse:
    """Readiness: the model is loaded and analyses can be served."""
    if loader.runtime is not None:
        info = loader.runtime.info
        return JSONResponse({"status": "ready", "model": info.model_dump()})
    status = "failed" if loader.error else "loading"
    return JSONResponse({"status": status, "detail": loader.error}, status_code=503)

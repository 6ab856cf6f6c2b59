"""The FastAPI application, built from one Settings object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from service.alerts import AlertLabels
from service.analyses import Analyses
from service.analyze import Analyzer
from service.api.metrics import install_metrics
from service.api.middleware import ApiKeys, BodyLimit
from service.api.routes import alerts, analyze, anomalies, baselines, health, models, topology
from service.api.routes.docs import install_docs
from service.catalogue import Catalogue
from service.incident_state import Incidents
from service.model.loader import ModelLoader
from service.notify import LinkBuilder, Notifier, posted_as_test
from service.profiles import ProfileReader
from service.settings import Settings
from service.store import AnalysisStore

DASHBOARD = Path(__file__).parent / "dashboard"
"""The dashboard's static files (no build step): served at /dashboard."""


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, which echoes each error's input, but never a 500 for it: an input can
    be what JSON cannot write back (NaN or Infinity, which Python's JSON reader accepts, or
    a lone surrogate escape such as "\\ud800"); those errors lose their input."""
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = jsonable_encoder(exc.errors())
    try:
        return JSONResponse(status_code=422, content={"detail": errors})
    except ValueError:  # non-finite float, or UnicodeEncodeError (a ValueError too)
        bare = [{k: v for k, v in error.items() if k != "input"} for error in errors]
        return JSONResponse(status_code=422, content={"detail": bare})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    catalogue = Catalogue.load(settings.catalogue)
    loader = ModelLoader(settings)
    store = AnalysisStore(settings.resolved_analyses_url())
    links = LinkBuilder(settings.trace_url_template, settings.dashboard_url)
    notifier = Notifier.from_settings(settings, links, partial(posted_as_test, store))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader.start()
        notifier.start()
        yield
        notifier.stop()
        store.close()

    app = FastAPI(
        title="whyslow",
        summary="Why is this service slow? Structured diagnoses of latency anomalies.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # service/api/routes/docs.py: no CDN
        redoc_url=None,
    )
    app.state.loader = loader
    # the Analyzer over the runtime the loader yields (service/api/deps.py)
    app.state.analyzer_for = partial(Analyzer, max_tokens=settings.max_tokens, catalogue=catalogue)
    app.state.store = store
    app.state.catalogue = catalogue
    app.state.profiles = ProfileReader(settings.resolved_baselines_url())
    app.state.links = links
    app.state.notifier = notifier
    app.state.analyses = analyses = Analyses(
        store, settings.queue_limit, settings.request_timeout_s, settings.cache_ttl_s, notifier
    )
    install_metrics(app, analyses, loader, notifier)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.keys():
        app.add_middleware(ApiKeys, keys=settings.keys())
    if settings.origins():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins(),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type"],
        )
    app.add_exception_handler(RequestValidationError, validation_error)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    app.include_router(health.router)
    app.include_router(analyze.router)
    app.state.incidents = Incidents(store, settings.incident_resolve_after_seconds)
    app.state.alert_labels = AlertLabels(settings.service_labels(), settings.operation_labels())
    app.include_router(anomalies.router)
    app.include_router(alerts.router)
    app.include_router(models.router)
    app.include_router(baselines.router)
    app.include_router(topology.router)
    app.include_router(anomalies.export_router)
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    install_docs(app)
    return app

"""The FastAPI application, built from one Settings object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from service.analyses import Analyses
from service.api.routes import analyze, health
from service.model.loader import ModelLoader
from service.settings import Settings
from service.store import AnalysisStore


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    loader = ModelLoader(settings)
    store = AnalysisStore(settings.resolved_store_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader.start()
        yield
        store.close()

    app = FastAPI(
        title="whyslow",
        summary="Why is this service slow? Structured diagnoses of latency anomalies.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.loader = loader
    app.state.analyses = Analyses(store, settings.queue_limit, settings.request_timeout_s)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    app.include_router(health.router)
    app.include_router(analyze.router)
    return app

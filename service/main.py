"""The FastAPI application, built from one Settings object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.routes import analyze, health
from service.model.loader import ModelLoader
from service.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    loader = ModelLoader(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader.start()
        yield

    app = FastAPI(
        title="whyslow",
        summary="Why is this service slow? Structured diagnoses of latency anomalies.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.loader = loader
    app.include_router(health.router)
    app.include_router(analyze.router)
    return app

"""Typed dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.analyses import Analyses
from service.analyze import Analyzer
from service.catalogue import Catalogue
from service.model.loader import ModelLoader
from service.profiles import ProfileReader
from service.store import AnalysisStore


async def get_loader(request: Request) -> ModelLoader:
    return request.app.state.loader


async def get_analyzer(
    request: Request, loader: Annotated[ModelLoader, Depends(get_loader)]
) -> Analyzer | None:
    """The Analyzer over the loaded model (built as the app assembled it: it holds only the
    runtime, the catalogue and the answer budget); None if the model failed to load (the
    rule engine answers); 503 while it is still loading."""
    if loader.runtime is None:
        if loader.error is None:
            raise HTTPException(
                503, detail="the model is still loading", headers={"Retry-After": "5"}
            )
        return None
    return request.app.state.analyzer_for(loader.runtime)


async def get_analyses(request: Request) -> Analyses:
    return request.app.state.analyses


async def get_store(request: Request) -> AnalysisStore:
    return request.app.state.store


async def get_profiles(request: Request) -> ProfileReader:
    return request.app.state.profiles


async def get_catalogue(request: Request) -> Catalogue:
    return request.app.state.catalogue


LoaderDep = Annotated[ModelLoader, Depends(get_loader)]
ProfilesDep = Annotated[ProfileReader, Depends(get_profiles)]
StoreDep = Annotated[AnalysisStore, Depends(get_store)]
AnalysesDep = Annotated[Analyses, Depends(get_analyses)]
AnalyzerDep = Annotated[Analyzer | None, Depends(get_analyzer)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]

"""The real app under a TestClient, entered once its model has loaded or failed to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings


@contextmanager
def serving(settings: Settings, **client_args: Any) -> Iterator[TestClient]:
    """A client of ``create_app(settings)`` once the model has settled. The model loads on
    a thread of its own, and until it has loaded or given up (a ``model_path`` naming no
    file: the rule engine answers) a POST /v1/analyze gets 503; on a busy machine that
    thread can still be starting when a test's first request comes."""
    with TestClient(create_app(settings), **client_args) as client:
        loader = client.app.state.loader
        if not loader.wait(60) and loader.error is None:
            pytest.fail("the model neither loaded nor failed to within 60 s")
        yield client

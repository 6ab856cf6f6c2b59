"""Shared, expensive parts of the training tests: made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.model.embedded import shipped_gguf
from training.base import hf_folder


@pytest.fixture(scope="session")
def hf_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded GGUF as a transformers folder (the ~16 s conversion, done once)."""
    return hf_folder(shipped_gguf(), tmp_path_factory.mktemp("hf-cache"))

"""Loads the model off the request path, so the process answers /healthz at once and
/readyz tells an orchestrator when analyses can be served (and why not, if it failed).

It yields the model runtime only: what is built on it (the Analyzer, with the catalogue and
the answer budget) is assembled by the app (service/main.py), the layer above the model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from service.model.embedded import prepare_embedded
from service.model.fields import generation_schema
from service.model.remote import OpenAIRuntime
from service.model.runtime import ModelBackend, ModelRuntime
from service.model.tuned import cause_bias, prepare_tuned
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelLoader:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._thread = threading.Thread(target=self._load, name="whyslow-model-load", daemon=True)
        self.runtime: ModelBackend | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Begin loading, once: an app may go through more than one lifespan."""
        if self._thread.ident is None:
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.runtime is not None

    def model_path(self) -> Path:
        s = self._settings
        if s.model_path is not None:
            return s.model_path
        return prepare_tuned(s.data_dir) if s.tuned else prepare_embedded(s.data_dir)

    def _load(self) -> None:
        s = self._settings
        try:
            if s.backend == "openai":
                runtime: ModelBackend = OpenAIRuntime(
                    s.openai_base_url,
                    s.openai_model,
                    generation_schema(),
                    s.openai_response_format,
                    s.openai_api_key,
                )
                where = s.openai_base_url
            else:
                where = str(self.model_path())
                tuned = s.model_path is None and s.tuned
                runtime = ModelRuntime(
                    Path(where),
                    s.n_ctx,
                    s.n_threads,
                    s.seed,
                    s.repeat_penalty,
                    s.resolved_adapters_dir(),
                    s.flash_attn,
                    cause_bias() if tuned else None,
                )
            self.runtime = runtime
            log.info("model ready: %s (%s)", where, runtime.info.quantization)
        except Exception as exc:  # reported on /readyz, the process stays up to say so
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)

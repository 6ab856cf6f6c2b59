"""AnomalyReport -> prompt -> schema-constrained generation -> Analysis."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from service.catalogue import Catalogue
from service.contract import AnomalyReport, Diagnosis
from service.model.fields import CONFIDENCE_STEPS
from service.model.runtime import ModelBackend
from service.prompt import build_messages, settled

tracer = trace.get_tracer("whyslow.service")


class ModelOutputError(RuntimeError):
    """The model's answer did not form a valid Diagnosis."""


def generation_schema() -> dict[str, Any]:
    """Diagnosis's JSON schema, as a remote model server's response format.

    Schema-to-grammar conversions ignore numeric bounds, so ``confidence`` is offered as the
    21 values 0.0, 0.05 ... 1.0 (as the local decoder does), within 0..1 by construction.
    """
    schema = Diagnosis.model_json_schema()
    schema["properties"]["confidence"] = {"enum": CONFIDENCE_STEPS}
    return schema


class Analyzer:
    def __init__(
        self, runtime: ModelBackend, max_tokens: int, catalogue: Catalogue | None = None
    ) -> None:
        self._runtime = runtime
        self._max_tokens = max_tokens
        self._catalogue = catalogue or Catalogue()

    @property
    def runtime(self) -> ModelBackend:
        return self._runtime

    def diagnose(
        self,
        report: AnomalyReport,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> Diagnosis:
        """The model's diagnosis; ModelOutputError if it did not form one in time."""
        with tracer.start_as_current_span("llm.generate") as span:
            messages = build_messages(report, self._catalogue.note(report.service))
            completion = self._runtime.complete(
                messages,
                self._max_tokens,
                deadline,
                temperature,
                seed,
                adapter,
                settled(report),
            )
            span.set_attribute("gen_ai.request.model", self._runtime.info.base)
            span.set_attribute("gen_ai.usage.input_tokens", completion.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion.completion_tokens)
        try:
            return Diagnosis.model_validate_json(completion.text)
        except ValidationError as exc:
            raise ModelOutputError(
                f"model answer is not a valid diagnosis (finish: {completion.finish_reason}, "
                f"{completion.completion_tokens} tokens): {exc.errors(include_url=False)[:2]}"
            ) from exc

"""AnomalyReport -> prompt -> schema-constrained generation -> Analysis."""

from __future__ import annotations

from opentelemetry import trace
from pydantic import ValidationError

from service.catalogue import Catalogue
from service.contract import AnomalyReport, Diagnosis
from service.model.runtime import ModelBackend
from service.prompt import build_messages, settled

tracer = trace.get_tracer("whyslow.service")


class ModelOutputError(RuntimeError):
    """The model's answer did not form a valid Diagnosis."""


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

"""AnomalyReport -> facts -> prompt -> schema-constrained generation -> Analysis.

The facts come first (``assess.py`` through ``prompt.settled``): a cause they settle is the
answer's, whatever the model would have named; otherwise the answer names one of the causes
they support, and a backend that cannot be held to them while decoding (a remote server)
has an answer naming another refused, so that the rule engine answers instead.
"""

from __future__ import annotations

from opentelemetry import trace
from pydantic import ValidationError

from service.catalogue import Catalogue
from service.contract import AnomalyReport, Diagnosis
from service.model.runtime import ModelBackend
from service.prompt import Settled, build_messages, settled

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

    def note(self, service: str) -> str | None:
        """The service catalogue's note on ``service``: knowledge the facts are judged with."""
        return self._catalogue.note(service)

    def diagnose(
        self,
        report: AnomalyReport,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> Diagnosis:
        """The model's diagnosis; ModelOutputError if it did not form one in time, or named
        a cause the report's facts rule out."""
        note = self.note(report.service)
        given = settled(report, note)
        with tracer.start_as_current_span("llm.generate") as span:
            messages = build_messages(report, note)
            completion = self._runtime.complete(
                messages, self._max_tokens, deadline, temperature, seed, adapter, given
            )
            span.set_attribute("gen_ai.request.model", self._runtime.info.base)
            span.set_attribute("gen_ai.usage.input_tokens", completion.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion.completion_tokens)
        try:
            answer = Diagnosis.model_validate_json(completion.text)
        except ValidationError as exc:
            raise ModelOutputError(
                f"model answer is not a valid diagnosis (finish: {completion.finish_reason}, "
                f"{completion.completion_tokens} tokens): {exc.errors(include_url=False)[:2]}"
            ) from exc
        return held_to(answer, given)


def held_to(answer: Diagnosis, given: Settled) -> Diagnosis:
    """``answer`` with what the facts settle: its cause must be one they allow (else
    ModelOutputError), the severity and a settled cause's confidence are theirs."""
    cause = answer.probable_cause
    if given.cause not in (None, cause) or not given.allows(cause):
        allowed = ", ".join(c.value for c in ([given.cause] if given.cause else given.causes))
        raise ModelOutputError(f"the answer names {cause.value}; the facts allow {allowed}")
    update: dict[str, object] = {}
    if given.severity is not None:
        update["severity"] = given.severity
    if given.cause is not None and given.confidence is not None:
        update["confidence"] = given.confidence
    return answer.model_copy(update=update)

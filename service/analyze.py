"""AnomalyReport -> prompt -> schema-constrained generation -> Analysis."""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp import LlamaGrammar
from llama_cpp.llama_grammar import json_schema_to_gbnf
from opentelemetry import trace
from pydantic import ValidationError

from service.contract import AnomalyReport, Diagnosis
from service.model.runtime import ModelBackend
from service.prompt import build_messages

CONFIDENCE_STEPS = [round(i * 0.05, 2) for i in range(21)]
PLAIN_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'


tracer = trace.get_tracer("whyslow.service")


class ModelOutputError(RuntimeError):
    """The model's answer did not form a valid Diagnosis."""


def generation_schema() -> dict[str, Any]:
    """Diagnosis's JSON schema, as the decoding grammar uses it.

    llama.cpp's schema-to-grammar conversion ignores numeric bounds, so ``confidence`` is
    offered as the 21 values 0.0, 0.05 ... 1.0, which keeps it within 0..1 by construction.
    """
    schema = Diagnosis.model_json_schema()
    schema["properties"]["confidence"] = {"enum": CONFIDENCE_STEPS}
    return schema


def build_grammar() -> LlamaGrammar:
    """The decoding grammar of a Diagnosis.

    llama-cpp-python's converter lets raw control characters into strings, which is not
    JSON; text characters are restricted to printable ones without escapes, which also
    makes each string's length bound a bound on its characters.
    """
    gbnf = json_schema_to_gbnf(json.dumps(generation_schema()))
    gbnf, replaced = re.subn(r"^char ::= .*$", lambda _: PLAIN_JSON_CHAR, gbnf, flags=re.M)
    if replaced != 1:
        raise RuntimeError("unexpected grammar from llama_cpp: no single `char` rule")
    return LlamaGrammar.from_string(gbnf, verbose=False)


class Analyzer:
    def __init__(self, runtime: ModelBackend, max_tokens: int) -> None:
        self._runtime = runtime
        self._max_tokens = max_tokens
        self._grammar = build_grammar()

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
            messages = build_messages(report)
            completion = self._runtime.complete(
                messages, self._grammar, self._max_tokens, deadline, temperature, seed, adapter
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

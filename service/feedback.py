"""People's verdicts on diagnoses, turned into training samples for the next LoRA run.

A sample is the chat the model sees (the same system prompt and user turn as in service)
and the answer it should have given: the analysis itself when it was right; when it was
wrong, the right cause with the rule engine's grounded text for it. Chat JSONL, one
``{"messages": [...]}`` per line, the format the training pipeline reads.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from service import rules
from service.contract import Analysis, AnomalyReport, Diagnosis, ProbableCause
from service.prompt import build_messages


class Feedback(BaseModel):
    verdict: Literal["correct", "wrong"]
    right_cause: ProbableCause | None = Field(
        None, description="Required when the verdict is 'wrong'."
    )
    note: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _cause_when_wrong(self) -> Feedback:
        if self.verdict == "wrong" and self.right_cause is None:
            raise ValueError("right_cause is required when the verdict is 'wrong'")
        return self


def expected_answer(
    report: AnomalyReport, analysis: Analysis, verdict: str, right_cause: str | None
) -> Diagnosis:
    if verdict == "correct":
        return Diagnosis.model_validate(analysis.model_dump(include=set(Diagnosis.model_fields)))
    cause = ProbableCause(right_cause)
    summary, explanation = rules.explain(report, cause, None)
    return Diagnosis(
        probable_cause=cause,
        severity=analysis.severity,
        confidence=0.9,
        summary=summary,
        explanation=explanation,
        recommended_actions=rules.actions_for(report, cause),
    )


def training_sample(
    report: AnomalyReport, analysis: Analysis, verdict: str, right_cause: str | None
) -> str:
    answer = expected_answer(report, analysis, verdict, right_cause)
    messages = [*build_messages(report), {"role": "assistant", "content": answer.model_dump_json()}]
    return json.dumps({"messages": messages})

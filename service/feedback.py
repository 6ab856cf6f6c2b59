"""People's verdicts on diagnoses, turned into training samples for the next LoRA run.

A sample is the chat the model sees (the same system prompt and user turn as in service)
and the answer it should have given: the analysis itself when it was right; when it was
wrong, the right cause written as the decoder writes answers (the settled severity and
summary, two of the cause's playbook actions) with the rule engine's grounded explanation.
Chat JSONL, one ``{"messages": [...]}`` per line, the format the training pipeline reads.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service import rules
from service.contract import Analysis, AnomalyReport, Diagnosis, ProbableCause
from service.prompt import build_messages, settled


class CorrectVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["correct"]
    note: str | None = Field(None, max_length=1000)


class WrongVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["wrong"]
    right_cause: ProbableCause = Field(description="What the cause really was.")
    note: str | None = Field(None, max_length=1000)


Feedback = Annotated[CorrectVerdict | WrongVerdict, Field(discriminator="verdict")]
"""A verdict on a diagnosis; 'wrong' needs the right cause (the schema says so too)."""


def expected_answer(
    report: AnomalyReport, analysis: Analysis, verdict: str, right_cause: str | None
) -> Diagnosis:
    if verdict == "correct":
        return Diagnosis.model_validate(analysis.model_dump(include=set(Diagnosis.model_fields)))
    if right_cause is None:
        raise ValueError("a wrong verdict names the right cause")
    cause = ProbableCause(right_cause)
    summary, explanation = rules.explain(report, cause, None)
    given = settled(report)
    return Diagnosis(
        probable_cause=cause,
        severity=given.severity or analysis.severity,
        confidence=0.9,
        summary=given.summary(cause) or summary,
        explanation=explanation,
        recommended_actions=given.actions(cause)[:2],
    )


def training_sample(
    report: AnomalyReport,
    analysis: Analysis,
    verdict: str,
    right_cause: str | None,
    note: str | None = None,
) -> str:
    answer = expected_answer(report, analysis, verdict, right_cause)
    messages = [
        *build_messages(report, note),
        {"role": "assistant", "content": answer.model_dump_json()},
    ]
    return json.dumps({"messages": messages})

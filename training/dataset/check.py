"""``data check``: is this file fit to train or evaluate on?

A file of hand-written cases (``report`` + ``answer`` per line, the source of
``handwritten*.jsonl``) is checked as the chat samples ``data build`` makes of it.

Errors (the file must not be used): a sample that is not a system/user/assistant chat, an
answer that is not a valid Diagnosis, a user turn that is not the prompt the service builds
for the sample's report today, an answer citing numbers the report does not have, a
duplicate prompt, a prompt shared with another split (leakage), and, in a file that is not
trained on, an evidence line of a template training reads (the generator's training wording,
or a line of a training file with its numbers masked). Warnings: causes missing or far below
their share.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.contract import AnomalyReport, Diagnosis, ProbableCause
from service.grounding import report_numbers, ungrounded
from service.prompt import SYSTEM_PROMPT, build_messages
from training.dataset.generator import Scenario
from training.dataset.samples import HandwrittenCase, read_jsonl, to_sample
from training.dataset.texts import TRAINING, template_of


@dataclass
class CheckResult:
    path: Path
    samples: int = 0
    causes: Counter[str] = field(default_factory=Counter)
    patterns: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        lines = [
            f"{self.path}: {self.samples} samples, {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings"
        ]
        lines.append("  causes: " + ", ".join(f"{c} {n}" for c, n in sorted(self.causes.items())))
        if self.patterns:
            patterns = ", ".join(f"{p} {n}" for p, n in sorted(self.patterns.items()))
            lines.append(f"  patterns: {patterns}")
        lines += [f"  error: {e}" for e in self.errors[:50]]
        if len(self.errors) > 50:
            lines.append(f"  ... and {len(self.errors) - 50} more errors")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _as_chat(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A hand-written case as the chat sample ``data build`` writes for it (any other row as
    it is), and why it cannot be one."""
    if "messages" in row or not {"report", "answer"} <= row.keys():
        return row, []
    try:
        case = HandwrittenCase.model_validate(row)
    except ValidationError as exc:
        return row, [f"hand-written case is not valid: {exc.errors(include_url=False)[:1]}"]
    scenario = Scenario(case.id, case.pattern, case.report, case.answer, case.note)
    return to_sample(scenario, "handwritten"), []


def _check_sample(row: dict[str, Any]) -> tuple[ProbableCause | None, list[str]]:
    """(the answer's cause, the sample's errors)."""
    turns = row.get("messages")
    messages: list[Any] = turns if isinstance(turns, list) else []
    roles = (
        [m.get("role") if isinstance(m, dict) else type(m).__name__ for m in messages]
        if isinstance(turns, list)
        else None
    )
    if roles != ["system", "user", "assistant"] or not all(
        isinstance(m.get("content"), str) for m in messages
    ):
        got = reprlib.repr(roles)
        return None, [f"messages must be system, user, assistant with text (got {got})"]
    errors = []
    try:
        answer = Diagnosis.model_validate_json(messages[2]["content"])
    except ValidationError as exc:
        return None, [f"assistant turn is not a valid Diagnosis: {exc.errors()[:1]}"]
    if messages[0]["content"] != SYSTEM_PROMPT:
        errors.append("system prompt differs from the service's")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        return answer.probable_cause, [f"meta must be an object, not {type(meta).__name__}"]
    if "report" in meta:
        try:
            report = AnomalyReport.model_validate(meta["report"])
        except ValidationError as exc:
            return answer.probable_cause, [f"meta.report is not valid: {exc.errors()[:1]}"]
        note = meta.get("note")
        if build_messages(report, note)[1]["content"] != messages[1]["content"]:
            errors.append(
                "user turn is not the prompt the service builds for meta.report (and meta.note)"
            )
        allowed = report_numbers(report)
        texts = [answer.summary, answer.explanation, *answer.recommended_actions]
        invented = [n for text in texts for n in ungrounded(text, allowed)]
        if invented:
            errors.append(f"answer cites numbers not in the report: {invented}")
        if meta.get("cause") not in (None, answer.probable_cause.value):
            errors.append(f"meta.cause {meta['cause']} differs from the answer's")
    return answer.probable_cause, errors


def _prompt(row: dict[str, Any]) -> str:
    """What makes two samples the same: their system and user turns (any value, for a
    malformed sample, so that it is still compared rather than crashing the check)."""
    messages = row.get("messages", [])
    return json.dumps(messages[:2] if isinstance(messages, list) else messages, sort_keys=True)


def _evidence(row: dict[str, Any]) -> list[str]:
    """The evidence lines of a sample's report (none for a malformed one)."""
    meta = row.get("meta")
    report = meta.get("report") if isinstance(meta, dict) else None
    lines = report.get("evidence") if isinstance(report, dict) else None
    return [line for line in lines if isinstance(line, str)] if isinstance(lines, list) else []


def _template(line: str) -> str:
    """What two evidence lines share when they say the same thing with other numbers: the
    generator's template, or the line with its numbers masked."""
    return template_of(line) or re.sub(r"\d+", "#", line)


@dataclass(frozen=True)
class TrainingSide:
    """What a training run reads, read once for every file checked against it: its files
    and every evidence template in them or in the generator's training wording."""

    paths: frozenset[Path]
    """Resolved."""
    templates: frozenset[str]

    @classmethod
    def read(cls, training: Sequence[Path]) -> TrainingSide:
        used = {t for ts in TRAINING.decisive.values() for t in ts} | set(TRAINING.noise)
        for path in training:
            rows = [_as_chat(row)[0] for row in read_jsonl(path)]
            used |= {_template(line) for row in rows for line in _evidence(row)}
        return cls(frozenset(p.resolve() for p in training), frozenset(used))


def check(
    path: Path, others: Sequence[Path] = (), training: TrainingSide | None = None
) -> CheckResult:
    """Check ``path``; ``others`` are the other splits it must not share a prompt with;
    ``training`` what a training run reads (None: no such check): unless ``path`` is one of
    its files, its evidence must share no template with them or the generator's training
    wording."""
    result = CheckResult(path)
    rows = [_as_chat(row) for row in read_jsonl(path)]
    if training is not None and path.resolve() not in training.paths:
        for number, (row, _) in enumerate(rows, 1):
            shared = [line for line in _evidence(row) if _template(line) in training.templates]
            if shared:
                result.errors.append(
                    f"sample {number}: evidence shares a template with training: {shared[0]!r}"
                )
    result.samples = len(rows)
    seen: dict[str, int] = {}
    for number, (row, invalid) in enumerate(rows, 1):
        cause, errors = (None, invalid) if invalid else _check_sample(row)
        result.errors += [f"sample {number}: {e}" for e in errors]
        if cause is not None:
            result.causes[cause.value] += 1
        meta = row.get("meta")
        pattern = meta.get("pattern") if isinstance(meta, dict) else None
        if pattern and isinstance(pattern, str):
            result.patterns[pattern] += 1
        prompt = _prompt(row)
        if prompt in seen:
            result.errors.append(f"sample {number}: duplicate of sample {seen[prompt]}")
        seen.setdefault(prompt, number)
    for other in others:
        for number, row in enumerate(read_jsonl(other), 1):
            prompt = _prompt(_as_chat(row)[0])
            if prompt in seen:
                result.errors.append(
                    f"sample {seen[prompt]}: leaks into {other} (its sample {number})"
                )
    if result.samples:
        share = result.samples / len(ProbableCause)
        for cause in ProbableCause:
            count = result.causes[cause.value]
            if count < share / 2:
                result.warnings.append(
                    f"cause {cause.value}: {count} samples, below half its share ({share:.0f})"
                )
    return result

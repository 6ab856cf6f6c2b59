"""Scores models against the rule engine on the same reports, the way the service runs them.

Each model is a GGUF served by the service's own runtime with the service's own prompt,
facts, grammar and token budget, so the numbers are what a user gets. The baseline is the
rule engine of the complete labelling policy (``service/assess.py``): a model must beat
the policy written out, not a straw man. Reported per model and data set: cause and
severity accuracy, cause accuracy where the facts leave a choice (several causes
supported: where the model decides), valid JSON, answers citing numbers the report does
not have, quoting its facts with the wrong numbers, or saying of a signal or a service
what the report does not (``grounding.misstated``), actions naming the service or its
dependency, actions meant for another cause, tokens/s, seconds per answer (mean and
median); cause accuracy per pattern; and how well the stated confidence is calibrated:
observed cause accuracy per band of stated confidence, and the expected calibration error
(the case-weighted gap between the two).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from service import playbook, rules
from service.contract import AnomalyReport, Diagnosis, ProbableCause
from service.grounding import FACT, facts, misstated, report_numbers, ungrounded
from service.model.runtime import ModelBackend
from service.prompt import build_messages, settled
from training.dataset.samples import read_jsonl

RULES = "rules (complete policy)"
OPENINGS = {
    cause: [
        a.split("{")[0]
        for a in [*listed, *playbook.WITHOUT_DEPENDENCY.get(cause, [])]
        if len(a.split("{")[0]) > 6
    ]
    for cause, listed in playbook.ACTIONS.items()
}
"""How each cause's playbook actions begin (past a first word, which ``Check {dep}`` shares
with half the playbook): an action that begins like another cause's only is advice for the
wrong cause."""


def _foreign(action: str, cause: ProbableCause) -> bool:
    owners = {c for c, heads in OPENINGS.items() for h in heads if action.startswith(h)}
    return bool(owners) and cause not in owners


@dataclass
class Case:
    id: str
    pattern: str
    report: AnomalyReport
    expected: Diagnosis
    note: str | None = None


@dataclass
class Outcome:
    case: str
    pattern: str
    valid: bool
    cause_ok: bool = False
    severity_ok: bool = False
    ungrounded: list[str] = field(default_factory=list)
    misquoted: list[str] = field(default_factory=list)
    misstated: list[str] = field(default_factory=list)
    choice: bool = False
    """The facts left a choice between several causes (none settled it)."""
    foreign_actions: list[str] = field(default_factory=list)
    actions: int = 0
    actions_specific: bool = False
    tokens: int = 0
    seconds: float = 0.0
    cause: str | None = None
    confidence: float | None = None


BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.01))
"""Bands of stated confidence for the reliability table (the last holds 0.85 to 1)."""


def _band(low: float, high: float) -> str:
    return f"{low:.2f}-{min(high, 1.0):.2f}"


def reliability(outcomes: list[Outcome]) -> dict[str, Any]:
    """Stated confidence against observed cause accuracy, per band, and the expected
    calibration error: sum over bands of (cases / all) * |accuracy - mean confidence|."""
    stated = [o for o in outcomes if o.confidence is not None]
    bands: list[dict[str, Any]] = []
    for low, high in BANDS:
        inside = [o for o in stated if low <= (o.confidence or 0.0) < high]
        if inside:
            bands.append(
                {
                    "band": _band(low, high),
                    "cases": len(inside),
                    "stated": sum(o.confidence or 0.0 for o in inside) / len(inside),
                    "observed": sum(o.cause_ok for o in inside) / len(inside),
                }
            )
    gap = sum(b["cases"] * abs(b["observed"] - b["stated"]) for b in bands)
    return {"bands": bands, "ece": gap / len(stated) if stated else None}


def load_cases(path: Path) -> list[Case]:
    cases = []
    for row in read_jsonl(path):
        meta = row.get("meta", {})
        if "report" not in meta:
            raise ValueError(f"{path}: a sample without meta.report cannot be evaluated")
        cases.append(
            Case(
                meta.get("id", "?"),
                meta.get("pattern", "?"),
                AnomalyReport.model_validate(meta["report"]),
                Diagnosis.model_validate_json(row["messages"][-1]["content"]),
                meta.get("note"),
            )
        )
    return cases


def score(case: Case, answer: Diagnosis | None, tokens: int = 0, seconds: float = 0.0) -> Outcome:
    choice = settled(case.report, case.note).cause is None
    if answer is None:
        return Outcome(
            case.id, case.pattern, valid=False, tokens=tokens, seconds=seconds, choice=choice
        )
    allowed = report_numbers(case.report)
    texts = [answer.summary, answer.explanation, *answer.recommended_actions]
    names = {case.report.service, *(d.service for d in case.report.context.downstream)}
    prompt = build_messages(case.report, case.note)[-1]["content"]
    known = facts(case.report, case.note)
    return Outcome(
        case.id,
        case.pattern,
        valid=True,
        cause_ok=answer.probable_cause == case.expected.probable_cause,
        severity_ok=answer.severity == case.expected.severity,
        ungrounded=[n for text in texts for n in ungrounded(text, allowed)],
        misquoted=[f for text in texts for f in FACT.findall(text) if f not in prompt],
        misstated=[
            said
            for said in misstated(f"{answer.summary} {answer.explanation}", known)
            if not FACT.fullmatch(said)  # counted as misquoted
        ],
        choice=choice,
        foreign_actions=[
            a for a in answer.recommended_actions if _foreign(a, answer.probable_cause)
        ],
        actions=len(answer.recommended_actions),
        actions_specific=any(n in a for a in answer.recommended_actions for n in names),
        tokens=tokens,
        seconds=seconds,
        cause=answer.probable_cause.value,
        confidence=answer.confidence,
    )


def run_model(
    runtime: ModelBackend, cases: list[Case], max_tokens: int, label: str
) -> list[Outcome]:
    outcomes = []
    for case in tqdm(cases, desc=label, unit="case"):
        started = time.perf_counter()
        completion = runtime.complete(
            build_messages(case.report, case.note),
            max_tokens,
            time.monotonic() + 600,
            settled=settled(case.report, case.note),
        )
        seconds = time.perf_counter() - started
        try:
            answer: Diagnosis | None = Diagnosis.model_validate_json(completion.text)
        except ValidationError:
            answer = None
        outcomes.append(score(case, answer, completion.completion_tokens, seconds))
    return outcomes


def run_rules(cases: list[Case]) -> list[Outcome]:
    return [score(case, rules.diagnose(case.report, case.note)) for case in cases]


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    by_pattern: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_pattern[o.pattern].append(o)
    seconds = sum(o.seconds for o in outcomes)
    chosen = [o for o in outcomes if o.choice]
    return {
        "cases": n,
        "cause_accuracy": sum(o.cause_ok for o in outcomes) / n,
        "choice_cases": len(chosen),
        "choice_accuracy": sum(o.cause_ok for o in chosen) / len(chosen) if chosen else None,
        "severity_accuracy": sum(o.severity_ok for o in outcomes) / n,
        "valid_json": sum(o.valid for o in outcomes) / n,
        "ungrounded_numbers": sum(len(o.ungrounded) for o in outcomes),
        "misquoted_facts": sum(len(o.misquoted) for o in outcomes),
        "misstated": sum(len(o.misstated) for o in outcomes),
        "foreign_actions": sum(len(o.foreign_actions) for o in outcomes),
        "actions": sum(o.actions for o in outcomes),
        "actions_specific": sum(o.actions_specific for o in outcomes) / n,
        "tokens_per_s": sum(o.tokens for o in outcomes) / seconds if seconds else None,
        "seconds_per_answer": seconds / n if seconds else None,
        "seconds_p50": statistics.median(o.seconds for o in outcomes) if seconds else None,
        "calibration": reliability(outcomes),
        "cause_accuracy_by_pattern": {
            p: sum(o.cause_ok for o in group) / len(group)
            for p, group in sorted(by_pattern.items())
        },
    }


def render(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: one table per data set, one row per model (the rule engine included)."""
    lines = []
    for dataset, models in results.items():
        patterns = sorted({p for s in models.values() for p in s["cause_accuracy_by_pattern"]})
        first = next(iter(models.values()))
        lines += [
            f"**{dataset}** ({first['cases']} cases, {first['choice_cases']} where the facts "
            "leave a choice of cause)",
            "",
            "| model | cause | cause where a choice | severity | valid JSON | "
            "ungrounded numbers | misquoted facts | misstated | "
            "actions name service | actions of another cause | tokens/s | s/answer | "
            "s/answer p50 | " + " | ".join(f"cause: {p}" for p in patterns) + " |",
            "|---" * (13 + len(patterns)) + "|",
        ]
        for model, s in models.items():
            speed = f"{s['tokens_per_s']:.1f}" if s["tokens_per_s"] else "-"
            per = f"{s['seconds_per_answer']:.2f}" if s["seconds_per_answer"] else "-"
            p50 = f"{s['seconds_p50']:.2f}" if s["seconds_p50"] else "-"
            choice = f"{s['choice_accuracy']:.0%}" if s["choice_accuracy"] is not None else "-"
            by = s["cause_accuracy_by_pattern"]
            lines.append(
                f"| {model} | {s['cause_accuracy']:.0%} | {choice} | "
                f"{s['severity_accuracy']:.0%} | "
                f"{s['valid_json']:.0%} | {s['ungrounded_numbers']} | {s['misquoted_facts']} | "
                f"{s['misstated']} | "
                f"{s['actions_specific']:.0%} | {s['foreign_actions']} of {s['actions']} | "
                f"{speed} | {per} | {p50} | "
                + " | ".join(f"{by[p]:.0%}" if p in by else "-" for p in patterns)
                + " |"
            )
        lines += ["", *_reliability_table(models), ""]
    return "\n".join(lines)


def _reliability_table(models: dict[str, dict[str, Any]]) -> list[str]:
    """Per model: observed cause accuracy / mean stated confidence (cases) per band."""
    head = " | ".join(f"stated {_band(low, high)}" for low, high in BANDS)
    lines = [
        "Confidence calibration: observed cause accuracy / mean stated confidence (cases)",
        "",
        f"| model | {head} | expected calibration error |",
        "|---" * (len(BANDS) + 2) + "|",
    ]
    for model, s in models.items():
        calibration = s["calibration"]
        by_band = {b["band"]: b for b in calibration["bands"]}
        cells = []
        for low, high in BANDS:
            b = by_band.get(_band(low, high))
            cells.append(f"{b['observed']:.0%} / {b['stated']:.2f} ({b['cases']})" if b else "-")
        ece = f"{calibration['ece']:.3f}" if calibration["ece"] is not None else "-"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {ece} |")
    return lines


def write_report(
    results: dict[str, dict[str, dict[str, Any]]],
    details: dict[str, dict[str, list[Outcome]]],
    out_dir: Path,
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "eval.md"
    markdown.write_text(render(results))
    raw = out_dir / "eval.json"
    raw.write_text(
        json.dumps(
            {
                "summary": results,
                "cases": {
                    d: {m: [asdict(o) for o in outs] for m, outs in per.items()}
                    for d, per in details.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    return markdown, raw

"""Chat-format samples: the service's own prompt for a report, and the answer it deserves.

A sample is ``{"messages": [system, user, assistant], "meta": {...}}``, the shape axolotl's
``chat_template`` datasets read (extra keys are ignored there). ``meta`` keeps the report,
so evaluation can run the rule engine and the grounding guard on the very same facts, and
``data check`` can prove the prompt is the one the service would build today.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from service.contract import AnomalyReport, Diagnosis
from service.prompt import build_messages
from training.dataset.generator import RECIPES, Scenario, cpu_clear, cpu_mixed, generate

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
COMBINED = DATA_DIR / "training-data-combined.jsonl"
HANDWRITTEN = DATA_DIR / "handwritten.jsonl"
HANDWRITTEN_HELDOUT = DATA_DIR / "handwritten-heldout.jsonl"
HANDWRITTEN_HELDOUT_CHAT = DATA_DIR / "handwritten-heldout-chat.jsonl"
HANDWRITTEN_PUBLIC = DATA_DIR / "handwritten-public.jsonl"
HANDWRITTEN_PUBLIC_CHAT = DATA_DIR / "handwritten-public-chat.jsonl"
"""Hand-written from public incident write-ups and real log lines: evaluation only, never
used for a decision (training, calibration, choosing an adapter or a rule); see
``handwritten-public.sources.md``."""
HELDOUT = DATA_DIR / "heldout.jsonl"
EXTRA = DATA_DIR / "generated-extra.jsonl"
GENERATED_SEED, HELDOUT_SEED, EXTRA_SEED, CALIBRATION_SEED = 0, 1, 2, 3
EXTRA_SIZE = 660
"""The shipped run reads the combined file and this many more generated scenarios: with ~5
cases per cause and pattern a 135M model learns the clear cases only (its first
eval); the extra ones are what fits the 15-minute CPU budget in one epoch with bf16 (13 min
on 2 cores with AMX; docs/training.md)."""


EXTRA_RECIPES = (
    RECIPES
    + tuple(entry for entry in RECIPES if entry.pattern == "evidence")
    + tuple(entry for entry in RECIPES if entry.recipe in (cpu_clear, cpu_mixed))
    + tuple(entry for entry in RECIPES if entry.service == "exchange-api")
)
"""The extra scenarios come from every recipe, twice from those the model learns slowest:
the evidence ones (an early eval: 50% held-out with each recipe once), and the three
where one tag reverses the cause: a busy CPU beside a dependency under 2x slower (CPU), a
CPU-bound note with the CPU busy (CPU) or idle (a dependency). On 480 cases of a seed of
their own, these were 23 of the 46 misses of the adapter trained without (README)."""


class DataError(ValueError):
    """A data file that cannot be used; the message names the file and line."""


class HandwrittenCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    pattern: str
    report: AnomalyReport
    answer: Diagnosis
    note: str | None = None
    """The service catalogue's note on the report's service, as an operator would write it."""


def to_sample(scenario: Scenario, source: str) -> dict[str, Any]:
    messages = build_messages(scenario.report, scenario.note)
    messages.append({"role": "assistant", "content": scenario.answer.model_dump_json()})
    meta = {
        "id": scenario.id,
        "source": source,
        "pattern": scenario.pattern,
        "cause": scenario.answer.probable_cause.value,
        "report": scenario.report.model_dump(mode="json", exclude_none=True),
    }
    if scenario.note:
        meta["note"] = scenario.note
    return {"messages": messages, "meta": meta}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file. Lines end at ``\\n`` only: ``str.splitlines`` would also
    cut at U+2028, U+0085 and other separators that JSON strings may hold unescaped (and
    ``write_jsonl`` writes them so)."""
    rows = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror}") from exc
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{at}: not UTF-8 text ({exc.reason})") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or an integer past the 4300-digit limit
            raise DataError(f"{path}:{number}: not JSON: {getattr(exc, 'msg', exc)}") from exc
        except RecursionError as exc:
            raise DataError(f"{path}:{number}: not JSON: nested too deeply") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    partial.write_text(text, encoding="utf-8")  # what read_jsonl reads, whatever the locale
    partial.replace(path)


def handwritten(path: Path) -> list[Scenario]:
    cases = []
    for number, row in enumerate(read_jsonl(path), 1):
        try:
            case = HandwrittenCase.model_validate(row)
        except ValidationError as exc:
            raise DataError(f"{path}: case {number}: {exc.errors(include_url=False)[:2]}") from exc
        cases.append(Scenario(case.id, case.pattern, case.report, case.answer, case.note))
    return cases


def combined(n_generated: int = 100, seed: int = GENERATED_SEED) -> list[dict[str, Any]]:
    """The training file: generated scenarios plus the hand-written training cases."""
    rows = [to_sample(s, "generated") for s in generate(n_generated, seed)]
    rows += [to_sample(s, "handwritten") for s in handwritten(HANDWRITTEN)]
    return rows


def extra(n_generated: int = EXTRA_SIZE, seed: int = EXTRA_SEED) -> list[dict[str, Any]]:
    """More generated scenarios for the shipped run, of a seed of their own."""
    return [to_sample(s, "generated") for s in generate(n_generated, seed, EXTRA_RECIPES)]


def split(
    rows: list[dict[str, Any]], val_set_size: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): a seeded shuffle, axolotl's meaning of val_set_size."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = int(val_set_size) if val_set_size >= 1 else round(len(rows) * val_set_size)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def fingerprint(rows: Iterable[dict[str, Any]]) -> str:
    """sha256 of the samples' messages, the data hash a manifest records."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row["messages"], sort_keys=True).encode())
    return digest.hexdigest()

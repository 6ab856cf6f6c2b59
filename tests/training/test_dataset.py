"""The dataset: the committed files are what the generator and the hand-written cases make,
they pass ``data check``, and the check catches what would spoil a training run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from service.contract import AnomalyReport, Diagnosis, ProbableCause
from service.prompt import settled, summary_head
from training.cli import main
from training.dataset import samples, texts
from training.dataset.check import TrainingSide, check
from training.dataset.generator import Scenario, generate


def test_committed_files_pass_the_check_without_leakage() -> None:
    files = [
        samples.COMBINED,
        samples.EXTRA,
        samples.HELDOUT,
        samples.HANDWRITTEN_HELDOUT_CHAT,
        samples.HANDWRITTEN_PUBLIC_CHAT,
    ]
    training = TrainingSide.read([samples.COMBINED, samples.EXTRA])
    for path in files:
        result = check(path, [p for p in files if p != path], training)
        assert result.ok, result.render()
    combined = samples.read_jsonl(samples.COMBINED)
    sources = Counter(row["meta"]["source"] for row in combined)
    assert sources == {"generated": 100, "handwritten": 22}


def test_hand_written_case_files_are_checked_as_the_samples_they_become(tmp_path: Path) -> None:
    """The source files of the hand-written cases (report + answer) get the chat checks and
    the leakage check, not 'messages must be system, user, assistant' on every line."""
    held_out = check(samples.HANDWRITTEN_HELDOUT, [samples.COMBINED, samples.HELDOUT])
    assert held_out.ok and held_out.samples == 22, held_out.render()
    leaking = check(samples.HANDWRITTEN, [samples.COMBINED])
    assert sum("leaks into" in e for e in leaking.errors) == 22
    cases = samples.read_jsonl(samples.HANDWRITTEN_HELDOUT)[:2]
    cases[1]["answer"]["probable_cause"] = "gremlins"
    result = check(_write(tmp_path / "cases.jsonl", cases))
    assert len(result.errors) == 1, result.errors
    assert result.errors[0].startswith("sample 2: hand-written case is not valid")
    assert "probable_cause" in result.errors[0]


def test_an_evaluation_file_may_not_share_an_evidence_template_with_training(
    tmp_path: Path,
) -> None:
    """The generated held-out file draws its evidence from wording training never reads; a
    line of a training template, whatever its numbers, is refused in an evaluation file."""
    held_out = samples.read_jsonl(samples.HELDOUT)
    assert all(_template_of_every_line(row, texts.HELDOUT) for row in held_out)
    report = held_out[0]["meta"]["report"]
    report["evidence"] = ["connection pool exhausted: 7/7 in use, waiting for db"]
    row = samples.to_sample(
        Scenario("x", "evidence", AnomalyReport.model_validate(report), _answer(held_out[0])),
        "generated",
    )
    leaking = check(
        _write(tmp_path / "eval.jsonl", [row]), training=TrainingSide.read([samples.COMBINED])
    )
    assert leaking.errors == [
        "sample 1: evidence shares a template with training: "
        "'connection pool exhausted: 7/7 in use, waiting for db'"
    ]
    train = _write(tmp_path / "train.jsonl", [row])
    assert check(train, training=TrainingSide.read([train])).ok


def _template_of_every_line(row: dict, wording: texts.Wording) -> bool:
    lines = row["meta"]["report"]["evidence"]
    own = [*(t for ts in wording.decisive.values() for t in ts), *wording.noise]
    return all(texts.template_of(line) in own for line in lines)


def _answer(row: dict) -> Diagnosis:
    return Diagnosis.model_validate_json(row["messages"][2]["content"])


def test_committed_training_files_are_reproducible() -> None:
    assert samples.combined() == samples.read_jsonl(samples.COMBINED)
    assert samples.extra() == samples.read_jsonl(samples.EXTRA)


def test_public_evaluation_set_is_its_hand_written_cases_as_samples() -> None:
    """The chat form is what ``data build`` makes of the hand-written public cases, which
    cover every cause."""
    cases = samples.handwritten(samples.HANDWRITTEN_PUBLIC)
    rows = [samples.to_sample(s, "handwritten") for s in cases]
    assert rows == samples.read_jsonl(samples.HANDWRITTEN_PUBLIC_CHAT)
    assert len(rows) >= 40
    assert {s.answer.probable_cause for s in cases} == set(ProbableCause)


def test_generator_is_seeded_balanced_and_any_size() -> None:
    first, again = generate(240, seed=7), generate(240, seed=7)
    assert [s.answer for s in first] == [s.answer for s in again]
    assert [s.report for s in first] != [s.report for s in generate(240, seed=8)]
    causes = Counter(s.answer.probable_cause for s in first)
    assert set(causes) == set(ProbableCause)
    assert min(causes.values()) >= 240 / len(ProbableCause) / 2


def test_generated_summaries_are_the_ones_the_decoder_writes_for_the_model() -> None:
    """The local decoder writes the settled summary once the cause is chosen
    (service/model/fields.py): training must have written the same, so the model reads on
    from text it has seen."""
    for sample in generate(120, seed=3):
        expected = settled(sample.report).summary(sample.answer.probable_cause)
        assert summary_head(sample.report) and sample.answer.summary == expected


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_check_reports_broken_samples_duplicates_and_leakage(tmp_path: Path, capsys) -> None:
    good = [samples.to_sample(s, "generated") for s in generate(4, seed=11)]
    invented = json.loads(json.dumps(good[1]))
    answer = json.loads(invented["messages"][2]["content"])
    answer["explanation"] = "p95 jumped to 98765 ms."
    invented["messages"][2]["content"] = json.dumps(answer)
    stale = json.loads(json.dumps(good[2]))
    stale["messages"][1]["content"] += "\nextra line"
    not_json = json.loads(json.dumps(good[3]))
    not_json["messages"][2]["content"] = "the cause is cpu"
    train = _write(tmp_path / "train.jsonl", [good[0], good[0], invented, stale, not_json])
    other = _write(tmp_path / "other.jsonl", [good[0]])
    result = check(train, [other])
    text = "\n".join(result.errors)
    assert "sample 2: duplicate of sample 1" in text
    assert "98765" in text
    assert "not the prompt the service builds" in text
    assert "not a valid Diagnosis" in text
    assert "leaks into" in text
    assert main(["data", "check", str(train)]) == 1
    assert "errors" in capsys.readouterr().out


def test_unreadable_files_name_the_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n{not json\n')
    assert main(["data", "check", str(path)]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err


def test_generate_command_writes_the_requested_size(tmp_path: Path) -> None:
    out = tmp_path / "big.jsonl"
    assert main(["data", "generate", "--n", "300", "--seed", "5", "--out", str(out)]) == 0
    assert len(samples.read_jsonl(out)) == 300
    assert check(out).ok


def test_service_knowledge_comes_from_the_catalogue_note_not_the_name() -> None:
    """A user's services are not ours: knowledge cases state their trait in the prompt's
    catalogue note, half of them on services other than the trait's usual one, and those
    usual services also come up without a note, where their signals decide."""
    from training.dataset.generator import KNOWN

    scenarios = generate(480, seed=5)
    knowledge = [s for s in scenarios if s.pattern == "service_knowledge"]
    assert knowledge and all(s.note for s in knowledge)
    for s in knowledge:
        assert (
            f'catalogue note on {s.report.service}: "{s.note}"'
            in samples.to_sample(s, "generated")["messages"][1]["content"]
        )
    elsewhere = [s for s in knowledge if s.report.service not in KNOWN]
    assert 0.3 < len(elsewhere) / len(knowledge) < 0.7
    unnoted = {s.report.service for s in scenarios if s.note is None}
    assert set(KNOWN) <= unnoted
    # a busy CPU outweighs a CPU-bound note (which, with an idle CPU, means waiting)
    busy = [s for s in scenarios if s.note and s.pattern in ("clear", "mixed")]
    assert any(
        s.answer.probable_cause == ProbableCause.local_cpu_saturation and "CPU-bound" in s.note
        for s in busy
    )

"""Evaluation scores what a user reads: a fact quoted with the wrong numbers counts, even
when each number on its own is somewhere in the report, and so does advice for another
cause."""

from __future__ import annotations

from service import playbook
from service.contract import ProbableCause
from training import evaluate
from training.dataset import samples


def test_a_fact_quoted_with_another_facts_number_is_misquoted() -> None:
    case = evaluate.load_cases(samples.HELDOUT)[0]
    facts = evaluate.FACT.findall(case.expected.explanation + case.expected.summary)
    assert facts, case.expected
    assert evaluate.score(case, case.expected).misquoted == []
    first, *_ = facts
    value, usual = first.split(" vs usual ")[0], first.split(" vs usual ")[1].split(" ")[0]
    swapped = case.expected.model_copy(
        update={"explanation": f"The latency is {usual} vs usual {value}, other signals normal."}
    )
    outcome = evaluate.score(case, swapped)
    assert outcome.misquoted == [f"{usual} vs usual {value}"]
    assert outcome.ungrounded == []  # each number alone is the report's


def test_an_action_from_another_causes_playbook_is_counted() -> None:
    case = next(
        c
        for c in evaluate.load_cases(samples.HELDOUT)
        if c.expected.probable_cause == ProbableCause.local_cpu_saturation
    )
    own = playbook.actions(case.report)[ProbableCause.local_cpu_saturation][0]
    queue = playbook.actions(case.report)[ProbableCause.queue_backlog][2]  # raise the prefetch
    answer = case.expected.model_copy(update={"recommended_actions": [own, queue]})
    outcome = evaluate.score(case, answer)
    assert outcome.foreign_actions == [queue] and outcome.actions == 2


def test_the_reliability_table_sets_stated_confidence_against_observed_accuracy() -> None:
    """Four answers stated at 0.9 of which two are right, one at 0.6 that is right: the
    high band observed 50% against 0.90 stated, the gap weighed by its four cases."""
    cases = evaluate.load_cases(samples.HELDOUT)[:5]
    wrong = {c.expected.probable_cause: ProbableCause.unknown for c in cases}
    answers = []
    for number, case in enumerate(cases):
        right = number in (0, 1, 4)
        cause = case.expected.probable_cause if right else wrong[case.expected.probable_cause]
        confidence = 0.6 if number == 4 else 0.9
        answers.append(
            case.expected.model_copy(update={"probable_cause": cause, "confidence": confidence})
        )
    outcomes = [evaluate.score(c, a) for c, a in zip(cases, answers, strict=True)]
    table = evaluate.reliability(outcomes)
    assert [(b["band"], b["cases"], b["observed"]) for b in table["bands"]] == [
        ("0.50-0.70", 1, 1.0),
        ("0.85-1.00", 4, 0.5),
    ]
    assert round(table["ece"], 3) == round((1 * 0.4 + 4 * 0.4) / 5, 3)
    rendered = evaluate.render({"set": {"tuned": evaluate.summarise(outcomes)}})
    assert "| tuned | - | 100% / 0.60 (1) | - | 50% / 0.90 (4) | 0.400 |" in rendered

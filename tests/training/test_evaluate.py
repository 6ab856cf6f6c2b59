"""Evaluation scores what a user reads: a fact quoted with the wrong numbers counts, even
when each number on its own is somewhere in the report."""

from __future__ import annotations

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

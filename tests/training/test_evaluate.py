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

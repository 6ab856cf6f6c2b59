"""Field-by-field decoding on the real tuned model: valid answers with only the open
tokens decoded, budgets and deadlines kept."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace

import pytest

from service.contract import AnomalyReport, Diagnosis, ProbableCause, Severity
from service.grounding import FACT, NOTHING, report_numbers, ungrounded
from service.model import fields
from service.model.runtime import ModelBusy, ModelRuntime
from service.model.tuned import prepare_tuned
from service.prompt import Settled, build_messages, settled
from training.dataset import samples


@pytest.fixture(scope="module")
def runtime(service_settings) -> ModelRuntime:
    s = service_settings
    return ModelRuntime(prepare_tuned(s.data_dir), 2048, 2, 0, s.repeat_penalty)


def _messages(row: dict) -> list[dict[str, str]]:
    return build_messages(AnomalyReport.model_validate(row["meta"]["report"]))


@pytest.mark.slow
def test_answers_validate_cite_only_given_numbers_and_decode_only_the_open_tokens(
    runtime: ModelRuntime,
) -> None:
    rows = samples.read_jsonl(samples.HANDWRITTEN_HELDOUT_CHAT)[:4]
    for row in rows:
        completion = runtime.complete(_messages(row), 400, time.monotonic() + 120)
        assert completion.finish_reason == "stop", completion.text
        answer = Diagnosis.model_validate_json(completion.text)
        prose = " ".join([answer.summary, answer.explanation, *answer.recommended_actions])
        report = AnomalyReport.model_validate(row["meta"]["report"])
        assert not ungrounded(prose, report_numbers(report)), prose  # numbers held to the prompt
        written = len(runtime._llm.tokenize(completion.text.encode(), add_bos=False))
        # keys, quotes and the tail of each enum value are forced, not decoded
        assert completion.completion_tokens < written - 20, (completion, written)


@pytest.mark.slow
def test_what_the_facts_settle_is_written_as_given_not_decoded(runtime: ModelRuntime) -> None:
    row = samples.read_jsonl(samples.HELDOUT)[0]
    given = settled(AnomalyReport.model_validate(row["meta"]["report"]))
    assert given.severity and given.summary_head
    deadline = time.monotonic() + 300
    free = runtime.complete(_messages(row), 400, deadline)
    led = runtime.complete(_messages(row), 400, deadline, settled=given)
    answer = Diagnosis.model_validate_json(led.text)
    assert answer.severity == given.severity
    assert answer.summary == given.summary(answer.probable_cause), answer
    # the whole summary is written, not only its ~13-token opening
    assert led.completion_tokens <= free.completion_tokens - 14, (free, led)
    # the settled severity is written even where the model would pick another
    own = Diagnosis.model_validate_json(free.text).severity
    other = next(s for s in Severity if s != own)
    forced = runtime.complete(_messages(row), 400, deadline, settled=Settled(other, None))
    assert Diagnosis.model_validate_json(forced.text).severity == other
    # a settled summary is written whole or, past the contract's length, left to the model
    fits = runtime.complete(_messages(row), 400, deadline, settled=Settled(None, "x" * 100))
    assert Diagnosis.model_validate_json(fits.text).summary.startswith("x" * 100 + " ")
    long = runtime.complete(_messages(row), 400, deadline, settled=Settled(None, "x" * 140))
    assert not Diagnosis.model_validate_json(long.text).summary.startswith("x" * 20)


@pytest.mark.slow
def test_the_cause_named_is_the_best_scored_and_a_bias_moves_it(
    runtime: ModelRuntime, service_settings
) -> None:
    deadline = time.monotonic() + 300
    for row in samples.read_jsonl(samples.HELDOUT)[:3]:
        scores = runtime.cause_scores(_messages(row))
        assert set(scores) == {c.value for c in ProbableCause}
        best, second = sorted(scores, key=scores.__getitem__, reverse=True)[:2]
        answer = Diagnosis.model_validate_json(runtime.complete(_messages(row), 400, deadline).text)
        assert answer.probable_cause == best, (scores, answer)
    s = service_settings
    lift = {second: scores[best] - scores[second] + 0.5}  # the runner-up, just past the best
    biased = ModelRuntime(prepare_tuned(s.data_dir), 2048, 2, 0, s.repeat_penalty, cause_bias=lift)
    try:
        answer = Diagnosis.model_validate_json(biased.complete(_messages(row), 400, deadline).text)
    finally:
        biased.close()
    assert answer.probable_cause == second, (scores, lift, answer)


@pytest.mark.slow
def test_actions_are_picked_from_those_offered_for_the_cause(runtime: ModelRuntime) -> None:
    row = samples.read_jsonl(samples.HELDOUT)[0]
    report = AnomalyReport.model_validate(row["meta"]["report"])
    given = settled(report)
    deadline = time.monotonic() + 300
    answer = Diagnosis.model_validate_json(
        runtime.complete(_messages(row), 400, deadline, settled=given).text
    )
    picked = answer.recommended_actions
    assert picked and len(set(picked)) == len(picked), picked
    assert set(picked) <= set(given.actions(answer.probable_cause)), picked
    # what is offered is written as given, even text the model never saw
    page = f'Page the "{report.service}" owners'
    only = Settled(None, None, {cause: [page] for cause in ProbableCause})
    paged = runtime.complete(_messages(row), 400, deadline, settled=only)
    assert Diagnosis.model_validate_json(paged.text).recommended_actions == [page]


@pytest.mark.slow
def test_a_budget_too_small_ends_in_length_and_a_passed_deadline_in_busy(
    runtime: ModelRuntime,
) -> None:
    messages = _messages(samples.read_jsonl(samples.HELDOUT)[2])
    short = runtime.complete(messages, 12, time.monotonic() + 60)
    assert short.finish_reason == "length" and short.completion_tokens == 13
    assert "budget" in short.text
    with pytest.raises(ModelBusy, match="deadline"):
        runtime.complete(messages, 400, time.monotonic() + 0.05)


@pytest.mark.slow
def test_the_model_runs_on_its_own_thread_whichever_thread_asks(runtime: ModelRuntime) -> None:
    """llama.cpp's OpenMP workers belong to the calling thread; a second caller thread
    would decode on a second, slower team (tests/bench/model_runtime.py)."""
    seen: list[str] = []
    decode = runtime._decoder.decode

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    runtime._decoder.decode = recording  # type: ignore[method-assign]
    try:
        messages = _messages(samples.read_jsonl(samples.HELDOUT)[0])
        callers = [
            threading.Thread(target=runtime.complete, args=(messages, 400, time.monotonic() + 60))
            for _ in range(2)
        ]
        for caller in callers:
            caller.start()
            caller.join()
    finally:
        runtime._decoder.decode = decode  # type: ignore[method-assign]
    assert len(seen) == 2 and len(set(seen)) == 1 and seen[0].startswith("whyslow-model")


def test_a_word_that_contradicts_the_facts_is_taken_back_without_the_model() -> None:
    """Decoding ``cpu rose sharply`` where the facts say the CPU did not rise: once ``rose``
    is whole, the text goes back to where it began and its first token is refused there."""
    text = fields._Text(lambda t: ["cpu rose"] if "cpu rose" in t else [])
    for token, piece in enumerate([b"The", b" cpu", b" ro", b"se"]):
        assert not text.add(token, piece)
    assert text.add(4, b" sharply")
    assert text.value == b"The cpu" and text.refused() == {2}
    for token, piece in [(5, b" stayed"), (6, b" flat"), (7, b".")]:
        assert not text.add(token, piece)
    assert text.value == b"The cpu stayed flat." and text.refused() == set()
    ending = fields._Text(lambda t: ["cpu rose"] if "cpu rose" in t else [])
    assert not ending.add(0, b"cpu")
    assert ending.add(1, b" rose", last=True)  # the closing quote ends the word
    assert ending.value == b"cpu" and ending.refused() == {1}
    assert ending.add(2, b" rose") is False  # not whole yet
    assert ending.add(3, b"", last=True)  # a closing quote alone ends it too
    assert ending.value == b"cpu" and ending.refused() == {1, 2}


def test_a_quote_the_report_does_not_hold_is_taken_back_to_where_it_opened() -> None:
    text = fields._Text(lambda t: [q for q in re.findall(r"'[^']*'", t) if q != "'ok'"])
    for token, piece in enumerate([b"saw", b" '", b"bad"]):
        assert not text.add(token, piece)
    assert text.add(3, b"'")
    assert text.value == b"saw" and text.refused() == {1}


def test_a_fact_quoted_wrong_is_taken_back_to_where_it_began() -> None:
    text = fields._Text(lambda t: [f for f in FACT.findall(t) if f != "48ms vs usual 25ms"])
    for token, piece in enumerate([b"p95", b" 25", b"ms", b" vs", b" usual", b" 7"]):
        assert not text.add(token, piece)
    assert text.add(6, b" seconds")
    assert text.value == b"p95" and text.refused() == {1}


def test_a_claim_that_no_signal_stands_out_is_taken_back_to_where_it_began() -> None:
    """Of a report whose incident names a root, ``No signal or evidence stands out`` goes
    back whole: refusing only ``out`` would leave ``No signal or evidence stands.``"""
    text = fields._Text(lambda t: [m[0] for m in NOTHING.finditer(t)])
    for token, piece in enumerate([b"It", b" fails.", b" No", b" signal", b" stands", b" out"]):
        assert not text.add(token, piece)
    assert text.add(6, b".")
    assert text.value == b"It fails." and text.refused() == {2}


def test_a_word_still_contradicting_after_the_retractions_is_left_to_the_guard() -> None:
    text = fields._Text(lambda t: ["up"] * t.count(" up"))
    for _ in range(fields.RETRACTIONS):
        text.add(0, b" up")
        assert text.add(1, b" ") and text.value == b""
    text.add(0, b" up")
    assert not text.add(1, b" ") and text.value == b" up "


@pytest.mark.slow
def test_a_word_the_facts_contradict_is_never_written(runtime: ModelRuntime) -> None:
    """The decoder holds the prose to the facts word by word: here a checker that refuses
    a word the model's own explanation of the report uses."""
    row = samples.read_jsonl(samples.HANDWRITTEN_HELDOUT_CHAT)[0]
    report = AnomalyReport.model_validate(row["meta"]["report"])
    given = settled(report)
    free = runtime.complete(_messages(row), 400, time.monotonic() + 120, settled=given)
    said = Diagnosis.model_validate_json(free.text).explanation.lower()
    word = re.findall(r"[a-z]{5,}", said)[0]
    strict = replace(given, contradicts=lambda t: re.findall(rf"\b{word}\b", t.lower()))
    held = runtime.complete(_messages(row), 400, time.monotonic() + 120, settled=strict)
    answer = Diagnosis.model_validate_json(held.text)
    assert not re.search(rf"\b{word}\b", answer.explanation.lower()), (word, answer)

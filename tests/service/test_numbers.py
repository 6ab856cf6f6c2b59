"""Numbers in the prose held to the prompt's, on a small vocabulary of SmolLM2's shape
(one digit a token) plus one token of several digits, as Llama 3 has."""

from __future__ import annotations

import numpy as np

from service.model.numbers import PromptNumbers, TokenClasses

VOCAB = [str(d).encode() for d in range(10)] + [b".", b". ", b" ", b" vs", b'"', b"x", b"258"]
TOKENS = TokenClasses(VOCAB)
PROMPT = b"queue depth: 2581 vs usual 160 (16.1x HIGHER)\nLOG: duration: 6120.442 ms"


def allowed(text: bytes, blocked: np.ndarray | None = None) -> set[bytes]:
    mask = np.zeros(len(VOCAB), dtype=bool) if blocked is None else blocked
    PromptNumbers(PROMPT, TOKENS).block(text, mask)
    return {VOCAB[i] for i in np.flatnonzero(~mask)}


def test_a_number_started_goes_on_to_one_of_the_prompt_and_ends_only_there() -> None:
    assert allowed(b"The depth is 25") == {b"8"}
    assert allowed(b"The depth is 258") == {b"1"}
    assert allowed(b"The depth is ") >= {b"2", b"258", b"7"}  # 7: a count up to 10
    assert b"258" not in allowed(b"The depth is 1")
    assert allowed(b"The depth is 2581") >= {b" vs", b'"', b". "}


def test_rounded_decimals_pass_as_the_grounding_guard_reads_them() -> None:
    assert b" " in allowed(b"a 6120")  # 6120.442 rounded
    after_dot = allowed(b"a 6120.")  # its decimals, or the sentence's full stop
    assert b"4" in after_dot and b" " in after_dot and b"5" not in after_dot
    assert allowed(b"a 6120.4") >= {b"4", b"x"} and b"3" not in allowed(b"a 6120.4")
    assert b"x" in allowed(b"(16.1") and b"2" not in allowed(b"(16.1")
    assert allowed(b"usual 16") == set(VOCAB) - {b"258"} - {str(d).encode() for d in range(1, 10)}


def test_digits_glued_to_a_word_are_a_name_not_a_number() -> None:
    assert allowed(b"latency p9") == set(VOCAB)


def test_a_mask_that_would_leave_nothing_is_left_as_it_was() -> None:
    only_space = np.ones(len(VOCAB), dtype=bool)
    only_space[VOCAB.index(b" ")] = False
    assert allowed(b"The depth is 25", only_space) == {b" "}

"""A Diagnosis decoded field by field: the model decides only what is open.

The JSON around the values (keys, quotes, commas) is known in advance, and so is the rest
of an enum value once its first tokens have singled it out, and what the facts settle
(``prompt.settled``: the severity, and the summary once the cause is chosen, as training
wrote them), and so is an action once its first tokens have picked it from the cause's
playbook.
Those tokens are evaluated as a batch, the way a prompt is, instead of being decoded one
forward pass each: about two thirds of a ~105-token answer (README, service speed). Strings are
decoded under a token mask (text without a quote, backslash or control character, or such
text closed by its quote and the start of what must follow), the JSON grammar of a string
without a grammar engine scanning the vocabulary at every token. A number the prose writes
is held to the prompt's (``numbers.py``): the grounding guard's rule, kept while decoding.

The answer is re-tokenised as a whole before each step, so the model reads the tokens
training gave it (``training/train.py`` tokenises the full answer text), not the pieces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from llama_cpp import Llama

from service.contract import Diagnosis, ProbableCause, Severity
from service.model.numbers import PromptNumbers, TokenClasses
from service.prompt import Settled

CONFIDENCE_STEPS = [round(i * 0.05, 2) for i in range(21)]
UNSAFE = frozenset(b'"\\\x7f' + bytes(range(0x20)))
MAX_ACTIONS = 5
FIELDS = [
    "probable_cause",
    "severity",
    "confidence",
    "summary",
    "explanation",
    "recommended_actions",
]


class FieldOutputError(RuntimeError):
    """The answer ran past its token budget (finish ``length``)."""

    def __init__(self, message: str, sampled: int) -> None:
        super().__init__(message)
        self.sampled = sampled


class DeadlinePassed(RuntimeError):
    """Decoding ran past the request's deadline."""


@dataclass(frozen=True)
class Decoded:
    text: str
    prompt_tokens: int
    completion_tokens: int


def _options(values: list[str], then: str) -> list[bytes]:
    return [(value + then).encode() for value in values]


def _escaped(text: str | None) -> bytes:
    """``text`` as the inside of a JSON string (b"" for None)."""
    return json.dumps(text or "", ensure_ascii=False)[1:-1].encode()


class FieldDecoder:
    """Decodes a Diagnosis on one loaded model (the caller serialises access)."""

    def __init__(self, llm: Llama, repeat_penalty: float) -> None:
        self._llm = llm
        self._repeat_penalty = repeat_penalty
        texts = [llm.detokenize([i]) for i in range(llm.n_vocab())]
        self._texts = texts
        self._ids = {text: i for i, text in reversed(list(enumerate(texts))) if text}
        self._safe = np.array([bool(t) and not (UNSAFE & set(t)) for t in texts])
        self._lengths = np.array([len(t) for t in texts])
        self._before_quote = np.array([max(t.find(b'"'), 0) for t in texts])
        """Where a token's quote is (0 when it has none): what of a closer is string text."""
        schema = Diagnosis.model_json_schema()["properties"]
        self._limits = {
            "summary": schema["summary"]["maxLength"],
            "explanation": schema["explanation"]["maxLength"],
            "action": schema["recommended_actions"]["items"]["maxLength"],
        }
        """The contract's bounds, in bytes here (never fewer than characters)."""
        self._quoted = [
            (token, text[at + 1 :])
            for token, text in enumerate(texts)
            if (at := text.find(b'"')) >= 0 and not (UNSAFE & set(text[:at]))
        ]
        """Tokens that can close a string: safe text, the quote, then what may follow."""
        self._closers: dict[tuple[bytes, ...], np.ndarray] = {}
        self._classes = TokenClasses(texts)
        if list(Diagnosis.model_fields) != FIELDS:
            raise RuntimeError(f"Diagnosis fields changed; decode() writes {FIELDS}")
        causes = [c.value for c in ProbableCause]
        severities = [s.value for s in Severity]
        confidences = [json.dumps(c) for c in CONFIDENCE_STEPS]
        self._cause = _options(causes, '","severity":"')
        self._severity = _options(severities, '","confidence":')
        self._confidence = _options(confidences, ',"summary":"')

    def closers(self, then: list[bytes]) -> np.ndarray:
        """Mask of the tokens that close a string followed by one of ``then``."""
        key = tuple(then)
        if key not in self._closers:
            mask = np.zeros(len(self._texts), dtype=bool)
            for token, rest in self._quoted:
                mask[token] = any(t.startswith(rest) for t in then)
            self._closers[key] = mask
        return self._closers[key]

    def decode(
        self,
        prompt: list[int],
        max_tokens: int,
        deadline: float,
        temperature: float,
        seed: int | None,
        settled: Settled | None = None,
    ) -> Decoded:
        """The answer's JSON text for a prompt (token ids ending with the assistant turn's
        start), with what ``settled`` gives written as given: the severity, and the summary
        once the cause is chosen (unless it is past the contract's length); the actions
        picked from those it offers for the cause. Raises FieldOutputError or
        DeadlinePassed."""
        if seed is not None:
            self._llm.set_seed(seed)
        numbers = PromptNumbers(self._llm.detokenize(prompt), self._classes)
        run = _Run(self, prompt, numbers, max_tokens, deadline, temperature)
        run.force(b'{"probable_cause":"')
        cause = ProbableCause(run.choose(self._cause).split(b'"')[0].decode())
        if settled and settled.severity:
            run.force(next(o for o in self._severity if o.startswith(settled.severity.encode())))
        else:
            run.choose(self._severity)
        run.choose(self._confidence)
        whole = _escaped(settled.summary(cause)) if settled else b""
        if whole and len(whole) <= self._limits["summary"]:
            run.force(whole + b'","explanation":"')
        else:
            run.string("summary", [b',"explanation":"'])
        run.string("explanation", [b',"recommended_actions":["'])
        limit = self._limits["action"]
        offered = [_escaped(a) for a in settled.actions(cause)] if settled else []
        offered = list(dict.fromkeys(a for a in offered if len(a) <= limit))
        if offered:
            run.pick(offered)
        else:
            for count in range(1, MAX_ACTIONS + 1):
                more = [b',"'] if count < MAX_ACTIONS else []
                if run.string("action", [*more, b"]}"]) == b"]}":
                    break
        text = run.answer.decode("utf-8", errors="replace")
        return Decoded(text, len(prompt), run.sampled)


class _Run:
    """One answer being decoded: the bytes so far and the tokens sampled."""

    def __init__(
        self,
        decoder: FieldDecoder,
        prompt: list[int],
        numbers: PromptNumbers,
        budget: int,
        deadline: float,
        temp: float,
    ) -> None:
        self.d = decoder
        self.prompt = prompt
        self.numbers = numbers
        self.answer = b""
        self.sampled = 0
        self.budget = budget
        self.deadline = deadline
        self.temp = temp

    def force(self, text: bytes) -> None:
        self.answer += text

    def _tokens(self, blocked: Callable[[], np.ndarray]) -> Iterator[int]:
        """Tokens sampled after the answer so far, none of ``blocked()`` at its turn."""
        llm = self.d._llm
        ids = self.prompt + llm.tokenize(self.answer, add_bos=False, special=False)

        def mask(_: object, scores: np.ndarray) -> np.ndarray:
            np.copyto(scores, -np.inf, where=blocked())  # in place: no 49k-float garbage
            return scores

        sampling = {"temp": self.temp, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
        for token in llm.generate(
            ids, repeat_penalty=self.d._repeat_penalty, logits_processor=[mask], **sampling
        ):
            self.sampled += 1
            if self.sampled > self.budget:
                raise FieldOutputError(f"answer past its {self.budget}-token budget", self.sampled)
            if time.monotonic() > self.deadline:
                raise DeadlinePassed("generation ran past the request's deadline")
            yield token

    def choose(self, options: list[bytes]) -> bytes:
        """One of ``options``, returned: tokens are sampled until one option alone fits, then
        the rest of it is forced."""
        texts, ids = self.d._texts, self.d._ids
        decided = b""

        def blocked() -> np.ndarray:
            block = np.ones(len(texts), dtype=bool)
            for option in options:
                if option.startswith(decided):
                    for end in range(len(decided) + 1, len(option) + 1):
                        token = ids.get(option[len(decided) : end])
                        if token is not None:
                            block[token] = False
            return block

        tokens = self._tokens(blocked)
        while len(fitting := [o for o in options if o.startswith(decided)]) > 1:
            decided += texts[next(tokens)]
        tokens.close()
        self.answer += fitting[0]
        return fitting[0]

    def pick(self, offered: list[bytes]) -> None:
        """Actions picked from ``offered`` (escaped, each fitting the contract), one or more,
        each at most once, the list then closed: a few tokens sampled an action, the rest
        forced."""
        left = list(offered)
        left.remove(self.choose(left))  # its quote comes with what follows, as trained
        while left and len(offered) - len(left) < MAX_ACTIONS:
            chosen = self.choose([b'","' + a for a in left] + [b'"]}'])
            if chosen == b'"]}':
                return
            left.remove(chosen[3:])
        self.force(b'"]}')

    def string(self, field: str, then: list[bytes]) -> bytes:
        """A string's text, closed by its quote and one of ``then`` (what must follow), never
        empty nor longer than the contract allows (near the bound only tokens that fit are
        left, then only the quote); returns the ``then`` taken."""
        d = self.d
        closers = d.closers(then)
        limit = d._limits[field]
        value = b""

        def blocked() -> np.ndarray:
            room = limit - len(value)
            fits = d._safe & (d._lengths <= room)
            if value:
                fits |= closers & (d._before_quote <= room)
            block = ~fits
            self.numbers.block(value, block)
            return block

        tokens = self._tokens(blocked)
        for token in tokens:
            text = d._texts[token]
            if closers[token]:
                tokens.close()
                at = d._before_quote[token]
                self.answer += value + text[:at] + b'"'
                rest = text[at + 1 :]
                return self._follow([t for t in then if t.startswith(rest)])
            value += text
        raise FieldOutputError(f"{field}: the model stopped inside the string", self.sampled)

    def _follow(self, then: list[bytes]) -> bytes:
        if len(then) > 1:
            return self.choose(then)
        self.force(then[0])
        return then[0]

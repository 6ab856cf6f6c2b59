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

The cause is decided by the facts first (``prompt.Settled``, from ``assess.py``): a cause
they settle is written as given, else the model chooses among the causes they support, and
its confidence is the model's own share of the probability over those causes (not a value
it copies from its training answers). The cause is also the one field a calibration may
shift: an adapter's per-cause bias (``training/calibrate.py``) is added to the scores of
the tokens that begin each cause.

The answer is re-tokenised as a whole before each step, so the model reads the tokens
training gave it (``training/train.py`` tokenises the full answer text), not the pieces.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_cpp import Llama, LogitsProcessorList

from service.contract import Diagnosis, ProbableCause, Severity
from service.grounding import FACT, NOTHING
from service.model.numbers import PromptNumbers, TokenClasses
from service.prompt import Settled

CONFIDENCE_STEPS = [round(i * 0.05, 2) for i in range(21)]
UNSAFE = frozenset(b'"\\\x7f' + bytes(range(0x20)))
MAX_ACTIONS = 5
OPENING = b'{"probable_cause":"'
FIELDS = [
    "probable_cause",
    "severity",
    "confidence",
    "summary",
    "explanation",
    "recommended_actions",
]


def generation_schema() -> dict[str, Any]:
    """Diagnosis's JSON schema, as a remote model server's response format.

    Schema-to-grammar conversions ignore numeric bounds, so ``confidence`` is offered as the
    21 values 0.0, 0.05 ... 1.0 (as this decoder does), within 0..1 by construction.
    """
    schema = Diagnosis.model_json_schema()
    schema["properties"]["confidence"] = {"enum": CONFIDENCE_STEPS}
    return schema


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


MAX_SHARE = 0.9
"""The most confidence a cause the model chose among several gets: what one clear signal
gets when the facts settle it (policy.md)."""


def _step(value: float) -> float:
    """``value`` as one of the confidence steps (a multiple of 0.05)."""
    return CONFIDENCE_STEPS[
        min(range(len(CONFIDENCE_STEPS)), key=lambda i: abs(CONFIDENCE_STEPS[i] - value))
    ]


def _options(values: list[str], then: str) -> list[bytes]:
    return [(value + then).encode() for value in values]


def _continuing(ids: dict[bytes, int], option: bytes, decided: bytes) -> list[int]:
    """The tokens that carry ``decided`` on along ``option`` (it starts with ``decided``)."""
    rest = option[len(decided) :]
    return [t for end in range(1, len(rest) + 1) if (t := ids.get(rest[:end])) is not None]


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
        self._cause_starts = {
            cause: _continuing(self._ids, option, b"")
            for cause, option in zip(causes, self._cause, strict=True)
        }
        """The tokens that can begin each cause (their first letters differ: one decides)."""
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
        cause_bias: Mapping[str, float] | None = None,
    ) -> Decoded:
        """The answer's JSON text for a prompt (token ids ending with the assistant turn's
        start), with what ``settled`` gives written as given: the cause it settles (else one
        of those it allows, with the model's share of them as the confidence), the severity,
        and the summary once the cause is chosen (unless it is past the contract's length);
        the actions picked from those it offers for the cause. ``cause_bias`` is added to the
        scores of the tokens that begin each cause it names (the adapter's calibration,
        ``training/calibrate.py``). Raises FieldOutputError or DeadlinePassed."""
        if seed is not None:
            self._llm.set_seed(seed)
        numbers = PromptNumbers(self._llm.detokenize(prompt), self._classes)
        run = _Run(self, prompt, numbers, max_tokens, deadline, temperature)
        run.force(OPENING)
        bias = cause_bias or {}
        lift = {o: bias.get(c, 0.0) for c, o in zip(self._cause_starts, self._cause, strict=True)}
        options = dict(zip(ProbableCause, self._cause, strict=True))
        share: float | None = None
        if settled and settled.cause:
            cause = settled.cause
            run.force(options[cause])
        else:
            allowed = [o for c, o in options.items() if not settled or settled.allows(c)]
            first: list[np.ndarray] = []
            cause = ProbableCause(run.choose(allowed, lift, first).split(b'"')[0].decode())
            if settled and len(allowed) > 1:
                share = self._share(first[0], cause, [c for c in options if settled.allows(c)])
        if settled and settled.severity:
            run.force(next(o for o in self._severity if o.startswith(settled.severity.encode())))
        else:
            run.choose(self._severity)
        given = settled.confidence if settled and settled.confidence is not None else share
        if given is not None:
            run.force(self._confidence[CONFIDENCE_STEPS.index(_step(given))])
        else:
            run.choose(self._confidence)
        whole = _escaped(settled.summary(cause)) if settled else b""
        contradicts = settled.contradicts if settled else None
        if whole and len(whole) <= self._limits["summary"]:
            run.force(whole + b'","explanation":"')
        else:
            run.string("summary", [b',"explanation":"'], contradicts)
        run.string("explanation", [b',"recommended_actions":["'], contradicts)
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

    def _share(
        self, scores: np.ndarray, cause: ProbableCause, allowed: list[ProbableCause]
    ) -> float:
        """The model's own confidence in ``cause``: its share of the probability the model
        gave the allowed causes where it named one (each cause's best first token, with the
        calibration's bias), at most what a cause the facts settle gets."""
        best = {c: float(scores[self._cause_starts[c.value]].max()) for c in allowed}
        top = max(best.values())
        weights = {c: np.exp(v - top) for c, v in best.items()}
        return min(float(weights[cause] / sum(weights.values())), MAX_SHARE)

    def cause_scores(self, prompt: list[int]) -> dict[str, float]:
        """Each cause's score where the answer names its cause: the highest logit among the
        tokens that begin it. Greedy decoding names the cause whose score plus bias is the
        highest, so these are what a bias is fitted on (``training/calibrate.py``)."""
        ids = prompt + self._llm.tokenize(OPENING, add_bos=False, special=False)
        seen: list[np.ndarray] = []

        def keep(_: object, scores: np.ndarray) -> np.ndarray:
            seen.append(scores.copy())
            return scores

        tokens = self._llm.generate(ids, temp=0.0, logits_processor=LogitsProcessorList([keep]))
        next(tokens)
        tokens.close()
        return {cause: float(seen[0][t].max()) for cause, t in self._cause_starts.items()}


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

    def _tokens(
        self, steer: Callable[[np.ndarray], None], tail: bytes = b""
    ) -> Generator[int, None, None]:
        """Tokens sampled after the answer so far (and ``tail``, a string's text so far),
        each from the scores as ``steer`` leaves them (it changes them in place: no
        49k-float garbage per token)."""
        llm = self.d._llm
        ids = self.prompt + llm.tokenize(self.answer + tail, add_bos=False, special=False)

        def mask(_: object, scores: np.ndarray) -> np.ndarray:
            steer(scores)
            return scores

        for token in llm.generate(
            ids,
            temp=self.temp,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=self.d._repeat_penalty,
            logits_processor=LogitsProcessorList([mask]),
        ):
            self.sampled += 1
            if self.sampled > self.budget:
                raise FieldOutputError(f"answer past its {self.budget}-token budget", self.sampled)
            if time.monotonic() > self.deadline:
                raise DeadlinePassed("generation ran past the request's deadline")
            yield token

    def choose(
        self,
        options: list[bytes],
        bias: Mapping[bytes, float] | None = None,
        first: list[np.ndarray] | None = None,
    ) -> bytes:
        """One of ``options``, returned: tokens are sampled until one option alone fits, then
        the rest of it is forced. ``bias`` is added to the scores of the tokens that carry
        an option on; ``first`` receives the scores the first token was sampled from."""
        texts, ids = self.d._texts, self.d._ids
        decided = b""

        def steer(scores: np.ndarray) -> None:
            allowed = np.zeros(len(texts), dtype=bool)
            for option in options:
                if option.startswith(decided):
                    tokens = _continuing(ids, option, decided)
                    allowed[tokens] = True
                    if bias:
                        scores[tokens] += bias.get(option, 0.0)
            if first is not None and not decided:
                first.append(scores.copy())
            np.copyto(scores, -np.inf, where=~allowed)

        tokens = self._tokens(steer)
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

    def string(
        self,
        field: str,
        then: list[bytes],
        contradicts: Callable[[str], list[str]] | None = None,
    ) -> bytes:
        """A string's text, closed by its quote and one of ``then`` (what must follow), never
        empty nor longer than the contract allows (near the bound only tokens that fit are
        left, then only the quote); returns the ``then`` taken. A word that makes the text
        say more that ``contradicts`` finds (a direction the numbers do not have, a quote or
        a name the report does not hold) is taken back and its first token refused there,
        up to ``RETRACTIONS`` times; the guard judges what is left."""
        d = self.d
        closers = d.closers(then)
        limit = d._limits[field]
        text = _Text(contradicts)

        def steer(scores: np.ndarray) -> None:
            room = limit - len(text.value)
            fits = d._safe & (d._lengths <= room)
            if text.value:
                fits |= closers & (d._before_quote <= room)
            block = ~fits
            self.numbers.block(text.value, block)
            block[list(text.refused())] = True
            np.copyto(scores, -np.inf, where=block)

        tokens = self._tokens(steer)
        while (token := next(tokens, None)) is not None:
            piece = d._texts[token]
            closing = bool(closers[token])
            at = d._before_quote[token] if closing else len(piece)
            if text.add(token, piece[:at], closing):  # taken back: sample again from there
                tokens.close()
                tokens = self._tokens(steer, text.value)
            elif closing:
                tokens.close()
                self.answer += text.value + b'"'
                rest = piece[at + 1 :]
                return self._follow([t for t in then if t.startswith(rest)])
        raise FieldOutputError(f"{field}: the model stopped inside the string", self.sampled)

    def _follow(self, then: list[bytes]) -> bytes:
        if len(then) > 1:
            return self.choose(then)
        self.force(then[0])
        return then[0]


RETRACTIONS = 6
"""How many words one string may have taken back (a model that keeps contradicting the
facts is left to the guard, which degrades its answer to the rule engine's text)."""
WORDLIKE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
QUOTES = "'\""


class _Text:
    """A string being decoded, held to the facts word by word: the tokens it was sampled
    as, and those refused at each offset because the word they began contradicted them."""

    def __init__(self, contradicts: Callable[[str], list[str]] | None) -> None:
        self.value = b""
        self._contradicts = contradicts
        self._said: list[str] = []
        self._starts: list[tuple[int, int]] = []
        self._refused: dict[int, set[int]] = {}
        self._retracted = 0

    def refused(self) -> set[int]:
        """The tokens refused where the text now ends."""
        return self._refused.get(len(self.value), set())

    def add(self, token: int, piece: bytes, last: bool = False) -> bool:
        """Append ``piece`` (``last``: the string ends after it); True when that completed a
        word that contradicts the facts and the text was taken back to where the word began,
        or, for a quote or a fact the report does not hold, to where it began (sampling must
        restart there)."""
        if piece:
            self._starts.append((len(self.value), token))
            self.value += piece
        if self._contradicts is None or (not last and all(b in WORDLIKE for b in piece)):
            return False
        found = self._found(self.value if last else _whole_words(self.value))
        new = list((Counter(found) - Counter(self._said)).elements())
        if not new or self._retracted >= RETRACTIONS:
            self._said = found
            return False
        span = next((f for f in new if _literal(f) and f.encode() in self.value), "")
        opened = self.value.rfind(span.encode()) if span else len(self.value)
        for at, first in reversed(self._starts):
            if (
                at <= opened
                and _opens_word(self.value, at)
                and len(self._found(self.value[:at])) < len(found)
            ):
                self._retracted += 1
                self._refused = {k: v for k, v in self._refused.items() if k <= at}
                self._refused.setdefault(at, set()).add(first)
                self._starts = [s for s in self._starts if s[0] < at]
                self.value = self.value[:at]
                return True
        self._said = found
        return False

    def _found(self, value: bytes) -> list[str]:
        assert self._contradicts is not None
        return self._contradicts(value.decode("utf-8", errors="ignore"))


def _literal(finding: str) -> bool:
    """Whether a finding is text the answer wrote as it stands (a quote, a quoted fact, a
    claim that no signal stands out), not a subject and a direction gathered from a
    clause."""
    return finding[:1] in QUOTES or any(p.fullmatch(finding) for p in (FACT, NOTHING))


def _opens_word(value: bytes, at: int) -> bool:
    """Whether the text from ``at`` on begins a word (or a quote, or punctuation)."""
    return at == 0 or value[at - 1] not in WORDLIKE or value[at] not in WORDLIKE


def _whole_words(value: bytes) -> bytes:
    """``value`` without the word it may end inside of (it is judged once complete)."""
    end = len(value)
    while end and value[end - 1] in WORDLIKE:
        end -= 1
    return value[:end]

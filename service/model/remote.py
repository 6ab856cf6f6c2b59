"""A model served elsewhere, behind an OpenAI-compatible chat API (llama.cpp server, Ollama,
vLLM, llama-cpp-python's server): for teams that already run one, or outgrow one machine.

The same contract as the local runtime: the Diagnosis schema is sent as the response
format (``json_schema`` as OpenAI and vLLM take it, or ``json_object`` with a ``schema`` as
llama.cpp's servers do), the answer is validated, grounded and, failing that, replaced by
the rule engine's, exactly as for the local model.

The facts come first here too (``prompt.Settled``, from ``assess.py``), held by the schema
the server decodes under: a cause they settle is the only value ``probable_cause`` may
take, with their severity and confidence; where they support several, the cause is one of
those, and its confidence is the model's own share of the probability it gave them where
it named the cause (from the server's ``top_logprobs``, as the local decoder takes it from
its scores), at most what a settled cause gets. A server that returns no log-probabilities
leaves the model's written confidence, within the same bound.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, Literal

import httpx

from service.contract import ModelInfo, ProbableCause
from service.model.adapters import UnknownAdapter
from service.model.fields import CONFIDENCE_STEPS, MAX_SHARE
from service.model.runtime import Completion, ModelBusy
from service.prompt import Settled

ResponseFormat = Literal["json_schema", "json_object"]
TOP_LOGPROBS = 20
"""Alternatives asked for at each token: OpenAI's most; the allowed causes are at most 7."""
CAUSE_VALUE = re.compile(r'"probable_cause"\s*:\s*"')


class NoAdapters:
    """Adapters live with the model's server; none are selectable through this one."""

    current: str | None = None

    def names(self) -> list[str]:
        return []

    def check(self, name: str) -> None:
        raise UnknownAdapter(name)

    def use(self, name: str | None) -> None:
        if name is not None:
            raise UnknownAdapter(name)


class OpenAIRuntime:
    def __init__(
        self,
        base_url: str,
        model: str,
        schema: dict[str, Any],
        response_format: ResponseFormat,
        api_key: str | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers)
        self._model = model
        self._schema = schema
        self._response_format = response_format
        self.adapters = NoAdapters()
        self.info = ModelInfo(base=f"openai:{model}", quantization="remote")
        self.tokens = {"prompt": 0, "completion": 0}
        self.generating_s = 0.0

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
        settled: Settled | None = None,
    ) -> Completion:
        """One chat completion, its output held to the Diagnosis schema by the server and to
        what ``settled`` gives (``_format``); where the model chose among several causes,
        its confidence is its share of them (``choice_share``). The summary's opening stays
        the model's: a response format cannot fix a string's start."""
        self.adapters.use(adapter)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ModelBusy("no time left before the request's deadline")
        body = self.request(messages, max_tokens, temperature, seed, settled)
        choosing = _choosing(settled)
        started = time.monotonic()
        try:
            response = self._client.post("/chat/completions", json=body, timeout=remaining)
            response.raise_for_status()
        except httpx.TimeoutException as exc:
            raise ModelBusy(f"the model server did not answer in time: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ModelBusy(f"the model server is unreachable: {exc!r}") from exc
        self.generating_s += time.monotonic() - started
        result = response.json()
        usage = result.get("usage") or {}
        self.tokens["prompt"] += usage.get("prompt_tokens", 0)
        self.tokens["completion"] += usage.get("completion_tokens", 0)
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        if choosing:
            text = _with_share(text, (choice.get("logprobs") or {}).get("content"), choosing)
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    def request(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        settled: Settled | None = None,
    ) -> dict[str, Any]:
        """The chat completion's request body; log-probabilities are asked for only where
        the model chooses among causes, the one place they are read."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": self._format(settled),
        }
        if _choosing(settled):
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        if seed is not None:
            body["seed"] = seed
        return body

    def _format(self, settled: Settled | None) -> dict[str, Any]:
        """The response format: Diagnosis's schema with what the facts settle as the only
        value of each field they settle, ``probable_cause`` within the causes they allow,
        and a chosen cause's confidence at most ``MAX_SHARE``."""
        schema = self._schema
        if settled is not None:
            properties = {**schema["properties"], **_held(settled)}
            schema = {**schema, "properties": properties}
        if self._response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "diagnosis", "schema": schema, "strict": True},
            }
        return {"type": "json_object", "schema": schema}


def _held(settled: Settled) -> dict[str, Any]:
    """The schema's properties that ``settled`` narrows."""
    held: dict[str, Any] = {}
    if settled.severity is not None:
        held["severity"] = {"enum": [settled.severity.value]}
    causes = [settled.cause] if settled.cause else list(settled.causes)
    if causes:
        held["probable_cause"] = {"enum": [c.value for c in causes]}
    if settled.cause and settled.confidence is not None:
        held["confidence"] = {"enum": [step(settled.confidence)]}
    elif len(causes) > 1:
        held["confidence"] = {"enum": [s for s in CONFIDENCE_STEPS if s <= MAX_SHARE]}
    return held


def _choosing(settled: Settled | None) -> tuple[ProbableCause, ...]:
    """The causes the model chooses among: those the facts allow, when not one alone."""
    if settled is None or settled.cause is not None or len(settled.causes) < 2:
        return ()
    return settled.causes


def step(value: float) -> float:
    """``value`` as one of the confidence steps (a multiple of 0.05)."""
    return min(CONFIDENCE_STEPS, key=lambda s: abs(s - value))


def choice_share(
    text: str, tokens: Sequence[dict[str, Any]] | None, allowed: Sequence[ProbableCause]
) -> float | None:
    """The model's share, among ``allowed``, of the probability it gave the cause ``text``
    names, at the token where the cause begins (each cause's likeliest token there, as the
    local decoder scores them), at most ``MAX_SHARE``; None where the server's tokens do not
    spell ``text`` or do not reach the cause."""
    found = CAUSE_VALUE.search(text)
    if not tokens or found is None or not all(isinstance(t, dict) for t in tokens):
        return None
    spelled = [str(t.get("token", "")) for t in tokens]
    if "".join(spelled) != text:
        return None
    ends = list(accumulate(len(piece) for piece in spelled))
    at = next((i for i, end in enumerate(ends) if end > found.end()), None)
    if at is None:
        return None
    token, head = tokens[at], text[ends[at] - len(spelled[at]) : found.end()]
    best: dict[ProbableCause, float] = {}
    options = [token, *(token.get("top_logprobs") or [])]
    for option in (o for o in options if isinstance(o, dict)):
        piece, logprob = str(option.get("token", "")), option.get("logprob")
        rest = piece[len(head) :] if piece.startswith(head) else ""
        cause = next((c for c in allowed if rest and _begins(c.value, rest)), None)
        if cause is not None and isinstance(logprob, int | float) and math.isfinite(logprob):
            best[cause] = max(best.get(cause, -math.inf), float(logprob))
    named = next((c for c in allowed if text[found.end() :].startswith(c.value + '"')), None)
    if named is None or named not in best:
        return None
    top = max(best.values())
    weights = {c: math.exp(v - top) for c, v in best.items()}
    return min(weights[named] / sum(weights.values()), MAX_SHARE)


def _begins(value: str, spelled: str) -> bool:
    """Whether a token spelled so begins the cause ``value`` (or is all of it and more)."""
    return value.startswith(spelled) or spelled.startswith(value)


def _with_share(
    text: str, tokens: Sequence[dict[str, Any]] | None, allowed: Sequence[ProbableCause]
) -> str:
    """The answer with the model's share of the allowed causes as its confidence, when the
    server gave what it takes; else unchanged (the schema bounded what the model wrote)."""
    share = choice_share(text, tokens, allowed)
    try:
        answer = json.loads(text)
    except ValueError:
        return text
    if share is None or not isinstance(answer, dict):
        return text
    return json.dumps({**answer, "confidence": step(share)}, ensure_ascii=False)

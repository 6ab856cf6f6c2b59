"""A model served elsewhere, behind an OpenAI-compatible chat API (llama.cpp server, Ollama,
vLLM, llama-cpp-python's server): for teams that already run one, or outgrow one machine.

The same contract as the local runtime: the Diagnosis schema is sent as the response
format (``json_schema`` as OpenAI and vLLM take it, or ``json_object`` with a ``schema`` as
llama.cpp's servers do), the answer is validated, grounded and, failing that, replaced by
the rule engine's, exactly as for the local model.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx

from service.contract import ModelInfo, Severity
from service.model.adapters import UnknownAdapter
from service.model.runtime import Completion, ModelBusy
from service.prompt import Settled

ResponseFormat = Literal["json_schema", "json_object"]


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
        """One chat completion, its output held to the Diagnosis schema by the server, the
        settled severity as the schema's one value (the summary's opening stays the
        model's: a response format cannot fix a string's start)."""
        self.adapters.use(adapter)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ModelBusy("no time left before the request's deadline")
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": self._format(settled.severity if settled else None),
        }
        if seed is not None:
            body["seed"] = seed
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
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    def _format(self, severity: Severity | None) -> dict[str, Any]:
        schema = self._schema
        if severity is not None:
            properties = {**schema["properties"], "severity": {"enum": [severity.value]}}
            schema = {**schema, "properties": properties}
        if self._response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "diagnosis", "schema": schema, "strict": True},
            }
        return {"type": "json_object", "schema": schema}
